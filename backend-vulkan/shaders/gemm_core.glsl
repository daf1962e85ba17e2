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

// Values per invocation along each axis, at most WPT_MAX.
layout(constant_id = 2) const uint WPT = 1;
const uint WPT_MAX = 4;
const uint BLOCK = TILE * WPT;

// a_tile[l * BLOCK + r] = A(block row r, k0 + l); b_tile[l * BLOCK + c] = B(k0 + l, block column c).
shared float a_tile[TILE * BLOCK];
shared float b_tile[TILE * BLOCK];

void gemm_tiles(uint batches, uint m, uint n, uint k) {
    uint lid = gl_LocalInvocationID.x;
    uint tr = lid / TILE, tc = lid % TILE;
    uint blocks_n = (n + BLOCK - 1u) / BLOCK;
    uint blocks_per_batch = ((m + BLOCK - 1u) / BLOCK) * blocks_n;
    GROUP_STRIDE(t, batches * blocks_per_batch) {
        uint batch = t / blocks_per_batch, block = t % blocks_per_batch;
        uint row0 = (block / blocks_n) * BLOCK, col0 = (block % blocks_n) * BLOCK;
        float acc[WPT_MAX * WPT_MAX];
        for (uint i = 0u; i < WPT * WPT; ++i) {
            acc[i] = 0.0;
        }
        for (uint k0 = 0u; k0 < k; k0 += TILE) {
            // Each invocation loads WPT values of each block; out-of-range values load as 0
            // (they add +0 to the sums). Neighbouring invocations read neighbouring l of A and
            // neighbouring columns of B.
            for (uint q = 0u; q < WPT; ++q) {
                uint e = lid + q * TILE * TILE;
                uint ra = e / TILE, la = e % TILE;
                a_tile[la * BLOCK + ra] =
                    (row0 + ra < m && k0 + la < k) ? load_a(batch, row0 + ra, k0 + la) : 0.0;
                uint lb = e / BLOCK, cb = e % BLOCK;
                b_tile[lb * BLOCK + cb] =
                    (k0 + lb < k && col0 + cb < n) ? load_b(batch, k0 + lb, col0 + cb) : 0.0;
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
