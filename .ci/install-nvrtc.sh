#!/usr/bin/env bash
# Installs NVRTC 13.0 and the CUDA 13.0 headers from PyPI wheels into .ci/cuda (no GPU, no
# nvcc, no root needed) and writes .ci/cuda/env.sh with the two exports the build needs:
#   LD_LIBRARY_PATH  so cudarc can dlopen libnvrtc.so.13 (and it, libnvrtc-builtins)
#   CUDA_INCLUDE     the CUDA headers, passed to NVRTC as --include-path. The kernels include
#                    only their own common.cuh and blake3.cuh (no CUDA header), so today this
#                    only keeps CI like a GPU host, where /usr/local/cuda/include is on the path.
# NVRTC is pinned to 13.0 on purpose: its PTX (ISA 9.0) is what driver 580 accepts.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="$PWD/.ci/cuda"
lib="$dest/nvidia/cu13/lib"
inc="$dest/nvidia/cu13/include"

if [[ -f "$lib/libnvrtc.so.13" && -f "$inc/cuda_bf16.h" ]]; then
  echo "NVRTC already installed in $dest"
else
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dest" \
    "nvidia-cuda-nvrtc==13.0.88" "nvidia-cuda-runtime==13.0.96"
fi

cat >"$dest/env.sh" <<ENV
export LD_LIBRARY_PATH="$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export CUDA_INCLUDE="$inc"
ENV
echo "wrote $dest/env.sh; source it or run:"
cat "$dest/env.sh"
