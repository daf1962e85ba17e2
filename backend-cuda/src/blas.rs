//! Matrix products: cuBLAS when libcublas is present, else the built-in tiled GEMM kernel
//! (`gemm_wpt{1,4}` in `kernels/linear.cu`).
//!
//! Every product here is row-major, PyTorch's layout: `C[m, n] = alpha A[m, k] B[k, n]`, with `A`
//! and `B` read through row and column strides ([`Mat`]) so transposes cost nothing and `C`
//! through a row stride (one head's columns of a `[B, L, H*D]` tensor). cuBLAS is
//! column-major, so it computes `Cᵀ = Bᵀ Aᵀ`: a row-major matrix is a column-major one
//! transposed. f32 throughout (`CUBLAS_DEFAULT_MATH`; `CUBLAS_TF32_TENSOR_OP_MATH` when
//! [`crate::CudaOptions::tf32`]). cuBLAS gives the same bits run to run on one device with one
//! stream (no atomics in its f32 GEMMs unless `cublasSetAtomicsMode` allows them; it is left
//! off).

use crate::launch::{params, Arg, Kernel};
use crate::{dims, CudaBackend, CudaError};
use cudarc::cublas::{result as cublas, sys as cublas_sys, CudaBlas};
use cudarc::driver::CudaStream;
use std::sync::Arc;

/// What runs the GEMMs of a backend that has cuBLAS: the handle (bound to its stream), or, on
/// the CPU emulator, a host loop with cuBLAS's semantics for the same arguments ([`SgemmArgs`]),
/// so the emulated test suite checks the arguments this backend gives cuBLAS.
pub(crate) enum Blas {
    Cublas(CudaBlas),
    Host,
}

impl Blas {
    /// A handle on `stream`, or `None` when libcublas cannot be found (the backend then uses
    /// its own GEMM kernel).
    pub(crate) fn open(stream: &Arc<CudaStream>, tf32: bool) -> Result<Option<Blas>, CudaError> {
        // SAFETY: only tries to open the library, no symbol is called.
        if !unsafe { cublas_sys::is_culib_present() } {
            return Ok(None);
        }
        let stream = stream.clone();
        let made = std::panic::catch_unwind(move || CudaBlas::new(stream));
        let Ok(handle) = made else { return Ok(None) };
        let handle = handle?;
        let mode = if tf32 {
            cublas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            cublas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: a live handle; the mode is one of the enum's values.
        unsafe { cublas_sys::cublasSetMathMode(*handle.handle(), mode) }.result()?;
        Ok(Some(Blas::Cublas(handle)))
    }
}

/// A row-major matrix operand: `M(i, l) = buffer[i rs + l cs]` from `at`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    pub at: Arg,
    pub rs: usize,
    pub cs: usize,
}

impl Mat {
    /// Rows of `cols` contiguous values, `stride` apart.
    pub(crate) fn rows(at: Arg, stride: usize) -> Mat {
        Mat { at, rs: stride, cs: 1 }
    }
    /// The transpose of [`Mat::rows`].
    pub(crate) fn cols(at: Arg, stride: usize) -> Mat {
        Mat { at, rs: 1, cs: stride }
    }
}

/// `count` products, the operands `stride_*` values apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batch {
    pub count: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl Batch {
    pub(crate) const ONE: Batch = Batch { count: 1, stride_a: 0, stride_b: 0, stride_c: 0 };
}

params! {
    /// `gemm_wpt{1,4}` in `kernels/linear.cu`.
    struct GemmParams { m: u32, n: u32, k: u32, a_rs: u32, a_cs: u32, b_rs: u32, b_cs: u32, has_bias: u32, c_rs: u32, alpha: f32 }
}

/// Values per thread along each axis of the GEMM kernel for large products.
const LARGE_WPT: u32 = 4;

/// cuBLAS's view of a row-major operand of `rows x cols` read as the transpose of a
/// column-major matrix: (operation, leading dimension).
fn blas_operand(m: &Mat, rows: usize, cols: usize) -> (cublas_sys::cublasOperation_t, usize) {
    use cublas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
    if m.cs == 1 && (m.rs >= cols || rows == 1) {
        // Row-major with row stride rs: its transpose is column-major with ld = rs.
        (CUBLAS_OP_N, m.rs.max(cols).max(1))
    } else {
        // Column-major with ld = cs: cuBLAS transposes it.
        (CUBLAS_OP_T, m.cs.max(rows).max(1))
    }
}

fn int(v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Unsupported(format!("GEMM size {v} does not fit cuBLAS's int")))
}

/// The arguments of one `cublasSgemmStridedBatched` call (beta 0), column-major.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgemmArgs {
    pub transa: cublas_sys::cublasOperation_t,
    pub transb: cublas_sys::cublasOperation_t,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub a: u64,
    pub lda: i32,
    pub stride_a: i64,
    pub b: u64,
    pub ldb: i32,
    pub stride_b: i64,
    pub c: u64,
    pub ldc: i32,
    pub stride_c: i64,
    pub count: i32,
}

/// The cuBLAS call for the row-major `C[m, n] = alpha A[m, k] B[k, n]` (each product of
/// `batch`): cuBLAS is column-major, so it computes `Cᵀ [n, m] (ld c_rs) = Bᵀ [n, k] · Aᵀ [k, m]`.
fn sgemm_args(
    [m, k, n]: [usize; 3],
    alpha: f32,
    a: Mat,
    b: Mat,
    c: Arg,
    c_rs: usize,
    batch: Batch,
) -> Result<SgemmArgs, CudaError> {
    let (transa, lda) = blas_operand(&b, k, n);
    let (transb, ldb) = blas_operand(&a, m, k);
    let long = |v: usize| i64::try_from(v).map_err(|_| CudaError::Unsupported(format!("GEMM stride {v}")));
    Ok(SgemmArgs {
        transa,
        transb,
        m: int(n)?,
        n: int(m)?,
        k: int(k)?,
        alpha,
        a: b.at.0,
        lda: int(lda)?,
        stride_a: long(batch.stride_b)?,
        b: a.at.0,
        ldb: int(ldb)?,
        stride_b: long(batch.stride_a)?,
        c: c.0,
        ldc: int(c_rs)?,
        stride_c: long(batch.stride_c)?,
        count: int(batch.count)?,
    })
}

/// cuBLAS's `sgemm_strided_batched` (beta 0) on host memory: f32 sums over the inner dimension
/// in order.
///
/// # Safety
/// Every address must be host memory holding the matrices the arguments describe.
unsafe fn host_sgemm(g: &SgemmArgs) -> Result<(), CudaError> {
    use cublas_sys::cublasOperation_t::CUBLAS_OP_N;
    let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
    let (lda, ldb, ldc) = (g.lda as usize, g.ldb as usize, g.ldc as usize);
    let a_rows = if g.transa == CUBLAS_OP_N { m } else { k };
    let b_rows = if g.transb == CUBLAS_OP_N { k } else { n };
    if lda < a_rows.max(1) || ldb < b_rows.max(1) || ldc < m.max(1) {
        return Err(CudaError::Blas(format!("a leading dimension is too small: {g:?}")));
    }
    for batch in 0..g.count as usize {
        let at = |base: u64, stride: i64, index: usize| (base as *const f32).add(batch * stride as usize + index);
        for j in 0..n {
            for i in 0..m {
                let mut sum = 0.0f32;
                for l in 0..k {
                    let x = *at(g.a, g.stride_a, if g.transa == CUBLAS_OP_N { i + l * lda } else { l + i * lda });
                    let y = *at(g.b, g.stride_b, if g.transb == CUBLAS_OP_N { l + j * ldb } else { j + l * ldb });
                    sum += x * y;
                }
                *(at(g.c, g.stride_c, i + j * ldc) as *mut f32) = g.alpha * sum;
            }
        }
    }
    Ok(())
}

impl CudaBackend {
    /// `C[m, n] = alpha A[m, k] B[k, n]` for each product of `batch`, `C` row-major with row
    /// stride `c_rs` from `c`, overwritten (zeros when `k == 0`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        [m, k, n]: [usize; 3],
        alpha: f32,
        a: Mat,
        b: Mat,
        c: Arg,
        c_rs: usize,
        batch: Batch,
    ) -> Result<(), CudaError> {
        if m * n * batch.count == 0 {
            return Ok(());
        }
        let Some(blas) = &self.blas else {
            for i in 0..batch.count {
                let a = Mat { at: a.at.offset(i * batch.stride_a), ..a };
                let b = Mat { at: b.at.offset(i * batch.stride_b), ..b };
                self.gemm_kernel([m, k, n], alpha, a, b, None, c.offset(i * batch.stride_c), c_rs)?;
            }
            return Ok(());
        };
        let args = sgemm_args([m, k, n], alpha, a, b, c, c_rs, batch)?;
        let handle = match blas {
            Blas::Cublas(handle) => handle,
            // SAFETY: on the emulator every address is host memory of a live buffer, whose length
            // the front end checked for these shapes, strides and batches.
            Blas::Host => return unsafe { host_sgemm(&args) },
        };
        let beta = 0.0f32;
        // cuBLAS runs on the calling thread's current context (cudarc's own calls bind it).
        if let crate::Engine::Device { ctx, .. } = &self.engine {
            ctx.bind_to_thread()?;
        }
        // SAFETY: the handle is bound to this backend's stream; every address is inside a live
        // buffer whose length the front end checked for these shapes, strides and batches.
        unsafe {
            cublas::sgemm_strided_batched(
                *handle.handle(),
                args.transa,
                args.transb,
                args.m,
                args.n,
                args.k,
                &args.alpha,
                args.a as *const f32,
                args.lda,
                args.stride_a,
                args.b as *const f32,
                args.ldb,
                args.stride_b,
                &beta,
                args.c as *mut f32,
                args.ldc,
                args.stride_c,
                args.count,
            )
        }?;
        Ok(())
    }

    /// One product on the built-in tiled GEMM kernel (`bias` added to every row).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm_kernel(
        &self,
        [m, k, n]: [usize; 3],
        alpha: f32,
        a: Mat,
        b: Mat,
        bias: Option<Arg>,
        c: Arg,
        c_rs: usize,
    ) -> Result<(), CudaError> {
        if m * n == 0 {
            return Ok(());
        }
        let tile = self.gemm_tile();
        let large = (LARGE_WPT * tile) as usize;
        let (kernel, block) = if m >= large && n >= large {
            (Kernel::GemmWpt4, (tile * LARGE_WPT) as usize)
        } else {
            (Kernel::GemmWpt1, tile as usize)
        };
        let [groups] = dims([m.div_ceil(block) * n.div_ceil(block)])?;
        let [m, n, k, a_rs, a_cs, b_rs, b_cs, c_rs] = dims([m, n, k, a.rs, a.cs, b.rs, b.cs, c_rs])?;
        let params = GemmParams { m, n, k, a_rs, a_cs, b_rs, b_cs, has_bias: u32::from(bias.is_some()), c_rs, alpha };
        // Without a bias, `c` stands in for the unused bias pointer (never read).
        let args = [a.at, b.at, bias.unwrap_or(c), c];
        self.run_groups(kernel, &[tile * tile], &args, &params, groups.min(self.max_groups()))
    }
}

#[cfg(test)]
mod tests {
    use super::{host_sgemm, sgemm_args, Batch, Mat};
    use crate::launch::Arg;

    /// The row-major product through the cuBLAS arguments `gemm` builds (`Cᵀ = Bᵀ Aᵀ`,
    /// column-major, run by the host loop with cuBLAS's semantics, which also checks the leading
    /// dimensions) equals the plain product, for operands read as rows and as columns, batched.
    #[test]
    fn row_major_products_map_onto_column_major_cublas_calls() {
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len).map(|i| ((i * 7 + seed * 13) % 11) as f32 - 5.0).collect()
        };
        for (m, k, n) in [(3, 4, 5), (1, 4, 5), (3, 1, 5), (3, 4, 1), (1, 1, 1), (6, 2, 3)] {
            for a_rows in [true, false] {
                for b_rows in [true, false] {
                    // Two products, each operand padded (row stride + 2) and the products apart.
                    let (a_len, b_len) = (m.max(k) * (m.max(k) + 2), k.max(n) * (k.max(n) + 2));
                    let (a_buf, b_buf) = (values(2 * a_len, 1), values(2 * b_len, 2));
                    let a = if a_rows { Mat::rows(Arg(0), k + 2) } else { Mat::cols(Arg(0), m + 2) };
                    let b = if b_rows { Mat::rows(Arg(0), n + 2) } else { Mat::cols(Arg(0), k + 2) };
                    let c_rs = n + 1;
                    let mut got = vec![f32::NAN; 2 * m * c_rs];
                    let batch = Batch { count: 2, stride_a: a_len, stride_b: b_len, stride_c: m * c_rs };
                    let a_at = Mat { at: Arg(a_buf.as_ptr() as u64), ..a };
                    let b_at = Mat { at: Arg(b_buf.as_ptr() as u64), ..b };
                    let args =
                        sgemm_args([m, k, n], 0.5, a_at, b_at, Arg(got.as_mut_ptr() as u64), c_rs, batch).unwrap();
                    // SAFETY: the addresses are the vectors above, long enough for these shapes.
                    unsafe { host_sgemm(&args) }.unwrap();
                    for p in 0..2 {
                        for i in 0..m {
                            for j in 0..n {
                                let want: f32 = (0..k)
                                    .map(|l| {
                                        a_buf[p * a_len + i * a.rs + l * a.cs] * b_buf[p * b_len + l * b.rs + j * b.cs]
                                    })
                                    .sum();
                                let at = p * m * c_rs + i * c_rs + j;
                                assert_eq!(got[at], 0.5 * want, "{m}x{k}x{n} rows {a_rows} {b_rows} ({p}, {i}, {j})");
                            }
                        }
                    }
                }
            }
        }
    }
}
