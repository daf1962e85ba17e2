#!/usr/bin/env bash
# The Table 6 analysis of docs/RESULTS.md: the adaptive- and the grid-trained tiny64 models (each
# with the initialisation it was trained with, N = 32 tokens per patch) on the eval photos, per
# image, split by complexity (`gpstoken eval --by-complexity --per-image --json`), at the trained
# 64x64 crops and at 256x256 crops (4x4 patches decoded tiled). Then paired statistics per image
# (scripts/ablation_table.py; several output folders side by side: ablation_table.py DIR DIR...).
# Each model is a training checkpoint (its raw and EMA weights are both used) or a run folder (its final
# weights.safetensors and weights_ema.safetensors).
#   scripts/ablation-strata.sh ADAPTIVE_CHECKPOINT|RUN_DIR GRID_CHECKPOINT|RUN_DIR [OUT_DIR]
set -euo pipefail
adaptive="$1"; grid="$2"; out="${3:-ablation}"
shared="${GPSTOKEN_SHARED:-../shared}"
bin="${GPSTOKEN_BIN:-target/release/gpstoken}"
[ -x "$bin" ] || cargo build --release -p gpstoken-cli >&2
mkdir -p "$out"
# The --model arguments for raw or EMA weights of a checkpoint file or a run folder.
model_args() {
    if [ -d "$1" ]; then
        if [ "$2" = ema ]; then echo "--model $1/weights_ema.safetensors"; else echo "--model $1/weights.safetensors"; fi
    else
        if [ "$2" = ema ]; then echo "--model $1 --ema"; else echo "--model $1"; fi
    fi
}
for weights in raw ema; do
    for size in 64 256; do
        for init in adaptive grid; do
            if [ $init = adaptive ]; then m="$adaptive"; else m="$grid"; fi
            # shellcheck disable=SC2046 # word splitting of model_args is intended
            "$bin" eval $(model_args "$m" $weights) --init $init --data "$shared/data/eval" --size $size \
                --by-complexity --per-image --json > "$out/$init.$weights.$size.jsonl"
        done
    done
done
python3 "$(dirname "$0")/ablation_table.py" --full "$out"
