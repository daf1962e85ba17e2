#version 450
// GroupNorm's dx, one invocation per value.
// np = 1: dx = (a gamma) dy - q - (x - m) c2 (group_norm_coefficients.comp).
// np > 1: dx = dy gamma D + dL/dmean_t / n + dL/dstd_t (x - mean_t) / (n std_t), t the pixel's
// tile, the tile gradients from group_norm_tile_grads.comp (the std term is 0 where std = 0).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Gamma { float gamma[]; };
layout(std430, set = 0, binding = 2) readonly buffer DY { float dy[]; };
layout(std430, set = 0, binding = 3) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 4) readonly buffer Maps { vec2 maps[]; }; // np > 1 only
// np = 1: per (image, group) (q, c2); np > 1: per tile (dL/dmean, dL/dstd).
layout(std430, set = 0, binding = 5) readonly buffer Coefficients { vec2 coefficients[]; };
layout(std430, set = 0, binding = 6) writeonly buffer DX { float dx[]; };

#include "norm/group_norm_params.glsl"

void main() {
    uint hw = p.height * p.width, group_len = p.cpg * hw;
    // total = B * C * H * W values.
    GRID_STRIDE(i, p.total) {
        uint bg = i / group_len, pix = i % hw;
        float gc = gamma[(bg % p.groups) * p.cpg + (i % group_len) / hw];
        float g = dy[i], xv = x[i];
        if (p.patches == 1u) {
            float m = stats[2u * bg], a = inverse_divisor(stats[2u * bg + 1u]);
            vec2 qc = coefficients[bg];
            dx[i] = (a * gc) * g - qc.x - (xv - m) * qc.y;
        } else {
            uint t = bg * p.patches * p.patches + tile_of(pix);
            float mean_t = stats[2u * t], std_t = stats[2u * t + 1u];
            vec2 tg = coefficients[t];
            float n = float(tile_count());
            float via_std = std_t > 0.0 ? tg.y / (n * std_t) : 0.0;
            dx[i] = g * gc * maps[bg * hw + pix].y + tg.x / n + via_std * (xv - mean_t);
        }
    }
}
