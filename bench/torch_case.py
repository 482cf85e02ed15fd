#!/usr/bin/python3
"""One PyTorch benchmark case for bench/vs_torch.py: the same U-Net as diffuse (tests/ref/unet_twin.py, built
from the config diffuse prints), timed in this process.

  /usr/bin/python3 bench/torch_case.py CONFIG.json forward|train BATCH THREADS REPS [fp32|bf16]
prints "images/s BEST MEDIAN". A training step is what diffuse's is: x_t from x_0 and noise, forward, MSE
against the noise, backward, gradient clipping, Adam (AdamW); FP32, or with bf16 under torch.autocast (CPU,
bfloat16: oneDNN's BF16 convolutions and matmuls, FP32 weights), PyTorch's counterpart of --precision bf16."""
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from unet_twin import build  # noqa: E402


def main():
    cfg, mode, batch, threads, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    bf16 = len(sys.argv) > 6 and sys.argv[6] == "bf16"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(cfg)
    size, ch = _shape(cfg)
    x = torch.randn(batch, ch, size, size)
    t = torch.randint(0, 1000, (batch,)).float()
    if mode == "forward":
        model.eval()

        def step():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(x, t)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
        noise = torch.randn_like(x)

        def step():
            a = abar[t.long()].reshape(-1, 1, 1, 1)
            xt = a.sqrt() * x + (1 - a).sqrt() * noise
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(xt, t)
            loss = F.mse_loss(out.float(), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    step()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"images/s {batch / times[0]:.3f} {batch / times[len(times) // 2]:.3f}")


def _shape(cfg):
    import json
    j = json.load(open(cfg))
    return j["sample_size"], j.get("in_channels", 3)


if __name__ == "__main__":
    main()
