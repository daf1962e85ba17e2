#version 450
// copy, scale, fill: dst[i] = src[i] | alpha * src[i] | alpha.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { float dst[]; };

// Mirrors tensor.rs `UnaryParams`.
layout(push_constant) uniform Params {
    uint total;
    uint mode; // 0 copy, 1 scale, 2 fill
    float alpha;
} p;

void main() {
    GRID_STRIDE(i, p.total) {
        if (p.mode == 0u) {
            dst[i] = src[i];
        } else if (p.mode == 1u) {
            dst[i] = p.alpha * src[i];
        } else {
            dst[i] = p.alpha;
        }
    }
}
