#version 450
// NormalizeNP backward (np > 1), one invocation per (image, group, pixel): the loss gradient of
// the pixel's maps, dL/dM = -D Σ_c gamma dy and dL/dS = -D² Σ_c gamma dy (x - M), the group's
// channels added in order.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Gamma { float gamma[]; };
layout(std430, set = 0, binding = 2) readonly buffer DY { float dy[]; };
layout(std430, set = 0, binding = 3) readonly buffer Maps { vec2 maps[]; };
layout(std430, set = 0, binding = 4) writeonly buffer PixelGrads { vec2 pixel_grads[]; };

#include "norm/group_norm_params.glsl"

void main() {
    uint hw = p.height * p.width;
    // total = B * G * H * W pixels.
    GRID_STRIDE(i, p.total) {
        uint bg = i / hw, pix = i % hw, c0 = (bg % p.groups) * p.cpg;
        vec2 map = maps[i];
        vec2 sums = vec2(0.0); // (Σ gamma dy, Σ gamma dy (x - M))
        for (uint cl = 0u; cl < p.cpg; ++cl) {
            uint j = (bg * p.cpg + cl) * hw + pix;
            float gg = dy[j] * gamma[c0 + cl];
            sums += vec2(gg, gg * (x[j] - map.x));
        }
        pixel_grads[i] = vec2(-map.y * sums.x, -map.y * map.y * sums.y);
    }
}
