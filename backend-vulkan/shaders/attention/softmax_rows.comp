#version 450
// In-place softmax of each row of s [rows, cols]: exp(s - max) / sum, one workgroup per row
// (rows taken with a group stride). The row sum is a fixed-order reduction (row_reduce.glsl).
#include "common.glsl"

layout(std430, set = 0, binding = 0) buffer S { float s[]; };

// Mirrors attention.rs `RowParams`.
layout(push_constant) uniform Params {
    uint rows;
    uint cols;
} p;

#include "row_reduce.glsl"

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint size = gl_WorkGroupSize.x;
    GROUP_STRIDE(row, p.rows) {
        uint base = row * p.cols;
        float local_max = uintBitsToFloat(0xff800000u); // -infinity
        for (uint j = lid; j < p.cols; j += size) {
            local_max = max(local_max, s[base + j]);
        }
        float row_max = workgroup_max(local_max);
        // Each entry is read and written by the same invocation in every phase.
        float local_sum = 0.0;
        for (uint j = lid; j < p.cols; j += size) {
            float e = exp(s[base + j] - row_max);
            s[base + j] = e;
            local_sum += e;
        }
        float inv = 1.0 / workgroup_sum(local_sum);
        for (uint j = lid; j < p.cols; j += size) {
            s[base + j] *= inv;
        }
    }
}
