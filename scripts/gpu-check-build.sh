#!/usr/bin/env bash
# Builds the GPU check bundle here (x86-64, with a Rust toolchain) for scripts/gpu-check.sh to
# run on a GPU machine that has no toolchain and no network:
#
#   scripts/gpu-check-build.sh [BUNDLE_DIR]      (default: target/gpu-check-bundle/)
#
# It builds the release test binaries of backend-cuda (and of backend-vulkan when the workspace
# has it) with `cargo test --release --no-run`, copies them stripped into BUNDLE_DIR/bin/ under
# their target names (conformance, devices, nccl, splat_bench, lib unit tests as backend_cuda_lib),
# with the stripped CLI, the shipped tiny64 model and the two sample photos (and, with OFFICIAL set,
# the official model code and an input for its M128 step),
# copies shared/golden/ (the golden parity tests' data) into BUNDLE_DIR/shared/golden/ when it
# fits, and checks the whole bundle stays under 64 MiB (what can be carried to the GPU machine).
# The binaries embed the committed PTX; they need glibc and, on the GPU machine, the NVIDIA
# driver (libcuda.so.1) and optionally cuBLAS (see gpu-check.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bundle=${1:-$root/target/gpu-check-bundle}
limit=$((64 * 1024 * 1024))

packages=(-p gpstoken-backend-cuda)
if cargo metadata --no-deps --format-version 1 | grep -q '"name":"gpstoken-backend-vulkan"'; then
    packages+=(-p gpstoken-backend-vulkan)
fi

rm -rf "$bundle"
mkdir -p "$bundle/bin"
# One JSON line per artifact: keep the test executables of the chosen packages.
cargo test --release "${packages[@]}" --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if not m.get("profile", {}).get("test") and m["target"]["kind"] != ["test"]:
        continue
    pkg = m["package_id"].split("#")[0].rsplit("/", 1)[-1].replace("-", "_")
    name = m["target"]["name"]
    if name == "emulated":
        continue  # the CPU emulator suite: not for the GPU machine
    if m["target"]["kind"] == ["lib"]:
        name = pkg.removeprefix("gpstoken_") + "_lib"
    elif "vulkan" in pkg:
        name = "vulkan_" + name
    print(name, m["executable"])
' | while read -r name exe; do
    cp "$exe" "$bundle/bin/$name"
    strip "$bundle/bin/$name" 2>/dev/null || objcopy --strip-all "$bundle/bin/$name"
    echo "bin/$name  $(du -h "$bundle/bin/$name" | cut -f1)"
done
cp scripts/gpu-check.sh "$bundle/"
# The CLI (reconstruct/fit on cuda next to cpu, an M128 training step, the NCCL training path), the
# shipped tokenizer and the two shipped sample photos (licences in samples/README.md).
cargo build --release -p gpstoken-cli
cp target/release/gpstoken "$bundle/bin/gpstoken"
strip "$bundle/bin/gpstoken" 2>/dev/null || objcopy --strip-all "$bundle/bin/gpstoken"
mkdir -p "$bundle/models" "$bundle/data"
cp models/tiny64.safetensors "$bundle/models/"
cp samples/astronaut.png samples/coffee.png "$bundle/data/"
echo "bin/gpstoken  $(du -h "$bundle/bin/gpstoken" | cut -f1)"
# The official model's M128 step on the same GPU (gpu-check.sh runs it when PyTorch is there):
# with OFFICIAL=<checkout of the official repository>, its model code (models/, gscuda/, the M128
# yaml; nothing of it is in this repository) and one synthetic 256x256 sample with its Algorithm 1
# layout, which the driver repeats to the batch of 16.
if [[ -n "${OFFICIAL:-}" && -d "$OFFICIAL/models" ]]; then
    mkdir -p "$bundle/official/configs"
    cp -r "$OFFICIAL/models" "$OFFICIAL/gscuda" "$bundle/official/"
    rm -rf "$bundle/official/gscuda/build"
    cp "$OFFICIAL/configs/gpstoken_m128.yaml" "$bundle/official/configs/"
    cp scripts/compare/train_step_driver.py "$bundle/"
    cargo build -q --release -p gpstoken-benches --example train_step
    target/release/examples/train_step m128 1 1 0 "$bundle/data/m128_inputs.f32"
    echo "official/ (model code) and data/m128_inputs.f32"
else
    echo "OFFICIAL not set: the official model's step is left out of the bundle" >&2
fi

used=$(du -sb "$bundle" | cut -f1)
golden=${GPSTOKEN_SHARED:-$root/../../shared}/golden
[[ -d "$golden" ]] || golden=$root/shared/golden
if [[ -d "$golden" ]]; then
    need=$(du -sb "$golden" | cut -f1)
    if (( used + need < limit )); then
        mkdir -p "$bundle/shared"
        cp -r "$golden" "$bundle/shared/golden"
        echo "shared/golden  $(du -sh "$bundle/shared/golden" | cut -f1)"
    else
        echo "shared/golden left out ($need bytes would pass 64 MiB); the golden tests will skip" >&2
    fi
fi
used=$(du -sb "$bundle" | cut -f1)
echo "bundle: $bundle, $((used / 1024 / 1024)) MiB of 64"
if (( used > limit )); then
    echo "the bundle is over 64 MiB" >&2
    exit 1
fi
