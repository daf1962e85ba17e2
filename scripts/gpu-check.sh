#!/usr/bin/env bash
# The GPU check: runs the prebuilt, stripped test binaries of scripts/gpu-check-build.sh on a
# machine with an NVIDIA GPU, no Rust toolchain and no network, within 8 minutes, and writes one
# markdown table (one row per suite, one per splat timing) to $OUT/gpu-check.md, or to the path
# given as the first argument. Full logs go next to it (gpu-check-logs/).
#
#   scripts/gpu-check-build.sh bundle/      # here, with cargo
#   (carry bundle/ to the GPU machine)
#   bundle/gpu-check.sh [TABLE.md]           # there
#
# BUNDLE (default: this script's folder) holds bin/ and, when it fitted, shared/golden/.
# cuBLAS: cudarc (CUDA 12.9 bindings) looks for libcublas.so, .so.12, .so.11 ... but not .so.13,
# which is what PyTorch's CUDA 13 wheels (nvidia-cublas) install; this script finds libcublas
# and libcublasLt under the Python site-packages or the loader's paths and links them as
# libcublas.so / libcublasLt.so in a temporary folder put first on LD_LIBRARY_PATH. Without
# cuBLAS the backend uses its built-in GEMM kernel (the table says which ran).
set -uo pipefail
bundle=${BUNDLE:-$(cd "$(dirname "$0")" && pwd)}
bin=$bundle/bin
table=${1:-${OUT:-.}/gpu-check.md}
mkdir -p "$(dirname "$table")"
logs=$(dirname "$table")/gpu-check-logs
mkdir -p "$logs"
deadline=$((SECONDS + 8 * 60))
rows=()

# Seconds left before the 8-minute budget, at most $1.
budget() {
    local left=$((deadline - SECONDS - 5))
    (( left < 1 )) && left=1
    (( left > $1 )) && left=$1
    echo "$left"
}

# --- environment -------------------------------------------------------------------------
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
gpu=${gpu:-"nvidia-smi not found"}
links=$(mktemp -d)
trap 'rm -rf "$links"' EXIT
find_lib() {
    # The newest-looking match of $1 (e.g. libcublas.so.*) in the usual places.
    {
        ldconfig -p 2>/dev/null | awk -v pat="$1" '$1 ~ pat {print $NF}'
        for py in python3 python; do
            command -v "$py" >/dev/null || continue
            "$py" - "$1" 2>/dev/null <<'PY'
import glob, os, site, sys
dirs = site.getsitepackages() + [site.getusersitepackages()]
for d in dirs:
    for path in glob.glob(os.path.join(d, "nvidia", "*", "lib", sys.argv[1])):
        print(path)
PY
        done
    } | grep -v '\.alt' | sort -V | tail -1
}
cublas=$(find_lib 'libcublas.so.*')
cublaslt=$(find_lib 'libcublasLt.so.*')
if [[ -n "$cublas" && -n "$cublaslt" ]]; then
    ln -s "$cublas" "$links/libcublas.so"
    ln -s "$cublaslt" "$links/libcublasLt.so"
    export LD_LIBRARY_PATH="$links:$(dirname "$cublas"):$(dirname "$cublaslt")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    blas_note="cuBLAS: $cublas"
else
    blas_note="cuBLAS not found: built-in GEMM kernel"
fi
# NCCL (data-parallel training): cudarc opens libnccl.so, NCCL installs libnccl.so.2
# (PyTorch's nvidia-nccl wheel): link it the same way.
nccl=$(find_lib 'libnccl.so.*')
if [[ -n "$nccl" ]]; then
    ln -s "$nccl" "$links/libnccl.so"
    export LD_LIBRARY_PATH="$links:$(dirname "$nccl")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    blas_note="$blas_note, NCCL: $nccl"
else
    blas_note="$blas_note, NCCL not found"
fi
if [[ -d "$bundle/shared/golden" ]]; then
    export GPSTOKEN_SHARED=$bundle/shared
fi

# --- suites ----------------------------------------------------------------------------------
# run NAME SECONDS ENV... -- BINARY ARGS...: one libtest binary, one table row.
run() {
    local name=$1 limit=$2
    shift 2
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    local exe=$1
    shift
    if [[ ! -x "$exe" ]]; then
        rows+=("| $name | not run | | | | | $(basename "$exe") not in the bundle |")
        return
    fi
    local log=$logs/$name.log start=$SECONDS
    env ${envs[@]+"${envs[@]}"} timeout "$(budget "$limit")" "$exe" "$@" >"$log" 2>&1
    local rc=$? took=$((SECONDS - start))
    local passed failed skipped status note
    passed=$(grep -oE '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
    failed=$(grep -oE '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
    skipped=$(grep -c 'SKIPPED' "$log")
    case $rc in
        0) status=pass ;;
        124) status="timeout" ;;
        *) status="FAIL (exit $rc)" ;;
    esac
    note=$(grep -E '^test .* FAILED$|panicked at' "$log" | head -3 | sed 's/|/\\|/g' | tr '\n' ';')
    rows+=("| $name | $status | $passed | $failed | $skipped | $took | ${note:-} |")
}

run cuda_devices 60 GPSTOKEN_REQUIRE_CUDA=1 -- "$bin/devices" --nocapture
run cuda_unit 30 -- "$bin/backend_cuda_lib"
run cuda_nccl 60 GPSTOKEN_REQUIRE_CUDA=1 -- "$bin/nccl" --nocapture
run cuda_conformance 180 GPSTOKEN_REQUIRE_CUDA=1 -- "$bin/conformance"
run cuda_conformance_builtin_gemm 120 GPSTOKEN_REQUIRE_CUDA=1 GPSTOKEN_CUDA_CUBLAS=0 -- "$bin/conformance"
if [[ -x "$bin/vulkan_conformance" ]]; then
    # The NVIDIA driver's Vulkan ICD, when the loader (libvulkan.so.1) is there.
    icd=$(ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json 2>/dev/null | head -1)
    run vulkan_conformance 90 ${icd:+VK_ICD_FILENAMES=$icd} -- "$bin/vulkan_conformance"
fi

# --- the CLI on the GPU: cuda next to cpu, an M128 training step, NCCL in training -------------
g=$bin/gpstoken
work=$links/cli
mkdir -p "$work"
# field NAME FILE: the first numeric JSON field NAME in FILE.
field() { grep -oE "\"$1\": ?-?[0-9.e+-]+" "$2" 2>/dev/null | head -1 | cut -d: -f2 | tr -d ' '; }
# cli NAME SECONDS ARGS...: one gpstoken run, its log in gpu-check-logs/NAME.log; 0 when it passed.
cli() {
    local name=$1 limit=$2
    shift 2
    timeout "$(budget "$limit")" "$g" "$@" >"$logs/$name.log" 2>&1
}
if [[ -x "$g" ]]; then
    model=$bundle/models/tiny64.safetensors
    # reconstruct (whole 600x400 photo) and fit: PSNR on cuda within 0.05 dB of cpu's.
    for what in reconstruct fit; do
        ok=1
        for be in cpu cuda; do
            if [[ $what == reconstruct ]]; then
                cli "${what}_$be" 120 --backend "$be" reconstruct "$bundle/data/coffee.png" --model "$model" -o "$work/r_$be.png" --json || ok=0
            else
                cli "${what}_$be" 120 --backend "$be" fit "$bundle/data/astronaut.png" --tokens 256 --steps 300 -o "$work/f_$be.gpst" --json || ok=0
            fi
        done
        p_cpu=$(field psnr "$logs/${what}_cpu.log"); p_cuda=$(field psnr "$logs/${what}_cuda.log")
        verdict=$(python3 -c "import sys; a,b=map(float,sys.argv[1:]); print('pass' if abs(a-b)<=0.05 else 'FAIL')" "${p_cpu:-nan}" "${p_cuda:-nan}" 2>/dev/null || echo FAIL)
        (( ok )) || verdict="FAIL (exit)"
        rows+=("| $what cuda vs cpu | $verdict | | | | | PSNR cuda ${p_cuda:-?} dB, cpu ${p_cpu:-?} dB (limit 0.05 dB) |")
    done
    # --tf32 (cuBLAS on TF32 tensor cores): what it does to the reconstruction's PSNR, next to
    # the f32 GEMMs on the same GPU.
    if cli reconstruct_cuda_tf32 120 --backend cuda --tf32 reconstruct "$bundle/data/coffee.png" --model "$model" -o "$work/r_tf32.png" --json; then
        rows+=("| reconstruct cuda --tf32 | measured | | | | | PSNR $(field psnr "$logs/reconstruct_cuda_tf32.log") dB with TF32, $(field psnr "$logs/reconstruct_cuda.log") dB with f32 GEMMs |")
    else
        rows+=("| reconstruct cuda --tf32 | FAIL | | | | | see gpu-check-logs/reconstruct_cuda_tf32.log |")
    fi
    # Data-parallel training through NCCL with one rank (WORLD_SIZE=1) against a plain run: the
    # same losses and weights, to the bit (an all-reduce over one rank changes nothing). Buckets
    # of 1/4 MiB: tiny64's 7.5 MiB of gradients go over in about 30 reductions per step, each on
    # NCCL's stream while the backward pass goes on.
    train_args=(--backend cuda train --config tiny64 --data "$bundle/data" --batch 4 --steps 3 --quiet)
    cli train_plain 120 "${train_args[@]}" --out "$work/plain"; rc1=$?
    WORLD_SIZE=1 RANK=0 MASTER_PORT=29517 cli train_nccl 120 "${train_args[@]}" --bucket-mb 0.25 --out "$work/nccl"; rc2=$?
    losses() { grep -oE '"loss":[0-9.e+-]+' "$1/log.jsonl" 2>/dev/null | tr '\n' ' '; }
    if (( rc1 == 0 && rc2 == 0 )) && [[ -n "$(losses "$work/plain")" && "$(losses "$work/plain")" == "$(losses "$work/nccl")" ]] \
        && cmp -s "$work/plain/weights.safetensors" "$work/nccl/weights.safetensors"; then
        rows+=("| train NCCL world 1, 1/4 MiB buckets | pass | | | | | losses and weights identical to the plain run: $(losses "$work/nccl") |")
    else
        rows+=("| train NCCL world 1 | FAIL | | | | | exits $rc1/$rc2; plain: $(losses "$work/plain"); nccl: $(losses "$work/nccl") |")
    fi
    # The official M128 config at its batch 16 (256x256 crops of the two photos), 6 steps; the
    # median of steps 3..6 (the first steps load kernels).
    cli train_m128 240 --backend cuda train --config m128 --data "$bundle/data" --batch 16 --steps 6 --quiet --out "$work/m128"
    rc=$?
    step=$(grep -oE '"seconds":[0-9.e+-]+' "$work/m128/log.jsonl" 2>/dev/null | cut -d: -f2 | tail -n +3 | sort -g |
        awk '{v[NR]=$1} END {if (NR) print (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}')
    if (( rc == 0 )) && [[ -n "$step" ]]; then
        rows+=("| train m128 batch 16 | timing | | | | | this port: median step ${step} s (steps 3..6) |")
    else
        rows+=("| train m128 batch 16 | FAIL (exit $rc) | | | | | see gpu-check-logs/train_m128.log |")
    fi
    # The official model (PyTorch) on the same GPU: same config and batch, 2 warm-up steps, the
    # median of 4 (scripts/compare/train_step_driver.py gpu; its renderer is named in the row).
    if [[ -d "$bundle/official" ]] && python3 -c "import torch, torchvision, yaml, numpy" 2>/dev/null; then
        timeout "$(budget 240)" python3 "$bundle/train_step_driver.py" gpu "$bundle/official" \
            "$bundle/official/configs/gpstoken_m128.yaml" "$bundle/data/m128_inputs.f32" 1 16 4 \
            >"$logs/official_m128.log" 2>&1
        official=$(field seconds "$logs/official_m128.log")
        renderer=$(grep -oE '"renderer": "[^"]*"' "$logs/official_m128.log" | cut -d'"' -f4)
        if [[ -n "$official" ]]; then
            ratio=$(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')" "$official" "${step:-nan}" 2>/dev/null)
            rows+=("| official m128 batch 16 | timing | | | | | PyTorch median step ${official} s (renderer: ${renderer}); official / this port: ${ratio:-?} |")
        else
            rows+=("| official m128 batch 16 | FAIL | | | | | see gpu-check-logs/official_m128.log |")
        fi
    else
        rows+=("| official m128 batch 16 | not run | | | | | no official/ in the bundle, or python3 lacks torch, torchvision, yaml or numpy |")
    fi
else
    rows+=("| cli | not run | | | | | gpstoken not in the bundle |")
fi

# --- splat timings ---------------------------------------------------------------------------
bench_log=$logs/splat_bench.log
if [[ -x "$bin/splat_bench" ]]; then
    GPSTOKEN_REQUIRE_CUDA=1 timeout "$(budget 120)" "$bin/splat_bench" >"$bench_log" 2>&1
    rc=$?
    while IFS= read -r line; do
        # | shape | fwd | bwd | x floor fwd / bwd | cpu fwd | cpu bwd | diff |
        IFS='|' read -r _ shape fwd bwd floor cfwd cbwd diff _ <<<"$line"
        rows+=("| splat ${shape// /} | timing | | | | | CUDA fwd ${fwd// /} ms, bwd ${bwd// /} ms (x bandwidth floor:${floor% }); CPU fwd ${cfwd// /} ms, bwd ${cbwd// /} ms; max diff ${diff# } |")
    done < <(grep -E '^\| [0-9]' "$bench_log")
    (( rc == 0 )) || rows+=("| splat_bench | FAIL (exit $rc) | | | | | see gpu-check-logs/splat_bench.log |")
fi

# --- last, as the least needed: the M128 steps with --tf32 (time, and losses next to f32's) ---
if [[ -x "$g" ]]; then
    # The same M128 steps with --tf32: the step time, and the losses next to the f32 run's.
    cli train_m128_tf32 240 --backend cuda --tf32 train --config m128 --data "$bundle/data" --batch 16 --steps 6 --quiet --out "$work/m128_tf32"
    rc=$?
    step_tf32=$(grep -oE '"seconds":[0-9.e+-]+' "$work/m128_tf32/log.jsonl" 2>/dev/null | cut -d: -f2 | tail -n +3 | sort -g |
        awk '{v[NR]=$1} END {if (NR) print (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}')
    m128_losses() { grep -oE '"loss":[0-9.e+-]+' "$1/log.jsonl" 2>/dev/null | cut -d: -f2 | tr '\n' ' '; }
    if (( rc == 0 )) && [[ -n "$step_tf32" ]]; then
        rows+=("| train m128 batch 16 --tf32 | timing | | | | | median step ${step_tf32} s (f32: ${step:-?} s); losses TF32: $(m128_losses "$work/m128_tf32")/ f32: $(m128_losses "$work/m128") |")
    else
        rows+=("| train m128 batch 16 --tf32 | FAIL (exit $rc) | | | | | see gpu-check-logs/train_m128_tf32.log |")
    fi
fi

{
    echo "GPU check on $gpu, $(date -u '+%Y-%m-%d %H:%M UTC'), $blas_note, golden data: ${GPSTOKEN_SHARED:-absent}"
    echo
    echo "| suite | status | passed | failed | skipped | seconds | notes |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} >"$table"
cat "$table"
