#!/usr/bin/env bash
# The GPU kit: on an x86-64 Linux machine with a GPU driver but no Node and no network, run the GPU test
# files, the kernel and training benchmarks, and the same models and batches in PyTorch (fp32 and bf16)
# as the reference for loss and speed. Pack the kit first where npm works: `npm run gpu:pack`.
#
#   bash bench/gpu/run.sh [OUT_DIR]     (default: $OUT when set, else bench/results/gpu)
#
# Writes into OUT_DIR: kit.log, tests.json, kernels-node.json, train-node.json, torch.json, summary.md.
# KIT_STEPS picks steps (default "tests bench reference"; the summary always runs), so a machine with a
# per-command time limit can run them in separate calls into the same OUT_DIR.
# Runs on any Vulkan device Dawn accepts, SwiftShader included (then with the benchmarks' software preset).
set -uo pipefail
cd "$(dirname "$0")/../.."
kit=.carry/gpu-kit
out=${1:-${OUT:-bench/results/gpu}}
mkdir -p "$out"
exec > >(tee -a "$out/kit.log") 2>&1
[ -f "$kit/node.xz" ] || { echo "no kit in $kit: run 'npm run gpu:pack' first"; exit 2; }

# Node and dawn.node, unpacked outside the repository (so the packed kit stays small enough to carry).
work=${TMPDIR:-/tmp}/webgpu-finetune-gpu-kit
mkdir -p "$work"
cp -rp "$kit/app" "$kit/node_modules" "$work/" || exit 1
[ "$work/node" -nt "$kit/node.xz" ] || { xz -dc "$kit/node.xz" > "$work/node.part" && chmod +x "$work/node.part" && mv "$work/node.part" "$work/node"; } || exit 1
dawn="$work/node_modules/webgpu/dist/linux-x64/dawn.node"
[ "$dawn" -nt "$dawn.xz" ] || xz -dc "$dawn.xz" > "$dawn" || exit 1
node="$work/node"

# The Vulkan loader: the system's, else Debian's from the kit (into / as root, else beside the kit).
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  for deb in "$kit"/debs/*.deb; do
    if [ "$(id -u)" -eq 0 ]; then dpkg -x "$deb" /; else dpkg -x "$deb" "$work/sysroot"; fi
  done
  if [ "$(id -u)" -eq 0 ]; then ldconfig; else export LD_LIBRARY_PATH="$work/sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"; fi
fi
# NVIDIA's container images keep the driver's Vulkan manifest outside the loader's search path.
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nvidia_icd" ]; then export VK_DRIVER_FILES=$nvidia_icd; fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

echo "node $("$node" --version); $(uname -m); $(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
status=0
steps=" ${KIT_STEPS:-tests bench reference} "
step() { echo; echo "== $1"; shift; "$@" || { echo "FAILED: $*"; status=1; }; }
[[ $steps == *" tests "* ]] && step "tests" "$node" "$work/app/kit.mjs" tests --out "$out"
[[ $steps == *" bench "* ]] && step "benchmarks" "$node" "$work/app/kit.mjs" bench --out "$out"
if [[ $steps == *" reference "* ]]; then
  ref=$(mktemp -d)
  step "reference inputs" "$node" "$work/app/kit.mjs" reference --out "$ref"
  python=${PYTHON:-python3}
  if "$python" -c "import torch" 2>/dev/null; then
    step "PyTorch reference" "$python" bench/gpu/torch_reference.py "$ref" "$out/torch.json"
  else
    echo; echo "== PyTorch reference: skipped ($python has no torch here; PYTHON names another)"
  fi
  rm -rf "$ref"
fi
step "summary" "$node" "$work/app/kit.mjs" summary --out "$out"
exit $status
