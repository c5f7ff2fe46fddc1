#!/usr/bin/env bash
# `npm run test:lavapipe`: the kernel, device and model tests in Node on lavapipe (scripts/lavapipe.sh),
# at subgroup size 8 (its default) and 16 (LP_NATIVE_VECTOR_WIDTH=512, on CPUs with AVX-512), besides
# the SwiftShader runs of `npm test`. Extra arguments go to vitest (a test file, -t NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
env=$(bash scripts/lavapipe.sh)
[ $# -gt 0 ] || set -- test/kernels test/gpu test/model
widths=(256)
grep -q avx512f /proc/cpuinfo && widths+=(512) || echo "no AVX-512: lavapipe runs at subgroup size 8 only" >&2
for width in "${widths[@]}"; do
  echo "lavapipe, LP_NATIVE_VECTOR_WIDTH=$width"
  env $env LP_NATIVE_VECTOR_WIDTH="$width" npx vitest run --project node "$@"
done
