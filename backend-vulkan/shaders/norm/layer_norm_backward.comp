#version 450
// LayerNorm's dx, one workgroup per row: with g = dy [* gamma] and x̂ = (x - mean) rstd,
// dx = rstd (g - mean(g) - x̂ mean(g x̂)) (fixed-order sums). Optionally writes x̂, which the
// backend's column sums turn into dgamma = Σ_rows dy x̂.
#include "common.glsl"
#include "norm/reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Gamma { float gamma[]; }; // affine only
layout(std430, set = 0, binding = 2) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 3) readonly buffer DY { float dy[]; };
layout(std430, set = 0, binding = 4) writeonly buffer DX { float dx[]; };
layout(std430, set = 0, binding = 5) writeonly buffer XHat { float xhat[]; }; // flag bit 2

// Mirrors norm.rs `LayerNormParams`.
layout(push_constant) uniform Params {
    uint rows;
    uint features;
    uint flag; // bit 1: gamma is bound; bit 2: write x̂
    float eps;
} p;

void main() {
    uint lid = gl_LocalInvocationID.x, f = p.features;
    bool has_gamma = (p.flag & 1u) != 0u, write_xhat = (p.flag & 2u) != 0u;
    GROUP_STRIDE(row, p.rows) {
        uint base = row * f;
        float mean = stats[2u * row], rstd = stats[2u * row + 1u];
        vec2 sums = vec2(0.0); // (Σ g, Σ g x̂)
        for (uint j = lid; j < f; j += gl_WorkGroupSize.x) {
            float g = has_gamma ? dy[base + j] * gamma[j] : dy[base + j];
            sums += vec2(g, g * ((x[base + j] - mean) * rstd));
        }
        vec2 means = workgroup_sum2(sums) / float(f);
        for (uint j = lid; j < f; j += gl_WorkGroupSize.x) {
            float g = has_gamma ? dy[base + j] * gamma[j] : dy[base + j];
            float xh = (x[base + j] - mean) * rstd;
            dx[base + j] = rstd * (g - means.x - xh * means.y);
            if (write_xhat) {
                xhat[base + j] = xh;
            }
        }
    }
}
