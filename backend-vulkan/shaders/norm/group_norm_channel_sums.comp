#version 450
// GroupNorm backward, one workgroup per (image, channel): parts[b, c] = (Σ dy (x - M) D, Σ dy)
// over the channel's pixels (fixed-order sums), with (M, D) = (the group mean, 1) for np = 1
// (the affine-gradient pass scales by the group's 1 / divisor) or the pixel's maps for np > 1.
#include "common.glsl"
#include "norm/reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer DY { float dy[]; };
layout(std430, set = 0, binding = 2) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 3) readonly buffer Maps { vec2 maps[]; }; // np > 1 only
layout(std430, set = 0, binding = 4) writeonly buffer Parts { vec2 parts[]; };

#include "norm/group_norm_params.glsl"

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint hw = p.height * p.width, channels = p.groups * p.cpg;
    // total = B * C channels.
    GROUP_STRIDE(bc, p.total) {
        uint bg = (bc / channels) * p.groups + (bc % channels) / p.cpg;
        float mean = stats[2u * bg];
        vec2 sums = vec2(0.0);
        for (uint pix = lid; pix < hw; pix += gl_WorkGroupSize.x) {
            uint i = bc * hw + pix;
            float g = dy[i];
            if (p.patches == 1u) {
                sums += vec2(g * (x[i] - mean), g);
            } else {
                vec2 map = maps[bg * hw + pix];
                sums += vec2(g * (x[i] - map.x) * map.y, g);
            }
        }
        vec2 total = workgroup_sum2(sums);
        if (lid == 0u) {
            parts[bc] = total;
        }
    }
}
