#!/usr/bin/env bash
# Wall time of 64 samples with DDPM (all 1000 steps) and with DDIM (50 steps) from one model, and the ratio.
#   bench/sampling_times.sh RUN [N=64] [THREADS=0]
set -euo pipefail
run=${1:?usage: bench/sampling_times.sh RUN [N] [THREADS]}
n=${2:-64}
threads=${3:-0}
bin=$(dirname "$0")/../build/diffuse
out=$(mktemp -d)
t() { local s; s=$(date +%s.%N); "$@" > /dev/null 2>&1; awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { print b - a }'; }
ddpm=$(t "$bin" sample --model "$run" --sampler ddpm --n "$n" --batch "$n" --threads "$threads" --out "$out/ddpm.png")
ddim=$(t "$bin" sample --model "$run" --sampler ddim --steps 50 --n "$n" --batch "$n" --threads "$threads" --out "$out/ddim.png")
printf "%d samples: DDPM-1000 %.1f s, DDIM-50 %.1f s, ratio %.1fx (grids in %s)\n" "$n" "$ddpm" "$ddim" \
    "$(awk -v a="$ddpm" -v b="$ddim" 'BEGIN { print a / b }')" "$out"
