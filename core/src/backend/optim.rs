//! Optimiser steps as device ops, so parameters never leave the device.

use super::Buffers;
use crate::shape::{check_len, ensure};

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
}
