#!/usr/bin/env bash
# f32 GEMM side by side: the CPU backend's `linear_forward` (y = x·Wᵀ, square n x n, through
# backend-cpu/examples/linear_rate.rs) against numpy's `x @ w.T` (OpenBLAS), n = 512/1024/2048,
# 1 and 2 threads. Each measurement is one process timing REPS calls (median) after 100 ms of
# warm-up calls on both sides (so that the pool threads are placed on separate cores);
# ours and numpy are interleaved, ROUNDS times; the table gives the median over rounds and the
# ratio of medians (ours / numpy in GFLOP/s).
#
#   OTHER=path to another build of linear_rate (e.g. with the previous GEMM crate): measured too,
#         interleaved, as an extra column
#   REPS=9 ROUNDS=3 VENV=/tmp/gpstoken-gemm-venv (made with numpy 1.24 + threadpoolctl if missing)
#
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for the numpy runs (they slow a current OpenBLAS);
# the kernel OpenBLAS picks is printed (threadpoolctl).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-9}; ROUNDS=${ROUNDS:-3}; VENV=${VENV:-/tmp/gpstoken-gemm-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "numpy==1.24.*" threadpoolctl
fi
PY="$VENV/bin/python"
cargo build -q --release -p gpstoken-backend-cpu --example linear_rate
OURS=target/release/examples/linear_rate
NUMPY='import sys, time, numpy as np
from threadpoolctl import threadpool_limits, threadpool_info
n, t, reps = map(int, sys.argv[1:4])
x = (np.arange(n*n) * 7919 % 1000).astype(np.float32).reshape(n, n) / 1000 - 0.5
w = x.copy()
with threadpool_limits(t):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.1:
        y = x @ w.T
    s = []
    for _ in range(reps):
        t0 = time.perf_counter(); y = x @ w.T; s.append(time.perf_counter() - t0)
s.sort(); med = s[reps // 2]
info = [i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"]
print("{\"n\":%d,\"threads\":%d,\"seconds\":%e,\"gflops\":%.1f,\"openblas\":\"%s\"}" % (n, t, med, 2*n**3/med/1e9, info))'
RES=$(mktemp); trap 'rm -f "$RES"' EXIT
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for n in 512 1024 2048; do
    for t in 1 2; do
      echo "ours $($OURS "$n" "$t" "$REPS")" >> "$RES"
      echo "numpy $(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" -c "$NUMPY" "$n" "$t" "$REPS")" >> "$RES"
      if [ -n "${OTHER:-}" ]; then echo "other $("$OTHER" "$n" "$t" "$REPS")" >> "$RES"; fi
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$RES" <<'PY'
import json, sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    r = json.loads(js)
    rows.setdefault((r["n"], r["threads"]), {}).setdefault(who, []).append(r["gflops"])
    if "openblas" in r: kernel = r["openblas"]
print("OpenBLAS kernel:", kernel)
other = any("other" in v for v in rows.values())
print("| n | threads | ours GFLOP/s | numpy GFLOP/s | ours/numpy |" + (" other GFLOP/s | ours/other |" if other else ""))
print("|---|---|---|---|---|" + ("---|---|" if other else ""))
for (n, t), v in sorted(rows.items()):
    o, p = st.median(v["ours"]), st.median(v["numpy"])
    line = f"| {n} | {t} | {o:.1f} | {p:.1f} | {o/p:.2f}x |"
    if other:
        q = st.median(v["other"]); line += f" {q:.1f} | {o/q:.2f}x |"
    print(line)
PY
