#version 450
// dtable[v, :] = sum of dout[r, :] over the rows r looked up as v, in index order (0 for rows
// never looked up). `lookups` is built on the host: offsets[vocab + 1], then the rows of each
// table row in increasing order (a counting sort), so no atomics and a fixed order.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Dout { float dout[]; };
layout(std430, set = 0, binding = 1) readonly buffer Lookups { uint lookups[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Dtable { float dtable[]; };

// Mirrors linear.rs `EmbeddingParams`.
layout(push_constant) uniform Params {
    uint total; // vocab * dim
    uint dim;
    uint vocab;
} p;

void main() {
    GRID_STRIDE(i, p.total) {
        uint v = i / p.dim, d = i % p.dim;
        float sum = 0.0;
        for (uint j = lookups[v]; j < lookups[v + 1u]; ++j) {
            sum += dout[lookups[p.vocab + 1u + j] * p.dim + d];
        }
        dtable[i] = sum;
    }
}
