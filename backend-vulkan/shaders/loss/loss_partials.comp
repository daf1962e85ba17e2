#version 450
// One loss's partial sums, and optionally its gradient grad[i] = d term / d pred[i].
// Values are cut into blocks of LANES * PER; partial q = (block, lane) sums, in order, the PER
// values block * LANES * PER + lane + j * LANES (j < PER): a fixed order that does not depend
// on the dispatch. Each partial is a compensated pair (hi, lo) (compensated.glsl), which
// loss_reduce.comp adds up on the device, so the loss keeps the accuracy of an f64 sum even
// when the terms cancel (the mean of zero-mean values).
#include "common.glsl"
#include "compensated.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Pred { float pred[]; };
layout(std430, set = 0, binding = 1) readonly buffer Target { float target[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Grad { float grad[]; };
// Pair q at 2q (hi) and 2q + 1 (lo).
layout(std430, set = 0, binding = 3) writeonly buffer Partials { float partials[]; };

// Mirrors loss.rs `LOSS_LANES` and `LOSS_PER_PARTIAL`.
const uint LANES = 256u;
const uint PER = 16u;

// Mirrors loss.rs `LossParams`.
layout(push_constant) uniform Params {
    uint total;
    uint partial_count; // ceil(total / (LANES * PER)) * LANES
    uint kind;          // 0 MSE, 1 L1, 2 mean, 3 hinge
    uint write_grad;    // 1: write grad
    float norm;         // f32(2/n) for MSE, f32(1/n) otherwise
    float sign;         // hinge: +1 real images, -1 reconstructions
} p;

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
    GRID_STRIDE(q, p.partial_count) {
        uint first = (q / LANES) * LANES * PER + q % LANES;
        vec2 sum = vec2(0.0);
        for (uint j = 0u; j < PER; ++j) {
            uint i = first + j * LANES;
            if (i < p.total) {
                precise float t = term(pred[i], target[i]);
                sum = df_add(sum, vec2(t, 0.0));
                if (p.write_grad != 0u) {
                    grad[i] = gradient(pred[i], target[i]);
                }
            }
        }
        partials[2u * q] = sum.x;
        partials[2u * q + 1u] = sum.y;
    }
}
