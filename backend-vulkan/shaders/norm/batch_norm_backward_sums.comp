#version 450
// Training-mode BatchNorm backward, one workgroup per channel: sums[c] = (Σ dy, Σ dy (x - mean))
// over its batch x spatial values (fixed-order sums) and, when asked, dgamma = rstd Σ dy (x - mean),
// dbeta = Σ dy.
#include "common.glsl"
#include "norm/reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer DY { float dy[]; };
layout(std430, set = 0, binding = 2) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Sums { vec2 sums[]; };
layout(std430, set = 0, binding = 4) writeonly buffer DGamma { float dgamma[]; }; // flag only
layout(std430, set = 0, binding = 5) writeonly buffer DBeta { float dbeta[]; };   // flag only

#include "norm/batch_norm_params.glsl"

void main() {
    uint lid = gl_LocalInvocationID.x, n = p.batch * p.spatial;
    GROUP_STRIDE(c, p.channels) {
        float mean = stats[2u * c];
        vec2 partial = vec2(0.0);
        for (uint e = lid; e < n; e += gl_WorkGroupSize.x) {
            uint i = value_index(c, e);
            float g = dy[i];
            partial += vec2(g, g * (x[i] - mean));
        }
        vec2 total = workgroup_sum2(partial);
        if (lid == 0u) {
            sums[c] = total;
            if (p.flag != 0u) {
                dgamma[c] = stats[2u * c + 1u] * total.y;
                dbeta[c] = total.x;
            }
        }
    }
}
