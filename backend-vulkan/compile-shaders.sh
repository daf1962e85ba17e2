#!/usr/bin/env bash
# Compiles every GLSL compute shader under shaders/ into the committed SPIR-V under spv/
# (same relative path, .comp -> .spv), with glslc --target-env=vulkan1.2 -O, and validates
# each with spirv-val. The build never runs this: the .spv files are committed so that a
# fresh machine needs no shader compiler.
#
#   ./compile-shaders.sh          regenerate spv/
#   ./compile-shaders.sh --check  regenerate into a temporary folder and fail if any committed
#                                 .spv differs, is missing, or has no shader (what CI runs)
#
# Needs: glslc and spirv-val (Debian: apt-get install glslc spirv-tools).
set -euo pipefail
cd "$(dirname "$0")"

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
for tool in glslc spirv-val; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found (apt-get install glslc spirv-tools)" >&2; exit 1; }
done

out=spv
if [ "$check" = 1 ]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi

status=0
while IFS= read -r src; do
    rel="${src#shaders/}"
    spv="$out/${rel%.comp}.spv"
    mkdir -p "$(dirname "$spv")"
    # -I shaders: the shared include (common.glsl). No debug info, so the bytes do not depend
    # on the source path or the machine.
    glslc --target-env=vulkan1.2 -O -I shaders -o "$spv" "$src"
    spirv-val --target-env vulkan1.2 "$spv"
    if [ "$check" = 1 ] && ! cmp -s "$spv" "spv/${rel%.comp}.spv"; then
        echo "$0: spv/${rel%.comp}.spv is missing or stale (run $0 and commit spv/)" >&2
        status=1
    fi
done < <(find shaders -name '*.comp' | LC_ALL=C sort)

if [ "$check" = 1 ]; then
    # Committed SPIR-V without a shader source is stale too.
    while IFS= read -r spv; do
        rel="${spv#spv/}"
        if [ ! -f "shaders/${rel%.spv}.comp" ]; then
            echo "$0: $spv has no shaders/${rel%.spv}.comp" >&2
            status=1
        fi
    done < <(find spv -name '*.spv' | LC_ALL=C sort)
    [ "$status" = 0 ] && echo "compile-shaders: every committed .spv is up to date"
fi
exit "$status"
