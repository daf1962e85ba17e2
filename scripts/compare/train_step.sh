#!/usr/bin/env bash
# The tokenizer's training step side by side: ours (CPU backend, benches/examples/train_step.rs)
# against the official model in PyTorch 2.1.2 on the CPU (scripts/compare/train_step_driver.py),
# on the same synthetic batch (ours writes it; the official model reads it), same config
# (`cpu-tiny` = scripts/compare/cpu_tiny.yaml), forward + MSE + backward + Adam (betas 0.5, 0.9).
#
# Each measurement is one process that takes 2 warm-up steps and times REPS steps (median); ours
# and PyTorch alternate, ROUNDS times; the table gives the median over rounds and the ratio of
# medians (PyTorch seconds / ours). Wall and process CPU seconds per step are both reported (the
# machine may be shared: the CPU seconds say how much of the wall time was work).
#
#   OFFICIAL=/path/to/GPSToken checkout (models/, gscuda/ are read; the CUDA splat is replaced by
#            a dense PyTorch expression of spec 2.1)                       [required]
#   BATCH=8 THREADS=2 REPS=5 ROUNDS=3 VENV=/tmp/gpstoken-torch-venv
#
# The venv: PyPI's torch 2.1.2 wheel for Linux x86_64 is the CUDA build. Installed with
# `--no-deps` it does not import (torch/__init__.py loads libtorch_global_deps.so, which needs
# libcublas, libcufft, libcurand, libcudart, libnvToolsExt), so the script installs the wheel
# with its dependencies (the nvidia-* libraries are only loaded, no GPU is used), plus
# torchvision 0.16.2 (`--no-deps`; RoIAlign), numpy 1.24 and pyyaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OFFICIAL:?set OFFICIAL to a checkout of the official GPSToken repository}"
BATCH=${BATCH:-8}; THREADS=${THREADS:-2}; REPS=${REPS:-5}; ROUNDS=${ROUNDS:-3}
VENV=${VENV:-/tmp/gpstoken-torch-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "numpy==1.24.*" pyyaml "torch==2.1.2"
  "$VENV/bin/pip" install -q --no-deps "torchvision==0.16.2"
fi
PY="$VENV/bin/python"
cargo build -q --release -p gpstoken-benches --example train_step
OURS=target/release/examples/train_step
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
INPUTS="$WORK/inputs.f32"; RES="$WORK/results.jsonl"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
for round in $(seq "$ROUNDS"); do
  echo "ours $($OURS cpu-tiny "$BATCH" "$THREADS" "$REPS" "$INPUTS")" >> "$RES"
  echo "torch $("$PY" scripts/compare/train_step_driver.py train "$OFFICIAL" scripts/compare/cpu_tiny.yaml \
    "$INPUTS" "$BATCH" "$THREADS" "$REPS")" >> "$RES"
  tail -2 "$RES"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$RES" <<'PY'
import json, sys, statistics as st
r = {"ours": [], "torch": []}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    r[who].append(json.loads(js))
med = {k: (st.median(x["seconds"] for x in v), st.median(x["cpu_seconds"] for x in v)) for k, v in r.items()}
print("| | wall s/step (median) | CPU s/step (median) |")
print("|---|---|---|")
print(f"| PyTorch {r['torch'][0]['torch']} | {med['torch'][0]:.3f} | {med['torch'][1]:.3f} |")
print(f"| ours | {med['ours'][0]:.3f} | {med['ours'][1]:.3f} |")
print(f"| ratio PyTorch/ours | {med['torch'][0]/med['ours'][0]:.2f}x | {med['torch'][1]/med['ours'][1]:.2f}x |")
PY
