#!/usr/bin/env bash
# `npm run test:reference`: regenerates the reference fixtures with the real libraries (PyTorch,
# transformers 5 and 4, PEFT, bitsandbytes; pinned below, installed into .venv-reference/ on first use)
# and runs the interop tests on them. The fixtures are deterministic: `git status test/fixtures/reference` afterwards
# shows what a library release changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
venvs=${REFERENCE_VENVS:-.venv-reference}
pip_install() { "$1/bin/pip" install --quiet --retries 0 "${@:2}"; }
if [ ! -x "$venvs/t5/bin/python" ]; then
  python3 -m venv "$venvs/t5"
  pip_install "$venvs/t5" torch==2.13.0+cpu transformers==5.18.0 peft==0.21.0
fi
if [ ! -x "$venvs/t4/bin/python" ]; then
  # transformers 4.57 declares huggingface-hub < 1.0, which it needs only for downloads (see transformers4.py).
  python3 -m venv "$venvs/t4"
  pip_install "$venvs/t4" torch==2.13.0+cpu
  pip_install "$venvs/t4" --no-deps transformers==4.57.6
  pip_install "$venvs/t4" 'tokenizers>=0.22,<0.23' safetensors huggingface-hub numpy pyyaml regex requests tqdm filelock packaging
fi
"$venvs/t5/bin/python" scripts/reference/make_fixtures.py "$venvs/t4/bin/python"
npx tsx scripts/reference/engine-adapters.ts
# Super-Tuning is on PEFT's main branch only: PEFT_MAIN names a checkout of it (installed once, beside the
# pinned release); without one its fixtures stay as committed.
if [ -n "${PEFT_MAIN:-}" ]; then
  if [ ! -x "$venvs/peft-main/bin/python" ]; then
    python3 -m venv "$venvs/peft-main"
    pip_install "$venvs/peft-main" torch==2.13.0+cpu transformers==5.18.0 accelerate psutil
    pip_install "$venvs/peft-main" --no-deps --no-build-isolation "$PEFT_MAIN"
  fi
  "$venvs/peft-main/bin/python" scripts/reference/make_supertuning_fixtures.py
else
  echo "PEFT_MAIN is not set: the Super-Tuning fixtures are kept as committed" >&2
fi
# bitsandbytes is not on the package index: BNB_SOURCE names a checkout of it, installed without its
# native library (its plain-torch backend runs on the CPU); without one its fixtures stay as committed.
if [ -n "${BNB_SOURCE:-}" ]; then
  if [ ! -x "$venvs/bnb/bin/python" ]; then
    python3 -m venv "$venvs/bnb"
    pip_install "$venvs/bnb" torch==2.13.0+cpu transformers==5.18.0 accelerate scikit-build-core trove-classifiers
    BNB_SKIP_CMAKE=1 pip_install "$venvs/bnb" --no-deps --no-build-isolation "$BNB_SOURCE"
  fi
  "$venvs/bnb/bin/python" scripts/reference/make_bnb_fixtures.py
else
  echo "BNB_SOURCE is not set: the bitsandbytes fixtures are kept as committed" >&2
fi
git status --short -- test/fixtures/reference
npx vitest run --project node test/interop
