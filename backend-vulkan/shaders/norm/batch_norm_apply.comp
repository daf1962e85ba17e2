#version 450
// Training-mode BatchNorm's output, one invocation per value: y = (x - mean) (rstd gamma) + beta.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Gamma { float gamma[]; };
layout(std430, set = 0, binding = 2) readonly buffer Beta { float beta[]; };
layout(std430, set = 0, binding = 3) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Y { float y[]; };

#include "norm/batch_norm_params.glsl"

void main() {
    GRID_STRIDE(i, p.total) {
        uint c = (i / p.spatial) % p.channels;
        y[i] = (x[i] - stats[2u * c]) * (stats[2u * c + 1u] * gamma[c]) + beta[c];
    }
}
