#!/usr/bin/env bash
# Adaptive (Algorithm 1) vs uniform-grid initialisation for `gpstoken fit`, on every photo of a
# folder (256x256 centre crops). Prints a Markdown table; used for docs/FIT.md.
#   scripts/fit-table.sh [PHOTO_DIR] [TOKENS] [STEPS]
set -euo pipefail
dir="${1:-${GPSTOKEN_SHARED:-../shared}/data/eval}"
tokens="${2:-256}"
steps="${3:-500}"
bin="${GPSTOKEN_BIN:-target/release/gpstoken}"
[ -x "$bin" ] || cargo build --release -p gpstoken-cli >&2
echo "| photo | N | steps | PSNR adaptive (dB) | PSNR grid (dB) | SSIM adaptive | SSIM grid | time adaptive (s) | time grid (s) |"
echo "|---|---|---|---|---|---|---|---|---|"
wins=0; total=0; sum_a=0; sum_g=0
for photo in "$dir"/*.png "$dir"/*.jpg; do
    [ -e "$photo" ] || continue
    a=$("$bin" --threads 2 fit "$photo" --tokens "$tokens" --steps "$steps" --init adaptive --json)
    g=$("$bin" --threads 2 fit "$photo" --tokens "$tokens" --steps "$steps" --init grid --json)
    row=$(python3 - "$a" "$g" <<'PY'
import json, sys
a, g = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{a['psnr']:.2f} {g['psnr']:.2f} {a['ssim']:.4f} {g['ssim']:.4f} {a['seconds']:.1f} {g['seconds']:.1f} {int(a['psnr'] > g['psnr'])} {a['psnr']} {g['psnr']}")
PY
)
    read -r pa pg sa sg ta tg win ra rg <<<"$row"
    echo "| $(basename "$photo") | $tokens | $steps | $pa | $pg | $sa | $sg | $ta | $tg |"
    wins=$((wins + win)); total=$((total + 1))
    sum_a=$(python3 -c "print($sum_a + $ra)"); sum_g=$(python3 -c "print($sum_g + $rg)")
done
python3 -c "print(f'\nAdaptive beats grid on $wins of $total photos; mean PSNR {$sum_a/$total:.2f} dB (adaptive) vs {$sum_g/$total:.2f} dB (grid).')"
