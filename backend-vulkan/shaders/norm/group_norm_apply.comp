#version 450
// GroupNorm's output, one invocation per value: y = (x - m) / divisor * gamma + beta, with the
// group's statistics (np = 1) or the pixel's bicubic maps (M, 1 / (S + eps)) (np > 1).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Gamma { float gamma[]; };
layout(std430, set = 0, binding = 2) readonly buffer Beta { float beta[]; };
layout(std430, set = 0, binding = 3) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 4) readonly buffer Maps { vec2 maps[]; }; // np > 1 only
layout(std430, set = 0, binding = 5) writeonly buffer Y { float y[]; };

#include "norm/group_norm_params.glsl"

void main() {
    uint hw = p.height * p.width, group_len = p.cpg * hw;
    // total = B * C * H * W values.
    GRID_STRIDE(i, p.total) {
        uint bg = i / group_len, pix = i % hw;
        uint c = (bg % p.groups) * p.cpg + (i % group_len) / hw;
        if (p.patches == 1u) {
            // The CPU backend's f32 order: (x - m) * (a * gamma) + beta.
            float a = inverse_divisor(stats[2u * bg + 1u]);
            y[i] = (x[i] - stats[2u * bg]) * (a * gamma[c]) + beta[c];
        } else {
            vec2 map = maps[bg * hw + pix];
            y[i] = (x[i] - map.x) * map.y * gamma[c] + beta[c];
        }
    }
}
