#!/usr/bin/python3
"""PyTorch twin of the DDIM reproduction report's SimpleUnet: the oracle for diffuse's C SimpleUnet.

Usage:
  /usr/bin/python3 tests/ref/simple_unet_twin.py CONFIG.json WEIGHTS.safetensors INPUTS.safetensors OUT.safetensors
  /usr/bin/python3 tests/ref/simple_unet_twin.py CONFIG.json --print-params

CONFIG.json   diffuse's SimpleUnet config: {"_class_name": "SimpleUnet", "sample_size", "in_channels",
              "out_channels", "down_channels", "up_channels" (down reversed), "time_emb_dim", "norm_eps"}.
WEIGHTS       the module's whole state dict by name (parameters F32; BatchNorm running_mean / running_var F32,
              num_batches_tracked I64 of shape []), loaded with load_state_dict(strict=True).
INPUTS        "sample" (B,C,H,W) f32, "timestep" (B,) f32, "target" (B,C_out,H,W) f32.
OUT           "output_eval" = model.eval()(sample, timestep) with the loaded running statistics;
              then one training-mode pass: "output" = model.train()(sample, timestep),
              "loss" = F.l1_loss(output, target) (a mean), "grad.<name>" = d loss / d param for every
              parameter, "state.<name>" for every buffer after that pass (running statistics F32,
              num_batches_tracked I64); and "output_eval_after" = model.eval()(sample, timestep) with them.

--print-params prints "params N" (trainable parameters), "tensors K" (state-dict entries), then one line per
state-dict entry "name d0 d1 ..." in state_dict() order.

The module is the report's code (SinusoidalPositionEmbeddings, Block, SimpleUnet), with the widths, channels
and time-embedding size taken from CONFIG instead of constants. Everything runs in float32 on the CPU.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import load, save  # noqa: E402

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------
# The report's network (the widths are parameters)
# ----------------------------------------------------------------------------------------------------------
class SinusoidalPositionEmbeddings(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, time):
        device = time.device
        half_dim = self.dim // 2
        embeddings = math.log(10000) / (half_dim - 1)
        embeddings = torch.exp(torch.arange(half_dim, device=device) * -embeddings)
        embeddings = time[:, None] * embeddings[None, :]
        embeddings = torch.cat((embeddings.sin(), embeddings.cos()), dim=-1)
        return embeddings


class Block(nn.Module):
    def __init__(self, in_ch, out_ch, time_emb_dim, up=False, eps=1e-5):
        super().__init__()
        self.time_mlp = nn.Linear(time_emb_dim, out_ch)
        if up:
            self.conv1 = nn.Conv2d(2 * in_ch, out_ch, 3, padding=1)
            self.transform = nn.ConvTranspose2d(out_ch, out_ch, 4, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            self.transform = nn.Conv2d(out_ch, out_ch, 4, 2, 1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.bnorm1 = nn.BatchNorm2d(out_ch, eps=eps)
        self.bnorm2 = nn.BatchNorm2d(out_ch, eps=eps)
        self.relu = nn.ReLU()

    def forward(self, x, t):
        h = self.bnorm1(self.relu(self.conv1(x)))
        time_emb = self.relu(self.time_mlp(t))
        time_emb = time_emb[(...,) + (None,) * 2]
        h = h + time_emb
        h = self.bnorm2(self.relu(self.conv2(h)))
        return self.transform(h)


class SimpleUnet(nn.Module):
    def __init__(self, image_channels=3, down_channels=(64, 128, 256, 512, 1024), out_channels=3, time_emb_dim=32,
                 eps=1e-5):
        super().__init__()
        up_channels = tuple(reversed(down_channels))
        self.time_mlp = nn.Sequential(
            SinusoidalPositionEmbeddings(time_emb_dim),
            nn.Linear(time_emb_dim, time_emb_dim),
            nn.ReLU(),
        )
        self.conv0 = nn.Conv2d(image_channels, down_channels[0], 3, padding=1)
        self.downs = nn.ModuleList([Block(down_channels[i], down_channels[i + 1], time_emb_dim, eps=eps)
                                    for i in range(len(down_channels) - 1)])
        self.ups = nn.ModuleList([Block(up_channels[i], up_channels[i + 1], time_emb_dim, up=True, eps=eps)
                                  for i in range(len(up_channels) - 1)])
        self.output = nn.Conv2d(up_channels[-1], out_channels, 1)

    def forward(self, x, timestep):
        t = self.time_mlp(timestep)
        x = self.conv0(x)
        residual_inputs = []
        for down in self.downs:
            x = down(x, t)
            residual_inputs.append(x)
        for up in self.ups:
            residual_x = residual_inputs.pop()
            x = torch.cat((x, residual_x), dim=1)
            x = up(x, t)
        return self.output(x)


def build(cfg):
    if cfg.get("_class_name") != "SimpleUnet":
        raise ValueError(f"config: _class_name is {cfg.get('_class_name')!r}, expected 'SimpleUnet'")
    down = cfg.get("down_channels", [64, 128, 256, 512, 1024])
    if "up_channels" in cfg and list(cfg["up_channels"]) != list(reversed(down)):
        raise ValueError("config: up_channels must be down_channels reversed")
    return SimpleUnet(cfg.get("in_channels", 3), tuple(down), cfg.get("out_channels", 3), cfg.get("time_emb_dim", 32),
                      cfg.get("norm_eps", 1e-5))


# ----------------------------------------------------------------------------------------------------------
# safetensors: the shared reader/writer (tests/ref/safetensors_np.py); outputs are stored as F32, or I64 for
# integers (num_batches_tracked), the dtypes a PyTorch state dict of this module holds
# ----------------------------------------------------------------------------------------------------------
def st_save(path, tensors):
    save(path, {name: np.asarray(tensors[name]).astype("<i8" if np.asarray(tensors[name]).dtype.kind in "iu"
                                                        else "<f4") for name in sorted(tensors)})


# ----------------------------------------------------------------------------------------------------------
def main(argv):
    if len(argv) == 2 and argv[1] == "--print-params":
        with open(argv[0]) as f:
            model = build(json.load(f))
        sd = model.state_dict()
        print("params", sum(p.numel() for p in model.parameters()))
        print("tensors", len(sd))
        for name, t in sd.items():
            print(name, *t.shape)
        return 0
    if len(argv) != 4:
        sys.exit(__doc__)
    cfg_path, w_path, in_path, out_path = argv
    with open(cfg_path) as f:
        model = build(json.load(f))
    weights = load(w_path)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    inputs = load(in_path)
    x, t, target = (torch.from_numpy(inputs[k]) for k in ("sample", "timestep", "target"))
    out = {}
    model.eval()
    with torch.no_grad():
        out["output_eval"] = model(x, t).numpy()
    model.train()
    y = model(x, t)
    loss = F.l1_loss(y, target)
    loss.backward()
    out["output"] = y.detach().numpy()
    out["loss"] = loss.detach().reshape(1).numpy()
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad.numpy()
    for name, b in model.named_buffers():
        out["state." + name] = b.numpy()
    model.eval()
    with torch.no_grad():
        out["output_eval_after"] = model(x, t).numpy()
    st_save(out_path, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
