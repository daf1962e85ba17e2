#!/usr/bin/env bash
# The numbers of docs/RESULTS.md: a tiny64 model at N/2, N, 2N tokens on the eval photos, and at
# N on the cross-domain folders. Prints one JSON object per line (`gpstoken eval --json`).
#   scripts/eval-tiny64.sh [MODEL] [EXTRA gpstoken eval OPTIONS...]
set -euo pipefail
model="${1:-models/tiny64.safetensors}"
shift || true
shared="${GPSTOKEN_SHARED:-../shared}"
bin="${GPSTOKEN_BIN:-target/release/gpstoken}"
[ -x "$bin" ] || cargo build --release -p gpstoken-cli >&2
for tokens in 16 32 64; do
    "$bin" eval --model "$model" --data "$shared/data/eval" --tokens "$tokens" --json "$@"
done
for domain in faces medical remote_sensing; do
    echo -n "{\"domain\":\"$domain\",\"result\":"
    "$bin" eval --model "$model" --data "$shared/data/xdomain/$domain" --json "$@" | tr -d '\n'
    echo "}"
done
