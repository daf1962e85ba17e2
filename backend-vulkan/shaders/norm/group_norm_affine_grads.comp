#version 450
// GroupNorm's dgamma and dbeta, one invocation per channel: the per-(image, channel) sums of
// group_norm_channel_sums.comp added over the images in order (np = 1: the image's sum times
// its group's 1 / divisor).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 1) readonly buffer Parts { vec2 parts[]; };
layout(std430, set = 0, binding = 2) writeonly buffer DGamma { float dgamma[]; };
layout(std430, set = 0, binding = 3) writeonly buffer DBeta { float dbeta[]; };

#include "norm/group_norm_params.glsl"

void main() {
    uint channels = p.groups * p.cpg, batch = p.total / channels;
    // total = B * C (one invocation per channel does the batch).
    GRID_STRIDE(c, channels) {
        vec2 sums = vec2(0.0);
        for (uint b = 0u; b < batch; ++b) {
            vec2 part = parts[b * channels + c];
            if (p.patches == 1u) {
                part.x *= inverse_divisor(stats[2u * (b * p.groups + c / p.cpg) + 1u]);
            }
            sums += part;
        }
        dgamma[c] = sums.x;
        dbeta[c] = sums.y;
    }
}
