//! `TensorOps` on CUDA: elementwise ops, activations, layout changes, adaLN ops.
//!
//! Every output value is computed by one thread, so results do not depend on the launch.
//! Column reductions ([`CudaBackend::column_sums`]) sum chunks of [`ROW_CHUNK`] rows in row
//! order in f32, then the chunk sums in chunk order: fixed order, identical bits run to run.
//! GELU (erf form) uses the `erfc` fit in `kernels/tensor.cu` `activation` (fractional error
//! below 1.2e-7 in exact arithmetic).

use crate::launch::{params, Kernel};
use crate::launch::{read, read_write, write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::TensorKernels;
use gpstoken_core::backend::{Activation, ModulateDesc, PatchDesc, TransposeDesc};

/// Rows per chunk of the column reductions' first pass.
const ROW_CHUNK: u32 = 64;

params! {
    /// `kernels/tensor.cu` `unary`.
    struct UnaryParams { total: u32, mode: u32, alpha: f32 }
}
params! {
    /// `kernels/tensor.cu` `binary`.
    struct BinaryParams { total: u32, mode: u32, alpha: f32 }
}
params! {
    /// `kernels/tensor.cu` `add_row_broadcast`.
    struct BroadcastParams { total: u32, cols: u32 }
}
params! {
    /// `kernels/tensor.cu` `column_sums`.
    struct ColumnSumParams { batch: u32, rows: u32, cols: u32, rows_per_chunk: u32, chunks: u32, product: u32 }
}
params! {
    /// `kernels/tensor.cu` `activation`.
    struct ActivationParams { total: u32, kind: u32, backward: u32 }
}
params! {
    /// `kernels/tensor.cu` `transpose`.
    struct TransposeParams { batch: u32, rows: u32, cols: u32 }
}
params! {
    /// `kernels/tensor.cu` `copy_columns`.
    struct CopyColumnsParams { total: u32, cols: u32, src_width: u32, src_col0: u32, dst_width: u32, dst_col0: u32 }
}
params! {
    /// `kernels/tensor.cu` `patchify`.
    struct PatchParams { total: u32, channels: u32, patches: u32, tile_height: u32, tile_width: u32, inverse: u32 }
}
params! {
    /// `kernels/tensor.cu` `modulate,gated_add,scale_by_vector`.
    struct TokenParams { total: u32, tokens: u32, dim: u32, offset: f32 }
}

const UNARY_COPY: u32 = 0;
const UNARY_SCALE: u32 = 1;
const UNARY_FILL: u32 = 2;
const BINARY_ADD: u32 = 0;
const BINARY_AXPY: u32 = 1;

/// The kernel's code for `kind`.
fn activation_code(kind: Activation) -> u32 {
    match kind {
        Activation::GeluErf => 0,
        Activation::GeluTanh => 1,
        Activation::Silu => 2,
        Activation::Sigmoid => 3,
        Activation::LeakyRelu02 => 4,
    }
}

impl CudaBackend {
    /// Every value of `dst` set to `value`.
    pub(crate) fn fill_buffer(&self, dst: &CudaBuffer, value: f32) -> Result<(), CudaError> {
        let [total] = dims([dst.len])?;
        // The source binding is unused by the fill mode: `dst` stands in.
        self.run(Kernel::Unary, &[read(dst), write(dst)], &UnaryParams { total, mode: UNARY_FILL, alpha: value }, total)
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
        a: &CudaBuffer,
        b: Option<&CudaBuffer>,
        out: &CudaBuffer,
    ) -> Result<(), CudaError> {
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
            return self.run(Kernel::ColumnSums, &[read(a), read(b), write(out)], &params, batch * cols);
        }
        let partials = self.allocate((batch * chunks * cols) as usize)?;
        let params = ColumnSumParams { batch, rows, cols, rows_per_chunk: ROW_CHUNK, chunks, product };
        self.run(Kernel::ColumnSums, &[read(a), read(b), write(&partials)], &params, batch * chunks * cols)?;
        let params = ColumnSumParams { batch, rows: chunks, cols, rows_per_chunk: chunks, chunks: 1, product: 0 };
        self.run(Kernel::ColumnSums, &[read(&partials), read(&partials), write(out)], &params, batch * cols)
    }

    /// `dst[r, dst_col0..][..cols] = src[r, src_col0..][..cols]` for every row.
    #[allow(clippy::too_many_arguments)]
    fn copy_columns(
        &self,
        rows: usize,
        cols: usize,
        src: &CudaBuffer,
        src_width: usize,
        src_col0: usize,
        dst: &CudaBuffer,
        dst_width: usize,
        dst_col0: usize,
    ) -> Result<(), CudaError> {
        if rows * cols == 0 {
            return Ok(());
        }
        let [total, cols, src_width, src_col0, dst_width, dst_col0] =
            dims([rows * cols, cols, src_width, src_col0, dst_width, dst_col0])?;
        let params = CopyColumnsParams { total, cols, src_width, src_col0, dst_width, dst_col0 };
        self.run(Kernel::CopyColumns, &[read(src), write(dst)], &params, total)
    }

    fn patch(&self, desc: &PatchDesc, src: &CudaBuffer, dst: &CudaBuffer, inverse: bool) -> Result<(), CudaError> {
        if desc.is_empty() {
            return Ok(());
        }
        let [total, channels, patches, tile_height, tile_width] =
            dims([desc.len(), desc.channels, desc.patches, desc.tile_height, desc.tile_width])?;
        let params = PatchParams { total, channels, patches, tile_height, tile_width, inverse: u32::from(inverse) };
        self.run(Kernel::Patchify, &[read(src), write(dst)], &params, total)
    }

    /// `out = a * (offset + vec[b])` per token row.
    fn scale_by_vector(
        &self,
        desc: &ModulateDesc,
        a: &CudaBuffer,
        vec: &CudaBuffer,
        offset: f32,
        out: &CudaBuffer,
    ) -> Result<(), CudaError> {
        let [total, tokens, dim] = dims([desc.len(), desc.tokens, desc.dim])?;
        let params = TokenParams { total, tokens, dim, offset };
        self.run(Kernel::ScaleByVector, &[read(a), read(vec), write(out)], &params, total)
    }
}

impl TensorKernels for CudaBackend {
    fn copy(&self, src: &CudaBuffer, dst: &mut CudaBuffer) -> Result<(), CudaError> {
        let [total] = dims([src.len])?;
        self.run(Kernel::Unary, &[read(src), write(dst)], &UnaryParams { total, mode: UNARY_COPY, alpha: 0.0 }, total)
    }

    fn fill(&self, dst: &mut CudaBuffer, value: f32) -> Result<(), CudaError> {
        self.fill_buffer(dst, value)
    }

    fn scale(&self, x: &mut CudaBuffer, alpha: f32) -> Result<(), CudaError> {
        let [total] = dims([x.len])?;
        self.run(Kernel::Unary, &[read(x), write(x)], &UnaryParams { total, mode: UNARY_SCALE, alpha }, total)
    }

    fn add(&self, a: &CudaBuffer, b: &CudaBuffer, out: &mut CudaBuffer) -> Result<(), CudaError> {
        let [total] = dims([a.len])?;
        let params = BinaryParams { total, mode: BINARY_ADD, alpha: 1.0 };
        self.run(Kernel::Binary, &[read(a), read(b), write(out)], &params, total)
    }

    fn add_assign(&self, dst: &mut CudaBuffer, src: &CudaBuffer) -> Result<(), CudaError> {
        let [total] = dims([dst.len])?;
        let params = BinaryParams { total, mode: BINARY_ADD, alpha: 1.0 };
        self.run(Kernel::Binary, &[read(dst), read(src), write(dst)], &params, total)
    }

    fn axpy(&self, alpha: f32, x: &CudaBuffer, y: &mut CudaBuffer) -> Result<(), CudaError> {
        let [total] = dims([x.len])?;
        let params = BinaryParams { total, mode: BINARY_AXPY, alpha };
        self.run(Kernel::Binary, &[read(y), read(x), write(y)], &params, total)
    }

    fn add_row_broadcast(
        &self,
        _rows: usize,
        cols: usize,
        x: &mut CudaBuffer,
        row: &CudaBuffer,
    ) -> Result<(), CudaError> {
        if x.len == 0 {
            return Ok(());
        }
        let [total, cols] = dims([x.len, cols])?;
        self.run(Kernel::AddRowBroadcast, &[read_write(x), read(row)], &BroadcastParams { total, cols }, total)
    }

    fn sum_rows(&self, rows: usize, cols: usize, x: &CudaBuffer, out: &mut CudaBuffer) -> Result<(), CudaError> {
        self.column_sums(1, rows, cols, x, None, out)
    }

    fn activation_forward(&self, kind: Activation, x: &CudaBuffer, y: &mut CudaBuffer) -> Result<(), CudaError> {
        let [total] = dims([x.len])?;
        let params = ActivationParams { total, kind: activation_code(kind), backward: 0 };
        // The dy binding is unused by the forward: `x` stands in.
        self.run(Kernel::Activation, &[read(x), read(x), write(y)], &params, total)
    }

    fn activation_backward(
        &self,
        kind: Activation,
        x: &CudaBuffer,
        dy: &CudaBuffer,
        dx: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let [total] = dims([x.len])?;
        let params = ActivationParams { total, kind: activation_code(kind), backward: 1 };
        self.run(Kernel::Activation, &[read(x), read(dy), write(dx)], &params, total)
    }

    fn transpose(&self, desc: &TransposeDesc, x: &CudaBuffer, y: &mut CudaBuffer) -> Result<(), CudaError> {
        if desc.is_empty() {
            return Ok(());
        }
        let [batch, rows, cols] = dims([desc.batch, desc.rows, desc.cols])?;
        let tile = self.gemm_tile();
        let [tiles] = dims([desc.batch * desc.rows.div_ceil(tile as usize) * desc.cols.div_ceil(tile as usize)])?;
        let params = TransposeParams { batch, rows, cols };
        let groups = tiles.min(self.max_groups());
        self.run_groups(Kernel::Transpose, &[tile * tile, tile], &[read(x), write(y)], &params, groups)
    }

    fn concat_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        a: &CudaBuffer,
        b: &CudaBuffer,
        out: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let width = a_cols + b_cols;
        self.copy_columns(rows, a_cols, a, a_cols, 0, out, width, 0)?;
        self.copy_columns(rows, b_cols, b, b_cols, 0, out, width, a_cols)
    }

    fn split_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        x: &CudaBuffer,
        a: &mut CudaBuffer,
        b: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let width = a_cols + b_cols;
        self.copy_columns(rows, a_cols, x, width, 0, a, a_cols, 0)?;
        self.copy_columns(rows, b_cols, x, width, a_cols, b, b_cols, 0)
    }

    fn patchify(&self, desc: &PatchDesc, x: &CudaBuffer, y: &mut CudaBuffer) -> Result<(), CudaError> {
        self.patch(desc, x, y, false)
    }

    fn unpatchify(&self, desc: &PatchDesc, y: &CudaBuffer, x: &mut CudaBuffer) -> Result<(), CudaError> {
        self.patch(desc, y, x, true)
    }

    fn modulate_forward(
        &self,
        desc: &ModulateDesc,
        x: &CudaBuffer,
        shift: &CudaBuffer,
        scale: &CudaBuffer,
        y: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let [total, tokens, dim] = dims([desc.len(), desc.tokens, desc.dim])?;
        let params = TokenParams { total, tokens, dim, offset: 0.0 };
        self.run(Kernel::Modulate, &[read(x), read(shift), read(scale), write(y)], &params, total)
    }

    fn modulate_backward(
        &self,
        desc: &ModulateDesc,
        x: &CudaBuffer,
        scale: &CudaBuffer,
        dy: &CudaBuffer,
        dx: &mut CudaBuffer,
        dshift: &mut CudaBuffer,
        dscale: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        self.scale_by_vector(desc, dy, scale, 1.0, dx)?;
        self.column_sums(desc.batch, desc.tokens, desc.dim, dy, None, dshift)?;
        self.column_sums(desc.batch, desc.tokens, desc.dim, dy, Some(x), dscale)
    }

    fn gated_add_forward(
        &self,
        desc: &ModulateDesc,
        gate: &CudaBuffer,
        f: &CudaBuffer,
        out: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let [total, tokens, dim] = dims([desc.len(), desc.tokens, desc.dim])?;
        let params = TokenParams { total, tokens, dim, offset: 0.0 };
        self.run(Kernel::GatedAdd, &[read(gate), read(f), read_write(out)], &params, total)
    }

    fn gated_add_backward(
        &self,
        desc: &ModulateDesc,
        gate: &CudaBuffer,
        f: &CudaBuffer,
        dout: &CudaBuffer,
        dgate: &mut CudaBuffer,
        df: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        self.scale_by_vector(desc, dout, gate, 0.0, df)?;
        self.column_sums(desc.batch, desc.tokens, desc.dim, dout, Some(f), dgate)
    }
}
