// attention kernels (CUDA C): the row-wise parts of scaled dot-product attention. The products
// (S = scale Q Kᵀ, O = P V, dP = dO Vᵀ, dQ, dK, dV) are cuBLAS strided-batched GEMMs
// (src/attention.rs). See kernels/common.cuh for the conventions.
#include "common.cuh"

// The block's maximum, by the tree of block_sum (common.cuh). Call from uniform control flow.
__shared__ float attention_tree[MAX_WG];

__device__ float block_max(float v) {
    uint lid = threadIdx.x;
    attention_tree[lid] = v;
    __syncthreads();
    for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
        if (lid < half_size) {
            attention_tree[lid] = fmaxf(attention_tree[lid], attention_tree[lid + half_size]);
        }
        __syncthreads();
    }
    float total = attention_tree[0];
    __syncthreads();
    return total;
}

namespace softmax_rows_impl {
// Mirrors attention.rs `RowParams`.
struct Params {
    uint rows;
    uint cols;
};
}  // namespace softmax_rows_impl

// In place, one block per row of s [rows, cols]: p = exp(s - max) / Σ exp(s - max). Each thread
// sums its strided values in order, then the block tree adds the threads' sums.
extern "C" __global__ void softmax_rows(softmax_rows_impl::Params p, float* s) {
    GROUP_STRIDE(row, p.rows) {
        float* r = s + (size_t)row * p.cols;
        float m = -__int_as_float(0x7f800000);
        for (uint j = threadIdx.x; j < p.cols; j += blockDim.x) {
            m = fmaxf(m, r[j]);
        }
        m = block_max(m);
        float sum = 0.0f;
        for (uint j = threadIdx.x; j < p.cols; j += blockDim.x) {
            float e = expf(r[j] - m);
            r[j] = e;
            sum += e;
        }
        float inv = 1.0f / workgroup_sum(sum);
        for (uint j = threadIdx.x; j < p.cols; j += blockDim.x) {
            r[j] *= inv;
        }
    }
}

// In place, one block per row: dp [rows, cols] (= dO Vᵀ) becomes dS = P ⊙ (dP - Σ_j dP P).
extern "C" __global__ void softmax_backward_rows(softmax_rows_impl::Params p, const float* probs, float* dp) {
    GROUP_STRIDE(row, p.rows) {
        const float* pr = probs + (size_t)row * p.cols;
        float* d = dp + (size_t)row * p.cols;
        float dot = 0.0f;
        for (uint j = threadIdx.x; j < p.cols; j += blockDim.x) {
            dot += d[j] * pr[j];
        }
        dot = workgroup_sum(dot);
        for (uint j = threadIdx.x; j < p.cols; j += blockDim.x) {
            d[j] = pr[j] * (d[j] - dot);
        }
    }
}
