#!/usr/bin/env bash
# Two-stage (layout + texture) vs one-stage generation with the same training compute, on the
# tuxpaint cut-outs (issue #10 item 7; docs/GENERATION.md "Two-stage vs one-stage").
#   scripts/generator-experiment.sh [RUNS] [PHASE...]     PHASE: train classifier eval report (default: all)
# Compute: every model is a SiT of the same size (width 128, depth 4), batch 16, so one step costs
# the same FLOPs in every stage (the in/out projections differ by < 1%); the two-stage budget at an
# evaluation point B is B/4 layout steps + 3B/4 texture steps, the one-stage model gets B steps.
# One CPU thread per run; re-running continues every run (--resume) and skips finished snapshots.
set -euo pipefail
runs="${1:-runs/gen-experiment}"
shift || true
phases="${*:-train classifier eval report}"
shared="${GPSTOKEN_SHARED:-../shared}"
data="$shared/data/labelled/tuxpaint"
bin="${GPSTOKEN_BIN:-target/release/gpstoken}"
[ -x "$bin" ] || cargo build --release -p gpstoken-cli >&2
budgets="${BUDGETS:-1200 2400 3600 4800 6000}"   # total training steps at each evaluation
seeds="${EVAL_SEEDS:-1 2}"                       # sampling seeds per evaluation (metric noise)
per_class="${PER_CLASS:-24}"                     # generated samples per class and evaluation
common=(--data "$data" --token-cache "$runs/tokens.safetensors" --batch 16 --lr 1e-3 --seed 0
        --width 128 --depth 4 --heads 4 --hold-out 4 --samples 12 --sample-every 100000 --checkpoint-every 300 --quiet)
mkdir -p "$runs/snapshots"

# Trains STAGE up to each step of STEPS..., copying generator.safetensors to snapshots/STAGE_STEP.
train_stage() {
    local stage="$1"; shift
    for s in "$@"; do
        local snap="$runs/snapshots/${stage}_$s.safetensors"
        [ -f "$snap" ] && continue
        "$bin" --threads 1 train-generator --stage "$stage" "${common[@]}" --steps "$s" --out "$runs/$stage" --resume
        cp "$runs/$stage/generator.safetensors" "$snap"
    done
}

if [[ " $phases " == *" train "* ]]; then
    lay=(); tex=(); one=()
    for b in $budgets; do lay+=($((b / 4))); tex+=($((b * 3 / 4))); one+=("$b"); done
    # the token cache is written once, by the first run
    "$bin" --threads 1 train-generator --stage layout "${common[@]}" --steps 1 --out "$runs/cache-warmup" > /dev/null
    ( train_stage layout "${lay[@]}"; train_stage texture "${tex[@]}" ) > "$runs/two-stage.out" 2>&1 &
    train_stage one-stage "${one[@]}" > "$runs/one-stage.out" 2>&1 &
    wait
fi
