#version 450
// The multi-patch merge (spec 2.4) of tokens [batch, np², N, 5 + C], per value, or its backward.
// Forward: σx/np, σy/np, x' = -1 + (2j + x + 1)/np, y' = -1 + (2i + y + 1)/np for patch
// k = i np + j (f32, left to right as torch); ρ and features copied.
// Backward: the gradients of σx, σy, x and y divided by np, the others copied.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { float dst[]; };

// Mirrors gaussian.rs `MergeParams`.
layout(push_constant) uniform Params {
    uint total;
    uint stride; // 5 + channels
    uint tokens_per_patch;
    uint patches; // np
    uint backward; // 1: the backward
} p;

void main() {
    float np = float(p.patches);
    GRID_STRIDE(i, p.total) {
        uint r = i / p.stride, col = i % p.stride;
        float v = src[i];
        if (col == 0u || col == 1u) {
            v = v / np;
        } else if (col == 3u || col == 4u) {
            if (p.backward != 0u) {
                v = v / np;
            } else {
                uint k = (r / p.tokens_per_patch) % (p.patches * p.patches);
                float offset = float(col == 3u ? k % p.patches : k / p.patches);
                // `precise`: left to right as written (no reassociation of the constants).
                precise float merged = -1.0 + (2.0 * offset + v + 1.0) / np;
                v = merged;
            }
        }
        dst[i] = v;
    }
}
