#version 450
// out[r, :] = table[indices[r], :] (indices checked below the vocabulary on the host).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Table { float table[]; };
layout(std430, set = 0, binding = 1) readonly buffer Indices { uint indices[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float outv[]; };

// Mirrors linear.rs `EmbeddingParams`.
layout(push_constant) uniform Params {
    uint total;
    uint dim;
    uint vocab; // unused here
} p;

void main() {
    GRID_STRIDE(i, p.total) {
        outv[i] = table[indices[i / p.dim] * p.dim + i % p.dim];
    }
}
