#version 450
// out[b, n, :] = a[b, n, :] * (offset + vec[b, :]): modulate's dx (offset 1, vec = scale) and
// the gated add's df (offset 0, vec = gate).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer Vec { float vecv[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float outv[]; };

// Mirrors tensor.rs `TokenParams`.
layout(push_constant) uniform Params {
    uint total;
    uint tokens;
    uint dim;
    float offset;
} p;

void main() {
    GRID_STRIDE(i, p.total) {
        uint v = (i / (p.tokens * p.dim)) * p.dim + i % p.dim;
        outv[i] = a[i] * (p.offset + vecv[v]);
    }
}
