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

/// The cuBLAS handle of a backend (bound to its stream).
pub(crate) struct Blas {
    handle: CudaBlas,
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
        Ok(Some(Blas { handle }))
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
        // Cᵀ [n, m] (column-major, ld c_rs) = Bᵀ [n, k] · Aᵀ [k, m].
        let (op_b, ldb) = blas_operand(&b, k, n);
        let (op_a, lda) = blas_operand(&a, m, k);
        let beta = 0.0f32;
        // cuBLAS runs on the calling thread's current context (cudarc's own calls bind it).
        self.ctx.bind_to_thread()?;
        // SAFETY: the handle is bound to this backend's stream; every address is inside a live
        // buffer whose length the front end checked for these shapes, strides and batches.
        unsafe {
            cublas::sgemm_strided_batched(
                *blas.handle.handle(),
                op_b,
                op_a,
                int(n)?,
                int(m)?,
                int(k)?,
                &alpha,
                b.at.0 as *const f32,
                int(ldb)?,
                batch.stride_b as i64,
                a.at.0 as *const f32,
                int(lda)?,
                batch.stride_a as i64,
                &beta,
                c.0 as *mut f32,
                int(c_rs)?,
                batch.stride_c as i64,
                int(batch.count)?,
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
