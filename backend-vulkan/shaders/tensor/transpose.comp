#version 450
// y[b, c, r] = x[b, r, c] for x [batch, rows, cols].
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

// Mirrors tensor.rs `TransposeParams`.
layout(push_constant) uniform Params {
    uint total;
    uint rows;
    uint cols;
} p;

void main() {
    uint plane = p.rows * p.cols;
    GRID_STRIDE(o, p.total) {
        uint b = o / plane;
        uint c = (o % plane) / p.rows;
        uint r = o % p.rows;
        y[o] = x[b * plane + r * p.cols + c];
    }
}
