#version 450
// The gated residual: out[b, n, :] += gate[b, :] * f[b, n, :].
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Gate { float gate[]; };
layout(std430, set = 0, binding = 1) readonly buffer F { float f[]; };
layout(std430, set = 0, binding = 2) buffer Out { float outv[]; };

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
        precise float gated = gate[v] * f[i];
        precise float sum = outv[i] + gated;
        outv[i] = sum;
    }
}
