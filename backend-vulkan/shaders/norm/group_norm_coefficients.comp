#version 450
// GroupNorm backward for np = 1, one invocation per (image, group): with a = 1 / divisor and
// k = d a / d var · 2 (a³ standard, a²/std StdPlusEps), dx = a gamma dy - q - (x - m) c2 where
// q = a Σ gamma Σdy / n and c2 = k Σ gamma Σdy (x - m) / n, the channels added in order.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Gamma { float gamma[]; };
layout(std430, set = 0, binding = 1) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 2) readonly buffer Parts { vec2 parts[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Coefficients { vec2 coefficients[]; };

#include "norm/group_norm_params.glsl"

void main() {
    // total = B * G groups.
    GRID_STRIDE(bg, p.total) {
        float second = stats[2u * bg + 1u];
        float a = inverse_divisor(second);
        float k = p.standard != 0u ? a * a * a : (second > 0.0 ? a * a / second : 0.0);
        uint c0 = (bg % p.groups) * p.cpg, b = bg / p.groups;
        vec2 sums = vec2(0.0); // (Σ gamma Σdy (x - m), Σ gamma Σdy)
        for (uint cl = 0u; cl < p.cpg; ++cl) {
            uint c = c0 + cl;
            sums += gamma[c] * parts[b * p.groups * p.cpg + c];
        }
        float n = float(tile_count());
        coefficients[bg] = vec2(a * sums.y / n, k * sums.x / n);
    }
}
