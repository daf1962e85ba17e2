#!/usr/bin/env bash
# Looks for data races between the threads of a block in the CUDA kernels, on the CPU: builds the
# emulator with ThreadSanitizer (build.sh, SANITIZE=thread) and runs the emulated conformance
# tests under it; the first race stops the run with both threads' kernel lines (docs/CUDA.md,
# "The emulator"). A stand-in for `compute-sanitizer --tool racecheck`, which needs a GPU.
#
#   backend-cuda/emulator/racecheck.sh              # the kernels with barriers and shared memory
#   backend-cuda/emulator/racecheck.sh ''           # the whole emulated suite (about 40 minutes on 2 cores)
#   backend-cuda/emulator/racecheck.sh splat_forward
#
# Arguments are libtest name filters. The default covers every kernel that uses __syncthreads or
# __shared__ (splat and its binning, attention, the norms, the tiled transpose, the losses'
# reduction trees), in about 2 minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
filters=("$@")
(( $# )) || filters=(splat attention norm tensor_layout loss)
lib=$(SANITIZE=thread bash "$here/build.sh" "$root/target/cuda-emulator-tsan" | tail -1)
tsan=$(gcc -print-file-name=libtsan.so)
if [[ ! -f "$tsan" ]]; then
    echo "racecheck: gcc's ThreadSanitizer runtime (libtsan.so) not found: install gcc's libtsan" >&2
    exit 1
fi
# The runtime goes only into the test binary (cargo's runner), not into cargo or rustc. The Rust
# code is not instrumented: ignore_noninstrumented_modules keeps its own threads (the test
# harness, rayon) out of the reports.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="env LD_PRELOAD=$tsan"
export TSAN_OPTIONS="halt_on_error=1 ignore_noninstrumented_modules=1 ${TSAN_OPTIONS:-}"
export GPSTOKEN_CUDA_EMULATOR=$lib
cargo test --release -p gpstoken-backend-cuda --test emulated -- "${filters[@]}"
