#!/usr/bin/env bash
# `npm run test:lavapipe`: only the lavapipe projects of `npm test` (vite.config.ts, which decides the
# subgroup sizes: 8, and 16 on CPUs with AVX-512): the kernel, device and model tests in Node on Mesa's
# lavapipe (scripts/lavapipe.sh). Extra arguments go to vitest (a test file, -t NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lavapipe.sh >/dev/null
npx vitest run --project 'lavapipe-*' "$@"
