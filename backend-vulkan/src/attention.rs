//! `AttentionOps` on Vulkan: scaled dot-product attention as batched GEMMs and row kernels.
//!
//! Every product is one dispatch of `shaders/attention/head_gemm.comp` (the shared tiled GEMM,
//! `shaders/gemm_core.glsl`) over all (image, head) pairs, reading the heads' columns of the
//! `[B, L, H*D]` tensors and the `[B, H, Lq, Lk]` probabilities through strides, so nothing is
//! copied or transposed:
//! * forward: `S = scale Q Kᵀ` straight into the saved probabilities, a softmax per row in
//!   place (`softmax_rows.comp`), then `O = P V` into the heads' columns of `out`;
//! * backward: `dP = dO Vᵀ` into scratch, `dS = P ⊙ (dP - rowsum(dP ⊙ P))` in place
//!   (`softmax_backward_rows.comp`), `dQ = scale dS K`, `dK = scale dSᵀ Q`, `dV = Pᵀ dO`.
//!
//! Each GEMM value is one invocation's sum in order; the row sums are one workgroup's
//! reduction in a fixed tree whose size depends on the device and the row length only. So two
//! runs give the same bits.

use crate::pipeline::{push_constants, Shader};
use crate::recorder::{read, read_write, write, Binding};
use crate::{dims, PoolKind, VulkanBackend, VulkanBuffer, VulkanError};
use gpstoken_core::backend::kernels::AttentionKernels;
use gpstoken_core::backend::AttentionDesc;

push_constants! {
    /// `shaders/attention/head_gemm.comp`.
    struct HeadGemmParams {
        pairs: u32,
        heads: u32,
        m: u32,
        n: u32,
        k: u32,
        alpha: f32,
        a_image: u32,
        a_head: u32,
        a_rs: u32,
        a_cs: u32,
        b_image: u32,
        b_head: u32,
        b_rs: u32,
        b_cs: u32,
        c_image: u32,
        c_head: u32,
        c_rs: u32,
    }
}
push_constants! {
    /// `shaders/attention/softmax_rows.comp`, `shaders/attention/softmax_backward_rows.comp`.
    struct RowParams { rows: u32, cols: u32 }
}

/// One matrix per (image, head) pair inside a buffer: element `(i, l)` of pair
/// `image * heads + head` is at `image * image_stride + head * head_stride + i * rs + l * cs`.
#[derive(Clone, Copy)]
struct HeadMatrix<'a> {
    buffer: &'a VulkanBuffer,
    image_stride: usize,
    head_stride: usize,
    rs: usize,
    cs: usize,
}

impl HeadMatrix<'_> {
    /// Swaps rows and columns (the transpose, read in place).
    fn t(self) -> Self {
        HeadMatrix { rs: self.cs, cs: self.rs, ..self }
    }
}

/// The shapes of one attention call.
#[derive(Clone, Copy)]
struct Geom {
    pairs: usize,
    heads: usize,
    lq: usize,
    lk: usize,
    d: usize,
    scale: f32,
}

impl Geom {
    fn new(desc: &AttentionDesc) -> Geom {
        Geom {
            pairs: desc.batch * desc.heads,
            heads: desc.heads,
            lq: desc.seq_q,
            lk: desc.seq_k,
            d: desc.head_dim,
            scale: desc.scale,
        }
    }

    /// The heads of a `[B, rows, H*D]` tensor: `[rows, D]` matrices.
    fn heads_of<'a>(&self, buffer: &'a VulkanBuffer, rows: usize) -> HeadMatrix<'a> {
        let hd = self.heads * self.d;
        HeadMatrix { buffer, image_stride: rows * hd, head_stride: self.d, rs: hd, cs: 1 }
    }

    /// A `[B, H, Lq, Lk]` tensor (probabilities, `dS`): `[Lq, Lk]` matrices.
    fn scores_of<'a>(&self, buffer: &'a VulkanBuffer) -> HeadMatrix<'a> {
        let per_pair = self.lq * self.lk;
        HeadMatrix { buffer, image_stride: self.heads * per_pair, head_stride: per_pair, rs: self.lk, cs: 1 }
    }
}

impl VulkanBackend {
    /// `c[pair] = alpha a[pair] b[pair]` (`[m, k] [k, n]`) for every pair, overwritten; `c` is
    /// read with a column stride of 1.
    fn head_gemm(
        &self,
        g: &Geom,
        [m, k, n]: [usize; 3],
        alpha: f32,
        a: HeadMatrix,
        b: HeadMatrix,
        c: HeadMatrix,
    ) -> Result<(), VulkanError> {
        debug_assert_eq!(c.cs, 1, "head_gemm writes rows of contiguous columns");
        if g.pairs * m * n == 0 {
            return Ok(());
        }
        // An empty sum is 0 whatever alpha, even the infinite scale of `head_dim = 0`.
        let alpha = if k == 0 { 1.0 } else { alpha };
        // The GEMM core's tile and register blocking, as for the linear and conv products.
        let (spec, groups) = self.gemm_launch(m, n, g.pairs)?;
        let [pairs, heads, m, n, k] = dims([g.pairs, g.heads, m, n, k])?;
        let [a_image, a_head, a_rs, a_cs] = dims([a.image_stride, a.head_stride, a.rs, a.cs])?;
        let [b_image, b_head, b_rs, b_cs] = dims([b.image_stride, b.head_stride, b.rs, b.cs])?;
        let [c_image, c_head, c_rs] = dims([c.image_stride, c.head_stride, c.rs])?;
        let params = HeadGemmParams {
            pairs,
            heads,
            m,
            n,
            k,
            alpha,
            a_image,
            a_head,
            a_rs,
            a_cs,
            b_image,
            b_head,
            b_rs,
            b_cs,
            c_image,
            c_head,
            c_rs,
        };
        let bindings = [read(a.buffer), read(b.buffer), write(c.buffer)];
        self.run_groups(Shader::HeadGemm, &spec, &bindings, &params, groups)
    }

    /// Records a row kernel (one workgroup per row of `[rows, cols]`): the workgroup is the
    /// smallest power of two covering a row, at most the default size, so short rows do not
    /// pay for idle invocations in the reduction tree.
    fn row_kernel(&self, shader: Shader, rows: usize, cols: usize, bindings: &[Binding]) -> Result<(), VulkanError> {
        if rows * cols == 0 {
            return Ok(());
        }
        let [rows, cols] = dims([rows, cols])?;
        let group = cols.next_power_of_two().min(self.workgroup_size);
        self.run_groups(shader, &[group], bindings, &RowParams { rows, cols }, rows.min(self.max_groups()))
    }
}

impl AttentionKernels for VulkanBackend {
    fn attention_forward(
        &self,
        desc: &AttentionDesc,
        q: &VulkanBuffer,
        k: &VulkanBuffer,
        v: &VulkanBuffer,
        out: &mut VulkanBuffer,
        probs: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let g = Geom::new(desc);
        let scores = g.scores_of(probs);
        // S [Lq, Lk] = scale Q Kᵀ (an empty head dimension gives zeros: uniform probabilities).
        self.head_gemm(&g, [g.lq, g.d, g.lk], g.scale, g.heads_of(q, g.lq), g.heads_of(k, g.lk).t(), scores)?;
        self.row_kernel(Shader::SoftmaxRows, g.pairs * g.lq, g.lk, &[read_write(probs)])?;
        // O [Lq, D] = P V.
        self.head_gemm(&g, [g.lq, g.lk, g.d], 1.0, g.scores_of(probs), g.heads_of(v, g.lk), g.heads_of(out, g.lq))
    }

    fn attention_backward(
        &self,
        desc: &AttentionDesc,
        q: &VulkanBuffer,
        k: &VulkanBuffer,
        v: &VulkanBuffer,
        probs: &VulkanBuffer,
        dout: &VulkanBuffer,
        dq: &mut VulkanBuffer,
        dk: &mut VulkanBuffer,
        dv: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let g = Geom::new(desc);
        // No query (`Lq = 0`): the dK and dV products have an empty inner dimension, and the
        // GEMM writes zeros.
        // dV [Lk, D] = Pᵀ dO (independent of dS: recorded first, it overlaps the rest).
        self.head_gemm(
            &g,
            [g.lk, g.lq, g.d],
            1.0,
            g.scores_of(probs).t(),
            g.heads_of(dout, g.lq),
            g.heads_of(dv, g.lk),
        )?;
        // dP [Lq, Lk] = dO Vᵀ into scratch, then dS in place.
        let ds = self.allocate(PoolKind::Device, desc.probs_len())?;
        let dp = g.scores_of(&ds);
        self.head_gemm(&g, [g.lq, g.d, g.lk], 1.0, g.heads_of(dout, g.lq), g.heads_of(v, g.lk).t(), dp)?;
        self.row_kernel(Shader::SoftmaxBackwardRows, g.pairs * g.lq, g.lk, &[read(probs), read_write(&ds)])?;
        // dQ [Lq, D] = scale dS K;  dK [Lk, D] = scale dSᵀ Q.
        let ds_m = g.scores_of(&ds);
        self.head_gemm(&g, [g.lq, g.lk, g.d], g.scale, ds_m, g.heads_of(k, g.lk), g.heads_of(dq, g.lq))?;
        self.head_gemm(&g, [g.lk, g.lq, g.d], g.scale, ds_m.t(), g.heads_of(q, g.lq), g.heads_of(dk, g.lk))
    }
}
