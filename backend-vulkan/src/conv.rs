//! `ConvOps` on Vulkan: convolutions as implicit GEMMs, nearest 2x upsampling.
//!
//! `shaders/conv/conv_gemm.comp` runs the shared tiled GEMM (`shaders/gemm_core.glsl`) with the
//! im2col matrix gathered from `x` (or `dy`) as tiles load, never stored; its mode is a
//! specialization constant (three pipelines):
//! * forward: per image `y[b] = W · col(x[b]) + b`;
//! * `dx`: per image, each input value sums its taps over `(co, kh, kw)` in order;
//! * `dW = Σ_(b, position) dy[b] · col(x[b])ᵀ`, one sum per weight over images then positions
//!   (skipped for frozen layers, `dw = None`);
//! * `db`: row sums of `dy` per (image, channel) in chunks, then those summed over images.
//!
//! Every value is one invocation's sum in a fixed order: the same bits run to run.

use crate::pipeline::{push_constants, Shader};
use crate::recorder::{read, write};
use crate::{dims, PoolKind, VulkanBackend, VulkanBuffer, VulkanError};
use gpstoken_core::backend::kernels::ConvKernels;
use gpstoken_core::backend::{Conv2dDesc, UpsampleDesc};

/// Columns per chunk of the first row-sum pass.
const COL_CHUNK: u32 = 256;

push_constants! {
    /// `shaders/conv/conv_gemm.comp`.
    struct ConvParams {
        batch: u32,
        cin: u32,
        cout: u32,
        h: u32,
        w: u32,
        k: u32,
        s: u32,
        pad: u32,
        ho: u32,
        wo: u32,
        has_bias: u32,
    }
}
push_constants! {
    /// `shaders/conv/row_sums.comp`.
    struct RowSumParams { rows: u32, cols: u32, cols_per_chunk: u32, chunks: u32 }
}
push_constants! {
    /// `shaders/conv/upsample.comp`.
    struct UpsampleParams { total: u32, h: u32, w: u32, backward: u32 }
}

/// The products of `conv_gemm.comp` (its specialization constant 3).
#[derive(Clone, Copy)]
enum ConvMode {
    Forward = 0,
    InputGradient = 1,
    WeightGradient = 2,
}

impl VulkanBackend {
    fn conv_params(d: &Conv2dDesc, has_bias: bool) -> Result<ConvParams, VulkanError> {
        let [batch, cin, cout, h, w, k, s, pad, ho, wo] = dims([
            d.batch,
            d.in_channels,
            d.out_channels,
            d.height,
            d.width,
            d.kernel,
            d.stride,
            d.padding,
            d.out_height(),
            d.out_width(),
        ])?;
        Ok(ConvParams { batch, cin, cout, h, w, k, s, pad, ho, wo, has_bias: u32::from(has_bias) })
    }

    /// One implicit GEMM of `conv_gemm.comp`: `products` products of `m x n` values.
    fn conv_gemm(
        &self,
        mode: ConvMode,
        params: &ConvParams,
        [a, b, bias, c]: [&VulkanBuffer; 4],
        [m, n, products]: [usize; 3],
    ) -> Result<(), VulkanError> {
        if m * n * products == 0 {
            return Ok(());
        }
        let ([workgroup, tile, wpt], groups) = self.gemm_launch(m, n, products)?;
        let spec = [workgroup, tile, wpt, mode as u32];
        let bindings = [read(a), read(b), read(bias), write(c)];
        self.run_groups(Shader::ConvGemm, &spec, &bindings, params, groups)
    }

    /// `out[r] = Σ_c x[r, c]` for `x [rows, cols]` (fixed order: chunks of [`COL_CHUNK`], then
    /// the chunk sums), overwritten.
    fn row_sums(&self, rows: usize, cols: usize, x: &VulkanBuffer, out: &VulkanBuffer) -> Result<(), VulkanError> {
        let [rows, cols] = dims([rows, cols])?;
        let chunks = cols.div_ceil(COL_CHUNK).max(1);
        if chunks == 1 {
            let params = RowSumParams { rows, cols, cols_per_chunk: cols, chunks: 1 };
            return self.run(Shader::RowSums, &[read(x), write(out)], &params, rows);
        }
        let partials = self.allocate(PoolKind::Device, (rows * chunks) as usize)?;
        let params = RowSumParams { rows, cols, cols_per_chunk: COL_CHUNK, chunks };
        self.run(Shader::RowSums, &[read(x), write(&partials)], &params, rows * chunks)?;
        let params = RowSumParams { rows, cols: chunks, cols_per_chunk: chunks, chunks: 1 };
        self.run(Shader::RowSums, &[read(&partials), write(out)], &params, rows)
    }

    fn upsample(
        &self,
        desc: &UpsampleDesc,
        src: &VulkanBuffer,
        dst: &VulkanBuffer,
        backward: bool,
    ) -> Result<(), VulkanError> {
        let [total, h, w] = dims([dst.len, desc.height, desc.width])?;
        let params = UpsampleParams { total, h, w, backward: u32::from(backward) };
        self.run(Shader::Upsample, &[read(src), write(dst)], &params, total)
    }
}

impl ConvKernels for VulkanBackend {
    fn conv2d_forward(
        &self,
        desc: &Conv2dDesc,
        x: &VulkanBuffer,
        w: &VulkanBuffer,
        bias: Option<&VulkanBuffer>,
        y: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let params = Self::conv_params(desc, bias.is_some())?;
        let positions = desc.out_height() * desc.out_width();
        // Without a bias, `y` stands in for the unused bias binding (never read).
        let buffers = [w, x, bias.unwrap_or(y), y];
        self.conv_gemm(ConvMode::Forward, &params, buffers, [desc.out_channels, positions, desc.batch])
    }

    fn conv2d_backward(
        &self,
        desc: &Conv2dDesc,
        x: &VulkanBuffer,
        w: &VulkanBuffer,
        dy: &VulkanBuffer,
        dx: Option<&mut VulkanBuffer>,
        dw: Option<&mut VulkanBuffer>,
        dbias: Option<&mut VulkanBuffer>,
    ) -> Result<(), VulkanError> {
        let params = Self::conv_params(desc, false)?;
        let (cin, cout, taps) = (desc.in_channels, desc.out_channels, desc.kernel * desc.kernel);
        let positions = desc.out_height() * desc.out_width();
        if let Some(dx) = dx {
            let shape = [cin, desc.height * desc.width, desc.batch];
            self.conv_gemm(ConvMode::InputGradient, &params, [w, dy, dx, dx], shape)?;
        }
        if let Some(dw) = dw {
            // An empty batch is an empty inner dimension: the GEMM writes zeros.
            self.conv_gemm(ConvMode::WeightGradient, &params, [dy, x, dw, dw], [cout, cin * taps, 1])?;
        }
        if let Some(db) = dbias {
            // An empty batch: no rows to sum, and `column_sums` writes zeros.
            let per_image = self.allocate(PoolKind::Device, desc.batch * cout)?;
            self.row_sums(desc.batch * cout, positions, dy, &per_image)?;
            self.column_sums(1, desc.batch, cout, &per_image, None, db)?;
        }
        Ok(())
    }

    fn upsample_nearest2x_forward(
        &self,
        desc: &UpsampleDesc,
        x: &VulkanBuffer,
        y: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        self.upsample(desc, x, y, false)
    }

    fn upsample_nearest2x_backward(
        &self,
        desc: &UpsampleDesc,
        dy: &VulkanBuffer,
        dx: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        self.upsample(desc, dy, dx, true)
    }
}
