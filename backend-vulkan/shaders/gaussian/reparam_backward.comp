#version 450
// The reparameterisation's backward, one invocation per dtokens value: the Gaussian columns give
// ddelta (= dt s(1-s), times 2 for ρ, x, y) and, when asked, dg_init (ddelta times da/dg or
// db/dg); the feature columns are copied to dfeatures.
#include "common.glsl"
#include "gaussian/reparam.glsl"

layout(std430, set = 0, binding = 0) readonly buffer GInit { float g_init[]; };
layout(std430, set = 0, binding = 1) readonly buffer Delta { float delta[]; };
layout(std430, set = 0, binding = 2) readonly buffer DTokens { float dtokens[]; };
layout(std430, set = 0, binding = 3) writeonly buffer DDelta { float ddelta[]; };
layout(std430, set = 0, binding = 4) writeonly buffer DFeatures { float dfeatures[]; };
layout(std430, set = 0, binding = 5) writeonly buffer DGInit { float dg_init[]; };

// Mirrors gaussian.rs `ReparamParams`.
layout(push_constant) uniform Params {
    uint total; // rows * (5 + channels)
    uint channels;
    uint write_dg_init; // 1: dg_init is bound and written
} p;

void main() {
    uint stride = 5u + p.channels;
    GRID_STRIDE(i, p.total) {
        uint r = i / stride, col = i % stride;
        float dt = dtokens[i];
        if (col < 5u) {
            uint j = r * 5u + col;
            float g = g_init[j];
            float z = pre_activation(col, g) + delta[j];
            float s = 1.0 / (1.0 + exp(-z));
            float ds = s * (1.0 - s);
            float dd = col < 2u ? dt * ds : dt * (2.0 * ds);
            ddelta[j] = dd;
            if (p.write_dg_init != 0u) {
                dg_init[j] = col < 2u ? dd / (g * (1.0 - g)) : dd * (2.0 / ((1.0 + g) * (1.0 - g)));
            }
        } else {
            dfeatures[r * p.channels + (col - 5u)] = dt;
        }
    }
}
