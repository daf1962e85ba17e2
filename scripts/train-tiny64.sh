#!/usr/bin/env bash
# Trains the small config (tiny64) twice in parallel, same seed and budget: Algorithm 1
# (adaptive) initial Gaussians and a uniform grid (the paper's Table 6 ablation). One CPU
# thread per run; logs go to RUNS/{adaptive,grid}.out, everything else to RUNS/{adaptive,grid}/.
#   scripts/train-tiny64.sh [STEPS] [RUNS]
# Re-running continues both runs from their checkpoints (--resume) up to STEPS.
set -euo pipefail
steps="${1:-1400}"
runs="${2:-runs}"
shared="${GPSTOKEN_SHARED:-../shared}"
bin="${GPSTOKEN_BIN:-target/release/gpstoken}"
[ -x "$bin" ] || cargo build --release -p gpstoken-cli >&2
mkdir -p "$runs"
for init in adaptive grid; do
    nohup "$bin" --threads 1 train --config tiny64 --data "$shared/data/train" --eval "$shared/data/eval" \
        --steps "$steps" --lr 4e-4 --seed 23 --init "$init" --checkpoint-every 100 --eval-every 200 \
        --out "$runs/$init" --resume --quiet > "$runs/$init.out" 2>&1 &
done
wait
"$bin" plot "$runs/adaptive/log.jsonl" "$runs/grid/log.jsonl" -o "$runs/curves.png"
