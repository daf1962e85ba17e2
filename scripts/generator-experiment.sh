#!/usr/bin/env bash
# Two-stage (layout + texture) vs one-stage generation with the same training compute, on the
# tuxpaint cut-outs (issue #10 item 7; docs/GENERATION.md "Two-stage vs one-stage").
#   scripts/generator-experiment.sh [RUNS] [PHASE...]     PHASE: train classifier eval followup report layouts (default: all)
# Compute: every model is a SiT of the same size (width 128, depth 4), batch 16, so one step costs
# the same FLOPs in every stage (within 2.5%: the texture model's cond_embedder); the two-stage budget at an
# evaluation point B is B/4 layout steps + 3B/4 texture steps, the one-stage model gets B steps.
# One CPU thread per run; re-running continues every run (--resume) and skips finished snapshots and
# evaluations. Cost on a shared 2-core machine: training ~12,000 steps (~45 min of one core), the classifier
# ~1 min, 20 evaluations + the follow-up (one more texture model of 4500 steps, 7 evaluations), 30-70 s of
# one core per evaluation.
set -euo pipefail
runs="${1:-runs/gen-experiment}"
shift || true
phases="${*:-train classifier eval followup report layouts}"
shared="${GPSTOKEN_SHARED:-../shared}"
data="$shared/data/labelled/tuxpaint"
bin="${GPSTOKEN_BIN:-target/release/gpstoken}"
[ -x "$bin" ] || cargo build --release -p gpstoken-cli >&2
budgets="${BUDGETS:-1200 2400 3600 4800 6000}"   # total training steps at each evaluation
seeds="${EVAL_SEEDS:-1}"                         # sampling seeds at every evaluation
noise_seeds="${NOISE_SEEDS:-2 3}"                # more seeds at the first and last budget (the metric's noise)
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

clf="$runs/classifier.safetensors"
if [[ " $phases " == *" classifier "* ]] && [ ! -f "$clf" ]; then
    # the same images and hold-out as the generators; its held-out accuracy is in the file and the log
    "$bin" --threads 1 train-classifier --data "$data" --hold-out 4 --steps 500 --seed 0 -o "$clf" \
        --log "$runs/classifier.jsonl" --quiet > "$runs/classifier.out" 2>&1
fi

# One evaluation: NAME (two-stage, one-stage, two-stage-real-layouts), budget, seed, eval-generator flags.
evaluate() {
    local name="$1" b="$2" seed="$3"; shift 3
    local out="$runs/evals/${name}_${b}_${seed}.json"
    [ -f "$out" ] && return 0
    "$bin" --threads 1 eval-generator --classifier "$clf" --data "$data" --per-class "$per_class" --steps 16 \
        --seed "$seed" --json "$@" > "$out.tmp" && mv "$out.tmp" "$out"
}

if [[ " $phases " == *" eval "* ]]; then
    mkdir -p "$runs/evals" "$runs/grids"
    ev="$runs/evals"
    [ -f "$ev/references.json" ] || "$bin" --threads 1 eval-generator --classifier "$clf" --data "$data" \
        --references --token-cache "$runs/tokens.safetensors" --json > "$ev/references.json"
    first="${budgets%% *}" last="${budgets##* }"
    seeds_at() { if [ "$1" = "$first" ] || [ "$1" = "$last" ]; then echo $seeds $noise_seeds; else echo $seeds; fi; }
    two_stage() {
        for b in $budgets; do for seed in $(seeds_at "$b"); do
            grid=(); [ "$b" = "$last" ] && [ "$seed" = "${seeds%% *}" ] && grid=(--grid "$runs/grids/two-stage.png" --grid-columns 3)
            evaluate two-stage "$b" "$seed" --model "$runs/snapshots/texture_$((b * 3 / 4)).safetensors" \
                --layout-model "$runs/snapshots/layout_$((b / 4)).safetensors" "${grid[@]}"
        done; done
    }
    one_stage() {
        for b in $budgets; do for seed in $(seeds_at "$b"); do
            grid=(); [ "$b" = "$last" ] && [ "$seed" = "${seeds%% *}" ] && grid=(--grid "$runs/grids/one-stage.png" --grid-columns 3)
            evaluate one-stage "$b" "$seed" --model "$runs/snapshots/one-stage_$b.safetensors" "${grid[@]}"
        done; done
        # diagnosis: the texture model around Algorithm 1 layouts of real training images
        for b in "$first" "$last"; do
            evaluate two-stage-real-layouts "$b" "${seeds%% *}" --model "$runs/snapshots/texture_$((b * 3 / 4)).safetensors" \
                --layouts training --token-cache "$runs/tokens.safetensors"
        done
    }
    two_stage > "$runs/eval-two-stage.out" 2>&1 &
    one_stage > "$runs/eval-one-stage.out" 2>&1 &
    wait
fi

if [[ " $phases " == *" followup "* ]]; then
    # what might close the gap, at the last budget: the duplicate repair of Algorithm 2, and a texture model
    # trained with the paper's condition noise (additive N(0, 0.5^2) on the layout), same steps and seed
    b="${budgets##* }"
    tex_cn="$runs/snapshots/texture-condnoise_$((b * 3 / 4)).safetensors"
    if [ ! -f "$tex_cn" ]; then
        "$bin" --threads 1 train-generator --stage texture "${common[@]}" --steps $((b * 3 / 4)) --cond-noise 0.5 \
            --out "$runs/texture-condnoise" --resume > "$runs/texture-condnoise.out" 2>&1
        cp "$runs/texture-condnoise/generator.safetensors" "$tex_cn"
    fi
    lay="$runs/snapshots/layout_$((b / 4)).safetensors"
    for bb in $budgets; do
        evaluate two-stage-repair "$bb" "${seeds%% *}" --model "$runs/snapshots/texture_$((bb * 3 / 4)).safetensors" \
            --layout-model "$runs/snapshots/layout_$((bb / 4)).safetensors" --repair-duplicates
    done
    evaluate two-stage-condnoise "$b" "${seeds%% *}" --model "$tex_cn" --layout-model "$lay"
    evaluate two-stage-condnoise-repair "$b" "${seeds%% *}" --model "$tex_cn" --layout-model "$lay" --repair-duplicates
fi

if [[ " $phases " == *" report "* ]]; then
    python3 "$(dirname "$0")/generator_table.py" "$runs" > "$runs/table.md"
    cat "$runs/table.md"
    for key in fd kid accuracy; do
        "$bin" plot "$runs/curves/two-stage.jsonl" "$runs/curves/one-stage.jsonl" "$runs/curves/two-stage-real-layouts.jsonl" \
            "$runs/curves/two-stage-repair.jsonl" --x budget --y "$key" --window 1 -o "$runs/curves/$key.png"
    done
    "$bin" plot "$runs/layout/log.jsonl" "$runs/texture/log.jsonl" "$runs/one-stage/log.jsonl" --x step --y loss --window 100 \
        -o "$runs/curves/loss.png" 2>/dev/null || true
fi

if [[ " $phases " == *" layouts "* ]]; then
    # the diagnosis: the last texture snapshot around layouts of the last layout snapshot vs Algorithm 1 layouts of
    # real images (the bank), Gaussians drawn over the samples
    b="${budgets##* }"
    "$bin" build-layout-bank --data "$data" --tokens 32 -o "$runs/bank.safetensors" > /dev/null
    for class in mammal; do
        "$bin" --threads 1 generate --class "$class" -n 9 --sampler ode --seed 1 \
            --layout-model "$runs/snapshots/layout_$((b / 4)).safetensors" --model "$runs/snapshots/texture_$((b * 3 / 4)).safetensors" \
            -o "$runs/grids/$class-model-layouts.png" --viz "$runs/grids/$class-model-layouts-viz.png"
        "$bin" --threads 1 generate --class "$class" -n 9 --sampler ode --seed 1 --layouts bank --bank "$runs/bank.safetensors" \
            --model "$runs/snapshots/texture_$((b * 3 / 4)).safetensors" \
            -o "$runs/grids/$class-bank-layouts.png" --viz "$runs/grids/$class-bank-layouts-viz.png"
    done
fi
