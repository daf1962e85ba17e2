#version 450
// C [m, n] = A [m, k] B [k, n] (+ bias[col]), overwritten. A and B are read through row and
// column strides (A(i, l) = a[i a_rs + l a_cs]), so transposes cost nothing.
#include "common.glsl"

// TILE * TILE must be the workgroup size (specialization constant 0).
layout(constant_id = 1) const uint TILE = 16;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, set = 0, binding = 3) writeonly buffer C { float c[]; };

// Mirrors linear.rs `GemmParams`.
layout(push_constant) uniform Params {
    uint m;
    uint n;
    uint k;
    uint a_rs;
    uint a_cs;
    uint b_rs;
    uint b_cs;
    uint has_bias;
} p;

float load_a(uint batch, uint row, uint l) {
    return a[row * p.a_rs + l * p.a_cs];
}

float load_b(uint batch, uint l, uint col) {
    return b[l * p.b_rs + col * p.b_cs];
}

void store(uint batch, uint row, uint col, float value) {
    c[row * p.n + col] = p.has_bias != 0u ? value + bias[col] : value;
}

#include "gemm_core.glsl"

void main() {
    gemm_tiles(1u, p.m, p.n, p.k);
}
