//! `LinearOps` on Vulkan.
//!
//! Every product is one tiled shared-memory GEMM (`shaders/linear/gemm.comp` on the core in
//! `shaders/gemm_core.glsl`) reading its operands through row/column strides, so no transpose
//! is copied:
//! * forward `y = x Wᵀ + b` (bias added after the product);
//! * `dx = dy W`; `dW = dyᵀ x` (skipped for frozen layers, `dw = None`);
//! * `db`: [`VulkanBackend::column_sums`].
//!
//! Each output value is one invocation's sum over the inner dimension in order (fused
//! multiply-adds), so results are the same bits run to run.
//!
//! Embeddings: the forward gathers rows; the backward gives every table value to one
//! invocation that adds its looked-up rows in index order, from a lookup list the host builds
//! (a counting sort of the indices: no atomics).

use crate::pipeline::{push_constants, Shader};
use crate::recorder::{read, write};
use crate::{dims, VulkanBackend, VulkanBuffer, VulkanError};
use gpstoken_core::backend::kernels::LinearKernels;
use gpstoken_core::backend::{EmbeddingDesc, LinearDesc};

push_constants! {
    /// `shaders/linear/gemm.comp`.
    struct GemmParams { m: u32, n: u32, k: u32, a_rs: u32, a_cs: u32, b_rs: u32, b_cs: u32, has_bias: u32 }
}
push_constants! {
    /// `shaders/linear/embedding_{forward,backward}.comp`.
    struct EmbeddingParams { total: u32, dim: u32, vocab: u32 }
}

/// A GEMM operand: a buffer read as `M(i, l) = buffer[i rs + l cs]`.
struct Operand<'a> {
    buffer: &'a VulkanBuffer,
    rs: usize,
    cs: usize,
}

/// Values per invocation along each axis for large products (the shaders' `WPT_MAX`).
const LARGE_WPT: u32 = 4;

impl VulkanBackend {
    /// The GEMM core's specialization constants `[workgroup size, TILE, WPT]` and workgroup
    /// count for `products` products of `m x n` values. TILE: [`VulkanBackend::gemm_tile`]; WPT: 4 (blocks of 4 TILE per side, fewer shared-memory
    /// loads per multiply-add) when both sides are that large and the shared memory holds the
    /// two blocks, else 1. The summation order does not depend on either (same bits).
    pub(crate) fn gemm_launch(&self, m: usize, n: usize, products: usize) -> Result<([u32; 3], u32), VulkanError> {
        let l = &self.ctx.limits;
        let tile = self.gemm_tile();
        let shared_bytes = |wpt: u32| 2 * tile * tile * wpt * 4;
        let large = (LARGE_WPT * tile) as usize;
        let wpt = if m >= large && n >= large && shared_bytes(LARGE_WPT) <= l.max_shared_memory_bytes {
            LARGE_WPT
        } else {
            1
        };
        let block = (tile * wpt) as usize;
        let [blocks] = dims([m.div_ceil(block) * n.div_ceil(block) * products])?;
        Ok(([tile * tile, tile, wpt], blocks.min(self.max_groups())))
    }

    /// `c [m, n] = a b (+ bias)`, overwritten.
    fn gemm(
        &self,
        [m, k, n]: [usize; 3],
        a: Operand,
        b: Operand,
        bias: Option<&VulkanBuffer>,
        c: &VulkanBuffer,
    ) -> Result<(), VulkanError> {
        if m * n == 0 {
            return Ok(());
        }
        let (spec, groups) = self.gemm_launch(m, n, 1)?;
        let [m, n, k, a_rs, a_cs, b_rs, b_cs] = dims([m, n, k, a.rs, a.cs, b.rs, b.cs])?;
        let params = GemmParams { m, n, k, a_rs, a_cs, b_rs, b_cs, has_bias: u32::from(bias.is_some()) };
        // Without a bias, `c` stands in for the unused bias binding (never read).
        let bindings = [read(a.buffer), read(b.buffer), read(bias.unwrap_or(c)), write(c)];
        self.run_groups(Shader::Gemm, &spec, &bindings, &params, groups)
    }

    fn embedding(
        &self,
        shader: Shader,
        desc: &EmbeddingDesc,
        src: &VulkanBuffer,
        words: &[u32],
        dst: &VulkanBuffer,
    ) -> Result<(), VulkanError> {
        if dst.len == 0 {
            return Ok(());
        }
        let [total, dim, vocab] = dims([dst.len, desc.dim, desc.vocab])?;
        let words = self.upload_words(words)?;
        self.run(shader, &[read(src), read(&words), write(dst)], &EmbeddingParams { total, dim, vocab }, total)
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

impl LinearKernels for VulkanBackend {
    fn linear_forward(
        &self,
        desc: &LinearDesc,
        x: &VulkanBuffer,
        w: &VulkanBuffer,
        bias: Option<&VulkanBuffer>,
        y: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let (rows, fin, fout) = (desc.rows, desc.in_features, desc.out_features);
        // y [rows, out] = x [rows, in] · (W [out, in])ᵀ
        let x = Operand { buffer: x, rs: fin, cs: 1 };
        let wt = Operand { buffer: w, rs: 1, cs: fin };
        self.gemm([rows, fin, fout], x, wt, bias, y)
    }

    fn linear_backward(
        &self,
        desc: &LinearDesc,
        x: &VulkanBuffer,
        w: &VulkanBuffer,
        dy: &VulkanBuffer,
        dx: Option<&mut VulkanBuffer>,
        dw: Option<&mut VulkanBuffer>,
        dbias: Option<&mut VulkanBuffer>,
    ) -> Result<(), VulkanError> {
        let (rows, fin, fout) = (desc.rows, desc.in_features, desc.out_features);
        if let Some(dx) = dx {
            // dx [rows, in] = dy [rows, out] · W [out, in]
            let dy = Operand { buffer: dy, rs: fout, cs: 1 };
            self.gemm([rows, fout, fin], dy, Operand { buffer: w, rs: fin, cs: 1 }, None, dx)?;
        }
        if let Some(dw) = dw {
            // dW [out, in] = (dy [rows, out])ᵀ · x [rows, in]
            let dyt = Operand { buffer: dy, rs: 1, cs: fout };
            self.gemm([fout, rows, fin], dyt, Operand { buffer: x, rs: fin, cs: 1 }, None, dw)?;
        }
        if let Some(db) = dbias {
            self.column_sums(1, rows, fout, dy, None, db)?;
        }
        Ok(())
    }

    fn embedding_forward(
        &self,
        desc: &EmbeddingDesc,
        table: &VulkanBuffer,
        indices: &[u32],
        out: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        self.embedding(Shader::EmbeddingForward, desc, table, indices, out)
    }

    fn embedding_backward(
        &self,
        desc: &EmbeddingDesc,
        indices: &[u32],
        dout: &VulkanBuffer,
        dtable: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let lookups = lookup_lists(desc.vocab, indices);
        self.embedding(Shader::EmbeddingBackward, desc, dout, &lookups, dtable)
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
