#!/usr/bin/env bash
# `npm run test:lavapipe`: only the lavapipe projects of `npm test` (vite.config.ts): the kernel, device
# and model tests in Node on Mesa's lavapipe (scripts/lavapipe.sh) at subgroup size 8 and, on CPUs with
# AVX-512, 16. Extra arguments go to vitest (a test file, -t NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lavapipe.sh >/dev/null
projects=(--project lavapipe-8)
grep -q avx512f /proc/cpuinfo && projects+=(--project lavapipe-16) || echo "no AVX-512: lavapipe runs at subgroup size 8 only" >&2
npx vitest run "${projects[@]}" "$@"
