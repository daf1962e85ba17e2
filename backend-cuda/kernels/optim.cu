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
    static __device__ float lerp_torch(float a, float b, float w) {
        float r = gabs(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
        return r;
    }

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            update(p, param, grad, m, v, i);
        }
    }

    // Value i of one tensor; also the body of `adam_many`, so both give the same bits.
    static __device__ void update(const Params& p, float* param, const float* grad, float* m, float* v, uint i) {
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
            update(p, ema, param, i);
        }
    }

    // Value i of one tensor; also the body of `ema_many`, so both give the same bits.
    static __device__ void update(const Params& p, float* ema, const float* param, uint i) {
        float a = ema[i], b = param[i], w = p.weight;
        float r = gabs(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
        ema[i] = r;
    }

};
}  // namespace ema_impl
extern "C" __global__ void ema(ema_impl::Params p, float* ema, const float* param) {
    ema_impl::K k{p, ema, param};
    k.main();
}

// The multi-tensor kernels: one launch updates every tensor of a model. Their tensors are laid
// end to end in one index space (`total` values); a table of u32 words (src/optim.rs
// `table_launches`, uploaded when it differs from the tables of recent calls) says where each
// tensor starts and where its buffers are:
//   words[t], t < tensors                  the first index of tensor t (0 for t = 0, increasing:
//                                          the host leaves empty tensors out)
//   words[tensors + 2 (POINTERS t + j)],   the low and high 32 bits of the device address of
//   words[tensors + 2 (POINTERS t + j) + 1] buffer j of tensor t
// Each thread finds the tensor of its index by binary search over the starts.
struct TensorTable {
    const uint* words;
    uint tensors;
    uint pointers;

    // The tensor holding index i (< total): the last whose start is <= i.
    __device__ uint find(uint i) const {
        uint lo = 0u, hi = tensors;
        while (hi - lo > 1u) {
            uint mid = lo + (hi - lo) / 2u;
            if (words[mid] <= i) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    __device__ uint start(uint t) const { return words[t]; }

    __device__ float* buffer(uint t, uint j) const {
        const uint* w = words + tensors + 2u * (pointers * t + j);
        return (float*)(((unsigned long long)w[1] << 32) | (unsigned long long)w[0]);
    }
};

namespace adam_many_impl {

struct Params {
    adam_impl::Params adam; // adam.total: the values of all tensors together
    uint tensors;
};
struct K {
    Params p;
    const uint* table;
    // Adam on every tensor of the table (buffers: param, grad, m, v): per value exactly
    // `adam`'s arithmetic.

    // Mirrors optim.rs `AdamManyParams`.

    __device__ void main() {
        TensorTable t{table, p.tensors, 4u};
        GRID_STRIDE(i, p.adam.total) {
            uint k = t.find(i);
            adam_impl::K::update(p.adam, t.buffer(k, 0u), t.buffer(k, 1u), t.buffer(k, 2u), t.buffer(k, 3u), i - t.start(k));
        }
    }

};
}  // namespace adam_many_impl
extern "C" __global__ void adam_many(adam_many_impl::Params p, const uint* table) {
    adam_many_impl::K k{p, table};
    k.main();
}

namespace ema_many_impl {

struct Params {
    ema_impl::Params ema; // ema.total: the values of all tensors together
    uint tensors;
};
struct K {
    Params p;
    const uint* table;
    // The EMA update of every tensor of the table (buffers: ema, param): per value exactly
    // `ema`'s arithmetic.

    // Mirrors optim.rs `EmaManyParams`.

    __device__ void main() {
        TensorTable t{table, p.tensors, 2u};
        GRID_STRIDE(i, p.ema.total) {
            uint k = t.find(i);
            ema_impl::K::update(p.ema, t.buffer(k, 0u), t.buffer(k, 1u), i - t.start(k));
        }
    }

};
}  // namespace ema_many_impl
extern "C" __global__ void ema_many(ema_many_impl::Params p, const uint* table) {
    ema_many_impl::K k{p, table};
    k.main();
}
