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
        if let crate::Engine::Device { ctx, .. } = &self.engine {
            ctx.bind_to_thread()?;
        }
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

#[cfg(test)]
mod tests {
    use super::{blas_operand, Mat};
    use crate::launch::Arg;
    use cudarc::cublas::sys::cublasOperation_t::{self, CUBLAS_OP_N};

    /// cuBLAS's column-major `C = op(A) op(B)` (`m x n`, inner `k`), on host slices.
    #[allow(clippy::too_many_arguments)]
    fn column_major_gemm(
        (op_a, op_b): (cublasOperation_t, cublasOperation_t),
        (m, n, k): (usize, usize, usize),
        (a, lda): (&[f32], usize),
        (b, ldb): (&[f32], usize),
        (c, ldc): (&mut [f32], usize),
    ) {
        // cuBLAS refuses a leading dimension below the stored rows.
        let (a_rows, b_rows) = (if op_a == CUBLAS_OP_N { m } else { k }, if op_b == CUBLAS_OP_N { k } else { n });
        assert!(lda >= a_rows.max(1) && ldb >= b_rows.max(1) && ldc >= m.max(1));
        for j in 0..n {
            for i in 0..m {
                let mut sum = 0.0f64;
                for l in 0..k {
                    let x = if op_a == CUBLAS_OP_N { a[i + l * lda] } else { a[l + i * lda] };
                    let y = if op_b == CUBLAS_OP_N { b[l + j * ldb] } else { b[j + l * ldb] };
                    sum += f64::from(x) * f64::from(y);
                }
                c[i + j * ldc] = sum as f32;
            }
        }
    }

    /// The row-major product through the operation and leading dimensions `gemm` gives cuBLAS
    /// (`Cᵀ = Bᵀ Aᵀ`) equals the plain product, for operands read as rows and as columns.
    #[test]
    fn row_major_products_map_onto_column_major_cublas_calls() {
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len).map(|i| ((i * 7 + seed * 13) % 11) as f32 - 5.0).collect()
        };
        for (m, k, n) in [(3, 4, 5), (1, 4, 5), (3, 1, 5), (3, 4, 1), (1, 1, 1), (6, 2, 3)] {
            // Every operand read as rows (row stride, padded by 2) or as columns (its transpose stored).
            for a_rows in [true, false] {
                for b_rows in [true, false] {
                    let (a_buf, a) = if a_rows {
                        (values(m * (k + 2), 1), Mat::rows(Arg(0), k + 2))
                    } else {
                        (values(k * (m + 2), 1), Mat::cols(Arg(0), m + 2))
                    };
                    let (b_buf, b) = if b_rows {
                        (values(k * (n + 2), 2), Mat::rows(Arg(0), n + 2))
                    } else {
                        (values(n * (k + 2), 2), Mat::cols(Arg(0), k + 2))
                    };
                    let c_rs = n + 1;
                    let mut got = vec![0.0f32; m * c_rs];
                    let (op_b, ldb) = blas_operand(&b, k, n);
                    let (op_a, lda) = blas_operand(&a, m, k);
                    column_major_gemm((op_b, op_a), (n, m, k), (&b_buf, ldb), (&a_buf, lda), (&mut got, c_rs));
                    for i in 0..m {
                        for j in 0..n {
                            let want: f32 =
                                (0..k).map(|l| a_buf[i * a.rs + l * a.cs] * b_buf[l * b.rs + j * b.cs]).sum();
                            assert_eq!(got[i * c_rs + j], want, "{m}x{k}x{n} rows {a_rows} {b_rows} at ({i}, {j})");
                        }
                    }
                }
            }
        }
    }
}
