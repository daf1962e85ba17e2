#version 450
// NormalizeNP backward (np > 1), one workgroup per (image, group, tile): the maps' gradients
// pulled back through the bicubic resize to the tile's mean and std,
// tile_grads[(bg, ty, tx)] = Σ_pixels Wy[y, ty] Wx[x, tx] (dL/dM, dL/dS) (fixed-order sums; the
// transpose of group_norm_maps.comp's resize, as a gather, without atomics).
#include "common.glsl"
#include "norm/reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Table { float table[]; };
layout(std430, set = 0, binding = 1) readonly buffer PixelGrads { vec2 pixel_grads[]; };
layout(std430, set = 0, binding = 2) writeonly buffer TileGrads { vec2 tile_grads[]; };

#include "norm/group_norm_params.glsl"

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint hw = p.height * p.width, np = p.patches;
    // total = B * G * np * np tiles.
    GROUP_STRIDE(item, p.total) {
        uint bg = item / (np * np), ty = (item % (np * np)) / np, tx = item % np;
        vec2 sums = vec2(0.0);
        for (uint pix = lid; pix < hw; pix += gl_WorkGroupSize.x) {
            float w = table[(pix / p.width) * np + ty] * table[p.height * np + (pix % p.width) * np + tx];
            // Most pixels are out of the tile's reach (the cubic kernel spans 4 taps).
            if (w != 0.0) {
                sums += w * pixel_grads[bg * hw + pix];
            }
        }
        vec2 total = workgroup_sum2(sums);
        if (lid == 0u) {
            tile_grads[item] = total;
        }
    }
}
