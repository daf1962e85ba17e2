// linear kernels (CUDA C). See kernels/common.cuh for the conventions.
#include "common.cuh"
#include "gemm_tiles.cuh"

namespace embedding_backward_impl {

struct Params {
    uint total; // vocab * dim
    uint dim;
    uint vocab;
};
struct K {
    Params p;
    const float* dout;
    const uint* lookups;
    float* dtable;
    // dtable[v, :] = sum of dout[r, :] over the rows r looked up as v, in index order (0 for rows
    // never looked up). `lookups` is built on the host: offsets[vocab + 1], then the rows of each
    // table row in increasing order (a counting sort), so no atomics and a fixed order.

    // Mirrors linear.rs `EmbeddingParams`.

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            uint v = i / p.dim, d = i % p.dim;
            float sum = 0.0f;
            for (uint j = lookups[v]; j < lookups[v + 1u]; ++j) {
                sum += dout[lookups[p.vocab + 1u + j] * p.dim + d];
            }
            dtable[i] = sum;
        }
    }

};
}  // namespace embedding_backward_impl
extern "C" __global__ void embedding_backward(embedding_backward_impl::Params p, const float* dout, const uint* lookups, float* dtable) {
    embedding_backward_impl::K k{p, dout, lookups, dtable};
    k.main();
}

namespace embedding_forward_impl {

struct Params {
    uint total;
    uint dim;
    uint vocab; // unused here
};
struct K {
    Params p;
    const float* table;
    const uint* indices;
    float* outv;
    // out[r, :] = table[indices[r], :] (indices checked below the vocabulary on the host).

    // Mirrors linear.rs `EmbeddingParams`.

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            outv[i] = table[indices[i / p.dim] * p.dim + i % p.dim];
        }
    }

};
}  // namespace embedding_forward_impl
extern "C" __global__ void embedding_forward(embedding_forward_impl::Params p, const float* table, const uint* indices, float* outv) {
    embedding_forward_impl::K k{p, table, indices, outv};
    k.main();
}

namespace gemm_impl {

struct Params {
    uint m;
    uint n;
    uint k;
    uint a_rs;
    uint a_cs;
    uint b_rs;
    uint b_cs;
    uint has_bias;
    uint c_rs;   // row stride of C (n for a dense C; H*D for one head's columns)
    float alpha; // C = alpha A B (+ bias); 1 leaves the product's bits unchanged
};
// WPT values per thread along each axis (1 or 4).
template <uint WPT>
struct K {
    Params p;
    const float* a;
    const float* b;
    const float* bias;
    float* c;
    // C [m, n] = A [m, k] B [k, n] (+ bias[col]), overwritten. A and B are read through row and
    // column strides (A(i, l) = a[i a_rs + l a_cs]), so transposes cost nothing.

    // TILE * TILE must be the block size (blockDim.x).

    // Mirrors linear.rs `GemmParams`.

    __device__ float load_a(uint batch, uint row, uint l) {
        return a[row * p.a_rs + l * p.a_cs];
    }

    __device__ float load_b(uint batch, uint l, uint col) {
        return b[l * p.b_rs + col * p.b_cs];
    }

    __device__ void store(uint batch, uint row, uint col, float value) {
        float scaled = p.alpha == 1.0f ? value : p.alpha * value;
        c[row * p.c_rs + col] = p.has_bias != 0u ? scaled + bias[col] : scaled;
    }

    __device__ void main() {
        gemm_tiles<WPT>(*this, 1u, p.m, p.n, p.k);
    }

};
}  // namespace gemm_impl
extern "C" __global__ void gemm_wpt1(gemm_impl::Params p, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl::K<1u> k{p, a, b, bias, c};
    k.main();
}

extern "C" __global__ void gemm_wpt4(gemm_impl::Params p, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl::K<4u> k{p, a, b, bias, c};
    k.main();
}
