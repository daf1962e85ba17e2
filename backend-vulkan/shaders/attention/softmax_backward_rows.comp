#version 450
// Softmax backward per row, in place: ds = probs * (dp - Σ_j probs_j dp_j), where `ds` holds dp
// on entry. One workgroup per row; the row dot product is a fixed-order reduction
// (row_reduce.glsl).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Probs { float probs[]; };
layout(std430, set = 0, binding = 1) buffer Ds { float ds[]; };

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
        float local_dot = 0.0;
        for (uint j = lid; j < p.cols; j += size) {
            local_dot = fma(probs[base + j], ds[base + j], local_dot);
        }
        float dot = workgroup_sum(local_dot);
        for (uint j = lid; j < p.cols; j += size) {
            ds[base + j] = probs[base + j] * (ds[base + j] - dot);
        }
    }
}
