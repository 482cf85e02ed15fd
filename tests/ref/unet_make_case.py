#!/usr/bin/python3
"""Write a random test case for tests/ref/unet_twin.py.

Usage:
  /usr/bin/python3 tests/ref/unet_make_case.py CONFIG.json WEIGHTS.safetensors INPUTS.safetensors
      [--batch B] [--size H or HxW] [--seed S] [--old-attn-names] [--int-timesteps]

WEIGHTS: every parameter of the UNet2DModel that CONFIG describes, with torch's default initialisation for
convolutions and linear layers (so activations stay O(1)), and GroupNorm affine parameters perturbed away
from (1, 0) (weight 1 + 0.1 N(0,1), bias 0.1 N(0,1)) so that their gradients are exercised.
--old-attn-names writes attention projections as query/key/value/proj_attn (google/ddpm-* naming).
INPUTS: "sample" N(0,1) of shape (B, in_channels, H, W) (H = W = sample_size unless --size; default B = 2),
"timestep" uniform in [0, 1000) (fractional unless --int-timesteps), "grad_out" N(0,1) like the output.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import unet_twin  # noqa: E402


def make_case(config, batch=2, size=None, seed=0, old_names=False, int_timesteps=False):
    """Returns (weights dict, inputs dict) of numpy float32 arrays."""
    torch.manual_seed(seed)
    model = unet_twin.build(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))
    weights = {name: p.detach().numpy().copy() for (name, _), p in
               zip(unet_twin.param_table(model, old_names), model.parameters())}
    cfg = model.cfg
    if size is None:
        s = cfg["sample_size"] if cfg["sample_size"] is not None else 32
        size = (s, s) if isinstance(s, int) else tuple(s)
    h, w = size
    g = torch.Generator().manual_seed(seed + 1)
    sample = torch.randn(batch, cfg["in_channels"], h, w, generator=g)
    t = torch.rand(batch, generator=g, dtype=torch.float64) * 1000.0
    if int_timesteps:
        t = torch.floor(t)
    grad_out = torch.randn(batch, cfg["out_channels"], h, w, generator=g)
    inputs = {"sample": sample.numpy(), "timestep": t.float().numpy(), "grad_out": grad_out.numpy()}
    return weights, inputs


def main(argv):
    args, opts, i = [], {}, 0
    while i < len(argv):
        a = argv[i]
        if a in ("--batch", "--size", "--seed"):
            if i + 1 >= len(argv):
                sys.exit(f"unet_make_case: {a} needs a value")
            opts[a] = argv[i + 1]
            i += 2
            continue
        if a in ("--old-attn-names", "--int-timesteps"):
            opts[a] = True
        elif a.startswith("--"):
            sys.exit(f"unet_make_case: unknown flag {a}\n{__doc__}")
        else:
            args.append(a)
        i += 1
    if len(args) != 3:
        sys.exit(__doc__)
    size = None
    if "--size" in opts:
        parts = opts["--size"].lower().split("x")
        size = (int(parts[0]), int(parts[-1]))
    weights, inputs = make_case(args[0], batch=int(opts.get("--batch", 2)), size=size,
                                seed=int(opts.get("--seed", 0)), old_names=bool(opts.get("--old-attn-names")),
                                int_timesteps=bool(opts.get("--int-timesteps")))
    unet_twin.st_save(args[1], weights)
    unet_twin.st_save(args[2], inputs)


if __name__ == "__main__":
    main(sys.argv[1:])
