//! The one GEMM wrapper of the CPU backend, shared by the linear layers, the convolutions and
//! attention: a bounds-checked `C = alpha A B + beta C` over the `gemm` crate (its AVX-512 or
//! AVX2 kernels, chosen at run time; measured against `matrixmultiply` and OpenBLAS in
//! docs/BENCHMARKS.md), with matrix views given by an offset and row/column strides so that
//! transposes are never copied.
//!
//! Single-threaded (`Parallelism::None`): the callers run it inside rayon tasks, one per fixed
//! output block, so how the inner dimension is cut and summed depends on the block's shape only,
//! never on the thread count. The crate packs the left factor into a thread-local buffer it
//! reuses; its packed right factor is one allocation per call (of the same size for a given
//! shape, so the allocator hands the same block back).
//!
//! Why raw pointers: `gemm` takes raw pointers and strides anyway, and the parallel kernels let
//! several rayon tasks write disjoint blocks of ONE output buffer (a block of rows and columns
//! is not a contiguous sub-slice, so it cannot be handed out as `&mut [f32]`). [`OutPtr`] carries
//! such a buffer into the tasks; every call site states (in its `SAFETY` comment) why the blocks
//! its tasks write are disjoint. [`gemm`] asserts that every addressed element of `A`, `B` and
//! `C` lies inside its buffer, so a wrong stride panics instead of touching foreign memory.

use rayon::prelude::*;

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
    // SAFETY: every element the three views address is inside its buffer (asserted above); the
    // caller guarantees nobody else touches C's elements and that C does not alias A or B.
    // `gemm` computes `dst = alpha·dst + beta·lhs·rhs` (our alpha and beta swapped), reading dst
    // only when asked; `Parallelism::None` keeps the reduction order a function of the shape.
    gemm::gemm(
        m,
        n,
        k,
        c.ptr.add(c_offset),
        csc as isize,
        rsc as isize,
        beta != 0.0,
        a.data.as_ptr().add(a.offset),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr().add(b.offset),
        b.cs as isize,
        b.rs as isize,
        beta,
        alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// The blocks of an `m x n` output, as `(row0, rows, col0, cols)`, in parallel. The blocks
/// depend on the shape and the block size only, never on the thread count.
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

    #[test]
    #[should_panic(expected = "gemm: C out of bounds")]
    fn gemm_checks_bounds() {
        let a = [1.0f32; 4];
        let mut c = [0.0f32; 3];
        // SAFETY: `c` is exclusively borrowed; the call panics before writing.
        unsafe { gemm(2, 2, 2, 1.0, Mat::rows(&a, 0, 2), Mat::rows(&a, 0, 2), 0.0, OutPtr::new(&mut c), 0, 2, 1) };
    }
}
