#!/usr/bin/python3
"""PyTorch twin of diffuse's training step (DDPM Algorithm 1 + clip_grad_norm_ + Adam/AdamW), the oracle for
tests/test_train.c.

Usage:
  /usr/bin/python3 tests/ref/train_step_twin.py CONFIG.json WEIGHTS.safetensors INPUTS.safetensors OUT.safetensors
      [--lr X] [--beta1 X] [--beta2 X] [--eps X] [--weight-decay X] [--optimizer adam|adamw] [--clip X]
      [--loss mse|l1] [--prediction epsilon|sample|v_prediction] [--beta-start X] [--beta-end X] [--T N]

INPUTS holds, for each step k = 0, 1, ...: "x0.k" (B,C,H,W), "t.k" (B,) (integer-valued float32), "noise.k"
(B,C,H,W). The schedule is diffusers' DDPMScheduler "linear": betas = linspace(beta_start, beta_end, T) in
float32, alphas_cumprod = cumprod(1 - betas); x_t = sqrt(abar) x0 + sqrt(1 - abar) noise (add_noise); the
target is noise, x0, or v = sqrt(abar) noise - sqrt(1 - abar) x0 (get_velocity). OUT holds "loss.k",
"grad_norm.k" (before clipping), "gradc.k.NAME" (the clipped gradient the optimizer used) and
"param.k.NAME" (every parameter after step k).
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_twin import build, load_weights, st_load, st_save  # noqa: E402

torch.set_num_threads(2)


def main(argv):
    pos = [a for a in argv if not a.startswith("--")]
    opts = {"lr": 2e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight-decay": 0.0, "optimizer": "adamw",
            "clip": 1.0, "loss": "mse", "prediction": "epsilon", "beta-start": 1e-4, "beta-end": 0.02, "T": 1000}
    flags = [a for a in argv if a.startswith("--")]
    for f in flags:
        k, _, v = f[2:].partition("=")
        if k not in opts:
            sys.exit(f"train_step_twin: unknown flag --{k}\n{__doc__}")
        opts[k] = type(opts[k])(v)
    if len(pos) != 4:
        sys.exit(__doc__)
    cfg, w_path, in_path, out_path = pos
    model = build(cfg)
    load_weights(model, st_load(w_path))
    model.train()
    inputs = {k: torch.from_numpy(v) for k, v in st_load(in_path).items()}
    betas = torch.linspace(opts["beta-start"], opts["beta-end"], opts["T"], dtype=torch.float32)
    abar = torch.cumprod(1.0 - betas, dim=0)
    params = list(model.parameters())
    cls = torch.optim.AdamW if opts["optimizer"] == "adamw" else torch.optim.Adam
    opt = cls(params, lr=opts["lr"], betas=(opts["beta1"], opts["beta2"]), eps=opts["eps"],
              weight_decay=opts["weight-decay"])
    out = {}
    k = 0
    while f"x0.{k}" in inputs:
        x0, t, noise = inputs[f"x0.{k}"], inputs[f"t.{k}"].long(), inputs[f"noise.{k}"]
        a = abar[t].reshape(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = {"epsilon": noise, "sample": x0, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0}[
            opts["prediction"]]
        opt.zero_grad()
        pred = model(xt, t.float())
        loss = F.mse_loss(pred, target) if opts["loss"] == "mse" else F.l1_loss(pred, target)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, opts["clip"]) if opts["clip"] > 0 else torch.tensor(0.0)
        for name, p in model.named_parameters():
            out[f"gradc.{k}.{name}"] = p.grad.detach().numpy().copy()
        opt.step()
        out[f"loss.{k}"] = loss.detach().reshape(1).numpy()
        out[f"grad_norm.{k}"] = gn.detach().reshape(1).float().numpy()
        for name, p in model.named_parameters():
            out[f"param.{k}.{name}"] = p.detach().numpy().copy()
        k += 1
    if k == 0:
        sys.exit("train_step_twin: INPUTS has no x0.0")
    st_save(out_path, out)


if __name__ == "__main__":
    main(sys.argv[1:])
