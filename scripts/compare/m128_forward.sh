#!/usr/bin/env bash
# M128 at full size (official config configs/gpstoken_m128.yaml, 128,663,478 parameters, random
# weights): encode + decode of one 256x256 photo (centre crop), 2 threads, the official PyTorch
# model on the CPU against `gpstoken reconstruct` (issue 12's row; the driver is
# scripts/compare/m128_forward_driver.py).
#
# Four measurements per round, ours and PyTorch alternating, ROUNDS times; the table gives the
# median over rounds and the ratio of medians (PyTorch seconds / ours):
#   - whole process, ours: `gpstoken --threads T reconstruct --model M128 --crop 256 PHOTO -o OUT
#     --json`, from spawn to exit (weights loading, photo loading and crop, Algorithm 1, encode,
#     decode, scoring, PNG write);
#   - whole process, PyTorch: the driver from spawn to exit (imports, model construction with
#     random init, the official preprocessing with Algorithm 1, encode, decode);
#   - model only, ours: `reconstruct` on a folder of REPS + 1 copies of the photo; the median gap
#     between successive output lines (weights loaded once; the first photo is the warm-up);
#   - model only, PyTorch: the same per-photo work, median of REPS passes after one warm-up pass.
# Wall seconds and CPU seconds (user + sys of the process; per photo from /proc/PID/stat) are both
# reported: the machine may be shared, the CPU seconds say how much of the wall time was work.
# The official renderer is a CUDA extension; the dense PyTorch stand-in of train_step_driver.py
# replaces it (a 64x64 render of 128 Gaussians, a negligible share). Albumentations' resize and
# crop are written with cv2 (see the driver).
#
#   OFFICIAL=/path/to/GPSToken checkout (models/, datasets/, configs/gpstoken_m128.yaml)  [required]
#   PHOTO=path   default: the first photo of $GPSTOKEN_SHARED/data/eval (GPSTOKEN_SHARED defaults
#                to ../shared)
#   MODEL=/tmp/m128-random.safetensors (written by the random_weights example when missing)
#   THREADS=2 REPS=3 ROUNDS=3 VENV=/tmp/gpstoken-torch-venv (made as train_step.sh makes it, plus
#   opencv-python-headless 4.9 and pillow)
#   RESULTS=file   also keep the raw JSON lines (one per measurement) there
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OFFICIAL:?set OFFICIAL to a checkout of the official GPSToken repository}"
THREADS=${THREADS:-2}; REPS=${REPS:-3}; ROUNDS=${ROUNDS:-3}
VENV=${VENV:-/tmp/gpstoken-torch-venv}; MODEL=${MODEL:-/tmp/m128-random.safetensors}
CONFIG="$OFFICIAL/configs/gpstoken_m128.yaml"
SHARED=${GPSTOKEN_SHARED:-../shared}
if [ -z "${PHOTO:-}" ]; then PHOTO=$(find "$SHARED/data/eval" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jp*g' \) | sort | head -1); fi
[ -f "$PHOTO" ] || { echo "no photo (set PHOTO or GPSTOKEN_SHARED)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "numpy==1.24.*" pyyaml "torch==2.1.2"
  "$VENV/bin/pip" install -q --no-deps "torchvision==0.16.2"
fi
PY="$VENV/bin/python"
"$PY" -c 'import cv2, PIL' 2>/dev/null || "$VENV/bin/pip" install -q --no-deps "opencv-python-headless==4.9.*" pillow
DRIVER=scripts/compare/m128_forward_driver.py
cargo build -q --release -p gpstoken-cli
OURS=target/release/gpstoken
if [ ! -f "$MODEL" ]; then
  cargo run -q --release -p gpstoken-cli --example random_weights -- m128 "$MODEL"
fi
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
RES="$WORK/results.jsonl"
ext=${PHOTO##*.}
mkdir "$WORK/photos"
for k in $(seq 0 "$REPS"); do cp "$PHOTO" "$WORK/photos/p$k.$ext"; done
cpu="$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus"  # before OMP_NUM_THREADS (nproc reads it)
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
# Page cache: the weights file and the Python packages are read once before anything is timed.
cat "$MODEL" > /dev/null
"$PY" -c 'import torch, torchvision, cv2, PIL, yaml, numpy' > /dev/null
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
row() { # KIND JSON
  echo "{\"kind\": \"$1\", \"round\": $round, ${2#\{}" >> "$RES"
  if [ -n "${RESULTS:-}" ]; then tail -1 "$RES" >> "$RESULTS"; fi
  echo "round $round $1: $(echo "$2" | cut -c1-160)" >&2
}
for round in $(seq "$ROUNDS"); do
  rm -rf "$WORK/ours.png" "$WORK/out"
  row ours_whole "$("$PY" $DRIVER timed "$OURS" --threads "$THREADS" reconstruct --model "$MODEL" --crop 256 \
    "$PHOTO" -o "$WORK/ours.png" --json)"
  row torch_whole "$("$PY" $DRIVER timed "$PY" $DRIVER forward "$OFFICIAL" "$CONFIG" "$PHOTO" "$THREADS" 0)"
  row ours_folder "$("$PY" $DRIVER timed "$OURS" --threads "$THREADS" reconstruct --model "$MODEL" --crop 256 \
    "$WORK/photos" -o "$WORK/out" --json)"
  row torch_forward "$("$PY" $DRIVER forward "$OFFICIAL" "$CONFIG" "$PHOTO" "$THREADS" "$REPS")"
done
echo
echo "M128 encode + decode, $(basename "$PHOTO") (256x256 centre crop), $THREADS thread(s); $cpu;" \
  "$(date -u +%F); load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ours: $(git rev-parse --short HEAD); PyTorch $("$PY" -c 'import torch; print(torch.__version__)'), official" \
  "renderer replaced by the dense stand-in; model only: per round the median of $REPS passes after a warm-up"
echo
"$PY" $DRIVER table "$RES"
