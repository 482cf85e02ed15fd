#!/usr/bin/env bash
# The DDIM paper's Table 1 on Fashion-MNIST: FID of N samples (same seed, so the same initial noises, in
# every cell) for S in {10, 20, 50, 100, 200} and eta in {0, 0.2, 0.5, 1} plus sigma-hat, then S = 1000 for
# eta = 0 and for DDPM. As the DDIM code: the timesteps use its uniform spacing, and the predicted x0 is
# clipped to [-1, 1] by DDPM only (its ddpm_steps clamps; generalized_steps, every DDIM cell, does not).
# FID is over the shipped Fashion-MNIST feature network, against the training set.
#
#   bench/ddim_table.sh RUN [N=1000] [OUT=RUN/ddim-table]
#
# Nothing is lost when it stops: each cell is made in pieces of 100 images (`diffuse sample --first`, into
# OUT/cells/CELL/ as numbered PNGs), a finished piece is never redone, and a finished cell is a line of
# OUT/cells.csv (sampler,S,eta,n,fid,seconds), so a long table can be run over several sittings (cheapest
# cells first). CELLS_S="10 20" restricts a run to some S and CELLS_SAMPLER=ddim|ddpm to one sampler (two
# runs on different cells can share the machine, e.g. each with --threads 1); CELLS_S=none only prints the
# table of what is finished. DIFFUSE_BIN runs another binary (a copy, so that rebuilding cannot touch a run).
# PIECES=K/M makes pieces K, K+M, K+2M... only, so M runs can share one long cell (each --threads 1); the run
# that finds every piece done computes the cell's FID.
# CSV=FILE keeps the finished cells in FILE instead of OUT/cells.csv (the repository's
# docs/ddim-table/cells.csv, so that they outlive the machine; the pieces of an unfinished cell do not).
# Extra flags for `diffuse sample` (e.g. --threads 1) go in DIFFUSE_SAMPLE_FLAGS. The markdown table is
# printed at the end and written to OUT/table.md.
set -euo pipefail
run=${1:?usage: bench/ddim_table.sh RUN [N] [OUT]}
n=${2:-1000}
out=${3:-$run/ddim-table}
bin=${DIFFUSE_BIN:-$(dirname "$0")/../build/diffuse}
piece=100
mkdir -p "$out/cells"
csv=${CSV:-$out/cells.csv}
[ -f "$csv" ] || echo "sampler,S,eta,n,fid,seconds" > "$csv"
only=" ${CELLS_S:-10 20 50 100 200 1000} "

cell() { # sampler S eta(or sigma-hat or -)
    local sampler=$1 s=$2 eta=$3
    [[ $only == *" $s "* ]] || return 0
    [ -z "${CELLS_SAMPLER:-}" ] || [ "$CELLS_SAMPLER" = "$sampler" ] || return 0
    grep -q "^$sampler,$s,$eta,$n," "$csv" && return 0
    local flags=(--sampler "$sampler" --steps "$s" --spacing uniform --clip-sample true)
    [ "$sampler" = ddim ] && flags=(--sampler ddim --steps "$s" --spacing uniform --clip-sample false)
    [ "$sampler" = ddim ] && { [ "$eta" = sigma-hat ] && flags+=(--sigma-hat) || flags+=(--eta "$eta"); }
    local dir=$out/cells/$sampler-$s-$eta
    mkdir -p "$dir"
    echo "== $sampler S=$s eta=$eta: $n samples in $dir"
    local mine=${PIECES:-0/1} done=1
    for ((first = 0; first < n; first += piece)); do
        local k=$((n - first < piece ? n - first : piece))
        [ -f "$dir/$(printf %06d $((first + k - 1))).png" ] && continue
        if (( first / piece % ${mine#*/} != ${mine%/*} )); then done=0; continue; fi
        local t0=$(date +%s.%N)
        "$bin" sample --model "$run" "${flags[@]}" --n "$k" --first "$first" --batch 100 --seed 0 \
            --out "$dir/" ${DIFFUSE_SAMPLE_FLAGS:-} > /dev/null
        echo "$first $(echo "$(date +%s.%N) - $t0" | bc)" >> "$dir/seconds"
    done
    for ((first = 0; first < n; first += piece)); do # another run's pieces may still be missing
        local k=$((n - first < piece ? n - first : piece))
        [ -f "$dir/$(printf %06d $((first + k - 1))).png" ] || done=0
    done
    [ $done = 1 ] || { echo "   pieces of other runs still missing: no FID yet"; return 0; }
    local log fid secs
    log=$("$bin" fid "$dir" fashion-mnist 2>/dev/null)
    fid=$(sed -n 's/^FID \([0-9.e+-]*\).*/\1/p' <<< "$log")
    secs=$(awk '{s += $2} END {printf "%.0f", s}' "$dir/seconds")
    [ -n "$fid" ] || { echo "no FID from diffuse fid $dir" >&2; exit 1; }
    echo "   FID $fid ($secs s of sampling)"
    printf "%s,%s,%s,%s,%s,%s\n" "$sampler" "$s" "$eta" "$n" "$fid" "$secs" >> "$csv"
}

etas="0 0.2 0.5 1 sigma-hat"
for s in 10 20 50 100 200; do for e in $etas; do cell ddim "$s" "$e"; done; done
cell ddim 1000 0
cell ddpm 1000 -

# the table: rows eta, columns S; then the sampling time of each column
{
    echo "FID of $n samples (Fashion-MNIST feature network), model $run; blank: not yet measured"
    echo
    echo "| eta \\ S | 10 | 20 | 50 | 100 | 200 | 1000 |"
    echo "|---|---|---|---|---|---|---|"
    for e in $etas -; do
        [ "$e" = - ] && row="| DDPM |" || row="| $e |"
        for s in 10 20 50 100 200 1000; do
            v=$(awk -F, -v s="$s" -v e="$e" -v n="$n" '$2==s && $3==e && $4==n {print $5}' "$csv")
            row="$row ${v:-} |"
        done
        echo "$row"
    done
    row="| seconds per cell (mean) |"
    for s in 10 20 50 100 200 1000; do
        v=$(awk -F, -v s="$s" -v n="$n" '$2==s && $4==n {t += $6; c++} END {if (c) printf "%.0f", t / c}' "$csv")
        row="$row ${v:-} |"
    done
    echo "$row"
} | tee "$out/table.md"
