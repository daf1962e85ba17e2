#version 450
// adaLN modulation: y[b, n, :] = x[b, n, :] * (1 + scale[b, :]) + shift[b, :], in that order.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Shift { float shift[]; };
layout(std430, set = 0, binding = 2) readonly buffer Scale { float scale[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Y { float y[]; };

// Mirrors tensor.rs `TokenParams`.
layout(push_constant) uniform Params {
    uint total;
    uint tokens;
    uint dim;
    float offset; // unused here
} p;

void main() {
    GRID_STRIDE(i, p.total) {
        uint v = (i / (p.tokens * p.dim)) * p.dim + i % p.dim;
        precise float scaled = x[i] * (1.0 + scale[v]);
        precise float shifted = scaled + shift[v];
        y[i] = shifted;
    }
}
