// linear kernels (CUDA C). See kernels/common.cuh for the conventions.
#include "common.cuh"

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
constexpr uint TILE = 16;  // spec constant 1 in the Vulkan shader

// The tiled shared-memory GEMM every matrix product uses (linear/gemm.comp, conv/conv_gemm.comp).
//
// Before including, the shader defines:
//   layout(constant_id = 1) const uint TILE = 16;    // TILE * TILE = the workgroup size
//   float load_a(uint batch, uint row, uint l);      // A(row, l) of product `batch`
//   float load_b(uint batch, uint l, uint col);      // B(l, col) of product `batch`
//   void store(uint batch, uint row, uint col, float value);
// This file declares specialization constant 2, WPT (default 1): a shader that leaves it
// unspecialised gets one value per invocation and blocks of TILE x TILE.
//
// gemm_tiles(batches, m, n, k) computes C[batch] = A[batch] [m, k] . B[batch] [k, n] for every
// batch. A workgroup of TILE x TILE invocations computes one BLOCK x BLOCK block of one C
// (BLOCK = TILE * WPT; blocks taken with a group stride, so any dispatch size works); each
// invocation computes WPT x WPT values (rows tr + i TILE, columns tc + j TILE) in registers,
// stepping through k TILE values at a time through shared memory. Every value sums over l in
// order with fused multiply-adds whatever TILE and WPT are, so the bits do not depend on them.

// Values per invocation along each axis (the template parameter WPT), at most WPT_MAX.

constexpr uint WPT_MAX = 4;

// a_tile[l * BLOCK + r] = A(block row r, k0 + l); b_tile[l * BLOCK + c] = B(k0 + l, block column c).
__shared__ float a_tile[TILE * TILE * WPT_MAX];
__shared__ float b_tile[TILE * TILE * WPT_MAX];
// WPT values per thread along each axis (1 or 4).
template <uint WPT>
struct K {
    static constexpr uint BLOCK = TILE * WPT;
    Params p;
    const float* a;
    const float* b;
    const float* bias;
    float* c;
    // C [m, n] = A [m, k] B [k, n] (+ bias[col]), overwritten. A and B are read through row and
    // column strides (A(i, l) = a[i a_rs + l a_cs]), so transposes cost nothing.

    // TILE * TILE must be the workgroup size (specialization constant 0).

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

    __device__ void gemm_tiles(uint batches, uint m, uint n, uint k) {
        uint lid = threadIdx.x;
        uint tr = lid / TILE, tc = lid % TILE;
        uint blocks_n = (n + BLOCK - 1u) / BLOCK;
        uint blocks_per_batch = ((m + BLOCK - 1u) / BLOCK) * blocks_n;
        GROUP_STRIDE(t, batches * blocks_per_batch) {
            uint batch = t / blocks_per_batch, block = t % blocks_per_batch;
            uint row0 = (block / blocks_n) * BLOCK, col0 = (block % blocks_n) * BLOCK;
            float acc[WPT_MAX * WPT_MAX];
            for (uint i = 0u; i < WPT * WPT; ++i) {
                acc[i] = 0.0f;
            }
            for (uint k0 = 0u; k0 < k; k0 += TILE) {
                // Each invocation loads WPT values of each block; out-of-range values load as 0
                // (they add +0 to the sums). Neighbouring invocations read neighbouring l of A and
                // neighbouring columns of B.
                for (uint q = 0u; q < WPT; ++q) {
                    uint e = lid + q * TILE * TILE;
                    uint ra = e / TILE, la = e % TILE;
                    a_tile[la * BLOCK + ra] =
                        (row0 + ra < m && k0 + la < k) ? load_a(batch, row0 + ra, k0 + la) : 0.0f;
                    uint lb = e / BLOCK, cb = e % BLOCK;
                    b_tile[lb * BLOCK + cb] =
                        (k0 + lb < k && col0 + cb < n) ? load_b(batch, k0 + lb, col0 + cb) : 0.0f;
                }
                barrier();
                for (uint l = 0u; l < TILE; ++l) {
                    float a_reg[WPT_MAX];
                    float b_reg[WPT_MAX];
                    for (uint i = 0u; i < WPT; ++i) {
                        a_reg[i] = a_tile[l * BLOCK + tr + i * TILE];
                        b_reg[i] = b_tile[l * BLOCK + tc + i * TILE];
                    }
                    for (uint i = 0u; i < WPT; ++i) {
                        for (uint j = 0u; j < WPT; ++j) {
                            acc[i * WPT_MAX + j] = fma(a_reg[i], b_reg[j], acc[i * WPT_MAX + j]);
                        }
                    }
                }
                barrier();
            }
            for (uint i = 0u; i < WPT; ++i) {
                for (uint j = 0u; j < WPT; ++j) {
                    uint row = row0 + tr + i * TILE, col = col0 + tc + j * TILE;
                    if (row < m && col < n) {
                        store(batch, row, col, acc[i * WPT_MAX + j]);
                    }
                }
            }
        }
    }

    __device__ void main() {
        gemm_tiles(1u, p.m, p.n, p.k);
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
