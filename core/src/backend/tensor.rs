//! Elementwise ops, activations and layout changes: the glue between layers.

use super::Buffers;
use crate::shape::{check_len, ensure, ShapeError};

/// Pointwise nonlinearities. Forward `y = f(x)`, backward `dx = f'(x) dy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x Φ(x)`, exact erf form (PyTorch `GELU()`).
    GeluErf,
    /// `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))` (PyTorch `GELU(approximate="tanh")`).
    GeluTanh,
    /// `x sig(x)` (swish).
    Silu,
    /// `sig(x) = 1 / (1 + exp(-x))`.
    Sigmoid,
    /// `x` for `x > 0`, else `0.2 x` (PyTorch `LeakyReLU(0.2)`, the PatchGAN discriminator's;
    /// the slope is the f32 `0.2`, and the derivative at 0 is the slope, as PyTorch's).
    LeakyRelu02,
}

impl Activation {
    /// The negative slope of [`Activation::LeakyRelu02`] (an f32, as PyTorch converts it).
    pub const LEAKY_SLOPE: f32 = 0.2;
}

/// A batched 2D transpose: `x [batch, rows, cols]` to `y [batch, cols, rows]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransposeDesc {
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
}

impl TransposeDesc {
    pub fn len(&self) -> usize {
        self.batch * self.rows * self.cols
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn check(&self, x: usize, y: usize) -> Result<(), ShapeError> {
        check_len("transpose input", self.len(), x)?;
        check_len("transpose output", self.len(), y)
    }
}

/// Cutting images into tiles (`to_bnpnp` of the official decoder, spec 6.2): `x [B, C, np*th, np*tw]`
/// to `y [B*np*np, C, th, tw]` with tile index `b*np² + i*np + j`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchDesc {
    pub batch: usize,
    pub channels: usize,
    /// Tiles per side (`np`).
    pub patches: usize,
    pub tile_height: usize,
    pub tile_width: usize,
}

impl PatchDesc {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.patches * self.patches * self.tile_height * self.tile_width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn check(&self, x: usize, y: usize) -> Result<(), ShapeError> {
        ensure(self.patches >= 1, "patches must be at least 1")?;
        check_len("patch input", self.len(), x)?;
        check_len("patch output", self.len(), y)
    }
}

/// adaLN modulation shapes (SiT blocks, spec 9.2): token rows `x [batch, tokens, dim]` and
/// per-sample vectors `[batch, dim]` (shift, scale, gate), broadcast over the tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModulateDesc {
    pub batch: usize,
    pub tokens: usize,
    pub dim: usize,
}

impl ModulateDesc {
    /// Values of a token tensor `[batch, tokens, dim]`.
    pub fn len(&self) -> usize {
        self.batch * self.tokens * self.dim
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values of a per-sample vector `[batch, dim]`.
    pub fn vector_len(&self) -> usize {
        self.batch * self.dim
    }
    /// Checks every token tensor (`(name, length)`, each `[batch, tokens, dim]`) and every
    /// per-sample vector (each `[batch, dim]`).
    pub fn check(
        &self,
        token_tensors: &[(&'static str, usize)],
        vectors: &[(&'static str, usize)],
    ) -> Result<(), ShapeError> {
        for &(what, got) in token_tensors {
            check_len(what, self.len(), got)?;
        }
        for &(what, got) in vectors {
            check_len(what, self.vector_len(), got)?;
        }
        Ok(())
    }
}

pub trait TensorOps: Buffers {
    /// `dst = src` (same length).
    fn copy(&self, src: &Self::Buffer, dst: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// Every value of `dst` set to `value`.
    fn fill(&self, dst: &mut Self::Buffer, value: f32) -> Result<(), Self::Error>;
    /// `x *= alpha`.
    fn scale(&self, x: &mut Self::Buffer, alpha: f32) -> Result<(), Self::Error>;
    /// `out = a + b`.
    fn add(&self, a: &Self::Buffer, b: &Self::Buffer, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `dst += src`: how gradients of a tensor with several consumers are summed.
    fn add_assign(&self, dst: &mut Self::Buffer, src: &Self::Buffer) -> Result<(), Self::Error>;
    /// `y += alpha * x`.
    fn axpy(&self, alpha: f32, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `x[r, c] += row[c]` for `x [rows, cols]`, `row [cols]` (a bias or a shared embedding).
    fn add_row_broadcast(
        &self,
        rows: usize,
        cols: usize,
        x: &mut Self::Buffer,
        row: &Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// `out[c] = sum_r x[r, c]`, overwritten: the backward of [`TensorOps::add_row_broadcast`].
    fn sum_rows(&self, rows: usize, cols: usize, x: &Self::Buffer, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `y = f(x)`.
    fn activation_forward(&self, kind: Activation, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `dx = f'(x) * dy`, overwritten.
    fn activation_backward(
        &self,
        kind: Activation,
        x: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// `y[b, c, r] = x[b, r, c]` (its own backward, with rows and cols swapped).
    fn transpose(&self, desc: &TransposeDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `out[r] = [a[r], b[r]]` for `a [rows, a_cols]`, `b [rows, b_cols]`.
    fn concat_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// The inverse of [`TensorOps::concat_cols`] (and its backward).
    fn split_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        x: &Self::Buffer,
        a: &mut Self::Buffer,
        b: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// Images to tiles ([`PatchDesc`]); the backward is [`TensorOps::unpatchify`].
    fn patchify(&self, desc: &PatchDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// Tiles back to images; the backward is [`TensorOps::patchify`].
    fn unpatchify(&self, desc: &PatchDesc, y: &Self::Buffer, x: &mut Self::Buffer) -> Result<(), Self::Error>;

    /// adaLN modulation ([`ModulateDesc`]): `y[b, n, :] = x[b, n, :] * (1 + scale[b, :]) + shift[b, :]`,
    /// in f32 and in that order (`x * (1 + scale)`, then `+ shift`).
    fn modulate_forward(
        &self,
        desc: &ModulateDesc,
        x: &Self::Buffer,
        shift: &Self::Buffer,
        scale: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// The backward of [`TensorOps::modulate_forward`], each output overwritten:
    /// `dx = dy * (1 + scale)`, `dshift[b] = Σ_n dy[b, n]`, `dscale[b] = Σ_n dy[b, n] * x[b, n]`
    /// (the sums over tokens in a fixed order on the CPU).
    #[allow(clippy::too_many_arguments)]
    fn modulate_backward(
        &self,
        desc: &ModulateDesc,
        x: &Self::Buffer,
        scale: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
        dshift: &mut Self::Buffer,
        dscale: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// The gated residual of adaLN-Zero blocks, `tok += g ⊙ branch`:
    /// `out[b, n, :] += gate[b, :] * f[b, n, :]` (accumulates into `out`).
    fn gated_add_forward(
        &self,
        desc: &ModulateDesc,
        gate: &Self::Buffer,
        f: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// The backward of [`TensorOps::gated_add_forward`] for the gate and the branch, each
    /// overwritten: `df = dout * gate`, `dgate[b] = Σ_n dout[b, n] * f[b, n]` (the residual's own
    /// gradient is `dout` itself).
    fn gated_add_backward(
        &self,
        desc: &ModulateDesc,
        gate: &Self::Buffer,
        f: &Self::Buffer,
        dout: &Self::Buffer,
        dgate: &mut Self::Buffer,
        df: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}
