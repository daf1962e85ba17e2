//! The AVX-512 `sgemm` behind [`super::gemm`] (chosen at run time where the CPU has AVX-512F; the
//! other CPUs keep `matrixmultiply`'s), in `matrixmultiply`'s summation order, so it gives the
//! same bits as `matrixmultiply` does on the same CPU:
//! the inner dimension is cut at multiples of [`INNER_CHUNK`] from 0; within a chunk every output
//! is accumulated from zero in index order with one FMA per step; the first chunk's sum `s` is
//! stored as `alpha s` (`beta == 0`) or `fma(alpha, s, beta c)`, every later one as
//! `fma(alpha, s, c)`.
//!
//! Why not `matrixmultiply`'s own AVX-512 path: its 16 x 16 micro-kernel loads one B vector and
//! broadcasts 16 values of A per 16 FMAs, 17 loads per 16 FMAs, so the two load ports, not the
//! two FMA units, set its pace; and it packs operands that are contiguous along the inner
//! dimension (`x Wᵀ`: both of them) one float at a time. Here the tile is 8 x 32 (two B vectors
//! and 8 broadcasts per 16 FMAs) and such operands are packed by 16 x 16 register transposes.

use super::RawProduct;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Where the inner dimension is cut (`matrixmultiply`'s `S_KC` for f32, kept so that both give
/// the same bits); the unit of the summation order.
const INNER_CHUNK: usize = 256;
/// Rows of the micro-tile (broadcast from packed A).
const MR: usize = 8;
/// Columns of the micro-tile (two vectors of packed B).
const NR: usize = 32;
/// Rows of A packed at a time: 256 x 256 floats (256 KiB) stay in the 2 MiB L2.
const MC: usize = 256;
/// Columns of B packed at a time: 1024 x 256 floats (1 MiB) next to packed A in L2.
const NC: usize = 1024;

/// A 64-byte aligned block of the packing buffers (aligned vector loads of packed B).
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Line(#[allow(dead_code)] [f32; 16]);

thread_local! {
    /// Packed A and B of the calling thread, kept between calls (no allocation per product).
    static PACKED: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// `C = alpha A B + beta C` (C only written where `beta == 0`), single-threaded, on the raw
/// views of [`RawProduct`].
///
/// # Safety
/// The CPU has AVX-512F; `m, k, n >= 1`; every addressed element of A, B and C is inside its
/// allocation; nobody else touches C's elements meanwhile and C does not overlap A or B.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn sgemm(p: RawProduct) {
    let RawProduct {
        m,
        k,
        n,
        alpha,
        a,
        a_strides: (rsa, csa),
        b,
        b_strides: (rsb, csb),
        beta,
        c,
        c_strides: (rsc, csc),
    } = p;
    let (mc_max, kc_max, nc_max) = (m.min(MC).next_multiple_of(16), k.min(INNER_CHUNK), n.min(NC).next_multiple_of(NR));
    let a_len = mc_max * kc_max;
    let lines = (a_len + nc_max * kc_max).div_ceil(16);
    PACKED.with(|cell| {
        let mut buffer = cell.borrow_mut();
        if buffer.len() < lines {
            buffer.resize(lines, Line([0.0; 16]));
        }
        let packed_a = buffer.as_mut_ptr() as *mut f32;
        // `a_len` is a multiple of 16 floats, so packed B starts on a line too.
        let packed_b = packed_a.add(a_len);
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(INNER_CHUNK) {
                let kc = INNER_CHUNK.min(k - pc);
                let beta_here = if pc == 0 { beta } else { 1.0 };
                pack_b(kc, nc, b.add(pc * rsb + jc * csb), rsb, csb, packed_b);
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    pack_a(mc, kc, a.add(ic * rsa + pc * csa), rsa, csa, packed_a);
                    // One A panel (8 KiB, stays in L1) against every B panel (streamed from L2):
                    // the tiles of C then follow each other along its rows, which the hardware
                    // prefetcher follows (n = 2048, one thread: about 1.06x the other order).
                    for ir in (0..mc).step_by(MR) {
                        for jr in (0..nc).step_by(NR) {
                            let panel_b = packed_b.add(jr * kc);
                            let tile = (MR.min(mc - ir), NR.min(nc - jr));
                            let at = c.add((ic + ir) * rsc + (jc + jr) * csc);
                            micro_kernel(kc, packed_a.add(ir * kc), panel_b, alpha, beta_here, at, (rsc, csc), tile);
                        }
                    }
                }
            }
        }
    });
}

/// One `MR x NR` tile of C (of which `rows x cols` are real) from a packed A panel
/// (`kc x MR`) and a packed B panel (`kc x NR`), each output summed in index order from zero.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    alpha: f32,
    beta: f32,
    c: *mut f32,
    (rsc, csc): (usize, usize),
    (rows, cols): (usize, usize),
) {
    // C is read (or its lines fetched for writing) only after the kc steps: ask for its lines
    // now, so that a C that lives in L3 or memory (n >= 1024) does not stall the epilogue.
    for i in 0..rows {
        let row = c.wrapping_add(i * rsc);
        _mm_prefetch::<_MM_HINT_T0>(row as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add((cols - 1) * csc) as *const i8);
    }
    let mut sums = [[_mm512_setzero_ps(); 2]; MR];
    let mut p = 0;
    while p + 4 <= kc {
        kernel_step(a, b, p, &mut sums);
        kernel_step(a, b, p + 1, &mut sums);
        kernel_step(a, b, p + 2, &mut sums);
        kernel_step(a, b, p + 3, &mut sums);
        p += 4;
    }
    while p < kc {
        kernel_step(a, b, p, &mut sums);
        p += 1;
    }
    let alphav = _mm512_set1_ps(alpha);
    if rows == MR && cols == NR && csc == 1 {
        for (i, row) in sums.iter().enumerate() {
            for (h, &sum) in row.iter().enumerate() {
                let at = c.add(i * rsc + 16 * h);
                let out = if beta == 0.0 {
                    _mm512_mul_ps(alphav, sum)
                } else {
                    _mm512_fmadd_ps(alphav, sum, _mm512_mul_ps(_mm512_loadu_ps(at), _mm512_set1_ps(beta)))
                };
                _mm512_storeu_ps(at, out);
            }
        }
    } else {
        // A partial tile or a C with columns apart: the same operations one value at a time.
        let mut tile = [0.0f32; MR * NR];
        for (i, row) in sums.iter().enumerate() {
            _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR), row[0]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR + 16), row[1]);
        }
        for i in 0..rows {
            for j in 0..cols {
                let at = c.add(i * rsc + j * csc);
                let sum = tile[i * NR + j];
                *at = if beta == 0.0 { alpha * sum } else { alpha.mul_add(sum, beta * *at) };
            }
        }
    }
}

/// Step `p` of the micro-kernel: one B row (two vectors) times MR broadcast values of A.
#[inline(always)]
unsafe fn kernel_step(a: *const f32, b: *const f32, p: usize, sums: &mut [[__m512; 2]; MR]) {
    let b0 = _mm512_load_ps(b.add(p * NR));
    let b1 = _mm512_load_ps(b.add(p * NR + 16));
    for (i, row) in sums.iter_mut().enumerate() {
        let ai = _mm512_set1_ps(*a.add(p * MR + i));
        row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
        row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
    }
}

/// The 16 x 16 block at `src` (rows `stride` apart) transposed: vector `q` holds column `q`.
/// Four rounds of interleaving row `i` with row `i + 8` (the perfect shuffle) transpose it.
#[inline(always)]
unsafe fn transpose16(src: *const f32, stride: usize) -> [__m512; 16] {
    let mut rows = [_mm512_setzero_ps(); 16];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = _mm512_loadu_ps(src.add(i * stride));
    }
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for _ in 0..4 {
        let old = rows;
        for i in 0..8 {
            rows[2 * i] = _mm512_permutex2var_ps(old[i], low, old[i + 8]);
            rows[2 * i + 1] = _mm512_permutex2var_ps(old[i], high, old[i + 8]);
        }
    }
    rows
}

/// Packs the `kc x nc` block of B at `b` into panels of `NR` columns, each `kc x NR` row-major,
/// zero-padded past `nc`.
#[inline(always)]
unsafe fn pack_b(kc: usize, nc: usize, b: *const f32, rsb: usize, csb: usize, out: *mut f32) {
    for jr in (0..nc).step_by(NR) {
        let cols = NR.min(nc - jr);
        let (src, dst) = (b.add(jr * csb), out.add(jr * kc));
        if cols == NR && csb == 1 {
            for p in 0..kc {
                _mm512_store_ps(dst.add(p * NR), _mm512_loadu_ps(src.add(p * rsb)));
                _mm512_store_ps(dst.add(p * NR + 16), _mm512_loadu_ps(src.add(p * rsb + 16)));
            }
        } else if cols == NR && rsb == 1 {
            // Columns contiguous along the inner dimension (B = Wᵀ): 16 x 16 transposes.
            for half in 0..2 {
                let src = src.add(16 * half * csb);
                let mut p = 0;
                while p + 16 <= kc {
                    for (q, column) in transpose16(src.add(p), csb).into_iter().enumerate() {
                        _mm512_store_ps(dst.add((p + q) * NR + 16 * half), column);
                    }
                    p += 16;
                }
                for p in p..kc {
                    for j in 0..16 {
                        *dst.add(p * NR + 16 * half + j) = *src.add(j * csb + p);
                    }
                }
            }
        } else {
            for p in 0..kc {
                for j in 0..NR {
                    *dst.add(p * NR + j) = if j < cols { *src.add(p * rsb + j * csb) } else { 0.0 };
                }
            }
        }
    }
}

/// Packs the `mc x kc` block of A at `a` into panels of `MR` rows, each `kc x MR` (column
/// `p` of the panel at `p * MR`), zero-padded past `mc`.
#[inline(always)]
unsafe fn pack_a(mc: usize, kc: usize, a: *const f32, rsa: usize, csa: usize, out: *mut f32) {
    let mut ir = 0;
    if csa == 1 {
        // Rows contiguous along the inner dimension (x, dy): 16 rows = two panels per transpose.
        while ir + 16 <= mc {
            let (src, first, second) = (a.add(ir * rsa), out.add(ir * kc), out.add((ir + MR) * kc));
            let mut p = 0;
            while p + 16 <= kc {
                for (q, column) in transpose16(src.add(p), rsa).into_iter().enumerate() {
                    let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(column), 1));
                    _mm256_storeu_ps(first.add((p + q) * MR), _mm512_castps512_ps256(column));
                    _mm256_storeu_ps(second.add((p + q) * MR), upper);
                }
                p += 16;
            }
            for p in p..kc {
                for i in 0..MR {
                    *first.add(p * MR + i) = *src.add(i * rsa + p);
                    *second.add(p * MR + i) = *src.add((MR + i) * rsa + p);
                }
            }
            ir += 16;
        }
    }
    for ir in (ir..mc).step_by(MR) {
        let rows = MR.min(mc - ir);
        let (src, dst) = (a.add(ir * rsa), out.add(ir * kc));
        for p in 0..kc {
            for i in 0..MR {
                *dst.add(p * MR + i) = if i < rows { *src.add(i * rsa + p * csa) } else { 0.0 };
            }
        }
    }
}
