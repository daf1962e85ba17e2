#version 450
// One loss's chunk sums: partials[c] = sum of term(pred[i], target[i]) over the values of
// chunk c (CHUNK values), reduced in a fixed tree, and optionally grad[i] = d term / d pred.
// The host adds the chunk sums in chunk order in f64 and divides by n.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Pred { float pred[]; };
layout(std430, set = 0, binding = 1) readonly buffer Target { float target[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Grad { float grad[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Partials { float partials[]; };

// Mirrors loss.rs `LossParams`.
layout(push_constant) uniform Params {
    uint total;
    uint chunk;      // values per partial sum
    uint kind;       // 0 MSE, 1 L1, 2 mean, 3 hinge
    uint write_grad; // 1: write grad
    float norm;      // f32(2/n) for MSE, f32(1/n) otherwise
    float sign;      // hinge: +1 real images, -1 reconstructions
} p;

shared float sums[gl_WorkGroupSize.x];

float term(float x, float t) {
    if (p.kind == 0u) {
        float d = x - t;
        return d * d;
    } else if (p.kind == 1u) {
        return abs(x - t);
    } else if (p.kind == 2u) {
        return x;
    }
    return max(1.0 - p.sign * x, 0.0);
}

float gradient(float x, float t) {
    if (p.kind == 0u) {
        return (x - t) * p.norm;
    } else if (p.kind == 1u) {
        float d = x - t;
        return d > 0.0 ? p.norm : (d < 0.0 ? -p.norm : 0.0);
    } else if (p.kind == 2u) {
        return p.norm;
    }
    // Active where 1 - sign x > 0; 0 at the kink, as PyTorch's relu.
    return p.sign * x < 1.0 ? -p.sign * p.norm : 0.0;
}

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint chunks = (p.total + p.chunk - 1u) / p.chunk;
    GROUP_STRIDE(c, chunks) {
        uint end = min((c + 1u) * p.chunk, p.total);
        float sum = 0.0;
        for (uint i = c * p.chunk + lid; i < end; i += gl_WorkGroupSize.x) {
            sum += term(pred[i], target[i]);
            if (p.write_grad != 0u) {
                grad[i] = gradient(pred[i], target[i]);
            }
        }
        sums[lid] = sum;
        barrier();
        // Tree over a power-of-two workgroup: the same pairs every run.
        for (uint half_size = gl_WorkGroupSize.x / 2u; half_size > 0u; half_size /= 2u) {
            if (lid < half_size) {
                sums[lid] += sums[lid + half_size];
            }
            barrier();
        }
        if (lid == 0u) {
            partials[c] = sums[0];
        }
        barrier();
    }
}
