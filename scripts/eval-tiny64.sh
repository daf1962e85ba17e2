#!/usr/bin/env bash
# The numbers of docs/RESULTS.md: a tiny64 model at N/2, N, 2N tokens per patch on the eval photos
# (256x256 centre crops = 4x4 patches, tiled and merged decoding; and 64x64 centre crops = one
# patch), and at N on the cross-domain folders. One JSON object per line (`gpstoken eval --json`).
#   scripts/eval-tiny64.sh [MODEL] [EXTRA gpstoken eval OPTIONS...]
set -euo pipefail
model="${1:-models/tiny64.safetensors}"
shift || true
shared="${GPSTOKEN_SHARED:-../shared}"
bin="${GPSTOKEN_BIN:-target/release/gpstoken}"
[ -x "$bin" ] || cargo build --release -p gpstoken-cli >&2
for tokens in 16 32 64; do
    "$bin" eval --model "$model" --data "$shared/data/eval" --tokens "$tokens" --size 256 --multi-patch tiled --json "$@"
    "$bin" eval --model "$model" --data "$shared/data/eval" --tokens "$tokens" --size 256 --multi-patch merged --json "$@"
    "$bin" eval --model "$model" --data "$shared/data/eval" --tokens "$tokens" --size 64 --json "$@"
done
for domain in faces medical remote_sensing; do
    for size in 256 64; do
        echo -n "{\"domain\":\"$domain\",\"result\":"
        "$bin" eval --model "$model" --data "$shared/data/xdomain/$domain" --size "$size" --json "$@" | tr -d '\n'
        echo "}"
    done
done
