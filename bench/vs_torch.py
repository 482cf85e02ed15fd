#!/usr/bin/python3
"""diffuse against PyTorch on this machine, side by side in one run: the same U-Net (diffuse's preset, built in
torch by tests/ref/unet_twin.py from the config diffuse prints), the same batch and thread count, medians of
REPS repetitions after a warm-up, each case in fresh processes (diffuse, then torch). Peak RSS of each process
is read from the kernel (wait4). This script never imports torch itself: a child's peak RSS starts at its
parent's RSS when it is forked (Linux keeps the high-water mark across exec), so a parent holding torch (about
220 MB) showed diffuse's 142 MB batch-1 forward as 227 MB. Prints the table of ratios: diffuse in FP32 against
torch in FP32, then
diffuse --precision bf16 against torch FP32 (the ratio the targets name) and against torch under bf16
autocast.

  /usr/bin/python3 bench/vs_torch.py [--threads 2] [--reps 5] [--reps-b1 30] [--rounds 1] [--quick]

Batch-1 cases take --reps-b1 repetitions on both sides: one such forward is 10-100 ms, and a median of 5 of
them moved by 2x with one hiccup of the host (PyTorch measured 10.2 images/s once against its usual 20-22).

With --rounds R each case runs R times, the two sides alternating (diffuse, torch, diffuse, ...); a cell is the
median of the R medians, and the ratio column then also shows the range of the R paired ratios. The host's
state drifts over minutes (both sides' speeds moved by 20% and more between runs of this script), and
alternating puts each pair in the same state.

Run it on an otherwise idle machine: these are 2-core machines and anything else running distorts both sides.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from statistics import median

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DIFFUSE = os.path.join(ROOT, "build", "diffuse")


def run(cmd, env=None, may_fail=False):
    """Runs cmd, returns (stdout, peak RSS in MB); (None, error's last line) if it fails and may_fail."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = p.stdout.read().decode()
    err = p.stderr.read().decode()
    _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        if may_fail:
            return None, (err.strip().splitlines() or ["?"])[-1]
        sys.exit(f"failed: {' '.join(cmd)}\n{out}\n{err}")
    return out, ru.ru_maxrss / 1024.0


def diffuse_case(preset, mode, batch, threads, reps, precision="fp32", peak=None):
    """(median images/s, peak MB); with peak (a list), appends the GEMM peak diffuse measured (GFLOP/s)."""
    cmd = [DIFFUSE, "bench", "--preset", preset, "--batch", str(batch), "--threads", str(threads), "--reps", str(reps),
           "--precision", precision]
    if mode == "train":
        cmd.append("--train")
    out, rss = run(cmd)
    m = re.search(r"([\d.]+) images/s \(median ([\d.]+)\)", out)
    if peak is not None:
        p = re.search(r"measured GEMM peak \(([\d.]+) GFLOP/s\)", out)
        peak.append(float(p.group(1)) if p else float("nan"))
    return float(m.group(2)), rss


def torch_case(config, mode, batch, threads, reps, precision="fp32"):
    """(median images/s, peak MB); under bf16 autocast, which torch 1.13 fails on some models, (None, why)."""
    out, rss = run(["/usr/bin/python3", os.path.join(HERE, "torch_case.py"), config, mode, str(batch), str(threads),
                    str(reps), precision], may_fail=precision != "fp32")
    if out is None:
        return None, rss
    m = re.search(r"images/s ([\d.]+) ([\d.]+)", out)
    return float(m.group(2)), rss


def summary(results):
    """(median value, largest MB) of a list of (value, MB); (None, the last error) if any run failed."""
    if any(v is None for v, _ in results):
        return None, results[-1][1]
    return median([v for v, _ in results]), max(m for _, m in results)


def alternate(rounds, first, second):
    """Runs first() and second() (each returning (value, MB)) rounds times in turn. Returns summary() of each
    and the paired ratios first / second of the rounds."""
    a, b = [], []
    for _ in range(rounds):
        a.append(first())
        b.append(second())
    ratios = [x[0] / y[0] for x, y in zip(a, b) if x[0] and y[0]]
    return summary(a), summary(b), ratios


def spread(ratios):
    """The range of paired ratios, when there are several rounds."""
    return f", rounds {min(ratios):.2f}-{max(ratios):.2f}x" if len(ratios) > 1 else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--reps-b1", type=int, default=30, help="repetitions of the batch-1 cases (both sides)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating runs of each case (median of them)")
    ap.add_argument("--quick", action="store_true", help="only fmnist-m forward at batch 1 and 64")
    ap.add_argument("--no-bf16", action="store_true", help="FP32 only")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="diffuse-bench-")
    configs = {}
    for preset in ("fmnist-m", "cifar10-ddpm"):
        path = os.path.join(tmp, preset + ".json")
        out, _ = run([DIFFUSE, "info", "--preset", preset, "--json"])
        open(path, "w").write(out)
        configs[preset] = path
    cases = [("fmnist-m", "train", 64), ("fmnist-m", "forward", 64), ("fmnist-m", "forward", 1),
             ("cifar10-ddpm", "forward", 16)]
    if a.quick:
        cases = cases[1:3]
    isa = re.search(r"(\w+) micro-kernel", run([DIFFUSE, "bench", "--preset", "tiny", "--batch", "1", "--reps", "1"])[0])
    version = run(["/usr/bin/python3", "-c", "import torch; print(torch.__version__)"])[0].strip()
    print(f"diffuse vs PyTorch {version}, {a.threads} threads, median of {a.reps} (batch 1: {a.reps_b1}), "
          f"{a.rounds} round{'s' if a.rounds > 1 else ''}, diffuse GEMM micro-kernel: {isa.group(1) if isa else '?'}")
    R = a.rounds
    print(f"{'case':34} {'diffuse img/s':>14} {'torch img/s':>12} {'ratio':>7} {'diffuse MB':>11} {'torch MB':>9}")
    torch_fp32 = {}
    for preset, mode, batch in cases:
        reps = a.reps_b1 if batch == 1 else a.reps
        (d, drss), (t, trss), ratios = alternate(R, lambda: diffuse_case(preset, mode, batch, a.threads, reps),
                                                 lambda: torch_case(configs[preset], mode, batch, a.threads, reps))
        torch_fp32[(preset, mode, batch)] = t
        name = f"{preset} {mode} batch {batch}"
        print(f"{name:34} {d:14.2f} {t:12.2f} {d / t:6.2f}x {drss:11.0f} {trss:9.0f}{spread(ratios)[1:]}", flush=True)
    if not a.no_bf16:
        print(f"\n{'case, diffuse --precision bf16':34} {'diffuse img/s':>14} {'vs torch fp32':>14} "
              f"{'torch bf16 img/s':>17} {'vs torch bf16':>14} {'diffuse MB':>11} {'torch MB':>9}")
        for preset, mode, batch in cases:
            reps = a.reps_b1 if batch == 1 else a.reps
            (d, drss), (t, trss), _ = alternate(R, lambda: diffuse_case(preset, mode, batch, a.threads, reps, "bf16"),
                                                lambda: torch_case(configs[preset], mode, batch, a.threads, reps, "bf16"))
            name = f"{preset} {mode} batch {batch}"
            vs = f"{t:17.2f} {d / t:13.2f}x {drss:11.0f} {trss:9.0f}" if t else f"{'fails':>17} {'':>14} {drss:11.0f}"
            print(f"{name:34} {d:14.2f} {d / torch_fp32[(preset, mode, batch)]:13.2f}x {vs}", flush=True)
            if not t:
                print(f"  (torch under bf16 autocast: {trss})")
    if not a.quick and a.threads > 1:
        p1, pn = [], []
        (one, _), (many, _), r = alternate(R, lambda: diffuse_case("fmnist-m", "train", 64, 1, a.reps, peak=p1),
                                           lambda: diffuse_case("fmnist-m", "train", 64, a.threads, a.reps, peak=pn))
        g, up = [y / x for x, y in zip(p1, pn)], [1 / x for x in r]
        print(f"diffuse fmnist-m training, 1 -> {a.threads} threads: {one:.2f} -> {many:.2f} images/s "
              f"({median(up):.2f}x{spread(up)})")
        print(f"the machine's GEMM peak as diffuse measured it in those runs, 1 -> {a.threads} threads: "
              f"{median(p1):.0f} -> {median(pn):.0f} GFLOP/s ({median(g):.2f}x{spread(g)})")
        (one, _), (many, _), r = alternate(R, lambda: torch_case(configs["fmnist-m"], "train", 64, 1, a.reps),
                                           lambda: torch_case(configs["fmnist-m"], "train", 64, a.threads, a.reps))
        up = [1 / x for x in r]
        print(f"PyTorch fmnist-m training, 1 -> {a.threads} threads: {one:.2f} -> {many:.2f} images/s "
              f"({median(up):.2f}x{spread(up)}; the same machine's scaling, for comparison)")


if __name__ == "__main__":
    main()
