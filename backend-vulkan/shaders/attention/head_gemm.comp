#version 450
// Per (image, head) pair: C[pair] [m, n] = alpha A[pair] [m, k] B[pair] [k, n], overwritten.
// Each operand is read through strides: element (i, l) of pair `pair = image * heads + head`
// is at image * image_stride + head * head_stride + i * rs + l * cs, so the heads' columns of
// [B, L, H*D] tensors, the [B, H, Lq, Lk] probabilities and their transposes are all read in
// place. The products are the shared tiled GEMM (gemm_core.glsl, register-blocked for large
// products through its specialization constant 2): fixed-order sums.
#include "common.glsl"

// TILE * TILE must be the workgroup size (specialization constant 0).
layout(constant_id = 1) const uint TILE = 16;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer C { float c[]; };

// Mirrors attention.rs `HeadGemmParams`.
layout(push_constant) uniform Params {
    uint pairs;
    uint heads;
    uint m;
    uint n;
    uint k;
    float alpha;
    uint a_image;
    uint a_head;
    uint a_rs;
    uint a_cs;
    uint b_image;
    uint b_head;
    uint b_rs;
    uint b_cs;
    uint c_image;
    uint c_head;
    uint c_rs;
} p;

uint pair_base(uint pair, uint image_stride, uint head_stride) {
    return (pair / p.heads) * image_stride + (pair % p.heads) * head_stride;
}

float load_a(uint pair, uint row, uint l) {
    return a[pair_base(pair, p.a_image, p.a_head) + row * p.a_rs + l * p.a_cs];
}

float load_b(uint pair, uint l, uint col) {
    return b[pair_base(pair, p.b_image, p.b_head) + l * p.b_rs + col * p.b_cs];
}

void store(uint pair, uint row, uint col, float value) {
    c[pair_base(pair, p.c_image, p.c_head) + row * p.c_rs + col] = p.alpha * value;
}

#include "gemm_core.glsl"

void main() {
    gemm_tiles(p.pairs, p.m, p.n, p.k);
}
