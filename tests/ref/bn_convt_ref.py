#!/usr/bin/python3
"""PyTorch oracle for diffuse's batch-norm and transposed-convolution kernels (tests/test_kernels_bn_convt.c).

Usage:
  /usr/bin/python3 tests/ref/bn_convt_ref.py DIR CASE [CASE ...]

Each CASE is a file-name prefix in DIR; its kind comes from how it starts.

  bn*   inputs  CASE_x (B,C,H,W), CASE_gamma (C), CASE_beta (C), CASE_rm (C), CASE_rv (C), CASE_g (B,C,H,W),
                CASE_cfg [momentum, eps]
        outputs CASE_out = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum, eps),
                CASE_mean, CASE_rstd (the batch mean and 1/sqrt(biased var + eps)),
                CASE_rm_new, CASE_rv_new (the running statistics after that call),
                CASE_eval = F.batch_norm(x, rm_new, rv_new, gamma, beta, training=False, eps=eps),
                CASE_dx, CASE_dgamma, CASE_dbeta = gradients of sum(out * g) (training mode).
  ct*   inputs  CASE_x (B,Cin,H,W), CASE_w (Cin,Cout,KH,KW), CASE_b (Cout) (optional), CASE_g (B,Cout,Ho,Wo),
                CASE_cfg [stride, pad]
        outputs CASE_out = F.conv_transpose2d(x, w, b, stride, pad), CASE_dx, CASE_dw, CASE_db (if b) =
                gradients of sum(out * g).

All files are float32 .npy; everything runs in float32 on the CPU.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def load(d, name, grad=False):
    t = torch.from_numpy(np.load(os.path.join(d, name + ".npy")).astype(np.float32))
    return t.requires_grad_(grad)


def save(d, name, t):
    np.save(os.path.join(d, name + ".npy"), t.detach().numpy().astype(np.float32))


def batchnorm_case(d, c):
    x, gamma, beta = load(d, c + "_x", True), load(d, c + "_gamma", True), load(d, c + "_beta", True)
    rm, rv, g = load(d, c + "_rm"), load(d, c + "_rv"), load(d, c + "_g")
    momentum, eps = (float(v) for v in load(d, c + "_cfg"))
    out = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=momentum, eps=eps)
    (out * g).sum().backward()
    with torch.no_grad():
        mean = x.mean(dim=(0, 2, 3))
        rstd = 1.0 / torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False) + eps)
        ev = F.batch_norm(x, rm, rv, gamma, beta, training=False, eps=eps)
    for name, t in [("out", out), ("mean", mean), ("rstd", rstd), ("rm_new", rm), ("rv_new", rv), ("eval", ev),
                    ("dx", x.grad), ("dgamma", gamma.grad), ("dbeta", beta.grad)]:
        save(d, c + "_" + name, t)


def convt_case(d, c):
    x, w, g = load(d, c + "_x", True), load(d, c + "_w", True), load(d, c + "_g")
    b = load(d, c + "_b", True) if os.path.exists(os.path.join(d, c + "_b.npy")) else None
    stride, pad = (int(v) for v in load(d, c + "_cfg"))
    out = F.conv_transpose2d(x, w, b, stride=stride, padding=pad)
    if out.shape != g.shape:
        sys.exit("%s: torch's output shape %s differs from the C one %s" % (c, tuple(out.shape), tuple(g.shape)))
    (out * g).sum().backward()
    save(d, c + "_out", out)
    save(d, c + "_dx", x.grad)
    save(d, c + "_dw", w.grad)
    if b is not None:
        save(d, c + "_db", b.grad)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    d = sys.argv[1]
    for c in sys.argv[2:]:
        if c.startswith("bn"):
            batchnorm_case(d, c)
        elif c.startswith("ct"):
            convt_case(d, c)
        else:
            sys.exit("unknown case kind: %s (names start with bn or ct)" % c)


if __name__ == "__main__":
    main()
