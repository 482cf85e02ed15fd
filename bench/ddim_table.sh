#!/usr/bin/env bash
# The DDIM paper's Table 1 on Fashion-MNIST: FID of N samples (same seed, so the same initial noises, in
# every cell) for S in {10, 20, 50, 100, 200} and eta in {0, 0.2, 0.5, 1} plus sigma-hat, then S = 1000 for
# eta = 0 and for DDPM; the timesteps use the DDIM code's uniform spacing. FID is `diffuse sample --fid
# fashion-mnist`: against the training set's statistics over the shipped feature network.
#
#   bench/ddim_table.sh RUN [N=1000] [OUT=RUN/ddim-table]
#
# Resumable: each finished cell is a line of OUT/cells.csv (sampler,S,eta,n,fid,seconds) and is skipped when
# the script runs again, so a long table can be run over several sittings (cheapest cells first). The
# markdown table is printed at the end and written to OUT/table.md. Extra flags for `diffuse sample` (e.g.
# --threads 1) go in DIFFUSE_SAMPLE_FLAGS.
set -euo pipefail
run=${1:?usage: bench/ddim_table.sh RUN [N] [OUT]}
n=${2:-1000}
out=${3:-$run/ddim-table}
bin=$(dirname "$0")/../build/diffuse
mkdir -p "$out"
csv=$out/cells.csv
[ -f "$csv" ] || echo "sampler,S,eta,n,fid,seconds" > "$csv"

cell() { # sampler S eta(or sigma-hat)
    local sampler=$1 s=$2 eta=$3
    if grep -q "^$sampler,$s,$eta,$n," "$csv"; then return; fi
    local flags=(--sampler "$sampler" --steps "$s" --spacing uniform)
    [ "$sampler" = ddim ] && { [ "$eta" = sigma-hat ] && flags+=(--sigma-hat) || flags+=(--eta "$eta"); }
    echo "== $sampler S=$s eta=$eta: $n samples"
    local t0 log
    t0=$(date +%s.%N)
    log=$("$bin" sample --model "$run" "${flags[@]}" --n "$n" --batch 100 --seed 0 \
              --out "$out/$sampler-$s-$eta.npy" --fid fashion-mnist ${DIFFUSE_SAMPLE_FLAGS:-} | tee /dev/stderr)
    local fid secs
    fid=$(sed -n 's/^FID \([0-9.e+-]*\):.*/\1/p' <<< "$log")
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    [ -n "$fid" ] || { echo "no FID in the output of diffuse sample" >&2; exit 1; }
    printf "%s,%s,%s,%s,%s,%.0f\n" "$sampler" "$s" "$eta" "$n" "$fid" "$secs" >> "$csv"
}

etas="0 0.2 0.5 1 sigma-hat"
for s in 10 20 50 100 200; do for e in $etas; do cell ddim "$s" "$e"; done; done
cell ddim 1000 0
cell ddpm 1000 -

# the table: rows eta, columns S
{
    echo "FID of $n samples (fashion-mnist features), model $run"
    echo
    echo "| eta \\ S | 10 | 20 | 50 | 100 | 200 | 1000 |"
    echo "|---|---|---|---|---|---|---|"
    for e in $etas; do
        row="| $e |"
        for s in 10 20 50 100 200 1000; do
            v=$(awk -F, -v s="$s" -v e="$e" -v n="$n" '$1=="ddim" && $2==s && $3==e && $4==n {print $5}' "$csv")
            [ "$s" = 1000 ] && [ "$e" != 0 ] && v=""
            row="$row ${v:-} |"
        done
        echo "$row"
    done
    v=$(awk -F, -v n="$n" '$1=="ddpm" && $4==n {print $5}' "$csv")
    echo "| DDPM (1000 steps) | | | | | | ${v:-} |"
    echo
    echo "wall time of each cell (s): see $csv"
} | tee "$out/table.md"
