#version 450
// x[r, c] += row[c] for x [rows, cols].
#include "common.glsl"

layout(std430, set = 0, binding = 0) buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Row { float row[]; };

// Mirrors tensor.rs `BroadcastParams`.
layout(push_constant) uniform Params {
    uint total;
    uint cols;
} p;

void main() {
    GRID_STRIDE(i, p.total) {
        x[i] += row[i % p.cols];
    }
}
