//! `ConvKernels` on CUDA: convolutions as implicit GEMMs, nearest 2x upsampling.
//!
//! `conv_gemm_*` (`kernels/conv.cu`) is a tiled shared-memory GEMM (16×16 threads, each 1×1 or
//! 4×4 values in registers) with the im2col matrix gathered from `x` (or `dy`) as tiles load,
//! never stored; its mode is a template parameter (three kernels, times two block sizes):
//! * forward: per image `y[b] = W · col(x[b]) + b`;
//! * `dx`: per image, each input value sums its taps over `(co, kh, kw)` in order;
//! * `dW = Σ_(b, position) dy[b] · col(x[b])ᵀ`, one sum per weight over images then positions
//!   (skipped for frozen layers, `dw = None`);
//! * `db`: row sums of `dy` per (image, channel) in chunks, then those summed over images.
//!
//! Every value is one thread's sum in a fixed order: the same bits run to run.

use crate::launch::{params, Kernel};
use crate::launch::{read, write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::ConvKernels;
use gpstoken_core::backend::{Conv2dDesc, UpsampleDesc};

/// Columns per chunk of the first row-sum pass.
const COL_CHUNK: u32 = 256;

params! {
    /// `kernels/conv.cu` `conv_gemm`.
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
params! {
    /// `kernels/conv.cu` `row_sums`.
    struct RowSumParams { rows: u32, cols: u32, cols_per_chunk: u32, chunks: u32 }
}
params! {
    /// `kernels/conv.cu` `upsample`.
    struct UpsampleParams { total: u32, h: u32, w: u32, backward: u32 }
}

/// The products of `conv_gemm_*` (its template parameter MODE).
#[derive(Clone, Copy)]
enum ConvMode {
    Forward,
    InputGradient,
    WeightGradient,
}

impl CudaBackend {
    fn conv_params(d: &Conv2dDesc, has_bias: bool) -> Result<ConvParams, CudaError> {
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

    /// One implicit GEMM of `conv_gemm_*`: `products` products of `m x n` values.
    fn conv_gemm(
        &self,
        mode: ConvMode,
        params: &ConvParams,
        [a, b, bias, c]: [&CudaBuffer; 4],
        [m, n, products]: [usize; 3],
    ) -> Result<(), CudaError> {
        if m * n * products == 0 {
            return Ok(());
        }
        // 4×4 values per thread (blocks of 64×64) when both sides are that large, else 1×1:
        // every value sums over the inner dimension in order either way (same bits).
        let tile = self.gemm_tile();
        let large = (4 * tile) as usize;
        let wide = m >= large && n >= large;
        let block = if wide { large } else { tile as usize };
        let kernel = match (mode, wide) {
            (ConvMode::Forward, false) => Kernel::ConvGemmForwardWpt1,
            (ConvMode::Forward, true) => Kernel::ConvGemmForwardWpt4,
            (ConvMode::InputGradient, false) => Kernel::ConvGemmDxWpt1,
            (ConvMode::InputGradient, true) => Kernel::ConvGemmDxWpt4,
            (ConvMode::WeightGradient, false) => Kernel::ConvGemmDwWpt1,
            (ConvMode::WeightGradient, true) => Kernel::ConvGemmDwWpt4,
        };
        let [groups] = dims([m.div_ceil(block) * n.div_ceil(block) * products])?;
        let bindings = [read(a), read(b), read(bias), write(c)];
        self.run_groups(kernel, &[tile * tile], &bindings, params, groups.min(self.max_groups()))
    }

    /// `out[r] = Σ_c x[r, c]` for `x [rows, cols]` (fixed order: chunks of [`COL_CHUNK`], then
    /// the chunk sums), overwritten.
    fn row_sums(&self, rows: usize, cols: usize, x: &CudaBuffer, out: &CudaBuffer) -> Result<(), CudaError> {
        let [rows, cols] = dims([rows, cols])?;
        let chunks = cols.div_ceil(COL_CHUNK).max(1);
        if chunks == 1 {
            let params = RowSumParams { rows, cols, cols_per_chunk: cols, chunks: 1 };
            return self.run(Kernel::RowSums, &[read(x), write(out)], &params, rows);
        }
        let partials = self.allocate((rows * chunks) as usize)?;
        let params = RowSumParams { rows, cols, cols_per_chunk: COL_CHUNK, chunks };
        self.run(Kernel::RowSums, &[read(x), write(&partials)], &params, rows * chunks)?;
        let params = RowSumParams { rows, cols: chunks, cols_per_chunk: chunks, chunks: 1 };
        self.run(Kernel::RowSums, &[read(&partials), write(out)], &params, rows)
    }

    fn upsample(
        &self,
        desc: &UpsampleDesc,
        src: &CudaBuffer,
        dst: &CudaBuffer,
        backward: bool,
    ) -> Result<(), CudaError> {
        let [total, h, w] = dims([dst.len, desc.height, desc.width])?;
        let params = UpsampleParams { total, h, w, backward: u32::from(backward) };
        self.run(Kernel::Upsample, &[read(src), write(dst)], &params, total)
    }
}

impl ConvKernels for CudaBackend {
    fn conv2d_forward(
        &self,
        desc: &Conv2dDesc,
        x: &CudaBuffer,
        w: &CudaBuffer,
        bias: Option<&CudaBuffer>,
        y: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let params = Self::conv_params(desc, bias.is_some())?;
        let positions = desc.out_height() * desc.out_width();
        // Without a bias, `y` stands in for the unused bias binding (never read).
        let buffers = [w, x, bias.unwrap_or(y), y];
        self.conv_gemm(ConvMode::Forward, &params, buffers, [desc.out_channels, positions, desc.batch])
    }

    fn conv2d_backward(
        &self,
        desc: &Conv2dDesc,
        x: &CudaBuffer,
        w: &CudaBuffer,
        dy: &CudaBuffer,
        dx: Option<&mut CudaBuffer>,
        dw: Option<&mut CudaBuffer>,
        dbias: Option<&mut CudaBuffer>,
    ) -> Result<(), CudaError> {
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
            let per_image = self.allocate(desc.batch * cout)?;
            self.row_sums(desc.batch * cout, positions, dy, &per_image)?;
            self.column_sums(1, desc.batch, cout, &per_image, None, db)?;
        }
        Ok(())
    }

    fn upsample_nearest2x_forward(
        &self,
        desc: &UpsampleDesc,
        x: &CudaBuffer,
        y: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        self.upsample(desc, x, y, false)
    }

    fn upsample_nearest2x_backward(
        &self,
        desc: &UpsampleDesc,
        dy: &CudaBuffer,
        dx: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        self.upsample(desc, dy, dx, true)
    }
}
