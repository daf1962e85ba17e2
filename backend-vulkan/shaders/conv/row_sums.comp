#version 450
// Fixed-order row sums in column chunks: out[r * chunks + q] = sum over the columns of chunk q
// (in order) of x[r, :] for x [rows, cols]. A second pass (one chunk covering all columns) adds
// the chunk sums in chunk order. One invocation per output value.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { float outv[]; };

// Mirrors conv.rs `RowSumParams`.
layout(push_constant) uniform Params {
    uint rows;
    uint cols;
    uint cols_per_chunk;
    uint chunks;
} p;

void main() {
    GRID_STRIDE(o, p.rows * p.chunks) {
        uint r = o / p.chunks, q = o % p.chunks;
        uint c0 = q * p.cols_per_chunk;
        uint c1 = min(c0 + p.cols_per_chunk, p.cols);
        float sum = 0.0;
        for (uint c = c0; c < c1; ++c) {
            sum += x[r * p.cols + c];
        }
        outv[o] = sum;
    }
}
