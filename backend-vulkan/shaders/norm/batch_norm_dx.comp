#version 450
// Training-mode BatchNorm's dx, one invocation per value (the statistics depend on x):
// dx = r γ dy - r γ Σdy / n - (x - mean) r³ γ Σdy (x - mean) / n.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Gamma { float gamma[]; };
layout(std430, set = 0, binding = 2) readonly buffer DY { float dy[]; };
layout(std430, set = 0, binding = 3) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 4) readonly buffer Sums { vec2 sums[]; };
layout(std430, set = 0, binding = 5) writeonly buffer DX { float dx[]; };

#include "norm/batch_norm_params.glsl"

void main() {
    float n = float(p.batch * p.spatial);
    GRID_STRIDE(i, p.total) {
        uint c = (i / p.spatial) % p.channels;
        float r = stats[2u * c + 1u], rg = r * gamma[c];
        vec2 s = sums[c];
        float q = rg * s.x / n, c2 = r * r * rg * s.y / n;
        dx[i] = rg * dy[i] - q - (x[i] - stats[2u * c]) * c2;
    }
}
