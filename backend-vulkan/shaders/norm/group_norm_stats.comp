#version 450
// GroupNorm statistics, one workgroup per (image, group, tile) of the np x np grid (np = 1: the
// whole group): the mean, then the biased variance of the tile's cpg x th x tw values (two
// passes, fixed-order sums), saved as (mean, 1/sqrt(var + eps)) for the standard kind and
// (mean, std) for StdPlusEps (NormalizeNP).
#include "common.glsl"
#include "norm/reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Stats { float stats[]; };

#include "norm/group_norm_params.glsl"

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint th = p.height / p.patches, tw = p.width / p.patches;
    uint tile_len = th * tw, n = p.cpg * tile_len, hw = p.height * p.width;
    GROUP_STRIDE(item, p.total) {
        uint bg = item / (p.patches * p.patches), t = item % (p.patches * p.patches);
        uint base = bg * p.cpg * hw + (t / p.patches) * th * p.width + (t % p.patches) * tw;
        float sum = 0.0;
        for (uint e = lid; e < n; e += gl_WorkGroupSize.x) {
            uint rem = e % tile_len;
            sum += x[base + (e / tile_len) * hw + (rem / tw) * p.width + rem % tw];
        }
        float total_sum = workgroup_sum(sum);
        float mean = n == 0u ? 0.0 : total_sum / float(n);
        float squares = 0.0;
        for (uint e = lid; e < n; e += gl_WorkGroupSize.x) {
            uint rem = e % tile_len;
            float d = x[base + (e / tile_len) * hw + (rem / tw) * p.width + rem % tw] - mean;
            squares += d * d;
        }
        float total_squares = workgroup_sum(squares);
        float variance = n == 0u ? 0.0 : total_squares / float(n);
        if (lid == 0u) {
            stats[2u * item] = mean;
            stats[2u * item + 1u] = p.standard != 0u ? 1.0 / sqrt(variance + p.eps) : sqrt(variance);
        }
    }
}
