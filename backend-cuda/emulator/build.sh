#!/usr/bin/env bash
# Builds the CPU emulator of the CUDA kernels: libgpstoken_cuda_emu.so (g++ 12+, C++20), which
# `CudaBackend::emulated` loads. For testing the kernels on a machine without a GPU:
#
#   backend-cuda/emulator/build.sh [OUT_DIR]           # default target/cuda-emulator
#   GPSTOKEN_CUDA_EMULATOR=$PWD/target/cuda-emulator/libgpstoken_cuda_emu.so \
#       cargo test --release -p gpstoken-backend-cuda --test emulated
#   (GPSTOKEN_CUDA_EMULATOR_ORDER=reverse: blocks and threads in the opposite order, runtime.cpp)
#
# SANITIZE=address builds it with AddressSanitizer, a CPU stand-in for compute-sanitizer's memcheck:
# a kernel reading or writing past a buffer (each is its own allocation) or a __shared__ array
# stops the test with the kernel's line. Run the tests with the runtime preloaded:
#   LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 GPSTOKEN_CUDA_EMULATOR=... \
#       cargo test --release -p gpstoken-backend-cuda --test emulated
# (ASan warns once that it does not fully support swapcontext, which the fibers use.)
#
# SANITIZE=thread builds it with ThreadSanitizer, a CPU stand-in for compute-sanitizer's racecheck:
# a block's threads are TSan fibers ordered only by the barriers (runtime.cpp), so two threads
# touching one address in the same barrier phase, one writing without an atomic, is a reported
# race even though fibers never interleave. racecheck.sh builds it and runs the tests; by hand,
# with the runtime preloaded and races fatal:
#   LD_PRELOAD=$(gcc -print-file-name=libtsan.so) TSAN_OPTIONS=halt_on_error=1 GPSTOKEN_CUDA_EMULATOR=... \
#       cargo test --release -p gpstoken-backend-cuda --test emulated
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/target/cuda-emulator}
mkdir -p "$out/src"
for cu in "$here"/../kernels/*.cu; do
    family=$(basename "$cu" .cu)
    python3 "$here/generate.py" "$cu" "$out/src/$family.cpp"
done
sanitize=()
case "${SANITIZE:-}" in
    "") ;;
    address) sanitize=(-fsanitize=address -fno-omit-frame-pointer -g -DGPSTOKEN_EMU_ASAN) ;;
    thread) sanitize=(-fsanitize=thread -DGPSTOKEN_EMU_TSAN -g) ;;
    *) echo "SANITIZE=$SANITIZE: only 'address' or 'thread' is supported" >&2; exit 2 ;;
esac
# -ffp-contract=off: no fused multiply-adds the kernels did not ask for (NVRTC's --fmad=false).
g++ -std=c++20 -O1 -ffp-contract=off -fPIC -shared -w "${sanitize[@]}" -I"$here" -I"$here/../kernels" \
    "$here/runtime.cpp" "$out"/src/*.cpp -o "$out/libgpstoken_cuda_emu.so"
echo "$out/libgpstoken_cuda_emu.so"
