#version 450
// y[b, c, r] = x[b, r, c] for x [batch, rows, cols], through TILE x TILE tiles in shared memory
// so that both the reads of x and the writes of y are contiguous across neighbouring
// invocations. A pure copy: the same bits whatever TILE is.
#include "common.glsl"

// TILE * TILE must be the workgroup size (specialization constant 0).
layout(constant_id = 1) const uint TILE = 16;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

// Mirrors tensor.rs `TransposeParams`.
layout(push_constant) uniform Params {
    uint batch;
    uint rows;
    uint cols;
} p;

// One padding column: the column reads of the second phase hit different banks.
shared float tile[TILE * (TILE + 1u)];

void main() {
    uint tx = gl_LocalInvocationID.x % TILE, ty = gl_LocalInvocationID.x / TILE;
    uint tiles_c = (p.cols + TILE - 1u) / TILE;
    uint tiles_per_matrix = ((p.rows + TILE - 1u) / TILE) * tiles_c;
    uint plane = p.rows * p.cols;
    GROUP_STRIDE(t, p.batch * tiles_per_matrix) {
        uint b = t / tiles_per_matrix, within = t % tiles_per_matrix;
        uint r0 = (within / tiles_c) * TILE, c0 = (within % tiles_c) * TILE;
        // Read x[b, r0 + ty, c0 + tx] (contiguous in tx).
        if (r0 + ty < p.rows && c0 + tx < p.cols) {
            tile[ty * (TILE + 1u) + tx] = x[b * plane + (r0 + ty) * p.cols + c0 + tx];
        }
        barrier();
        // Write y[b, c0 + ty, r0 + tx] = x[b, r0 + tx, c0 + ty] (contiguous in tx).
        if (c0 + ty < p.cols && r0 + tx < p.rows) {
            y[b * plane + (c0 + ty) * p.rows + r0 + tx] = tile[tx * (TILE + 1u) + ty];
        }
        barrier();
    }
}
