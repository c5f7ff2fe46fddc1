#!/usr/bin/env bash
# `npm run test:reference`: regenerates the reference fixtures with the real libraries (PyTorch,
# transformers 5 and 4, PEFT; pinned below, installed into .venv-reference/ on first use) and runs the
# interop tests on them. The fixtures are deterministic: `git status test/fixtures/reference` afterwards
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
git status --short -- test/fixtures/reference
npx vitest run --project node test/interop
