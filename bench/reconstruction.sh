#!/usr/bin/env bash
# The DDIM paper's Table 2 on Fashion-MNIST: encode N test images to x_T with S deterministic DDIM steps,
# decode them back with S steps, and print the per-dimension mean squared error (images in [0, 1]).
#   bench/reconstruction.sh RUN [N=100] [S values...=10 20 50 100]
set -euo pipefail
run=${1:?usage: bench/reconstruction.sh RUN [N] [S...]}
n=${2:-100}
shift $(( $# >= 2 ? 2 : 1 ))
steps=${*:-10 20 50 100}
bin=${DIFFUSE_BIN:-$(dirname "$0")/../build/diffuse} # DIFFUSE_BIN: another binary (a copy that a rebuild cannot touch)
out=$(mktemp -d)
echo "S    reconstruction error (per-dimension MSE in [0, 1], $n fashion-mnist-test images)"
for s in $steps; do
    "$bin" encode --model "$run" --images fashion-mnist-test --n "$n" --steps "$s" --out "$out/z$s.npy" > /dev/null 2>&1
    err=$("$bin" decode --model "$run" --latents "$out/z$s.npy" --steps "$s" --out "$out/rec$s.png" \
              --reference fashion-mnist-test 2>/dev/null | sed -n 's/^reconstruction error: \([0-9.]*\).*/\1/p')
    printf "%-4s %s\n" "$s" "$err"
done
echo "(reconstructions in $out)"
