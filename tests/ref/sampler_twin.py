#!/usr/bin/python3
"""sampler_twin: the oracle for tests/test_sampler.c. diffusers' DDPMScheduler.step / DDIMScheduler.step written
out in torch (the formulas of diffusers' scheduling_ddpm.py / scheduling_ddim.py: step(), _get_variance(),
_threshold_sample(), set_timesteps()), the DDIM code's (ermongroup/ddim) "uniform" and "quad" sequences, and the
beta schedules. diffusers itself is not needed.

Three modes:

  One step (or many):
    sampler_twin.py INPUTS OUT [--scheduler ddpm|ddim] [--eta E] [--prediction epsilon|sample|v_prediction]
        [--clip 0|1] [--clip-range R] [--thresholding 0|1] [--ratio 0.995] [--max-value V]
        [--variance fixed_small|fixed_large] [--beta-schedule linear|scaled_linear|squaredcos_cap_v2|sigmoid|quad]
        [--beta-start B0] [--beta-end B1] [--T T] [--set-alpha-to-one 0|1] [--noise-rule t|tprev]
    INPUTS holds x (B,C,H,W), model_output, noise (same shape) and t, t_prev (1-element arrays). The step goes from
    t to t_prev (given explicitly, as diffusers' previous_timestep() looks it up in its sequence); t_prev < 0 means
    abar = 1 (DDPM; DDIM with set_alpha_to_one) or abar_0 (DDIM without). For DDPM the respaced step uses
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev as diffusers does. OUT receives prev_sample and
    pred_original_sample computed in float32 as diffusers does, and prev_sample_f64 / pred_original_sample_f64:
    the same formulas evaluated in float64 on the (float32) schedule, free of float32 cancellation.
    --noise-rule: diffusers' DDPM adds noise when t > 0 ("t", the default); "tprev" adds it only when t_prev >= 0
    (the rule of diffuse's sampler.h, which differs from diffusers only for a step from t > 0 to t_prev < 0).
    Batch form: if INPUTS' metadata has "cases" = N, case k's tensors are named "k.x", "k.model_output", ...
    and metadata "k" holds that case's flags (over the command line's); OUT then holds "k.prev_sample", ...

  Timestep sequences:
    sampler_twin.py --timesteps S[,S...] --spacing NAME[,NAME...] [--steps-offset K] [--T T]
    prints each sequence, decreasing, space-separated: one line for one (S, NAME), else one line per pair as
    "NAME S: t0 t1 ...". leading/trailing/linspace: diffusers' set_timesteps; uniform/quad: the DDIM code's
    sample_image (uniform: skip = T // S, range(0, T, skip); quad: int(linspace(0, sqrt(0.8 T), S) ** 2)).

  Schedules:
    sampler_twin.py --schedule [OUT] --beta-schedule NAME[,NAME...] [--beta-start B0[,...]] [--beta-end B1[,...]]
        [--T T[,...]]
    betas and alphas_cumprod (float32, as diffusers holds them) of each schedule: printed as "NAME betas ..." and
    "NAME alphas_cumprod ..." lines (%.9g), or, with OUT, written as "i.betas" and "i.alphas_cumprod" (i = the
    position in the list) to a safetensors file.
"""
import argparse
import math
import os
import shlex
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import load, load_metadata, save  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# timestep sequences

def timesteps(S, T, spacing, steps_offset=0):
    """The decreasing sequence (a list of ints) of a spacing rule."""
    if spacing == "uniform":  # the DDIM code: skip = T // S, seq = range(0, T, skip)
        skip = T // S
        seq = list(range(0, T, skip))
        return seq[::-1]
    if spacing == "quad":  # the DDIM code: (linspace(0, sqrt(0.8 T), S) ** 2) then int()
        seq = np.linspace(0, np.sqrt(T * 0.8), S) ** 2
        return [int(v) for v in list(seq)][::-1]
    if spacing == "linspace":  # diffusers
        return [int(v) for v in np.linspace(0, T - 1, S).round()[::-1].copy().astype(np.int64)]
    if spacing == "leading":
        ratio = T // S
        ts = (np.arange(0, S) * ratio).round()[::-1].copy().astype(np.int64)
        ts += steps_offset
        return [int(v) for v in ts]
    if spacing == "trailing":
        ratio = T / S
        ts = np.round(np.arange(T, 0, -ratio)).astype(np.int64)
        ts -= 1
        return [int(v) for v in ts]
    raise SystemExit(f"sampler_twin: unknown spacing '{spacing}'")


# ---------------------------------------------------------------------------------------------------------------
# schedules (diffusers' DDPMScheduler.__init__; "quad" from the DDIM code)

def betas_for(schedule, beta_start, beta_end, T):
    import torch
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float32) ** 2
    if schedule == "squaredcos_cap_v2":
        def abar_fn(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        b = [min(1 - abar_fn((i + 1) / T) / abar_fn(i / T), 0.999) for i in range(T)]
        return torch.tensor(b, dtype=torch.float32)
    if schedule == "sigmoid":
        z = torch.linspace(-6, 6, T)
        return torch.sigmoid(z) * (beta_end - beta_start) + beta_start
    if schedule == "quad":  # ermongroup/ddim get_beta_schedule: float64 linspace of square roots, squared
        b = np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2
        return torch.from_numpy(b).float()
    raise SystemExit(f"sampler_twin: unknown beta schedule '{schedule}'")


def alphas_cumprod(betas):
    import torch
    return torch.cumprod(1.0 - betas, dim=0)


# ---------------------------------------------------------------------------------------------------------------
# one step

def threshold_sample(sample, ratio, max_value):
    """diffusers' _threshold_sample: per sample, s = quantile(|x0|, ratio) clamped to [1, max_value]; x0 is
    clamped to [-s, s] and divided by s."""
    import torch
    b = sample.shape[0]
    flat = sample.reshape(b, -1)
    s = torch.quantile(flat.abs(), ratio, dim=1)
    s = torch.clamp(s, min=1, max=max_value).unsqueeze(1)
    flat = torch.clamp(flat, -s, s) / s
    return flat.reshape(sample.shape)


def pred_x0_eps(o, x, a, prediction):
    b = 1 - a
    if prediction == "epsilon":
        x0 = (x - b ** 0.5 * o) / a ** 0.5
        eps = o
    elif prediction == "sample":
        x0 = o
        eps = (x - a ** 0.5 * x0) / b ** 0.5
    elif prediction == "v_prediction":
        x0 = a ** 0.5 * x - b ** 0.5 * o
        eps = a ** 0.5 * o + b ** 0.5 * x
    else:
        raise SystemExit(f"sampler_twin: unknown prediction '{prediction}'")
    return x0, eps


def process_x0(x0, o):
    if o.thresholding:
        return threshold_sample(x0, o.ratio, o.max_value)
    if o.clip:
        return x0.clamp(-o.clip_range, o.clip_range)
    return x0


def ddpm_step(abar, x, mo, noise, t, t_prev, o):
    """DDPMScheduler.step with prev_t = t_prev."""
    one = torch_one(abar)
    a_t = abar[t]
    a_prev = abar[t_prev] if t_prev >= 0 else one
    beta_prod_t = 1 - a_t
    beta_prod_t_prev = 1 - a_prev
    current_alpha_t = a_t / a_prev
    current_beta_t = 1 - current_alpha_t
    x0, _ = pred_x0_eps(mo, x, a_t, o.prediction)
    x0 = process_x0(x0, o)
    c0 = (a_prev ** 0.5 * current_beta_t) / beta_prod_t
    ct = current_alpha_t ** 0.5 * beta_prod_t_prev / beta_prod_t
    prev = c0 * x0 + ct * x
    add = t > 0 if o.noise_rule == "t" else t_prev >= 0
    if add:
        # _get_variance
        var = (1 - a_prev) / (1 - a_t) * current_beta_t
        var = var.clamp(min=1e-20)
        if o.variance == "fixed_large":
            var = current_beta_t
        elif o.variance != "fixed_small":
            raise SystemExit(f"sampler_twin: unknown variance '{o.variance}'")
        prev = prev + var ** 0.5 * noise
    return prev, x0


def ddim_step(abar, x, mo, noise, t, t_prev, o):
    """DDIMScheduler.step (use_clipped_model_output = False) with prev_timestep = t_prev."""
    final = torch_one(abar) if o.set_alpha_to_one else abar[0]
    a_t = abar[t]
    a_prev = abar[t_prev] if t_prev >= 0 else final
    beta_prod_t = 1 - a_t
    x0, eps = pred_x0_eps(mo, x, a_t, o.prediction)
    x0 = process_x0(x0, o)
    # _get_variance
    beta_prod_t_prev = 1 - a_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - a_t / a_prev)
    std = o.eta * variance ** 0.5
    direction = (1 - a_prev - std ** 2) ** 0.5 * eps
    prev = a_prev ** 0.5 * x0 + direction
    if o.eta > 0:
        prev = prev + std * noise
    return prev, x0


def torch_one(abar):
    import torch
    return torch.tensor(1.0, dtype=abar.dtype)


def step_case(tensors, o):
    import torch
    betas = betas_for(o.beta_schedule, o.beta_start, o.beta_end, o.T)
    abar32 = alphas_cumprod(betas)
    t = int(np.asarray(tensors["t"]).reshape(-1)[0])
    t_prev = int(np.asarray(tensors["t_prev"]).reshape(-1)[0])
    out = {}
    for dtype, abar, suffix in ((torch.float32, abar32, ""), (torch.float64, abar32.double(), "_f64")):
        x = torch.from_numpy(np.asarray(tensors["x"], np.float32)).to(dtype)
        mo = torch.from_numpy(np.asarray(tensors["model_output"], np.float32)).to(dtype)
        noise = torch.from_numpy(np.asarray(tensors["noise"], np.float32)).to(dtype)
        f = ddpm_step if o.scheduler == "ddpm" else ddim_step
        prev, x0 = f(abar, x, mo, noise, t, t_prev, o)
        out["prev_sample" + suffix] = prev.float()
        out["pred_original_sample" + suffix] = x0.float()
    return out


# ---------------------------------------------------------------------------------------------------------------

def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*")
    p.add_argument("--scheduler", default="ddpm", choices=["ddpm", "ddim"])
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--prediction", default="epsilon")
    p.add_argument("--clip", type=int, default=1)
    p.add_argument("--clip-range", type=float, default=1.0)
    p.add_argument("--thresholding", type=int, default=0)
    p.add_argument("--ratio", type=float, default=0.995)
    p.add_argument("--max-value", type=float, default=1.0)
    p.add_argument("--variance", default="fixed_small")
    p.add_argument("--beta-schedule", default="linear")
    p.add_argument("--beta-start", default="0.0001")
    p.add_argument("--beta-end", default="0.02")
    p.add_argument("--T", default="1000")
    p.add_argument("--set-alpha-to-one", type=int, default=1)
    p.add_argument("--noise-rule", default="t", choices=["t", "tprev"])
    p.add_argument("--timesteps", default=None)
    p.add_argument("--spacing", default="leading")
    p.add_argument("--steps-offset", type=int, default=0)
    p.add_argument("--schedule", action="store_true")
    return p


def scalarize(o):
    """Step mode: the schedule flags as single numbers."""
    o.beta_start, o.beta_end, o.T = float(o.beta_start), float(o.beta_end), int(o.T)
    return o


def main(argv):
    p = parser()
    o = p.parse_args(argv)
    if o.timesteps is not None:
        Ss = [int(v) for v in o.timesteps.split(",")]
        names = o.spacing.split(",")
        T = int(o.T)
        lines = []
        for name in names:
            for S in Ss:
                seq = " ".join(str(v) for v in timesteps(S, T, name, o.steps_offset))
                lines.append(seq if len(Ss) == 1 and len(names) == 1 else f"{name} {S}: {seq}")
        print("\n".join(lines))
        return
    if o.schedule:
        names = o.beta_schedule.split(",")
        n = len(names)

        def spread(v, cast):
            vals = [cast(s) for s in str(v).split(",")]
            return vals * n if len(vals) == 1 else vals
        starts, ends, Ts = spread(o.beta_start, float), spread(o.beta_end, float), spread(o.T, int)
        out = {}
        for i, name in enumerate(names):
            b = betas_for(name, starts[i], ends[i], Ts[i])
            ac = alphas_cumprod(b)
            if o.paths:
                out[f"{i}.betas"] = b.float()
                out[f"{i}.alphas_cumprod"] = ac.float()
            else:
                print(name, "betas", " ".join("%.9g" % v for v in b.tolist()))
                print(name, "alphas_cumprod", " ".join("%.9g" % v for v in ac.tolist()))
        if o.paths:
            save(o.paths[0], out)
        return
    if len(o.paths) != 2:
        p.error("step mode needs INPUTS and OUT")
    in_path, out_path = o.paths
    tensors = load(in_path)
    meta = load_metadata(in_path)
    out = {}
    if "cases" in meta:
        for k in range(int(meta["cases"])):
            ok = scalarize(p.parse_args(argv + shlex.split(meta.get(str(k), ""))))
            case = {name: tensors[f"{k}.{name}"] for name in ("x", "model_output", "noise", "t", "t_prev")}
            for name, v in step_case(case, ok).items():
                out[f"{k}.{name}"] = v
    else:
        out = step_case(tensors, scalarize(o))
    save(out_path, out)


if __name__ == "__main__":
    if "--timesteps" not in sys.argv:  # the sequences need numpy only; the rest torch, on one thread
        import torch
        torch.set_num_threads(1)
    main(sys.argv[1:])
