//! Optimiser steps as device ops, so parameters never leave the device.

use super::Buffers;
use crate::shape::{check_len, ensure, ShapeError};

/// Adam (Kingma & Ba, PyTorch `torch.optim.Adam` semantics, L2 weight decay added to the
/// gradient). The official tokenizer uses lr 5e-5, betas (0.5, 0.9), eps 1e-8 (spec 8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl AdamConfig {
    /// The official tokenizer's settings with learning rate `lr`.
    pub fn official(lr: f32) -> Self {
        AdamConfig { lr, beta1: 0.5, beta2: 0.9, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// The f32 scalars of one Adam step as PyTorch hands them to its kernel: the bias corrections
/// in f64 (`1 - beta^step`), rounded once. Every backend's kernel takes these, so the backends
/// agree to the bit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStepScalars {
    /// `-lr / (1 - beta1^step)`.
    pub neg_step_size: f32,
    /// `sqrt(1 - beta2^step)`.
    pub bc2_sqrt: f32,
    pub one_minus_b1: f32,
    pub one_minus_b2: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl AdamConfig {
    /// The scalars of step `step` (1-based).
    pub fn step_scalars(&self, step: u32) -> AdamStepScalars {
        let (b1, b2) = (f64::from(self.beta1), f64::from(self.beta2));
        let bc1 = 1.0 - powi(b1, step);
        let bc2 = 1.0 - powi(b2, step);
        AdamStepScalars {
            neg_step_size: (-(f64::from(self.lr) / bc1)) as f32,
            bc2_sqrt: libm::sqrt(bc2) as f32,
            one_minus_b1: (1.0 - b1) as f32,
            one_minus_b2: (1.0 - b2) as f32,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// `a^n` by square-and-multiply, the algorithm of `f64::powi` (compiler-rt's `__powidf2`), which
/// the backends used before this lived in the no_std core: the same bits.
fn powi(mut a: f64, mut n: u32) -> f64 {
    let mut r = 1.0;
    loop {
        if n & 1 == 1 {
            r *= a;
        }
        n >>= 1;
        if n == 0 {
            return r;
        }
        a *= a;
    }
}

/// `f32(1 - decay)`, the EMA's interpolation weight (rounded from f64 as PyTorch does).
pub fn ema_weight(decay: f32) -> f32 {
    (1.0 - f64::from(decay)) as f32
}

/// One tensor of a multi-tensor Adam step ([`OptimOps::adam_step_many`]): the parameter, its
/// gradient and its two moments, all of one length.
#[derive(Debug)]
pub struct AdamTensor<'a, B> {
    pub param: &'a mut B,
    pub grad: &'a B,
    pub m: &'a mut B,
    pub v: &'a mut B,
}

/// One tensor of a multi-tensor EMA update ([`OptimOps::ema_update_many`]): the average and the
/// parameter it follows, of one length.
#[derive(Debug)]
pub struct EmaTensor<'a, B> {
    pub ema: &'a mut B,
    pub param: &'a B,
}

pub trait OptimOps: Buffers {
    /// One Adam step number `step` (1-based; 0 is an error) as PyTorch computes it:
    /// `g += wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;`
    /// `p -= lr / (1 - b1^t) · m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
    fn adam_step(
        &self,
        config: &AdamConfig,
        step: u32,
        param: &mut Self::Buffer,
        grad: &Self::Buffer,
        m: &mut Self::Buffer,
        v: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// Exponential moving average, `ema += (1 - decay) (param - ema)` (`ema_pytorch`'s `lerp_`).
    fn ema_update(&self, decay: f32, ema: &mut Self::Buffer, param: &Self::Buffer) -> Result<(), Self::Error>;

    /// [`OptimOps::adam_step`] on every tensor of `tensors` as one op (one kernel launch on
    /// CUDA, one batch of dispatches on Vulkan, one parallel pass on the CPU): the same bits as
    /// calling `adam_step` on each tensor in turn. Tensors may have different lengths, zero
    /// included. A length mismatch names the tensor's index in `tensors`; nothing is updated then.
    fn adam_step_many(
        &self,
        config: &AdamConfig,
        step: u32,
        tensors: &mut [AdamTensor<'_, Self::Buffer>],
    ) -> Result<(), Self::Error>;

    /// [`OptimOps::ema_update`] on every tensor of `tensors` as one op, with the same bits as
    /// calling it on each in turn.
    fn ema_update_many(&self, decay: f32, tensors: &mut [EmaTensor<'_, Self::Buffer>]) -> Result<(), Self::Error>;
}

/// The kernels behind [`OptimOps`], one per op, same signature. Called only after the front end
/// (the blanket `impl<T: OptimKernels> OptimOps for T` below) has checked every buffer length
/// against the descriptor: implementations contain no shape logic.
pub trait OptimKernels: Buffers {
    /// [`OptimOps::adam_step`].
    fn adam_step(
        &self,
        config: &AdamConfig,
        step: u32,
        param: &mut Self::Buffer,
        grad: &Self::Buffer,
        m: &mut Self::Buffer,
        v: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`OptimOps::ema_update`].
    fn ema_update(&self, decay: f32, ema: &mut Self::Buffer, param: &Self::Buffer) -> Result<(), Self::Error>;
    /// [`OptimOps::adam_step_many`].
    fn adam_step_many(
        &self,
        config: &AdamConfig,
        step: u32,
        tensors: &mut [AdamTensor<'_, Self::Buffer>],
    ) -> Result<(), Self::Error>;
    /// [`OptimOps::ema_update_many`].
    fn ema_update_many(&self, decay: f32, tensors: &mut [EmaTensor<'_, Self::Buffer>]) -> Result<(), Self::Error>;
}

/// `Ok` when `got == expected`, else a [`ShapeError::TensorLength`] naming tensor `tensor`.
fn check_tensor_len(tensor: usize, what: &'static str, expected: usize, got: usize) -> Result<(), ShapeError> {
    if got == expected {
        Ok(())
    } else {
        Err(ShapeError::TensorLength { tensor, what, expected, got })
    }
}

impl<T: OptimKernels> OptimOps for T {
    fn adam_step(
        &self,
        config: &AdamConfig,
        step: u32,
        param: &mut T::Buffer,
        grad: &T::Buffer,
        m: &mut T::Buffer,
        v: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        ensure(step >= 1, "the Adam step number is 1-based")?;
        let n = self.len(param);
        check_len("adam gradient", n, self.len(grad))?;
        check_len("adam first moment", n, self.len(m))?;
        check_len("adam second moment", n, self.len(v))?;
        OptimKernels::adam_step(self, config, step, param, grad, m, v)
    }

    fn ema_update(&self, decay: f32, ema: &mut T::Buffer, param: &T::Buffer) -> Result<(), T::Error> {
        check_len("ema parameters", self.len(ema), self.len(param))?;
        OptimKernels::ema_update(self, decay, ema, param)
    }

    fn adam_step_many(
        &self,
        config: &AdamConfig,
        step: u32,
        tensors: &mut [AdamTensor<'_, T::Buffer>],
    ) -> Result<(), T::Error> {
        ensure(step >= 1, "the Adam step number is 1-based")?;
        for (i, t) in tensors.iter().enumerate() {
            let n = self.len(t.param);
            check_tensor_len(i, "adam gradient", n, self.len(t.grad))?;
            check_tensor_len(i, "adam first moment", n, self.len(t.m))?;
            check_tensor_len(i, "adam second moment", n, self.len(t.v))?;
        }
        OptimKernels::adam_step_many(self, config, step, tensors)
    }

    fn ema_update_many(&self, decay: f32, tensors: &mut [EmaTensor<'_, T::Buffer>]) -> Result<(), T::Error> {
        for (i, t) in tensors.iter().enumerate() {
            check_tensor_len(i, "ema parameters", self.len(t.ema), self.len(t.param))?;
        }
        OptimKernels::ema_update_many(self, decay, tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::powi;

    /// The same bits as `f64::powi` for the betas training uses and every step up to 20,000
    /// (and some far beyond).
    #[test]
    fn powi_matches_std() {
        for beta in [0.5f32, 0.9, 0.99, 0.999, 0.9999, 0.95] {
            let b = f64::from(beta);
            for step in (1..=20_000u32).chain([65_535, 1 << 20, 123_456_789]) {
                assert_eq!(powi(b, step).to_bits(), b.powi(step as i32).to_bits(), "{beta}^{step}");
            }
        }
    }
}
