#version 450
// One Adam step, op by op as the CPU backend (PyTorch's single-tensor Adam) in f32:
// g += wd p; m = lerp(m, g, 1 - b1); v = v b2 + (1 - b2) g g; p += (-step_size m) / (sqrt(v) / sqrt(bc2) + eps).
#include "common.glsl"

layout(std430, set = 0, binding = 0) buffer Param { float param[]; };
layout(std430, set = 0, binding = 1) readonly buffer Grad { float grad[]; };
layout(std430, set = 0, binding = 2) buffer M { float m[]; };
layout(std430, set = 0, binding = 3) buffer V { float v[]; };

// Mirrors optim.rs `AdamParams`.
layout(push_constant) uniform Params {
    uint total;
    float neg_step_size; // -(lr / (1 - b1^t)), rounded from f64
    float bc2_sqrt;      // sqrt(1 - b2^t), rounded from f64
    float one_minus_b1;
    float one_minus_b2;
    float beta2;
    float eps;
    float weight_decay;
} p;

// PyTorch's lerp (scalar form); `precise`: no fused multiply-add, the CPU's roundings.
float lerp_torch(float a, float b, float w) {
    precise float r = abs(w) < 0.5 ? a + w * (b - a) : b - (b - a) * (1.0 - w);
    return r;
}

void main() {
    GRID_STRIDE(i, p.total) {
        precise float g = grad[i];
        if (p.weight_decay != 0.0) {
            g = g + p.weight_decay * param[i];
        }
        float mi = lerp_torch(m[i], g, p.one_minus_b1);
        precise float vi = v[i] * p.beta2 + p.one_minus_b2 * g * g;
        precise float denom = sqrt(vi) / p.bc2_sqrt + p.eps;
        precise float pi = param[i] + p.neg_step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
        param[i] = pi;
    }
}
