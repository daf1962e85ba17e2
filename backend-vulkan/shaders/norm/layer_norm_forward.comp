#version 450
// LayerNorm, one workgroup per row: the mean, then the biased variance (two passes,
// fixed-order sums), stats[row] = (mean, rstd), y = (x - mean) rstd [* gamma + beta].
#include "common.glsl"
#include "norm/reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Gamma { float gamma[]; }; // affine only
layout(std430, set = 0, binding = 2) readonly buffer Beta { float beta[]; };   // affine only
layout(std430, set = 0, binding = 3) writeonly buffer Y { float y[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Stats { float stats[]; };

// Mirrors norm.rs `LayerNormParams`.
layout(push_constant) uniform Params {
    uint rows;
    uint features;
    uint flag; // 1: affine
    float eps;
} p;

void main() {
    uint lid = gl_LocalInvocationID.x, f = p.features;
    GROUP_STRIDE(row, p.rows) {
        uint base = row * f;
        float sum = 0.0;
        for (uint j = lid; j < f; j += gl_WorkGroupSize.x) {
            sum += x[base + j];
        }
        float total = workgroup_sum(sum);
        float mean = f == 0u ? 0.0 : total / float(f);
        float squares = 0.0;
        for (uint j = lid; j < f; j += gl_WorkGroupSize.x) {
            float d = x[base + j] - mean;
            squares += d * d;
        }
        float total_squares = workgroup_sum(squares);
        float rstd = 1.0 / sqrt((f == 0u ? 0.0 : total_squares / float(f)) + p.eps);
        if (lid == 0u) {
            stats[2u * row] = mean;
            stats[2u * row + 1u] = rstd;
        }
        for (uint j = lid; j < f; j += gl_WorkGroupSize.x) {
            float v = (x[base + j] - mean) * rstd;
            y[base + j] = p.flag != 0u ? v * gamma[j] + beta[j] : v;
        }
    }
}
