#!/usr/bin/env bash
# The Table 6 analysis of docs/RESULTS.md: the adaptive- and the grid-trained tiny64 models (each
# with the initialisation it was trained with, N = 32 tokens per patch) on the eval photos, per
# image, split by complexity (`gpstoken eval --by-complexity --per-image --json`), at the trained
# 64x64 crops and at 256x256 crops (4x4 patches decoded tiled). Then paired statistics per image.
# Models: weights files or training checkpoints (raw and EMA weights of a checkpoint are both used).
#   scripts/ablation-strata.sh ADAPTIVE_CHECKPOINT GRID_CHECKPOINT [OUT_DIR]
set -euo pipefail
adaptive="$1"; grid="$2"; out="${3:-ablation}"
shared="${GPSTOKEN_SHARED:-../shared}"
bin="${GPSTOKEN_BIN:-target/release/gpstoken}"
[ -x "$bin" ] || cargo build --release -p gpstoken-cli >&2
mkdir -p "$out"
for weights in raw ema; do
    flag=(); [ "$weights" = ema ] && flag=(--ema)
    for size in 64 256; do
        "$bin" eval --model "$adaptive" "${flag[@]}" --init adaptive --data "$shared/data/eval" --size $size \
            --by-complexity --per-image --json > "$out/adaptive.$weights.$size.jsonl"
        "$bin" eval --model "$grid" "${flag[@]}" --init grid --data "$shared/data/eval" --size $size \
            --by-complexity --per-image --json > "$out/grid.$weights.$size.jsonl"
    done
done
python3 - "$out" <<'PY'
import json, math, sys
out = sys.argv[1]
def rows(path):
    return [json.loads(l) for l in open(path) if l.startswith('{"image"')]
print("| weights | crop | metric | adaptive | grid | adaptive - grid (mean ± s.e.) | adaptive wins |")
print("|---|---|---|---|---|---|---|")
for w in ["raw", "ema"]:
    for size in ["64", "256"]:
        a = rows(f"{out}/adaptive.{w}.{size}.jsonl"); g = rows(f"{out}/grid.{w}.{size}.jsonl")
        assert [r["image"] for r in a] == [r["image"] for r in g]
        for key, name in [("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("rich_psnr", "PSNR texture-rich quarter"),
                          ("flat_psnr", "PSNR flat quarter"), ("rich_detail", "detail kept, texture-rich")]:
            d = [x[key] - y[key] for x, y in zip(a, g)]
            n = len(d); m = sum(d) / n
            se = math.sqrt(sum((v - m) ** 2 for v in d) / (n - 1) / n)
            ma = sum(x[key] for x in a) / n; mg = sum(y[key] for y in g) / n
            wins = sum(v > 0 for v in d)
            label = "raw" if w == "raw" else "EMA"
            print(f"| {label} | {size} | {name} | {ma:.4f} | {mg:.4f} | {m:+.4f} ± {se:.4f} | {wins}/{n} |")
PY
