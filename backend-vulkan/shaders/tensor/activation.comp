#version 450
// Activations, forward y = f(x) or backward dx = f'(x) * dy, in f32.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float outv[]; };

// Mirrors tensor.rs `ActivationParams`; `kind` is tensor.rs `activation_code`.
layout(push_constant) uniform Params {
    uint total;
    uint kind;     // 0 GELU erf, 1 GELU tanh, 2 SiLU, 3 sigmoid, 4 LeakyReLU(0.2)
    uint backward; // 1: dx = f'(x) * dy
} p;

const float SQRT_2_OVER_PI = 0.7978845608028654;
const float GELU_TANH_C = 0.044715;
const float INV_SQRT_2 = 0.7071067811865476;
const float INV_SQRT_2PI = 0.3989422804014327;
const float LEAKY_SLOPE = 0.2;

float sigmoid(float v) {
    // exp overflows to +inf for v < -88: 1 / inf = 0, the right limit.
    return 1.0 / (1.0 + exp(-v));
}

// erfc(z) by the Chebyshev fit of Numerical Recipes (erfcc, Press et al. 6.2): fractional
// error below 1.2e-7 for every z in exact arithmetic; relative (not absolute) accuracy in the
// tail, so Phi(x) = erfc(-x/sqrt2)/2 keeps its relative accuracy for negative x.
float erfc_approx(float z) {
    float a = abs(z);
    float t = 1.0 / (1.0 + 0.5 * a);
    float poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    float r = t * exp(-a * a + poly);
    return z >= 0.0 ? r : 2.0 - r;
}

float normal_cdf(float v) {
    return 0.5 * erfc_approx(-v * INV_SQRT_2);
}

float forward(uint kind, float v) {
    if (kind == 0u) {
        return v * normal_cdf(v);
    } else if (kind == 1u) {
        // 0.5 v (1 + tanh(u)) = v sigmoid(2u): no cancellation for negative u, no inf/inf.
        float u = SQRT_2_OVER_PI * (v + GELU_TANH_C * v * v * v);
        return v * sigmoid(2.0 * u);
    } else if (kind == 2u) {
        return v * sigmoid(v);
    } else if (kind == 3u) {
        return sigmoid(v);
    }
    return v > 0.0 ? v : LEAKY_SLOPE * v;
}

float derivative(uint kind, float v) {
    if (kind == 0u) {
        return normal_cdf(v) + v * INV_SQRT_2PI * exp(-0.5 * v * v);
    } else if (kind == 1u) {
        // With s = sigmoid(2u): 1 + tanh u = 2s and 1 - tanh^2 u = 4 s (1 - s).
        float u = SQRT_2_OVER_PI * (v + GELU_TANH_C * v * v * v);
        float s = sigmoid(2.0 * u);
        return s + 2.0 * v * s * (1.0 - s) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * v * v);
    } else if (kind == 2u) {
        float s = sigmoid(v);
        return s * (1.0 + v * (1.0 - s));
    } else if (kind == 3u) {
        float s = sigmoid(v);
        return s * (1.0 - s);
    }
    // PyTorch's LeakyReLU: the slope at 0.
    return v > 0.0 ? 1.0 : LEAKY_SLOPE;
}

void main() {
    GRID_STRIDE(i, p.total) {
        if (p.backward == 0u) {
            outv[i] = forward(p.kind, x[i]);
        } else if (p.kind == 4u) {
            // Exactly the f32 product slope * dy (what PyTorch computes).
            outv[i] = x[i] > 0.0 ? dy[i] : LEAKY_SLOPE * dy[i];
        } else {
            outv[i] = derivative(p.kind, x[i]) * dy[i];
        }
    }
}
