//! `TensorOps` on Vulkan: elementwise ops, activations, layout changes, adaLN ops.
//!
//! Every output value is computed by one invocation, so results do not depend on the dispatch.
//! Column reductions ([`VulkanBackend::column_sums`]) sum chunks of [`ROW_CHUNK`] rows in row
//! order in f32, then the chunk sums in chunk order: fixed order, identical bits run to run.
//! GELU (erf form) uses the `erfc` fit in `shaders/tensor/activation.comp` (fractional error
//! below 1.2e-7 in exact arithmetic).

use crate::pipeline::{push_constants, Shader};
use crate::recorder::{read, read_write, write};
use crate::{dims, PoolKind, VulkanBackend, VulkanBuffer, VulkanError};
use gpstoken_core::backend::kernels::TensorKernels;
use gpstoken_core::backend::{Activation, ModulateDesc, PatchDesc, TransposeDesc};

/// Rows per chunk of the column reductions' first pass.
const ROW_CHUNK: u32 = 64;

push_constants! {
    /// `shaders/tensor/unary.comp`.
    struct UnaryParams { total: u32, mode: u32, alpha: f32 }
}
push_constants! {
    /// `shaders/tensor/binary.comp`.
    struct BinaryParams { total: u32, mode: u32, alpha: f32 }
}
push_constants! {
    /// `shaders/tensor/add_row_broadcast.comp`.
    struct BroadcastParams { total: u32, cols: u32 }
}
push_constants! {
    /// `shaders/tensor/column_sums.comp`.
    struct ColumnSumParams { batch: u32, rows: u32, cols: u32, rows_per_chunk: u32, chunks: u32, product: u32 }
}
push_constants! {
    /// `shaders/tensor/activation.comp`.
    struct ActivationParams { total: u32, kind: u32, backward: u32 }
}
push_constants! {
    /// `shaders/tensor/transpose.comp`.
    struct TransposeParams { batch: u32, rows: u32, cols: u32 }
}
push_constants! {
    /// `shaders/tensor/copy_columns.comp`.
    struct CopyColumnsParams { total: u32, cols: u32, src_width: u32, src_col0: u32, dst_width: u32, dst_col0: u32 }
}
push_constants! {
    /// `shaders/tensor/patchify.comp`.
    struct PatchParams { total: u32, channels: u32, patches: u32, tile_height: u32, tile_width: u32, inverse: u32 }
}
push_constants! {
    /// `shaders/tensor/{modulate,gated_add,scale_by_vector}.comp`.
    struct TokenParams { total: u32, tokens: u32, dim: u32, offset: f32 }
}

const UNARY_COPY: u32 = 0;
const UNARY_SCALE: u32 = 1;
const UNARY_FILL: u32 = 2;
const BINARY_ADD: u32 = 0;
const BINARY_AXPY: u32 = 1;

/// The shader's code for `kind`.
fn activation_code(kind: Activation) -> u32 {
    match kind {
        Activation::GeluErf => 0,
        Activation::GeluTanh => 1,
        Activation::Silu => 2,
        Activation::Sigmoid => 3,
        Activation::LeakyRelu02 => 4,
    }
}

impl VulkanBackend {
    /// Every value of `dst` set to `value`.
    pub(crate) fn fill_buffer(&self, dst: &VulkanBuffer, value: f32) -> Result<(), VulkanError> {
        let [total] = dims([dst.len])?;
        // The source binding is unused by the fill mode: `dst` stands in.
        self.run(Shader::Unary, &[read(dst), write(dst)], &UnaryParams { total, mode: UNARY_FILL, alpha: value }, total)
    }

    /// `out[b, c] = Σ_r value(b, r, c)` over `batch` stacked `[rows, cols]` matrices, with
    /// `value = a[i]`, or `a[i] * b[i]` when `b` is given; `out [batch, cols]` is overwritten
    /// (zeros when `rows == 0`). Fixed order: chunks of [`ROW_CHUNK`] rows in row order, then
    /// the chunk sums in chunk order.
    pub(crate) fn column_sums(
        &self,
        batch: usize,
        rows: usize,
        cols: usize,
        a: &VulkanBuffer,
        b: Option<&VulkanBuffer>,
        out: &VulkanBuffer,
    ) -> Result<(), VulkanError> {
        if batch * cols == 0 {
            return Ok(());
        }
        if rows == 0 {
            return self.fill_buffer(out, 0.0);
        }
        let [batch, rows, cols] = dims([batch, rows, cols])?;
        let chunks = rows.div_ceil(ROW_CHUNK);
        let product = u32::from(b.is_some());
        let b = b.unwrap_or(a);
        if chunks == 1 {
            let params = ColumnSumParams { batch, rows, cols, rows_per_chunk: rows, chunks: 1, product };
            return self.run(Shader::ColumnSums, &[read(a), read(b), write(out)], &params, batch * cols);
        }
        let partials = self.allocate(PoolKind::Device, (batch * chunks * cols) as usize)?;
        let params = ColumnSumParams { batch, rows, cols, rows_per_chunk: ROW_CHUNK, chunks, product };
        self.run(Shader::ColumnSums, &[read(a), read(b), write(&partials)], &params, batch * chunks * cols)?;
        let params = ColumnSumParams { batch, rows: chunks, cols, rows_per_chunk: chunks, chunks: 1, product: 0 };
        self.run(Shader::ColumnSums, &[read(&partials), read(&partials), write(out)], &params, batch * cols)
    }

    /// `dst[r, dst_col0..][..cols] = src[r, src_col0..][..cols]` for every row.
    #[allow(clippy::too_many_arguments)]
    fn copy_columns(
        &self,
        rows: usize,
        cols: usize,
        src: &VulkanBuffer,
        src_width: usize,
        src_col0: usize,
        dst: &VulkanBuffer,
        dst_width: usize,
        dst_col0: usize,
    ) -> Result<(), VulkanError> {
        if rows * cols == 0 {
            return Ok(());
        }
        let [total, cols, src_width, src_col0, dst_width, dst_col0] =
            dims([rows * cols, cols, src_width, src_col0, dst_width, dst_col0])?;
        let params = CopyColumnsParams { total, cols, src_width, src_col0, dst_width, dst_col0 };
        self.run(Shader::CopyColumns, &[read(src), write(dst)], &params, total)
    }

    fn patch(
        &self,
        desc: &PatchDesc,
        src: &VulkanBuffer,
        dst: &VulkanBuffer,
        inverse: bool,
    ) -> Result<(), VulkanError> {
        if desc.is_empty() {
            return Ok(());
        }
        let [total, channels, patches, tile_height, tile_width] =
            dims([desc.len(), desc.channels, desc.patches, desc.tile_height, desc.tile_width])?;
        let params = PatchParams { total, channels, patches, tile_height, tile_width, inverse: u32::from(inverse) };
        self.run(Shader::Patchify, &[read(src), write(dst)], &params, total)
    }

    /// `out = a * (offset + vec[b])` per token row.
    fn scale_by_vector(
        &self,
        desc: &ModulateDesc,
        a: &VulkanBuffer,
        vec: &VulkanBuffer,
        offset: f32,
        out: &VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let [total, tokens, dim] = dims([desc.len(), desc.tokens, desc.dim])?;
        let params = TokenParams { total, tokens, dim, offset };
        self.run(Shader::ScaleByVector, &[read(a), read(vec), write(out)], &params, total)
    }
}

impl TensorKernels for VulkanBackend {
    fn copy(&self, src: &VulkanBuffer, dst: &mut VulkanBuffer) -> Result<(), VulkanError> {
        let [total] = dims([src.len])?;
        self.run(Shader::Unary, &[read(src), write(dst)], &UnaryParams { total, mode: UNARY_COPY, alpha: 0.0 }, total)
    }

    fn fill(&self, dst: &mut VulkanBuffer, value: f32) -> Result<(), VulkanError> {
        self.fill_buffer(dst, value)
    }

    fn scale(&self, x: &mut VulkanBuffer, alpha: f32) -> Result<(), VulkanError> {
        let [total] = dims([x.len])?;
        self.run(Shader::Unary, &[read(x), write(x)], &UnaryParams { total, mode: UNARY_SCALE, alpha }, total)
    }

    fn add(&self, a: &VulkanBuffer, b: &VulkanBuffer, out: &mut VulkanBuffer) -> Result<(), VulkanError> {
        let [total] = dims([a.len])?;
        let params = BinaryParams { total, mode: BINARY_ADD, alpha: 1.0 };
        self.run(Shader::Binary, &[read(a), read(b), write(out)], &params, total)
    }

    fn add_assign(&self, dst: &mut VulkanBuffer, src: &VulkanBuffer) -> Result<(), VulkanError> {
        let [total] = dims([dst.len])?;
        let params = BinaryParams { total, mode: BINARY_ADD, alpha: 1.0 };
        self.run(Shader::Binary, &[read(dst), read(src), write(dst)], &params, total)
    }

    fn axpy(&self, alpha: f32, x: &VulkanBuffer, y: &mut VulkanBuffer) -> Result<(), VulkanError> {
        let [total] = dims([x.len])?;
        let params = BinaryParams { total, mode: BINARY_AXPY, alpha };
        self.run(Shader::Binary, &[read(y), read(x), write(y)], &params, total)
    }

    fn add_row_broadcast(
        &self,
        rows: usize,
        cols: usize,
        x: &mut VulkanBuffer,
        row: &VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let [total, cols] = dims([rows * cols, cols])?;
        if total == 0 {
            return Ok(());
        }
        self.run(Shader::AddRowBroadcast, &[read_write(x), read(row)], &BroadcastParams { total, cols }, total)
    }

    fn sum_rows(&self, rows: usize, cols: usize, x: &VulkanBuffer, out: &mut VulkanBuffer) -> Result<(), VulkanError> {
        self.column_sums(1, rows, cols, x, None, out)
    }

    fn activation_forward(&self, kind: Activation, x: &VulkanBuffer, y: &mut VulkanBuffer) -> Result<(), VulkanError> {
        let [total] = dims([x.len])?;
        let params = ActivationParams { total, kind: activation_code(kind), backward: 0 };
        // The dy binding is unused by the forward: `x` stands in.
        self.run(Shader::Activation, &[read(x), read(x), write(y)], &params, total)
    }

    fn activation_backward(
        &self,
        kind: Activation,
        x: &VulkanBuffer,
        dy: &VulkanBuffer,
        dx: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let [total] = dims([x.len])?;
        let params = ActivationParams { total, kind: activation_code(kind), backward: 1 };
        self.run(Shader::Activation, &[read(x), read(dy), write(dx)], &params, total)
    }

    fn transpose(&self, desc: &TransposeDesc, x: &VulkanBuffer, y: &mut VulkanBuffer) -> Result<(), VulkanError> {
        if desc.is_empty() {
            return Ok(());
        }
        let [batch, rows, cols] = dims([desc.batch, desc.rows, desc.cols])?;
        let tile = self.gemm_tile();
        let [tiles] = dims([desc.batch * desc.rows.div_ceil(tile as usize) * desc.cols.div_ceil(tile as usize)])?;
        let params = TransposeParams { batch, rows, cols };
        let groups = tiles.min(self.max_groups());
        self.run_groups(Shader::Transpose, &[tile * tile, tile], &[read(x), write(y)], &params, groups)
    }

    fn concat_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        a: &VulkanBuffer,
        b: &VulkanBuffer,
        out: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let width = a_cols + b_cols;
        self.copy_columns(rows, a_cols, a, a_cols, 0, out, width, 0)?;
        self.copy_columns(rows, b_cols, b, b_cols, 0, out, width, a_cols)
    }

    fn split_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        x: &VulkanBuffer,
        a: &mut VulkanBuffer,
        b: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let width = a_cols + b_cols;
        self.copy_columns(rows, a_cols, x, width, 0, a, a_cols, 0)?;
        self.copy_columns(rows, b_cols, x, width, a_cols, b, b_cols, 0)
    }

    fn patchify(&self, desc: &PatchDesc, x: &VulkanBuffer, y: &mut VulkanBuffer) -> Result<(), VulkanError> {
        self.patch(desc, x, y, false)
    }

    fn unpatchify(&self, desc: &PatchDesc, y: &VulkanBuffer, x: &mut VulkanBuffer) -> Result<(), VulkanError> {
        self.patch(desc, y, x, true)
    }

    fn modulate_forward(
        &self,
        desc: &ModulateDesc,
        x: &VulkanBuffer,
        shift: &VulkanBuffer,
        scale: &VulkanBuffer,
        y: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let [total, tokens, dim] = dims([desc.len(), desc.tokens, desc.dim])?;
        let params = TokenParams { total, tokens, dim, offset: 0.0 };
        self.run(Shader::Modulate, &[read(x), read(shift), read(scale), write(y)], &params, total)
    }

    fn modulate_backward(
        &self,
        desc: &ModulateDesc,
        x: &VulkanBuffer,
        scale: &VulkanBuffer,
        dy: &VulkanBuffer,
        dx: &mut VulkanBuffer,
        dshift: &mut VulkanBuffer,
        dscale: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        self.scale_by_vector(desc, dy, scale, 1.0, dx)?;
        self.column_sums(desc.batch, desc.tokens, desc.dim, dy, None, dshift)?;
        self.column_sums(desc.batch, desc.tokens, desc.dim, dy, Some(x), dscale)
    }

    fn gated_add_forward(
        &self,
        desc: &ModulateDesc,
        gate: &VulkanBuffer,
        f: &VulkanBuffer,
        out: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let [total, tokens, dim] = dims([desc.len(), desc.tokens, desc.dim])?;
        let params = TokenParams { total, tokens, dim, offset: 0.0 };
        self.run(Shader::GatedAdd, &[read(gate), read(f), read_write(out)], &params, total)
    }

    fn gated_add_backward(
        &self,
        desc: &ModulateDesc,
        gate: &VulkanBuffer,
        f: &VulkanBuffer,
        dout: &VulkanBuffer,
        dgate: &mut VulkanBuffer,
        df: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        self.scale_by_vector(desc, dout, gate, 0.0, df)?;
        self.column_sums(desc.batch, desc.tokens, desc.dim, dout, Some(f), dgate)
    }
}
