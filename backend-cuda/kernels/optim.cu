// optim kernels (CUDA C). See kernels/common.cuh for the conventions.
#include "common.cuh"

namespace adam_impl {

struct Params {
    uint total;
    float neg_step_size; // -(lr / (1 - b1^t)), rounded from f64
    float bc2_sqrt;      // sqrt(1 - b2^t), rounded from f64
    float one_minus_b1;
    float one_minus_b2;
    float beta2;
    float eps;
    float weight_decay;
};
struct K {
    Params p;
    float* param;
    const float* grad;
    float* m;
    float* v;
    // One Adam step, op by op as the CPU backend (PyTorch's single-tensor Adam) in f32:
    // g += wd p; m = lerp(m, g, 1 - b1); v = v b2 + (1 - b2) g g; p += (-step_size m) / (sqrt(v) / sqrt(bc2) + eps).

    // Mirrors optim.rs `AdamParams`.

    // PyTorch's lerp (scalar form); `precise`: no fused multiply-add, the CPU's roundings.
    __device__ float lerp_torch(float a, float b, float w) {
        float r = gabs(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
        return r;
    }

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            float g = grad[i];
            if (p.weight_decay != 0.0f) {
                g = g + p.weight_decay * param[i];
            }
            float mi = lerp_torch(m[i], g, p.one_minus_b1);
            float vi = v[i] * p.beta2 + p.one_minus_b2 * g * g;
            float denom = sqrt(vi) / p.bc2_sqrt + p.eps;
            float pi = param[i] + p.neg_step_size * mi / denom;
            m[i] = mi;
            v[i] = vi;
            param[i] = pi;
        }
    }

};
}  // namespace adam_impl
extern "C" __global__ void adam(adam_impl::Params p, float* param, const float* grad, float* m, float* v) {
    adam_impl::K k{p, param, grad, m, v};
    k.main();
}

namespace ema_impl {

struct Params {
    uint total;
    float weight; // f32(1 - decay), rounded from f64
};
struct K {
    Params p;
    float* ema;
    const float* param;
    // EMA update: ema = lerp(ema, param, 1 - decay) (ema_pytorch's lerp_), PyTorch's scalar lerp.

    // Mirrors optim.rs `EmaParams`.

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            float a = ema[i], b = param[i], w = p.weight;
            float r = gabs(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
            ema[i] = r;
        }
    }

};
}  // namespace ema_impl
extern "C" __global__ void ema(ema_impl::Params p, float* ema, const float* param) {
    ema_impl::K k{p, ema, param};
    k.main();
}
