#version 450
// tokens [rows, 5 + C] = [sigmoid(a + δ) (σx, σy), 2 sigmoid(b + δ) - 1 (ρ, x, y), features],
// a = -ln(1/g - 1), b = -ln(2/(1 + g) - 1), in the CPU backend's f32 order.
#include "common.glsl"
#include "gaussian/reparam.glsl"

layout(std430, set = 0, binding = 0) readonly buffer GInit { float g_init[]; };
layout(std430, set = 0, binding = 1) readonly buffer Delta { float delta[]; };
layout(std430, set = 0, binding = 2) readonly buffer Features { float features[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Tokens { float tokens[]; };

// Mirrors gaussian.rs `ReparamParams`.
layout(push_constant) uniform Params {
    uint total; // rows * (5 + channels)
    uint channels;
} p;

void main() {
    uint stride = 5u + p.channels;
    GRID_STRIDE(i, p.total) {
        uint r = i / stride, col = i % stride;
        if (col < 5u) {
            float z = pre_activation(col, g_init[r * 5u + col]) + delta[r * 5u + col];
            float e = 1.0 + exp(-z);
            tokens[i] = col < 2u ? 1.0 / e : 2.0 / e - 1.0;
        } else {
            tokens[i] = features[r * p.channels + (col - 5u)];
        }
    }
}
