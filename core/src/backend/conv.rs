//! 2D convolution (NCHW) and nearest-neighbour upsampling.

use super::Buffers;
use crate::shape::{check_len, check_optional, ensure, ShapeError};

/// `y [B, out, Ho, Wo] = conv(x [B, in, H, W], W [out, in, k, k]) + b`, square kernel, equal
/// stride and zero padding on both axes (PyTorch `nn.Conv2d`, groups = 1, dilation = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dDesc {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2dDesc {
    /// A stride-1 convolution that keeps the size (`padding = kernel / 2`, odd kernels).
    pub fn same(
        batch: usize,
        in_channels: usize,
        out_channels: usize,
        height: usize,
        width: usize,
        kernel: usize,
    ) -> Self {
        Conv2dDesc { batch, in_channels, out_channels, height, width, kernel, stride: 1, padding: kernel / 2 }
    }
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding).saturating_sub(self.kernel) / self.stride.max(1) + 1
    }
    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding).saturating_sub(self.kernel) / self.stride.max(1) + 1
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_height() * self.out_width()
    }
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel * self.kernel
    }
    /// Checks the descriptor and the x, W, bias (if any), y lengths.
    pub fn check(&self, x: usize, w: usize, bias: Option<usize>, y: usize) -> Result<(), ShapeError> {
        ensure(self.kernel >= 1 && self.stride >= 1, "kernel and stride must be at least 1")?;
        ensure(
            self.height + 2 * self.padding >= self.kernel && self.width + 2 * self.padding >= self.kernel,
            "the kernel is larger than the padded input",
        )?;
        check_len("conv input", self.input_len(), x)?;
        check_len("conv weight", self.weight_len(), w)?;
        if let Some(b) = bias {
            check_len("conv bias", self.out_channels, b)?;
        }
        check_len("conv output", self.output_len(), y)
    }

    /// Checks the backward's buffers: x, W, dy and each gradient that is asked for.
    pub fn check_backward(
        &self,
        x: usize,
        w: usize,
        dy: usize,
        dx: Option<usize>,
        dw: Option<usize>,
        dbias: Option<usize>,
    ) -> Result<(), ShapeError> {
        self.check(x, w, None, dy)?;
        check_optional("conv input gradient", x, dx)?;
        check_optional("conv weight gradient", w, dw)?;
        check_optional("conv bias gradient", self.out_channels, dbias)
    }
}

/// Nearest ×2 upsampling `x [B, C, H, W]` to `y [B, C, 2H, 2W]`, `y[i, j] = x[i/2, j/2]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpsampleDesc {
    pub batch: usize,
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
}

impl UpsampleDesc {
    pub fn check(&self, x: usize, y: usize) -> Result<(), ShapeError> {
        let n = self.batch * self.channels * self.height * self.width;
        check_len("upsample input", n, x)?;
        check_len("upsample output", 4 * n, y)
    }
}

pub trait ConvOps: Buffers {
    /// `y = conv(x, W) + b`.
    fn conv2d_forward(
        &self,
        desc: &Conv2dDesc,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        y: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// Gradients w.r.t. the input, the weight and the bias, each overwritten (skipped when `None`).
    /// A frozen layer (the perceptual losses' networks) passes `dw = None`: the weight-gradient
    /// products are not computed, and `dx`, `db` are the same bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &self,
        desc: &Conv2dDesc,
        x: &Self::Buffer,
        w: &Self::Buffer,
        dy: &Self::Buffer,
        dx: Option<&mut Self::Buffer>,
        dw: Option<&mut Self::Buffer>,
        dbias: Option<&mut Self::Buffer>,
    ) -> Result<(), Self::Error>;

    /// Nearest ×2 upsampling.
    fn upsample_nearest2x_forward(
        &self,
        desc: &UpsampleDesc,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `dx[i, j] = Σ` of the four `dy` values it was copied to, overwritten.
    fn upsample_nearest2x_backward(
        &self,
        desc: &UpsampleDesc,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

/// The kernels behind [`ConvOps`], one per op, same signature. Called only after the front end
/// (the blanket `impl<T: ConvKernels> ConvOps for T` below) has checked every buffer length
/// against the descriptor: implementations contain no shape logic.
pub trait ConvKernels: Buffers {
    /// [`ConvOps::conv2d_forward`].
    fn conv2d_forward(
        &self,
        desc: &Conv2dDesc,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        y: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`ConvOps::conv2d_backward`].
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &self,
        desc: &Conv2dDesc,
        x: &Self::Buffer,
        w: &Self::Buffer,
        dy: &Self::Buffer,
        dx: Option<&mut Self::Buffer>,
        dw: Option<&mut Self::Buffer>,
        dbias: Option<&mut Self::Buffer>,
    ) -> Result<(), Self::Error>;
    /// [`ConvOps::upsample_nearest2x_forward`].
    fn upsample_nearest2x_forward(
        &self,
        desc: &UpsampleDesc,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`ConvOps::upsample_nearest2x_backward`].
    fn upsample_nearest2x_backward(
        &self,
        desc: &UpsampleDesc,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

impl<T: ConvKernels> ConvOps for T {
    fn conv2d_forward(
        &self,
        desc: &Conv2dDesc,
        x: &T::Buffer,
        w: &T::Buffer,
        bias: Option<&T::Buffer>,
        y: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(x), self.len(w), bias.map(|b| self.len(b)), self.len(y))?;
        ConvKernels::conv2d_forward(self, desc, x, w, bias, y)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &self,
        desc: &Conv2dDesc,
        x: &T::Buffer,
        w: &T::Buffer,
        dy: &T::Buffer,
        dx: Option<&mut T::Buffer>,
        dw: Option<&mut T::Buffer>,
        dbias: Option<&mut T::Buffer>,
    ) -> Result<(), T::Error> {
        desc.check_backward(
            self.len(x),
            self.len(w),
            self.len(dy),
            dx.as_deref().map(|d| self.len(d)),
            dw.as_deref().map(|d| self.len(d)),
            dbias.as_deref().map(|d| self.len(d)),
        )?;
        ConvKernels::conv2d_backward(self, desc, x, w, dy, dx, dw, dbias)
    }

    fn upsample_nearest2x_forward(
        &self,
        desc: &UpsampleDesc,
        x: &T::Buffer,
        y: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(x), self.len(y))?;
        ConvKernels::upsample_nearest2x_forward(self, desc, x, y)
    }

    fn upsample_nearest2x_backward(
        &self,
        desc: &UpsampleDesc,
        dy: &T::Buffer,
        dx: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(dx), self.len(dy))?;
        ConvKernels::upsample_nearest2x_backward(self, desc, dy, dx)
    }
}
