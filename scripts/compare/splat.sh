#!/usr/bin/env bash
# The splat side by side, one thread: the official kernels of gscuda/gs.cu compiled for the CPU
# with g++ -O2 (one loop iteration per CUDA thread; scripts/compare/splat_harness.cpp) against
# the CPU backend (`CpuBackend::with_threads(1)`, the splat bench's compare mode), forward +
# backward on the same inputs (random Gaussians shaped like an adaptive partition's, written by
# the Rust side).
#
# Each measurement is one process that times REPS calls of forward then backward (after one
# warm-up call) in thread CPU time and reports the medians; official and ours run interleaved,
# ROUNDS times per shape; the table gives the median over rounds and the ratio of medians.
#
#   OFFICIAL=/path/to/GPSToken checkout (needs gscuda/gs.cu)   [required]
#   SHAPES="64,16,128 256,16,4096"   canvas side, channels, Gaussians
#   ROUNDS=3  REPS_SMALL=50 (64x64)  REPS_LARGE=3 (official, larger shapes) REPS_OURS=20 (larger)
#
# Needs g++ and python3. Nothing of the official code is copied into this repository: the two
# `__global__` functions are extracted from the checkout into a temporary folder at build time.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OFFICIAL:?set OFFICIAL to a checkout of the official GPSToken repository}"
SHAPES=${SHAPES:-"64,16,128 256,16,4096"}
ROUNDS=${ROUNDS:-3}; REPS_SMALL=${REPS_SMALL:-50}; REPS_LARGE=${REPS_LARGE:-3}; REPS_OURS=${REPS_OURS:-20}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT

awk '/^__global__/{p=1} p{print} p&&/^}/{p=0}' "$OFFICIAL/gscuda/gs.cu" > "$WORK/gs_kernels.inc"
grep -q '_gs_render_backward_cuda' "$WORK/gs_kernels.inc" || { echo "no kernels found in $OFFICIAL/gscuda/gs.cu" >&2; exit 1; }
g++ -O2 -DGS_KERNELS="\"$WORK/gs_kernels.inc\"" -o "$WORK/official" scripts/compare/splat_harness.cpp

BENCH=$(cargo bench -p gpstoken-benches --bench splat --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "splat" and m.get("executable"): print(m["executable"])')

RES="$WORK/results.jsonl"
for round in $(seq "$ROUNDS"); do
  for shape in $SHAPES; do
    input="$WORK/in_$shape.bin"
    size=${shape%%,*}
    if [ "$size" -le 64 ]; then reps_off=$REPS_SMALL; reps_ours=$REPS_SMALL; else reps_off=$REPS_LARGE; reps_ours=$REPS_OURS; fi
    line=$(GPSTOKEN_SPLAT_COMPARE=$shape GPSTOKEN_SPLAT_DUMP=$input GPSTOKEN_SPLAT_REPS=$reps_ours "$BENCH")
    echo "{\"shape\": \"$shape\", \"impl\": \"ours\", \"round\": $round, ${line#\{}" >> "$RES"
    line=$("$WORK/official" "$input" "$reps_off")
    echo "{\"shape\": \"$shape\", \"impl\": \"official\", \"round\": $round, ${line#\{}" >> "$RES"
  done
done

echo "splat forward + backward, 1 thread, thread CPU time; $(lscpu | sed -n 's/^Model name: *//p'); $(date -u +%F); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "official: gs.cu kernels, g++ $(g++ -dumpfullversion) -O2; median of the per-process medians over $ROUNDS interleaved rounds"
echo
python3 - "$RES" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(shape, impl, key):
    return statistics.median(r[key] for r in rows if r["shape"] == shape and r["impl"] == impl)
print("| canvas x C, Gaussians | official fwd (ms) | official bwd (ms) | official total (ms) | ours fwd (ms) | ours bwd (ms) | ours total (ms) | ratio fwd | ratio bwd | ratio total |")
print("|---|---|---|---|---|---|---|---|---|---|")
for shape in dict.fromkeys(r["shape"] for r in rows):
    s, c, n = shape.split(",")
    o = [med(shape, "official", k) for k in ("forward_ms", "backward_ms", "total_ms")]
    u = [med(shape, "ours", k) for k in ("forward_ms", "backward_ms", "total_ms")]
    print(f"| {s}x{s}x{c}, {n} | " + " | ".join(f"{v:.3f}" for v in o + u) + " | "
          + " | ".join(f"{a / b:.1f}x" for a, b in zip(o, u)) + " |")
EOF
