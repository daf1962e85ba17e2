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

/// The kernels behind [`TensorOps`], one per op, same signature. Called only after the front end
/// (the blanket `impl<T: TensorKernels> TensorOps for T` below) has checked every buffer length
/// against the descriptor: implementations contain no shape logic.
pub trait TensorKernels: Buffers {
    /// [`TensorOps::copy`].
    fn copy(&self, src: &Self::Buffer, dst: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// [`TensorOps::fill`].
    fn fill(&self, dst: &mut Self::Buffer, value: f32) -> Result<(), Self::Error>;
    /// [`TensorOps::scale`].
    fn scale(&self, x: &mut Self::Buffer, alpha: f32) -> Result<(), Self::Error>;
    /// [`TensorOps::add`].
    fn add(&self, a: &Self::Buffer, b: &Self::Buffer, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// [`TensorOps::add_assign`].
    fn add_assign(&self, dst: &mut Self::Buffer, src: &Self::Buffer) -> Result<(), Self::Error>;
    /// [`TensorOps::axpy`].
    fn axpy(&self, alpha: f32, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// [`TensorOps::add_row_broadcast`].
    fn add_row_broadcast(
        &self,
        rows: usize,
        cols: usize,
        x: &mut Self::Buffer,
        row: &Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`TensorOps::sum_rows`].
    fn sum_rows(&self, rows: usize, cols: usize, x: &Self::Buffer, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// [`TensorOps::activation_forward`].
    fn activation_forward(&self, kind: Activation, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// [`TensorOps::activation_backward`].
    fn activation_backward(
        &self,
        kind: Activation,
        x: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`TensorOps::transpose`].
    fn transpose(&self, desc: &TransposeDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// [`TensorOps::concat_cols`].
    fn concat_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        a: &Self::Buffer,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`TensorOps::split_cols`].
    fn split_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        x: &Self::Buffer,
        a: &mut Self::Buffer,
        b: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`TensorOps::patchify`].
    fn patchify(&self, desc: &PatchDesc, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// [`TensorOps::unpatchify`].
    fn unpatchify(&self, desc: &PatchDesc, y: &Self::Buffer, x: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// [`TensorOps::modulate_forward`].
    fn modulate_forward(
        &self,
        desc: &ModulateDesc,
        x: &Self::Buffer,
        shift: &Self::Buffer,
        scale: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`TensorOps::modulate_backward`].
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
    /// [`TensorOps::gated_add_forward`].
    fn gated_add_forward(
        &self,
        desc: &ModulateDesc,
        gate: &Self::Buffer,
        f: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`TensorOps::gated_add_backward`].
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

impl<T: TensorKernels> TensorOps for T {
    fn copy(&self, src: &T::Buffer, dst: &mut T::Buffer) -> Result<(), T::Error> {
        check_len("copy destination", self.len(src), self.len(dst))?;
        TensorKernels::copy(self, src, dst)
    }

    fn fill(&self, dst: &mut T::Buffer, value: f32) -> Result<(), T::Error> {
        TensorKernels::fill(self, dst, value)
    }

    fn scale(&self, x: &mut T::Buffer, alpha: f32) -> Result<(), T::Error> {
        TensorKernels::scale(self, x, alpha)
    }

    fn add(&self, a: &T::Buffer, b: &T::Buffer, out: &mut T::Buffer) -> Result<(), T::Error> {
        check_len("add second operand", self.len(a), self.len(b))?;
        check_len("add output", self.len(a), self.len(out))?;
        TensorKernels::add(self, a, b, out)
    }

    fn add_assign(&self, dst: &mut T::Buffer, src: &T::Buffer) -> Result<(), T::Error> {
        check_len("add_assign source", self.len(dst), self.len(src))?;
        TensorKernels::add_assign(self, dst, src)
    }

    fn axpy(&self, alpha: f32, x: &T::Buffer, y: &mut T::Buffer) -> Result<(), T::Error> {
        check_len("axpy y", self.len(x), self.len(y))?;
        TensorKernels::axpy(self, alpha, x, y)
    }

    fn add_row_broadcast(&self, rows: usize, cols: usize, x: &mut T::Buffer, row: &T::Buffer) -> Result<(), T::Error> {
        check_len("broadcast target", rows * cols, self.len(x))?;
        check_len("broadcast row", cols, self.len(row))?;
        TensorKernels::add_row_broadcast(self, rows, cols, x, row)
    }

    fn sum_rows(&self, rows: usize, cols: usize, x: &T::Buffer, out: &mut T::Buffer) -> Result<(), T::Error> {
        check_len("sum_rows input", rows * cols, self.len(x))?;
        check_len("sum_rows output", cols, self.len(out))?;
        TensorKernels::sum_rows(self, rows, cols, x, out)
    }

    fn activation_forward(&self, kind: Activation, x: &T::Buffer, y: &mut T::Buffer) -> Result<(), T::Error> {
        check_len("activation output", self.len(x), self.len(y))?;
        TensorKernels::activation_forward(self, kind, x, y)
    }

    fn activation_backward(
        &self,
        kind: Activation,
        x: &T::Buffer,
        dy: &T::Buffer,
        dx: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        check_len("activation dy", self.len(x), self.len(dy))?;
        check_len("activation dx", self.len(x), self.len(dx))?;
        TensorKernels::activation_backward(self, kind, x, dy, dx)
    }

    fn transpose(&self, desc: &TransposeDesc, x: &T::Buffer, y: &mut T::Buffer) -> Result<(), T::Error> {
        desc.check(self.len(x), self.len(y))?;
        TensorKernels::transpose(self, desc, x, y)
    }

    fn concat_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        a: &T::Buffer,
        b: &T::Buffer,
        out: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        check_len("concat first input", rows * a_cols, self.len(a))?;
        check_len("concat second input", rows * b_cols, self.len(b))?;
        check_len("concat output", rows * (a_cols + b_cols), self.len(out))?;
        TensorKernels::concat_cols(self, rows, a_cols, b_cols, a, b, out)
    }

    fn split_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        x: &T::Buffer,
        a: &mut T::Buffer,
        b: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        check_len("split input", rows * (a_cols + b_cols), self.len(x))?;
        check_len("split first output", rows * a_cols, self.len(a))?;
        check_len("split second output", rows * b_cols, self.len(b))?;
        TensorKernels::split_cols(self, rows, a_cols, b_cols, x, a, b)
    }

    fn patchify(&self, desc: &PatchDesc, x: &T::Buffer, y: &mut T::Buffer) -> Result<(), T::Error> {
        desc.check(self.len(x), self.len(y))?;
        TensorKernels::patchify(self, desc, x, y)
    }

    fn unpatchify(&self, desc: &PatchDesc, y: &T::Buffer, x: &mut T::Buffer) -> Result<(), T::Error> {
        desc.check(self.len(x), self.len(y))?;
        TensorKernels::unpatchify(self, desc, y, x)
    }

    fn modulate_forward(
        &self,
        desc: &ModulateDesc,
        x: &T::Buffer,
        shift: &T::Buffer,
        scale: &T::Buffer,
        y: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(
            &[("modulate input", self.len(x)), ("modulate output", self.len(y))],
            &[("modulate shift", self.len(shift)), ("modulate scale", self.len(scale))],
        )?;
        TensorKernels::modulate_forward(self, desc, x, shift, scale, y)
    }

    #[allow(clippy::too_many_arguments)]
    fn modulate_backward(
        &self,
        desc: &ModulateDesc,
        x: &T::Buffer,
        scale: &T::Buffer,
        dy: &T::Buffer,
        dx: &mut T::Buffer,
        dshift: &mut T::Buffer,
        dscale: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(
            &[("modulate input", self.len(x)), ("modulate dy", self.len(dy)), ("modulate dx", self.len(dx))],
            &[
                ("modulate scale", self.len(scale)),
                ("modulate dshift", self.len(dshift)),
                ("modulate dscale", self.len(dscale)),
            ],
        )?;
        TensorKernels::modulate_backward(self, desc, x, scale, dy, dx, dshift, dscale)
    }

    fn gated_add_forward(
        &self,
        desc: &ModulateDesc,
        gate: &T::Buffer,
        f: &T::Buffer,
        out: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(
            &[("gated_add branch", self.len(f)), ("gated_add output", self.len(out))],
            &[("gated_add gate", self.len(gate))],
        )?;
        TensorKernels::gated_add_forward(self, desc, gate, f, out)
    }

    fn gated_add_backward(
        &self,
        desc: &ModulateDesc,
        gate: &T::Buffer,
        f: &T::Buffer,
        dout: &T::Buffer,
        dgate: &mut T::Buffer,
        df: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(
            &[("gated_add branch", self.len(f)), ("gated_add dout", self.len(dout)), ("gated_add df", self.len(df))],
            &[("gated_add gate", self.len(gate)), ("gated_add dgate", self.len(dgate))],
        )?;
        TensorKernels::gated_add_backward(self, desc, gate, f, dout, dgate, df)
    }
}
