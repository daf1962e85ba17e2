#version 450
// Training-mode BatchNorm statistics, one workgroup per channel over its batch x spatial values:
// the mean, then the biased variance (two passes, fixed-order sums); stats[c] = (mean, rstd)
// and, when asked, running = (1 - momentum) running + momentum (mean, var n / (n - 1)).
#include "common.glsl"
#include "norm/reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 2) buffer RunningMean { float running_mean[]; }; // flag only
layout(std430, set = 0, binding = 3) buffer RunningVar { float running_var[]; };   // flag only

#include "norm/batch_norm_params.glsl"

void main() {
    uint lid = gl_LocalInvocationID.x, n = p.batch * p.spatial;
    GROUP_STRIDE(c, p.channels) {
        float sum = 0.0;
        for (uint e = lid; e < n; e += gl_WorkGroupSize.x) {
            sum += x[value_index(c, e)];
        }
        float mean = workgroup_sum(sum) / float(n);
        float squares = 0.0;
        for (uint e = lid; e < n; e += gl_WorkGroupSize.x) {
            float d = x[value_index(c, e)] - mean;
            squares += d * d;
        }
        float variance = workgroup_sum(squares) / float(n);
        if (lid == 0u) {
            stats[2u * c] = mean;
            stats[2u * c + 1u] = 1.0 / sqrt(variance + p.eps);
            if (p.flag != 0u) {
                float keep = 1.0 - p.momentum;
                running_mean[c] = keep * running_mean[c] + p.momentum * mean;
                running_var[c] = keep * running_var[c] + p.momentum * (variance * (float(n) / float(n - 1u)));
            }
        }
    }
}
