// gaussian kernels (CUDA C). See kernels/common.cuh for the conventions.
#include "common.cuh"

// a (columns 0, 1) or b (columns 2..5) of one initial value, in the CPU backend's f32 order.
__device__ float pre_activation(uint col, float g) {
    return col < 2u ? -log(1.0f / g - 1.0f) : -log(2.0f / (1.0f + g) - 1.0f);
}

namespace merge_patches_impl {

struct Params {
    uint total;
    uint stride; // 5 + channels
    uint tokens_per_patch;
    uint patches; // np
    uint backward; // 1: the backward
};
struct K {
    Params p;
    const float* src;
    float* dst;
    // The multi-patch merge (spec 2.4) of tokens [batch, np², N, 5 + C], per value, or its backward.
    // Forward: σx/np, σy/np, x' = -1 + (2j + x + 1)/np, y' = -1 + (2i + y + 1)/np for patch
    // k = i np + j (f32, left to right as torch); ρ and features copied.
    // Backward: the gradients of σx, σy, x and y divided by np, the others copied.

    // Mirrors gaussian.rs `MergeParams`.

    __device__ void main() {
        float np = float(p.patches);
        GRID_STRIDE(i, p.total) {
            uint r = i / p.stride, col = i % p.stride;
            float v = src[i];
            if (col == 0u || col == 1u) {
                v = v / np;
            } else if (col == 3u || col == 4u) {
                if (p.backward != 0u) {
                    v = v / np;
                } else {
                    uint k = (r / p.tokens_per_patch) % (p.patches * p.patches);
                    float offset = float(col == 3u ? k % p.patches : k / p.patches);
                    v = -1.0f + (2.0f * offset + v + 1.0f) / np;
                }
            }
            dst[i] = v;
        }
    }

};
}  // namespace merge_patches_impl
extern "C" __global__ void merge_patches(merge_patches_impl::Params p, const float* src, float* dst) {
    merge_patches_impl::K k{p, src, dst};
    k.main();
}

namespace reparam_backward_impl {

struct Params {
    uint total; // rows * (5 + channels)
    uint channels;
    uint write_dg_init; // 1: dg_init is bound and written
};
struct K {
    Params p;
    const float* g_init;
    const float* delta;
    const float* dtokens;
    float* ddelta;
    float* dfeatures;
    float* dg_init;
    // The reparameterisation's backward, one thread per dtokens value: the Gaussian columns give
    // ddelta (= dt s(1-s), times 2 for ρ, x, y) and, when asked, dg_init (ddelta times da/dg or
    // db/dg); the feature columns are copied to dfeatures.

    // Mirrors gaussian.rs `ReparamParams`.

    __device__ void main() {
        uint stride = 5u + p.channels;
        GRID_STRIDE(i, p.total) {
            uint r = i / stride, col = i % stride;
            float dt = dtokens[i];
            if (col < 5u) {
                uint j = r * 5u + col;
                float g = g_init[j];
                float z = pre_activation(col, g) + delta[j];
                float s = 1.0f / (1.0f + exp(-z));
                float ds = s * (1.0f - s);
                float dd = col < 2u ? dt * ds : dt * (2.0f * ds);
                ddelta[j] = dd;
                if (p.write_dg_init != 0u) {
                    dg_init[j] = col < 2u ? dd / (g * (1.0f - g)) : dd * (2.0f / ((1.0f + g) * (1.0f - g)));
                }
            } else {
                dfeatures[r * p.channels + (col - 5u)] = dt;
            }
        }
    }

};
}  // namespace reparam_backward_impl
extern "C" __global__ void reparam_backward(reparam_backward_impl::Params p, const float* g_init, const float* delta, const float* dtokens, float* ddelta, float* dfeatures, float* dg_init) {
    reparam_backward_impl::K k{p, g_init, delta, dtokens, ddelta, dfeatures, dg_init};
    k.main();
}

namespace reparam_forward_impl {

struct Params {
    uint total; // rows * (5 + channels)
    uint channels;
    uint write_dg_init; // the backward's flag: the Rust code passes one struct to both, unused here
};
struct K {
    Params p;
    const float* g_init;
    const float* delta;
    const float* features;
    float* tokens;
    // tokens [rows, 5 + C] = [sigmoid(a + δ) (σx, σy), 2 sigmoid(b + δ) - 1 (ρ, x, y), features],
    // a = -ln(1/g - 1), b = -ln(2/(1 + g) - 1), in the CPU backend's f32 order.

    // Mirrors gaussian.rs `ReparamParams`.

    __device__ void main() {
        uint stride = 5u + p.channels;
        GRID_STRIDE(i, p.total) {
            uint r = i / stride, col = i % stride;
            if (col < 5u) {
                float z = pre_activation(col, g_init[r * 5u + col]) + delta[r * 5u + col];
                float e = 1.0f + exp(-z);
                tokens[i] = col < 2u ? 1.0f / e : 2.0f / e - 1.0f;
            } else {
                tokens[i] = features[r * p.channels + (col - 5u)];
            }
        }
    }

};
}  // namespace reparam_forward_impl
extern "C" __global__ void reparam_forward(reparam_forward_impl::Params p, const float* g_init, const float* delta, const float* features, float* tokens) {
    reparam_forward_impl::K k{p, g_init, delta, features, tokens};
    k.main();
}
