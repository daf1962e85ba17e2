#!/usr/bin/env bash
# Algorithm 1 side by side: the official `adaptive_initialize` (datasets/adaptivegps.py, NumPy 1.24,
# OpenCV 4.9 with cv2.setUseOptimized(False) and with the default IPP path) against ours
# (Algorithm 1 with the `log2`/`pow` that `gpstoken` uses, glibc's on Linux like NumPy's, in the
# bench binary's compare mode; GPSTOKEN_PARTITION_MATH=portable in the environment measures the
# core's portable ones instead), on the same 256x256 grey inputs.
#
# Each measurement is one process that times REPS calls (after 2 warm-up calls) and reports the
# median; the three implementations are run interleaved, sample by sample, ROUNDS times; the
# table gives the median over rounds and the ratio of medians. One thread throughout.
#
#   OFFICIAL=/path/to/GPSToken checkout (needs datasets/adaptivegps.py)   [required]
#   IMAGES="a.png b.png ..."  default: the first 8 of $GPSTOKEN_SHARED/data/eval
#   N=128 REPS=20 ROUNDS=3 VENV=/tmp/gpstoken-compare-venv
#   BEFORE=path to another build of the partition bench binary (e.g. of an older commit with this
#          bench file): measured too, interleaved, as the "ours, before" column
#
# Needs python3 (a venv with opencv-python-headless 4.9, numpy 1.24, pillow is made if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OFFICIAL:?set OFFICIAL to a checkout of the official GPSToken repository}"
N=${N:-128}; REPS=${REPS:-20}; ROUNDS=${ROUNDS:-3}; VENV=${VENV:-/tmp/gpstoken-compare-venv}
SHARED=${GPSTOKEN_SHARED:-shared}
if [ -z "${IMAGES:-}" ]; then IMAGES=$(ls "$SHARED"/data/eval/*.png | head -8 | tr '\n' ' '); fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "opencv-python-headless==4.9.*" "numpy==1.24.*" pillow
fi
PY="$VENV/bin/python"; DRIVER=scripts/compare/partition_driver.py
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1

BENCH=$(cargo bench -p gpstoken-benches --bench partition --no-run --message-format=json 2>/dev/null \
  | "$PY" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "partition" and m.get("executable"): print(m["executable"])')
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
# shellcheck disable=SC2086
NAMES=$("$PY" $DRIVER prep "$WORK" $IMAGES)
RES="$WORK/results.jsonl"
for round in $(seq "$ROUNDS"); do
  for s in $NAMES; do
    for impl in plain ipp ours ${BEFORE:+before}; do
      if [ "$impl" = ours ] || [ "$impl" = before ]; then
        bin=$BENCH; [ "$impl" = before ] && bin=$BEFORE
        line=$(GPSTOKEN_PARTITION_COMPARE="$WORK/$s.f32" GPSTOKEN_PARTITION_N=$N GPSTOKEN_PARTITION_REPS=$REPS "$bin")
      else
        line=$("$PY" $DRIVER official "$OFFICIAL/datasets/adaptivegps.py" "$WORK/$s.f32" "$N" "$REPS" "$impl")
      fi
      echo "{\"sample\": \"$s\", \"impl\": \"$impl\", \"round\": $round, ${line#\{}" >> "$RES"
    done
  done
done
echo "Algorithm 1, 256x256, N = $N, 1 thread; $(lscpu | sed -n 's/^Model name: *//p'); $(date -u +%F)"
echo "median of $REPS calls per process, median over $ROUNDS interleaved rounds"
echo
"$PY" $DRIVER table "$RES"
