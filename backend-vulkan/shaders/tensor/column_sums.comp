#version 450
// Fixed-order column sums of `batch` stacked [rows, cols] matrices, in row chunks:
// out[(b * chunks + k) * cols + c] = sum over r in chunk k (in row order) of value(b, r, c),
// value = a[i] (mode 0) or a[i] * b[i] (mode 1), i = (b * rows + r) * cols + c.
// One invocation per output value, so the order never depends on the dispatch. A second pass
// (the same shader, one chunk covering all rows) adds the chunk sums in chunk order.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float bv[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float outv[]; };

// Mirrors tensor.rs `ColumnSumParams`.
layout(push_constant) uniform Params {
    uint batch;
    uint rows;
    uint cols;
    uint rows_per_chunk;
    uint chunks;
    uint product; // 1: value = a * b
} p;

void main() {
    uint total = p.batch * p.chunks * p.cols;
    GRID_STRIDE(o, total) {
        uint c = o % p.cols;
        uint k = (o / p.cols) % p.chunks;
        uint b = o / (p.cols * p.chunks);
        uint r0 = k * p.rows_per_chunk;
        uint r1 = min(r0 + p.rows_per_chunk, p.rows);
        float sum = 0.0;
        for (uint r = r0; r < r1; ++r) {
            uint i = (b * p.rows + r) * p.cols + c;
            sum += p.product != 0u ? a[i] * bv[i] : a[i];
        }
        outv[o] = sum;
    }
}
