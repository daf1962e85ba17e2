#!/usr/bin/env bash
# Regenerates ptx/<family>.ptx from kernels/<family>.cu with NVRTC and assembles every module
# with ptxas for each architecture in PTXAS_ARCHS (so a kernel that does not compile fails here,
# not on the GPU machine).
#
#   ./compile-kernels.sh           regenerate ptx/ (commit the result with the sources)
#   ./compile-kernels.sh --check   fail if a committed .ptx is stale or missing (CI)
#
# Installs nothing. It needs NVRTC 12.4 and ptxas 12.4 (the committed PTX is NVRTC 12.4's: PTX
# ISA 8.4, loadable by drivers of CUDA 12.4 and later, 13.x included); from PyPI:
#
#   python3 -m pip install --no-deps --target /opt/cuda-wheels \
#       nvidia-cuda-nvrtc-cu12==12.4.127 nvidia-cuda-nvcc-cu12==12.4.131
#
# CUDA_WHEELS (default /opt/cuda-wheels) is where they are; NVRTC_LIB and PTXAS override the
# two paths. A different NVRTC version writes different PTX: --check refuses to compare then.
set -euo pipefail
cd "$(dirname "$0")"

WANT_NVRTC="12.4"
PTXAS_ARCHS=${PTXAS_ARCHS:-"sm_90 sm_80"}
WHEELS=${CUDA_WHEELS:-/opt/cuda-wheels}
NVRTC_LIB=${NVRTC_LIB:-$WHEELS/nvidia/cuda_nvrtc/lib/libnvrtc.so.12}
PTXAS=${PTXAS:-$WHEELS/nvidia/cuda_nvcc/bin/ptxas}

check=0
[[ "${1:-}" == "--check" ]] && check=1

missing=0
[[ -f "$NVRTC_LIB" ]] || { echo "NVRTC not found at $NVRTC_LIB" >&2; missing=1; }
[[ -x "$PTXAS" ]] || { echo "ptxas not found at $PTXAS" >&2; missing=1; }
if [[ $missing == 1 ]]; then
    cat >&2 <<MSG
Install NVRTC and ptxas $WANT_NVRTC (no CUDA toolkit or GPU needed):
    python3 -m pip install --no-deps --target $WHEELS \\
        nvidia-cuda-nvrtc-cu12==12.4.127 nvidia-cuda-nvcc-cu12==12.4.131
or point NVRTC_LIB and PTXAS at them.
MSG
    exit 2
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# libnvrtc-builtins sits next to libnvrtc.
export LD_LIBRARY_PATH="$(dirname "$NVRTC_LIB")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
banner=$(python3 compile-kernels.py "$NVRTC_LIB" "$out" kernels/*.cu)
echo "$banner"
if [[ "$banner" != "NVRTC $WANT_NVRTC,"* ]]; then
    echo "expected NVRTC $WANT_NVRTC (the committed PTX is its output)" >&2
    exit 2
fi

status=0
for ptx in "$out"/*.ptx; do
    family=$(basename "$ptx" .ptx)
    for arch in $PTXAS_ARCHS; do
        if ! "$PTXAS" -arch="$arch" "$ptx" -o "$out/$family.$arch.cubin"; then
            echo "ptxas -arch=$arch failed on $family" >&2
            status=1
        fi
    done
    kernels=$(grep -c '^\.visible \.entry' "$ptx" || true)
    echo "$family: $kernels kernels, assembled for $PTXAS_ARCHS"
done
[[ $status == 0 ]] || exit 1

mkdir -p ptx
if [[ $check == 1 ]]; then
    for ptx in "$out"/*.ptx; do
        family=$(basename "$ptx")
        if ! cmp -s "$ptx" "ptx/$family"; then
            echo "ptx/$family is stale or missing: run backend-cuda/compile-kernels.sh and commit" >&2
            status=1
        fi
    done
    for ptx in ptx/*.ptx; do
        [[ -f "$out/$(basename "$ptx")" ]] || { echo "$ptx has no source in kernels/" >&2; status=1; }
    done
    [[ $status == 0 ]] && echo "ptx/ is up to date"
    exit $status
fi
cp "$out"/*.ptx ptx/
echo "wrote ptx/"
