#!/usr/bin/python3
"""Self-checks of the PyTorch U-Net oracle (tests/ref/unet_twin.py).

Run: /usr/bin/python3 tests/ref/test_unet_twin_selfcheck.py [-v]
Prints one line per check and "N passed, N failed"; exits non-zero on any failure. Takes ~20 s on 2 threads.
(The test_* functions also run under pytest where it is installed.)
"""
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import unet_make_case  # noqa: E402
import unet_twin  # noqa: E402

PY = "/usr/bin/python3"
VERBOSE = "-v" in sys.argv

CIFAR = {
    "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-6, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
}
SMALL = dict(CIFAR, block_out_channels=[32, 64, 64, 64], sample_size=16, norm_num_groups=8)
# a variant that moves every knob away from the DDPM values
VARIANT = dict(SMALL, attention_head_dim=16, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
               mid_block_scale_factor=2.0, center_input_sample=True, layers_per_block=1, in_channels=1,
               out_channels=2, norm_eps=1e-5, time_embedding_dim=96,
               down_block_types=["AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
               up_block_types=["AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D"])


def log(msg):
    if VERBOSE:
        print("   ", msg)


def _write_json(d, path):
    import json
    with open(path, "w") as f:
        json.dump(d, f)


# ---------------------------------------------------------------------------------------------------------
def test_cifar_param_count_and_names():
    model = unet_twin.build(CIFAR)
    table = dict(unet_twin.param_table(model))
    n = sum(int(np.prod(s)) for s in table.values())
    assert n == 35746307, n
    expect = {
        "conv_in.weight": (128, 3, 3, 3),
        "time_embedding.linear_1.weight": (512, 128),
        "time_embedding.linear_2.weight": (512, 512),
        "down_blocks.0.resnets.0.time_emb_proj.weight": (128, 512),
        "down_blocks.0.downsamplers.0.conv.weight": (128, 128, 3, 3),
        "down_blocks.1.resnets.0.conv_shortcut.weight": (256, 128, 1, 1),
        "down_blocks.1.attentions.0.group_norm.weight": (256,),
        "down_blocks.1.attentions.0.to_q.weight": (256, 256),
        "down_blocks.1.attentions.1.to_out.0.bias": (256,),
        "mid_block.attentions.0.to_v.weight": (256, 256),
        "mid_block.resnets.1.conv2.weight": (256, 256, 3, 3),
        "up_blocks.0.resnets.0.conv_shortcut.weight": (256, 512, 1, 1),
        "up_blocks.0.upsamplers.0.conv.weight": (256, 256, 3, 3),
        "up_blocks.2.resnets.2.conv1.weight": (256, 384, 3, 3),
        "up_blocks.3.resnets.0.conv1.weight": (128, 384, 3, 3),
        "up_blocks.3.resnets.2.conv1.weight": (128, 256, 3, 3),
        "up_blocks.3.resnets.2.conv_shortcut.weight": (128, 256, 1, 1),
        "conv_norm_out.weight": (128,),
        "conv_out.weight": (3, 128, 3, 3),
    }
    for k, s in expect.items():
        assert table.get(k) == s, (k, table.get(k), s)
    absent = ["down_blocks.3.downsamplers.0.conv.weight", "up_blocks.3.upsamplers.0.conv.weight",
              "down_blocks.0.resnets.0.conv_shortcut.weight", "up_blocks.1.attentions.3.to_q.weight",
              "down_blocks.0.attentions.0.to_q.weight"]
    for k in absent:
        assert k not in table, k
    assert len(table) == 328, len(table)
    log(f"cifar: {n} parameters in {len(table)} tensors")


def test_print_params_cli():
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "config.json")
        _write_json(CIFAR, cfg)
        out = subprocess.run([PY, os.path.join(HERE, "unet_twin.py"), cfg, "--print-params"], check=True,
                             capture_output=True, text=True).stdout.splitlines()
        assert out[0] == "params 35746307" and out[1] == "tensors 328", out[:2]
        assert "down_blocks.1.attentions.0.to_q.weight 256 256" in out
        old = subprocess.run([PY, os.path.join(HERE, "unet_twin.py"), cfg, "--print-params", "--old-attn-names"],
                             check=True, capture_output=True, text=True).stdout.splitlines()
        assert "down_blocks.1.attentions.0.query.weight 256 256" in old
        assert "mid_block.attentions.0.proj_attn.bias 256" in old
        assert not any(".to_q." in l or ".to_out." in l for l in old)


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    for dim, flip, shift in [(128, False, 1), (32, True, 0), (33, True, 1)]:
        got = unet_twin.timestep_embedding(t, dim, flip, shift).double().numpy()
        half = dim // 2
        f = np.exp(-math.log(10000) * np.arange(half) / (half - shift))
        a = t.double().numpy()[:, None] * f[None]
        ref = np.concatenate([np.cos(a), np.sin(a)] if flip else [np.sin(a), np.cos(a)], axis=1)
        if dim % 2:
            ref = np.pad(ref, ((0, 0), (0, 1)))
        err = np.abs(got - ref).max()
        assert err < 2e-4, (dim, flip, shift, err)  # float32 argument rounding at t ~ 1000


def test_attention_matches_torch_mha():
    torch.manual_seed(0)
    for C, hd in [(64, 64), (64, 16), (48, 8)]:
        a = unet_twin.Attention(C, hd, 8, 1e-6, 1.0).double()
        with torch.no_grad():
            a.group_norm.weight.add_(0.1 * torch.randn(C))
            for p in a.parameters():
                if p.dim() == 1 and p is not a.group_norm.weight:
                    p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(2, C, 4, 5, dtype=torch.float64)
        y = a(x)
        hn = a.group_norm(x).flatten(2).permute(2, 0, 1)  # (L, B, C)
        w = torch.cat([a.to_q.weight, a.to_k.weight, a.to_v.weight])
        b = torch.cat([a.to_q.bias, a.to_k.bias, a.to_v.bias])
        ref, _ = F.multi_head_attention_forward(hn, hn, hn, C, C // hd, w, b, None, None, False, 0.0,
                                                a.to_out[0].weight, a.to_out[0].bias, training=False,
                                                need_weights=False)
        ref = ref.permute(1, 2, 0).reshape(x.shape) + x
        err = (y - ref).abs().max().item()
        assert err < 1e-12, (C, hd, err)


def test_downsample_padding_zero_is_asymmetric():
    torch.manual_seed(0)
    d = unet_twin.Downsample2D(4, 0).double()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    y = d(x)
    assert y.shape == (1, 4, 4, 4)
    xp = torch.zeros(1, 4, 9, 9, dtype=torch.float64)
    xp[:, :, :8, :8] = x  # pad right and bottom only
    ref = F.conv2d(xp, d.conv.weight, d.conv.bias, stride=2)
    assert (y - ref).abs().max().item() < 1e-12
    # output pixel (0,0) sees x[0:3, 0:3]: no padding on the top/left
    d1 = unet_twin.Downsample2D(4, 1)
    assert d1(x.float()).shape == (1, 4, 4, 4)


def _double_grads(model, inputs):
    """Analytic gradients of sum(out * grad_out) of a float64 copy of model."""
    import copy
    m = copy.deepcopy(model).double()
    s = torch.from_numpy(inputs["sample"]).double()
    t = torch.from_numpy(inputs["timestep"]).float()  # the embedding is computed in float32, as diffusers
    g = torch.from_numpy(inputs["grad_out"]).double()
    m.zero_grad()
    out = m(s, t)
    (out * g).sum().backward()
    return m, s, t, g, out.detach(), {k: p.grad.detach().clone() for k, p in m.named_parameters()}


def _fd_check(config, probes, seed):
    weights, inputs = unet_make_case.make_case(config, batch=2, seed=seed)
    model = unet_twin.build(config)
    names = unet_twin.load_weights(model, weights)
    m, s, t, g, out64, grads = _double_grads(model, inputs)
    params = dict(m.named_parameters())
    rng = np.random.default_rng(seed)
    worst = 0.0
    for name in probes:
        p = params[name]
        for _ in range(3):
            idx = tuple(int(rng.integers(0, n)) for n in p.shape)
            h = 1e-5
            with torch.no_grad():
                old = p[idx].item()
                p[idx] = old + h
                lp = (m(s, t) * g).sum().item()
                p[idx] = old - h
                lm = (m(s, t) * g).sum().item()
                p[idx] = old
            fd = (lp - lm) / (2 * h)
            an = grads[name][idx].item()
            scale = max(abs(fd), abs(an), 1e-3 * grads[name].abs().max().item(), 1e-8)
            rel = abs(fd - an) / scale
            worst = max(worst, rel)
            assert abs(fd - an) < 1e-5 * scale + 1e-9, (name, idx, fd, an)
    # float32 oracle against float64: the noise floor the C comparison must live with
    res32 = unet_twin.run_case(model, inputs, names)
    out_err = np.abs(res32["output"] - out64.numpy()).max() / np.abs(out64.numpy()).max()
    g_err = {}
    for k, gr in grads.items():
        ref = gr.numpy()
        nrm = np.linalg.norm(ref)
        if nrm == 0:
            continue
        g_err[k] = np.linalg.norm(res32["grad." + names[k]] - ref) / nrm
    bad = max((k for k in g_err if not k.endswith("to_k.bias")), key=g_err.get)
    log(f"fd worst rel {worst:.2e}; fp32 vs fp64: output rel(max) {out_err:.2e}, "
        f"worst grad rel(norm) {g_err[bad]:.2e} ({bad}, to_k.bias aside)")
    big = {k: v for k, v in g_err.items() if v > 1e-4}
    log(f"grads with fp32-vs-fp64 rel(norm) > 1e-4: {sorted(big)}")
    assert out_err < 1e-4, out_err
    # d/d(to_k.bias) is zero in exact arithmetic (softmax is shift-invariant); skip it in the fp32 bound
    for k, v in g_err.items():
        if not k.endswith("to_k.bias"):
            assert v < 1e-3, (k, v)


def test_finite_differences_small():
    _fd_check(SMALL, ["conv_in.weight", "time_embedding.linear_1.weight", "down_blocks.0.resnets.1.norm1.bias",
                      "down_blocks.0.downsamplers.0.conv.weight", "down_blocks.1.attentions.0.to_q.weight",
                      "down_blocks.1.attentions.1.group_norm.weight", "mid_block.attentions.0.to_v.bias",
                      "mid_block.resnets.1.time_emb_proj.weight", "up_blocks.0.resnets.0.conv_shortcut.weight",
                      "up_blocks.1.attentions.2.to_out.0.weight", "up_blocks.2.upsamplers.0.conv.bias",
                      "conv_norm_out.weight", "conv_out.bias"], seed=1)


def test_finite_differences_variant():
    _fd_check(VARIANT, ["conv_in.weight", "time_embedding.linear_2.bias", "down_blocks.0.attentions.0.to_k.weight",
                        "down_blocks.2.attentions.0.to_q.weight", "mid_block.attentions.0.group_norm.bias",
                        "mid_block.resnets.0.conv1.weight", "up_blocks.3.attentions.1.to_out.0.weight",
                        "up_blocks.3.resnets.1.conv_shortcut.bias", "conv_out.weight"], seed=2)


def test_key_bias_gradient_is_zero():
    weights, inputs = unet_make_case.make_case(SMALL, seed=3)
    model = unet_twin.build(SMALL)
    unet_twin.load_weights(model, weights)
    _, _, _, _, _, grads = _double_grads(model, inputs)
    kb = grads["mid_block.attentions.0.to_k.bias"].abs().max().item()
    qb = grads["mid_block.attentions.0.to_q.bias"].abs().max().item()
    log(f"|d/d to_k.bias| = {kb:.1e} vs |d/d to_q.bias| = {qb:.1e} (float64)")
    assert kb < 1e-10 * max(qb, 1.0)


def _run_cli(d, config, old_names, extra=()):
    cfg, w, i, o = (os.path.join(d, n) for n in ("config.json", "w.safetensors", "in.safetensors",
                                                 "out.safetensors"))
    _write_json(config, cfg)
    mk = [PY, os.path.join(HERE, "unet_make_case.py"), cfg, w, i, "--seed", "5"]
    if old_names:
        mk.append("--old-attn-names")
    subprocess.run(mk, check=True)
    subprocess.run([PY, os.path.join(HERE, "unet_twin.py"), cfg, w, i, o, *extra], check=True)
    return unet_twin.st_load(w), unet_twin.st_load(i), unet_twin.st_load(o)


def test_cli_end_to_end_both_namings():
    with tempfile.TemporaryDirectory() as d:
        w_new, i_new, o_new = _run_cli(d, SMALL, False)
    with tempfile.TemporaryDirectory() as d:
        w_old, i_old, o_old = _run_cli(d, SMALL, True, ["--grad-input"])
    assert set(o_new) == {"output"} | {"grad." + k for k in w_new}
    assert set(o_old) == {"output", "grad_input.sample"} | {"grad." + k for k in w_old}
    assert any(".query." in k for k in o_old) and not any(".to_q." in k for k in o_old)
    assert np.array_equal(o_new["output"], o_old["output"])
    model = unet_twin.build(SMALL)
    pre = unet_twin._attention_prefixes(model)
    for k, v in o_new.items():
        if k.startswith("grad."):
            assert np.array_equal(v, o_old["grad." + unet_twin.old_name(k[5:], pre)]), k
    # CLI result equals an in-process run
    names = unet_twin.load_weights(model, w_new)
    res = unet_twin.run_case(model, i_new, names)
    for k in res:
        assert np.array_equal(res[k], o_new[k]), k
    assert o_new["output"].shape == (2, 3, 16, 16)
    log(f"output std {o_new['output'].std():.3f}")


def test_weight_errors_name_the_tensor():
    with tempfile.TemporaryDirectory() as d:
        cfg, w, i, o = (os.path.join(d, n) for n in ("c.json", "w.st", "i.st", "o.st"))
        _write_json(SMALL, cfg)
        weights, inputs = unet_make_case.make_case(SMALL)
        unet_twin.st_save(i, inputs)
        cases = []
        x = dict(weights)
        del x["up_blocks.1.attentions.0.to_k.weight"]
        cases.append((x, "up_blocks.1.attentions.0.to_k.weight"))
        x = dict(weights, **{"up_blocks.9.foo.weight": np.zeros(3, np.float32)})
        cases.append((x, "up_blocks.9.foo.weight"))
        x = dict(weights)
        x["conv_out.weight"] = x["conv_out.weight"].reshape(-1)
        cases.append((x, "conv_out.weight"))
        x = dict(weights)
        x["mid_block.attentions.0.query.weight"] = x["mid_block.attentions.0.to_q.weight"]
        cases.append((x, "mid_block.attentions.0.to_q.weight"))
        for x, name in cases:
            unet_twin.st_save(w, x)
            r = subprocess.run([PY, os.path.join(HERE, "unet_twin.py"), cfg, w, i, o], capture_output=True,
                               text=True)
            assert r.returncode != 0 and name in r.stderr, (name, r.returncode, r.stderr)


def test_safetensors_roundtrip():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.safetensors")
        t = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b.c": np.float32(3.5) * np.ones((), np.float32),
             "e": np.zeros((0, 4), np.float32)}
        unet_twin.st_save(p, t, {"k": "v"})
        r = unet_twin.st_load(p)
        assert set(r) == set(t)
        for k in t:
            assert r[k].shape == t[k].shape and r[k].dtype == np.float32 and np.array_equal(r[k], t[k])
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        assert n % 8 == 0


def main():
    tests = [(k, v) for k, v in globals().items() if k.startswith("test_") and callable(v)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"PASS {name}")
            passed += 1
        except Exception as e:  # noqa: BLE001
            import traceback
            print(f"FAIL {name}: {e!r}")
            if VERBOSE:
                traceback.print_exc()
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
