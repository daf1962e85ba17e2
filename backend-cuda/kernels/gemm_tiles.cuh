// The tiled shared-memory GEMM of the implicit-GEMM convolutions (conv.cu) and of the built-in
// GEMM that stands in for cuBLAS (linear.cu).
//
// gemm_tiles<WPT>(op, batches, m, n, k) computes C[batch] = A[batch] [m, k] . B[batch] [k, n]
// for every batch, reading through op.load_a(batch, row, l) = A(row, l) and
// op.load_b(batch, l, col) = B(l, col) and writing op.store(batch, row, col, value). A block of
// TILE x TILE threads computes one BLOCK x BLOCK block of one C (BLOCK = TILE * WPT; blocks
// taken with a grid stride, so any grid size works); each thread computes WPT x WPT values
// (rows tr + i TILE, columns tc + j TILE) in registers, stepping through k TILE values at a time
// through shared memory. Every value sums over l in order with fused multiply-adds whatever
// TILE and WPT are, so the bits do not depend on them. Launch with TILE * TILE threads.

constexpr uint TILE = 16;
// Values per thread along each axis (the template parameter WPT), at most WPT_MAX.
constexpr uint WPT_MAX = 4;

// a_tile[l * BLOCK + r] = A(block row r, k0 + l); b_tile[l * BLOCK + c] = B(k0 + l, block column c).
__shared__ float a_tile[TILE * TILE * WPT_MAX];
__shared__ float b_tile[TILE * TILE * WPT_MAX];

template <uint WPT, class Product>
__device__ void gemm_tiles(Product& op, uint batches, uint m, uint n, uint k) {
    constexpr uint BLOCK = TILE * WPT;
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
            // Each thread loads WPT values of each block; out-of-range values load as 0
            // (they add +0 to the sums). Neighbouring threads read neighbouring l of A and
            // neighbouring columns of B.
            for (uint q = 0u; q < WPT; ++q) {
                uint e = lid + q * TILE * TILE;
                uint ra = e / TILE, la = e % TILE;
                a_tile[la * BLOCK + ra] =
                    (row0 + ra < m && k0 + la < k) ? op.load_a(batch, row0 + ra, k0 + la) : 0.0f;
                uint lb = e / BLOCK, cb = e % BLOCK;
                b_tile[lb * BLOCK + cb] =
                    (k0 + lb < k && col0 + cb < n) ? op.load_b(batch, k0 + lb, col0 + cb) : 0.0f;
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
                    op.store(batch, row, col, acc[i * WPT_MAX + j]);
                }
            }
        }
    }
}
