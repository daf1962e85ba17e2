//! The one GEMM wrapper of the CPU backend, shared by the linear layers, the convolutions and
//! attention: a bounds-checked `C = alpha A B + beta C` with matrix views given by an offset and
//! row/column strides so that transposes are never copied. Where the CPU has AVX-512F the product
//! is this crate's [`avx512::sgemm`] (8 x 32 micro-tile, operands that are contiguous along the
//! inner dimension packed by register transposes); elsewhere `matrixmultiply`'s `sgemm`
//! ([`portable_sgemm`]). Both sum in the order below, so they give the same bits.
//!
//! Why any blocking gives the same bits: the product computes every output value in one fixed
//! order whatever the shape of the call. It cuts the inner dimension at multiples of 256
//! counted from 0; within a chunk the micro-kernel accumulates the products in
//! index order from zero (with one fused multiply-add per step where the CPU has FMA, else a
//! multiply and an add), and the chunks are added to C in order. Neither the block a value
//! falls in nor the thread that computes it changes that, so the callers may cut the output
//! into blocks of any size, chosen for the thread count ([`block_shape`]), and a patch encodes
//! to the same bits alone or in a batch. `sgemm_matches_the_canonical_order` checks every
//! value of both implementations against a scalar loop in that order;
//! `gemm_outputs_do_not_depend_on_the_block_shape` the consequence. The `gemm` crate gives the
//! same bits when called on fixed chunks of the inner dimension, but it is slower here (no
//! AVX-512 kernels without its `nightly` feature) and chooses its own inner blocking from the
//! output shape when called on the whole product.
//!
//! Single-threaded: the callers run it inside rayon tasks, one per output block.
//!
//! Why raw pointers: `sgemm` takes raw pointers and strides anyway, and the parallel kernels let
//! several rayon tasks write disjoint blocks of ONE output buffer (a block of rows and columns
//! is not a contiguous sub-slice, so it cannot be handed out as `&mut [f32]`). [`OutPtr`] carries
//! such a buffer into the tasks; every call site states (in its `SAFETY` comment) why the blocks
//! its tasks write are disjoint. [`gemm`] asserts that every addressed element of `A`, `B` and
//! `C` lies inside its buffer, so a wrong stride panics instead of touching foreign memory.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// A raw pointer to a buffer that several tasks write at disjoint places.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the pointer is only used through `gemm` and `OutPtr::slice` by the kernels of this
// crate, whose tasks write disjoint elements (each documented at the call site) while the buffer
// is exclusively borrowed for the duration of the parallel section.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    pub(crate) fn new(buffer: &mut [f32]) -> OutPtr {
        OutPtr { ptr: buffer.as_mut_ptr(), len: buffer.len() }
    }

    /// The mutable slice `[at, at + len)`.
    ///
    /// # Safety
    /// No other live reference may overlap it, and the buffer must still be borrowed by the op.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        assert!(at + len <= self.len, "slice out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(at), len)
    }
}

/// A read-only matrix view: element `(i, j)` is `data[offset + i*rs + j*cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with row stride `stride` (e.g. `[.., stride]`), starting at `offset`.
    pub(crate) fn rows(data: &'a [f32], offset: usize, stride: usize) -> Mat<'a> {
        Mat { data, offset, rs: stride, cs: 1 }
    }

    /// The transpose of row-major data with row stride `stride`, starting at `offset`.
    pub(crate) fn cols(data: &'a [f32], offset: usize, stride: usize) -> Mat<'a> {
        Mat { data, offset, rs: 1, cs: stride }
    }
}

/// One past the last index a `rows x cols` view with strides `rs`, `cs` addresses (0 if empty).
fn extent(offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        offset + (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `C = alpha A B + beta C` with `A [m, k]`, `B [k, n]`, `C [m, n]` (C at `c_offset` with
/// strides `rsc`, `csc` inside `c`), single-threaded. With `beta == 0` C is only written (as
/// BLAS does; with `k == 0` that means zeroed).
///
/// Panics if a view reaches outside its buffer.
///
/// # Safety
/// No other task may read or write the addressed elements of `c` meanwhile, and `c`'s buffer
/// must not overlap `a.data` or `b.data`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Mat,
    b: Mat,
    beta: f32,
    c: OutPtr,
    c_offset: usize,
    rsc: usize,
    csc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(extent(a.offset, m, k, a.rs, a.cs) <= a.data.len(), "gemm: A out of bounds");
    assert!(extent(b.offset, k, n, b.rs, b.cs) <= b.data.len(), "gemm: B out of bounds");
    assert!(extent(c_offset, m, n, rsc, csc) <= c.len, "gemm: C out of bounds");
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: inside `c` (asserted above); the caller guarantees exclusive access.
                let p = c.ptr.add(c_offset + i * rsc + j * csc);
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
        return;
    }
    let product = RawProduct {
        m,
        k,
        n,
        alpha,
        a: a.data.as_ptr().add(a.offset),
        a_strides: (a.rs, a.cs),
        b: b.data.as_ptr().add(b.offset),
        b_strides: (b.rs, b.cs),
        beta,
        c: c.ptr.add(c_offset),
        c_strides: (rsc, csc),
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above); every element the three views
        // address is inside its buffer (asserted above); the caller guarantees nobody else
        // touches C's elements and that C does not alias A or B.
        avx512::sgemm(product);
        return;
    }
    portable_sgemm(product);
}

/// One product `C = alpha A B + beta C`, `A [m, k]`, `B [k, n]`, `C [m, n]`, on raw pointers:
/// element `(i, j)` of A is `a[i * a_strides.0 + j * a_strides.1]`, and so on. What both
/// kernels take ([`avx512::sgemm`], [`portable_sgemm`]).
#[derive(Clone, Copy)]
struct RawProduct {
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    a_strides: (usize, usize),
    b: *const f32,
    b_strides: (usize, usize),
    beta: f32,
    c: *mut f32,
    c_strides: (usize, usize),
}

/// `matrixmultiply`'s `sgemm` (same contract as [`avx512::sgemm`] without the CPU feature): the
/// product on CPUs without AVX-512F, in the same summation order.
///
/// # Safety
/// As [`gemm`]'s, and every element the three views address is inside its allocation.
unsafe fn portable_sgemm(p: RawProduct) {
    let stride = |s: usize| s as isize;
    let (a, b, c) = (p.a_strides, p.b_strides, p.c_strides);
    matrixmultiply::sgemm(
        p.m,
        p.k,
        p.n,
        p.alpha,
        p.a,
        stride(a.0),
        stride(a.1),
        p.b,
        stride(b.0),
        stride(b.1),
        p.beta,
        p.c,
        stride(c.0),
        stride(c.1),
    );
}

/// Blocks per worker. One: every block packs the whole other operand, so more blocks cost more
/// packing; on a quiet machine one block per worker measured fastest (n = 512..2048, 2 threads:
/// 206-281 against 128-265 GFLOP/s with four), at the price of waiting for a worker that other
/// processes slow down.
const TASKS_PER_THREAD: usize = 1;
/// The narrowest cut: thinner blocks repack the other operand too often.
const MIN_CUT: usize = 128;

/// Below this many multiply-adds a product is one task: a hand-off to the pool costs more.
const MIN_PARALLEL_WORK: usize = 1 << 21;

/// Rows and columns of the output blocks of an `m x n` product with inner dimension `k` on
/// `threads` workers: [`TASKS_PER_THREAD`] block(s) per worker, cut along the longer side at a
/// multiple of 32 (the AVX-512 micro-tile is 8 x 32) and no thinner than [`MIN_CUT`], whole for small
/// products or one worker. Each block packs its own panels, so
/// few large blocks cost the least packing; the bits do not depend on the choice (module docs).
pub(crate) fn block_shape(m: usize, n: usize, k: usize, threads: usize) -> (usize, usize) {
    let (m1, n1) = (m.max(1), n.max(1));
    if threads <= 1 || m1.saturating_mul(n1).saturating_mul(k.max(1)) < MIN_PARALLEL_WORK {
        return (m1, n1);
    }
    let cut = |len: usize| len.div_ceil(TASKS_PER_THREAD * threads).next_multiple_of(32).max(MIN_CUT).min(len);
    if m1 >= n1 {
        (cut(m1), n1)
    } else {
        (m1, cut(n1))
    }
}

/// The blocks of an `m x n` output, as `(row0, rows, col0, cols)`, in parallel.
pub(crate) fn blocks(
    m: usize,
    n: usize,
    bm: usize,
    bn: usize,
) -> impl IndexedParallelIterator<Item = (usize, usize, usize, usize)> {
    let (mt, nt) = (m.div_ceil(bm), n.div_ceil(bn));
    (0..mt * nt).into_par_iter().map(move |t| {
        let (r0, c0) = ((t / nt) * bm, (t % nt) * bn);
        (r0, bm.min(m - r0), c0, bn.min(n - c0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where `sgemm` cuts the inner dimension (`matrixmultiply`'s `S_KC` for f32, the default
    /// of its build-time `MATMUL_SGEMM_KC`).
    const INNER_CHUNK: usize = 256;

    #[test]
    fn gemm_strides_alpha_beta() {
        // A [2, 3] row-major, B = (B' [2, 3])ᵀ read through column strides.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5];
        let mut c = [10.0f32; 4];
        // SAFETY: `c` is exclusively borrowed here.
        unsafe { gemm(2, 3, 2, 2.0, Mat::rows(&a, 0, 3), Mat::cols(&bt, 0, 3), 1.0, OutPtr::new(&mut c), 0, 2, 1) };
        // A B = [[-2, 5.5], [-2, 16]]; C = 2 A B + C.
        assert_eq!(c, [6.0, 21.0, 6.0, 42.0]);
        // The same product into a column-major C.
        let mut ct = [10.0f32; 4];
        // SAFETY: as above.
        unsafe { gemm(2, 3, 2, 2.0, Mat::rows(&a, 0, 3), Mat::cols(&bt, 0, 3), 1.0, OutPtr::new(&mut ct), 0, 1, 2) };
        assert_eq!(ct, [6.0, 6.0, 21.0, 42.0]);
        let mut z = [7.0f32; 4];
        // SAFETY: as above.
        unsafe { gemm(2, 0, 2, 1.0, Mat::rows(&a, 0, 0), Mat::rows(&a, 0, 2), 0.0, OutPtr::new(&mut z), 0, 2, 1) };
        assert_eq!(z, [0.0; 4]);
    }

    /// Column 3 of `A B` (64 x 576 times 576 x n, a conv's im2col product) computed in blocks
    /// of 4 to 600 columns, and row 5 in blocks of 6 to 300 rows: the same bits every time, so
    /// batching patches cannot change a patch's result. (The `gemm` crate fails the columns
    /// part: from n = 100 on its blocking of the inner dimension changes.)
    #[test]
    fn gemm_outputs_do_not_depend_on_the_block_shape() {
        let value = |i: usize| ((i * 2654435761) % 1000) as f32 / 997.0 - 0.5;
        let (m, k, wide) = (64, 576, 600);
        let a: Vec<f32> = (0..300 * k).map(value).collect();
        let b: Vec<f32> = (0..k * wide).map(|i| value(i + 17)).collect();
        let product = |m: usize, n: usize| {
            let mut c = vec![0.0f32; m * n];
            // SAFETY: `c` is exclusively borrowed here.
            unsafe {
                gemm(m, k, n, 1.0, Mat::rows(&a, 0, k), Mat::rows(&b, 0, wide), 0.0, OutPtr::new(&mut c), 0, n, 1)
            };
            c
        };
        let column3 = |n: usize| product(m, n).chunks_exact(n).map(|row| row[3].to_bits()).collect::<Vec<_>>();
        let alone = column3(4);
        for n in [5, 16, 64, 100, 256, 512, 600] {
            assert_eq!(column3(n), alone, "block of {n} columns");
        }
        let row5 = |m: usize| product(m, 70)[5 * 70..6 * 70].iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let alone = row5(6);
        for m in [7, 16, 33, 128, 300] {
            assert_eq!(row5(m), alone, "block of {m} rows");
        }
    }

    /// Every value of the product equals a scalar loop in the documented order: inner chunks of
    /// [`INNER_CHUNK`] from index 0, each summed from zero in index order (fused multiply-add
    /// where the micro-kernel uses it), added to C in order. Shapes with partial tiles, inner
    /// dimensions across chunk borders, more rows and columns than one packed block holds
    /// (256 and 1024 in `avx512`), all four layouts of A and B, `beta = 1`; for [`gemm`] (the
    /// AVX-512 kernel where the CPU has it) and for `matrixmultiply` ([`portable_sgemm`]).
    #[test]
    fn sgemm_matches_the_canonical_order() {
        #[cfg(target_arch = "x86_64")]
        let fused = std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let fused = cfg!(target_arch = "aarch64");
        let value = |i: usize| ((i * 2654435761) % 2000) as f32 / 1999.0 - 0.5;
        let shapes =
            [(1, 1, 1), (3, 255, 17), (16, 256, 16), (33, 257, 40), (70, 600, 9), (5, 1100, 130), (260, 40, 1030)];
        for (m, k, n) in shapes {
            let a: Vec<f32> = (0..m * k).map(value).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 11)).collect();
            let at: Vec<f32> = (0..k * m).map(|t| a[(t % m) * k + t / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|t| b[(t % k) * n + t / k]).collect();
            let c0: Vec<f32> = (0..m * n).map(|i| value(i + 5)).collect();
            let a_views = [Mat::rows(&a, 0, k), Mat::cols(&at, 0, m)];
            let b_views = [Mat::rows(&b, 0, n), Mat::cols(&bt, 0, k)];
            for beta in [0.0f32, 1.0] {
                let mut want = c0.clone();
                for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
                    let mut out = if beta == 0.0 { None } else { Some(c0[i * n + j]) };
                    for k0 in (0..k).step_by(INNER_CHUNK) {
                        let mut acc = 0.0f32;
                        for t in k0..k.min(k0 + INNER_CHUNK) {
                            let (x, y) = (a[i * k + t], b[t * n + j]);
                            acc = if fused { x.mul_add(y, acc) } else { acc + x * y };
                        }
                        out = Some(out.map_or(acc, |o| o + acc));
                    }
                    want[i * n + j] = out.unwrap();
                }
                for (layout, (av, bv)) in a_views.iter().flat_map(|&av| b_views.map(|bv| (av, bv))).enumerate() {
                    for portable in [false, true] {
                        let mut c = c0.clone();
                        let out = OutPtr::new(&mut c);
                        // SAFETY: `c` is exclusively borrowed here; the views lie inside their
                        // buffers (`gemm` asserts it, and both calls address the same elements).
                        unsafe {
                            if portable {
                                portable_sgemm(RawProduct {
                                    m,
                                    k,
                                    n,
                                    alpha: 1.0,
                                    a: av.data.as_ptr(),
                                    a_strides: (av.rs, av.cs),
                                    b: bv.data.as_ptr(),
                                    b_strides: (bv.rs, bv.cs),
                                    beta,
                                    c: out.ptr,
                                    c_strides: (n, 1),
                                });
                            } else {
                                gemm(m, k, n, 1.0, av, bv, beta, out, 0, n, 1);
                            }
                        }
                        for (at, (got, want)) in c.iter().zip(&want).enumerate() {
                            let (i, j) = (at / n, at % n);
                            let case =
                                format!("({i}, {j}) of {m}x{k}x{n}, beta {beta}, layout {layout}, portable {portable}");
                            assert_eq!(got.to_bits(), want.to_bits(), "{case}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn block_shapes_cover_the_output() {
        assert_eq!(block_shape(2048, 2048, 2048, 1), (2048, 2048));
        assert_eq!(block_shape(2048, 2048, 2048, 2), (1024, 2048));
        assert_eq!(block_shape(512, 512, 512, 2), (256, 512));
        assert_eq!(block_shape(512, 512, 512, 8), (128, 512));
        assert_eq!(block_shape(100, 3000, 512, 2), (100, 1504));
        assert_eq!(block_shape(10, 10, 10, 8), (10, 10));
        assert_eq!(block_shape(0, 5, 5, 2), (1, 5));
        for (m, n, t) in [(1000, 7, 3), (17, 4000, 4), (64, 64, 2)] {
            let (bm, bn) = block_shape(m, n, 4096, t);
            assert!(bm >= 1 && bn >= 1 && bm <= m && bn <= n);
            assert!(m.div_ceil(bm) * n.div_ceil(bn) <= 4 * t);
        }
    }

    #[test]
    #[should_panic(expected = "gemm: C out of bounds")]
    fn gemm_checks_bounds() {
        let a = [1.0f32; 4];
        let mut c = [0.0f32; 3];
        // SAFETY: `c` is exclusively borrowed; the call panics before writing.
        unsafe { gemm(2, 2, 2, 1.0, Mat::rows(&a, 0, 2), Mat::rows(&a, 0, 2), 0.0, OutPtr::new(&mut c), 0, 2, 1) };
    }
}
