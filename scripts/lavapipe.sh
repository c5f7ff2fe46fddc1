#!/usr/bin/env bash
# Mesa's lavapipe (Vulkan on the CPU, offering shader-f16, subgroups and timestamp queries) beside
# SwiftShader, for `npm run test:lavapipe`: Debian bookworm-backports' mesa-vulkan-drivers and libdrm2
# extracted under .lavapipe/ (never installed system-wide, so Chromium and plain Node keep SwiftShader),
# with an ICD file pointing at them. The backports suite is added to the machine's own Debian apt
# source (root, once). Prints the environment that selects it: VK_ICD_FILENAMES and LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.lavapipe
if [ ! -f "$dir/lvp_icd.json" ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  policy=$(apt-cache policy mesa-vulkan-drivers 2>/dev/null || true)
  if [[ "$policy" != *bookworm-backports* ]]; then
    src=/etc/apt/sources.list.d/debian.sources
    grep -q '^Suites: bookworm bookworm-updates$' "$src" || { echo "lavapipe: no 'Suites: bookworm bookworm-updates' line in $src to add bookworm-backports to" >&2; exit 1; }
    $sudo sed -i '0,/^Suites: bookworm bookworm-updates$/s//Suites: bookworm bookworm-updates bookworm-backports/' "$src"
    $sudo apt-get update -qq
  fi
  rm -rf "$dir" && mkdir -p "$dir/debs"
  (cd "$dir/debs" && apt-get download -qq mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports 2>&1 | grep -v 'unsandboxed' >&2 || true)
  for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
  lib=$(realpath "$dir/root/usr/lib/x86_64-linux-gnu")
  [ -f "$lib/libvulkan_lvp.so" ] || { echo "lavapipe: libvulkan_lvp.so missing after extracting the packages" >&2; exit 1; }
  missing=$(ldd "$lib/libvulkan_lvp.so" | awk '/not found/ {print $1}')
  [ -z "$missing" ] || { echo "lavapipe: libraries missing for libvulkan_lvp.so: $missing (Debian: apt-get install libllvm15)" >&2; exit 1; }
  printf '{"file_format_version":"1.0.1","ICD":{"library_path":"%s/libvulkan_lvp.so","api_version":"1.4.305"}}\n' "$lib" > "$dir/lvp_icd.json"
fi
echo "VK_ICD_FILENAMES=$(realpath "$dir/lvp_icd.json") LD_LIBRARY_PATH=$(realpath "$dir/root/usr/lib/x86_64-linux-gnu")"
