//! `LinearOps` on the CPU.
//!
//! Every matrix product is [`crate::gemm::gemm`] (single-threaded) inside rayon tasks, one
//! task per block of the OUTPUT matrix ([`block_shape`]: one per worker), each computing its
//! block with the full inner dimension. Every output value is written by one task in the
//! GEMM's fixed order whatever the block (see [`crate::gemm`]), so results are bit-identical
//! for any thread count. Transposes are expressed with the row/column strides, never copied.
//!
//! * forward `y = x Wᵀ + b`: blocks of `y [rows, out]`, bias added after the product;
//! * `dx = dy W`: blocks of `dx [rows, in]`;
//! * `dW = dyᵀ x`: blocks of `dW [out, in]`, each one GEMM over all rows (no cross-task sum);
//!   skipped for frozen layers (`dw = None`);
//! * `db`: [`crate::tensor::column_sums`] (f64 chunk sums in a fixed order).
//!
//! Embeddings: the forward copies rows; the backward gives every table row to one task that
//! adds the looked-up rows in index order.

use crate::gemm::{block_shape, blocks, gemm, Mat, OutPtr};
use crate::tensor::column_sums;
use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::LinearKernels;
use gpstoken_core::backend::{EmbeddingDesc, LinearDesc};
use rayon::prelude::*;

/// Embedding table rows per backward task (at least; see `embedding_backward`).
const EMBED_TASKS: usize = 64;

/// `C [m, n] = A B` (overwritten) in parallel over output blocks; `C` row-major.
fn parallel_gemm(m: usize, k: usize, n: usize, a: Mat, b: Mat, c: &mut [f32], bias: Option<&[f32]>) {
    let out = OutPtr::new(c);
    let (bm, bn) = block_shape(m, n, k, rayon::current_num_threads());
    blocks(m, n, bm, bn).for_each(|(r0, rows, c0, cols)| {
        let a = Mat { offset: a.offset + r0 * a.rs, ..a };
        let b = Mat { offset: b.offset + c0 * b.cs, ..b };
        // SAFETY: the blocks are disjoint, and `c` is exclusively borrowed by this function.
        unsafe {
            gemm(rows, k, cols, 1.0, a, b, 0.0, out, r0 * n + c0, n, 1);
            if let Some(bias) = bias {
                for r in r0..r0 + rows {
                    let row = out.slice(r * n + c0, cols);
                    for (y, &b) in row.iter_mut().zip(&bias[c0..c0 + cols]) {
                        *y += b;
                    }
                }
            }
        }
    });
}

impl LinearKernels for CpuBackend {
    fn linear_forward(
        &self,
        desc: &LinearDesc,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        y: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let (rows, fin, fout) = (desc.rows, desc.in_features, desc.out_features);
        self.install(|| {
            // y [rows, out] = x [rows, in] · (W [out, in])ᵀ
            parallel_gemm(rows, fin, fout, Mat::rows(x, 0, fin), Mat::cols(w, 0, fin), y, bias.map(|b| &b[..]))
        });
        Ok(())
    }

    fn linear_backward(
        &self,
        desc: &LinearDesc,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dx: Option<&mut Vec<f32>>,
        dw: Option<&mut Vec<f32>>,
        dbias: Option<&mut Vec<f32>>,
    ) -> Result<(), CpuError> {
        let (rows, fin, fout) = (desc.rows, desc.in_features, desc.out_features);
        self.install(|| {
            if let Some(dx) = dx {
                // dx [rows, in] = dy [rows, out] · W [out, in]
                parallel_gemm(rows, fout, fin, Mat::rows(dy, 0, fout), Mat::rows(w, 0, fin), dx, None);
            }
            if let Some(dw) = dw {
                // dW [out, in] = (dy [rows, out])ᵀ · x [rows, in]
                parallel_gemm(fout, rows, fin, Mat::cols(dy, 0, fout), Mat::rows(x, 0, fin), dw, None);
            }
            if let Some(db) = dbias {
                column_sums(&self.scratch64, rows, fout, dy, db);
            }
        });
        Ok(())
    }

    fn embedding_forward(
        &self,
        desc: &EmbeddingDesc,
        table: &Vec<f32>,
        indices: &[u32],
        out: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let dim = desc.dim;
        if out.is_empty() {
            return Ok(());
        }
        self.install(|| {
            out.par_chunks_mut(dim).zip(indices.par_iter()).for_each(|(o, &i)| {
                let i = i as usize;
                o.copy_from_slice(&table[i * dim..(i + 1) * dim]);
            })
        });
        Ok(())
    }

    fn embedding_backward(
        &self,
        desc: &EmbeddingDesc,
        indices: &[u32],
        dout: &Vec<f32>,
        dtable: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let dim = desc.dim;
        if dtable.is_empty() {
            return Ok(());
        }
        // At most EMBED_TASKS tasks, each owning a range of table rows and scanning every index
        // in order, so each row sums its looked-up rows in index order.
        let per = desc.vocab.div_ceil(EMBED_TASKS).max(1);
        self.install(|| {
            dtable.par_chunks_mut(per * dim).enumerate().for_each(|(t, dst)| {
                dst.fill(0.0);
                let (v0, v1) = (t * per, t * per + dst.len() / dim);
                for (r, &i) in indices.iter().enumerate() {
                    let i = i as usize;
                    if (v0..v1).contains(&i) {
                        let row = &mut dst[(i - v0) * dim..(i - v0 + 1) * dim];
                        for (d, &g) in row.iter_mut().zip(&dout[r * dim..(r + 1) * dim]) {
                            *d += g;
                        }
                    }
                }
            })
        });
        Ok(())
    }
}
