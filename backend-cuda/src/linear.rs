//! `LinearKernels` on CUDA.
//!
//! Every product is one GEMM ([`crate::blas`]: cuBLAS, or the built-in tiled kernel without
//! libcublas) reading its operands through row/column strides, so no transpose is copied:
//! * forward `y = x Wᵀ + b` (bias added after the product, or in the kernel's store);
//! * `dx = dy W`; `dW = dyᵀ x` (skipped for frozen layers, `dw = None`);
//! * `db`: [`CudaBackend::column_sums`] (chunks of 64 rows in order, then the chunks in order).
//!
//! Embeddings: the forward gathers rows; the backward gives every table value to one
//! thread that adds its looked-up rows in index order, from a lookup list the host builds
//! (a counting sort of the indices: no atomics).

use crate::blas::{Batch, Mat};
use crate::launch::{params, Kernel};
use crate::launch::{read, write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::{LinearKernels, TensorKernels};
use gpstoken_core::backend::{EmbeddingDesc, LinearDesc};

params! {
    /// `kernels/linear.cu` `embedding_{forward,backward}`.
    struct EmbeddingParams { total: u32, dim: u32, vocab: u32 }
}

impl CudaBackend {
    fn embedding(
        &self,
        kernel: Kernel,
        desc: &EmbeddingDesc,
        src: &CudaBuffer,
        words: &[u32],
        dst: &CudaBuffer,
    ) -> Result<(), CudaError> {
        if dst.len == 0 {
            return Ok(());
        }
        let [total, dim, vocab] = dims([dst.len, desc.dim, desc.vocab])?;
        let words = self.upload_words(words)?;
        self.run(kernel, &[read(src), read(&words), write(dst)], &EmbeddingParams { total, dim, vocab }, total)
    }
}

/// `offsets[vocab + 1]` then, for each table row in order, the rows that look it up in
/// increasing order (a stable counting sort of `indices`).
fn lookup_lists(vocab: usize, indices: &[u32]) -> Vec<u32> {
    let mut offsets = vec![0u32; vocab + 1];
    for &i in indices {
        offsets[i as usize + 1] += 1;
    }
    for v in 0..vocab {
        offsets[v + 1] += offsets[v];
    }
    let mut next: Vec<u32> = offsets[..vocab].to_vec();
    let mut words = offsets;
    words.resize(vocab + 1 + indices.len(), 0);
    for (r, &i) in indices.iter().enumerate() {
        let slot = &mut next[i as usize];
        words[vocab + 1 + *slot as usize] = r as u32;
        *slot += 1;
    }
    words
}

impl LinearKernels for CudaBackend {
    fn linear_forward(
        &self,
        desc: &LinearDesc,
        x: &CudaBuffer,
        w: &CudaBuffer,
        bias: Option<&CudaBuffer>,
        y: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let (rows, fin, fout) = (desc.rows, desc.in_features, desc.out_features);
        // y [rows, out] = x [rows, in] · (W [out, in])ᵀ (+ bias)
        let x = Mat::rows(read(x), fin);
        let wt = Mat::cols(read(w), fin);
        if !self.has_cublas() {
            return self.gemm_kernel([rows, fin, fout], 1.0, x, wt, bias.map(read), write(y), fout);
        }
        self.gemm([rows, fin, fout], 1.0, x, wt, write(y), fout, Batch::ONE)?;
        match bias {
            Some(bias) => TensorKernels::add_row_broadcast(self, rows, fout, y, bias),
            None => Ok(()),
        }
    }

    fn linear_backward(
        &self,
        desc: &LinearDesc,
        x: &CudaBuffer,
        w: &CudaBuffer,
        dy: &CudaBuffer,
        dx: Option<&mut CudaBuffer>,
        dw: Option<&mut CudaBuffer>,
        dbias: Option<&mut CudaBuffer>,
    ) -> Result<(), CudaError> {
        let (rows, fin, fout) = (desc.rows, desc.in_features, desc.out_features);
        if let Some(dx) = dx {
            // dx [rows, in] = dy [rows, out] · W [out, in]
            self.gemm(
                [rows, fout, fin],
                1.0,
                Mat::rows(read(dy), fout),
                Mat::rows(read(w), fin),
                write(dx),
                fin,
                Batch::ONE,
            )?;
        }
        if let Some(dw) = dw {
            // dW [out, in] = (dy [rows, out])ᵀ · x [rows, in]
            self.gemm(
                [fout, rows, fin],
                1.0,
                Mat::cols(read(dy), fout),
                Mat::rows(read(x), fin),
                write(dw),
                fin,
                Batch::ONE,
            )?;
        }
        if let Some(db) = dbias {
            self.column_sums(1, rows, fout, dy, None, db)?;
        }
        Ok(())
    }

    fn embedding_forward(
        &self,
        desc: &EmbeddingDesc,
        table: &CudaBuffer,
        indices: &[u32],
        out: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        self.embedding(Kernel::EmbeddingForward, desc, table, indices, out)
    }

    fn embedding_backward(
        &self,
        desc: &EmbeddingDesc,
        indices: &[u32],
        dout: &CudaBuffer,
        dtable: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let lookups = lookup_lists(desc.vocab, indices);
        self.embedding(Kernel::EmbeddingBackward, desc, dout, &lookups, dtable)
    }
}

#[cfg(test)]
mod tests {
    use super::lookup_lists;

    #[test]
    fn lookup_lists_are_a_stable_counting_sort() {
        // vocab 4: row 0 <- [1, 3], row 1 <- [], row 2 <- [0, 2, 4], row 3 <- [].
        let words = lookup_lists(4, &[2, 0, 2, 0, 2]);
        assert_eq!(words, vec![0, 2, 2, 5, 5, 1, 3, 0, 2, 4]);
    }
}
