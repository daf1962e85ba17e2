// The tiled shared-memory GEMM every matrix product uses (linear/gemm.comp, conv/conv_gemm.comp).
//
// Before including, the shader defines:
//   layout(constant_id = 1) const uint TILE = ...;   // TILE * TILE = the workgroup size
//   float load_a(uint batch, uint row, uint l);      // A(row, l) of product `batch`
//   float load_b(uint batch, uint l, uint col);      // B(l, col) of product `batch`
//   void store(uint batch, uint row, uint col, float value);
//
// gemm_tiles(batches, m, n, k) computes C[batch] = A[batch] [m, k] . B[batch] [k, n] for every
// batch: a workgroup computes one TILE x TILE block of one C (blocks taken with a group stride,
// so any dispatch size works), each invocation one value, summing over l in order with fused
// multiply-adds. The order is fixed, so the same inputs give the same bits.

shared float a_tile[TILE * TILE];
shared float b_tile[TILE * TILE];

void gemm_tiles(uint batches, uint m, uint n, uint k) {
    uint lid = gl_LocalInvocationID.x;
    uint tr = lid / TILE, tc = lid % TILE;
    uint tiles_n = (n + TILE - 1u) / TILE;
    uint tiles_per_batch = ((m + TILE - 1u) / TILE) * tiles_n;
    GROUP_STRIDE(t, batches * tiles_per_batch) {
        uint batch = t / tiles_per_batch, tile = t % tiles_per_batch;
        uint row = (tile / tiles_n) * TILE + tr;
        uint col = (tile % tiles_n) * TILE + tc;
        float acc = 0.0;
        for (uint k0 = 0u; k0 < k; k0 += TILE) {
            uint ka = k0 + tc, kb = k0 + tr;
            // Out-of-range values load as 0: they add +0 to the sums.
            a_tile[lid] = (row < m && ka < k) ? load_a(batch, row, ka) : 0.0;
            b_tile[lid] = (kb < k && col < n) ? load_b(batch, kb, col) : 0.0;
            barrier();
            for (uint l = 0u; l < TILE; ++l) {
                acc = fma(a_tile[tr * TILE + l], b_tile[l * TILE + tc], acc);
            }
            barrier();
        }
        if (row < m && col < n) {
            store(batch, row, col, acc);
        }
    }
}
