// loss kernels (CUDA C). See kernels/common.cuh for the conventions.
#include "common.cuh"

namespace loss_partials_impl {

struct Params {
    uint total;
    uint partial_count; // ceil(total / (LANES * PER)) * LANES
    uint kind;          // 0 MSE, 1 L1, 2 mean, 3 hinge
    uint write_grad;    // 1: write grad
    float norm;         // f32(2/n) for MSE, f32(1/n) otherwise
    float sign;         // hinge: +1 real images, -1 reconstructions
};
// One loss's partial sums, and optionally its gradient grad[i] = d term / d pred[i].
// Values are cut into blocks of LANES * PER; partial q = (block, lane) sums, in order, the PER
// values block * LANES * PER + lane + j * LANES (j < PER): a fixed order that does not depend
// on the launch, and few f32 additions per partial. The host adds the partials in order in
// f64 and divides by n, so the loss keeps nearly the accuracy of an f64 sum even when the terms
// cancel (the mean of zero-mean values).

// Mirrors loss.rs `LOSS_LANES` and `LOSS_PER_PARTIAL`.
constexpr uint LANES = 256u;
constexpr uint PER = 16u;
struct K {
    Params p;
    const float* pred;
    const float* target;
    float* grad;
    float* partials;

    // Mirrors loss.rs `LossParams`.

    __device__ float term(float x, float t) {
        if (p.kind == 0u) {
            float d = x - t;
            return d * d;
        } else if (p.kind == 1u) {
            return gabs(x - t);
        } else if (p.kind == 2u) {
            return x;
        }
        return max(1.0f - p.sign * x, 0.0f);
    }

    __device__ float gradient(float x, float t) {
        if (p.kind == 0u) {
            return (x - t) * p.norm;
        } else if (p.kind == 1u) {
            float d = x - t;
            return d > 0.0f ? p.norm : (d < 0.0f ? -p.norm : 0.0f);
        } else if (p.kind == 2u) {
            return p.norm;
        }
        // Active where 1 - sign x > 0; 0 at the kink, as PyTorch's relu.
        return p.sign * x < 1.0f ? -p.sign * p.norm : 0.0f;
    }

    __device__ void main() {
        GRID_STRIDE(q, p.partial_count) {
            uint first = (q / LANES) * LANES * PER + q % LANES;
            float sum = 0.0f;
            for (uint j = 0u; j < PER; ++j) {
                uint i = first + j * LANES;
                if (i < p.total) {
                    sum += term(pred[i], target[i]);
                    if (p.write_grad != 0u) {
                        grad[i] = gradient(pred[i], target[i]);
                    }
                }
            }
            partials[q] = sum;
        }
    }

};
}  // namespace loss_partials_impl
extern "C" __global__ void loss_partials(loss_partials_impl::Params p, const float* pred, const float* target, float* grad, float* partials) {
    loss_partials_impl::K k{p, pred, target, grad, partials};
    k.main();
}

namespace loss_finish_impl {

// Mirrors loss.rs `FinishParams`.
struct Params {
    uint count; // partial sums
    uint n;     // values: the loss is their mean
};

__shared__ double finish_tree[MAX_WG];

}  // namespace loss_finish_impl

// One block: loss[0] = f32(Σ partials / n), the sum in f64 in a fixed order (thread t adds
// partials t, t + blockDim, ... in order, then a shared-memory tree), so the loss stays on the
// device (no wait) and is the same bits run to run.
extern "C" __global__ void loss_finish(loss_finish_impl::Params p, const float* partials, float* loss) {
    using loss_finish_impl::finish_tree;
    uint lid = threadIdx.x;
    double sum = 0.0;
    for (uint q = lid; q < p.count; q += blockDim.x) {
        sum += (double)partials[q];
    }
    finish_tree[lid] = sum;
    __syncthreads();
    for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
        if (lid < half_size) {
            finish_tree[lid] += finish_tree[lid + half_size];
        }
        __syncthreads();
    }
    if (lid == 0u) {
        loss[0] = (float)(finish_tree[0] / (double)p.n);
    }
}
