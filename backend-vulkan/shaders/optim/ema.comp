#version 450
// EMA update: ema = lerp(ema, param, 1 - decay) (ema_pytorch's lerp_), PyTorch's scalar lerp.
#include "common.glsl"

layout(std430, set = 0, binding = 0) buffer Ema { float ema[]; };
layout(std430, set = 0, binding = 1) readonly buffer Param { float param[]; };

// Mirrors optim.rs `EmaParams`.
layout(push_constant) uniform Params {
    uint total;
    float weight; // f32(1 - decay), rounded from f64
} p;

void main() {
    GRID_STRIDE(i, p.total) {
        float a = ema[i], b = param[i], w = p.weight;
        precise float r = abs(w) < 0.5 ? a + w * (b - a) : b - (b - a) * (1.0 - w);
        ema[i] = r;
    }
}
