//! `LossOps` on Vulkan (MSE, L1, mean, hinge).
//!
//! The values are cut into chunks of [`LOSS_CHUNK`]; one workgroup sums a chunk's f32 terms
//! (each invocation a strided part in order, then a fixed tree) and writes the gradient of its
//! values in the same pass. The host adds the chunk sums in chunk order in f64 and divides by
//! n: a fixed order, so the loss is the same bits run to run, with or without the gradient.
//! Gradients follow the CPU backend's f32 formulas (`(p - t) · f32(2/n)`, `sign(p - t) ·
//! f32(1/n)`, ...). An empty input gives NaN (PyTorch's mean of nothing).

use crate::pipeline::{push_constants, Shader};
use crate::recorder::{read, write};
use crate::{dims, PoolKind, VulkanBackend, VulkanBuffer, VulkanError};
use gpstoken_core::backend::{Buffers, LossOps};
use gpstoken_core::shape::check_len;

/// Values per chunk sum (fixed, so the summation order depends on the length only).
const LOSS_CHUNK: u32 = 4096;

push_constants! {
    /// `shaders/loss/loss_partials.comp`.
    struct LossParams { total: u32, chunk: u32, kind: u32, write_grad: u32, norm: f32, sign: f32 }
}

#[derive(Clone, Copy)]
enum LossKind {
    Mse,
    L1,
    Mean,
    /// The hinge with the sign of `real` (+1 real images, -1 reconstructions).
    Hinge(f32),
}

impl VulkanBackend {
    /// `Σ term / n` in the fixed chunk order, with the gradient when asked for.
    fn loss(
        &self,
        kind: LossKind,
        pred: &VulkanBuffer,
        target: &VulkanBuffer,
        grad: Option<&mut VulkanBuffer>,
    ) -> Result<f64, VulkanError> {
        check_len("loss target", pred.len, target.len)?;
        if let Some(grad) = &grad {
            check_len("loss gradient", pred.len, grad.len)?;
        }
        let n = pred.len;
        if n == 0 {
            return Ok(f64::NAN);
        }
        let [total] = dims([n])?;
        let chunks = total.div_ceil(LOSS_CHUNK);
        let partials = self.allocate(PoolKind::Device, chunks as usize)?;
        let inverse_n = (1.0 / n as f64) as f32;
        let (code, norm, sign) = match kind {
            LossKind::Mse => (0, (2.0 / n as f64) as f32, 0.0),
            LossKind::L1 => (1, inverse_n, 0.0),
            LossKind::Mean => (2, inverse_n, 0.0),
            LossKind::Hinge(sign) => (3, inverse_n, sign),
        };
        let params =
            LossParams { total, chunk: LOSS_CHUNK, kind: code, write_grad: u32::from(grad.is_some()), norm, sign };
        // Without a gradient, `partials` stands in for the unused grad binding (never written).
        let grad_binding = grad.as_deref().unwrap_or(&partials);
        let groups = chunks.min(self.max_groups());
        let bindings = [read(pred), read(target), write(grad_binding), write(&partials)];
        self.run_groups(Shader::LossPartials, &[self.workgroup_size], &bindings, &params, groups)?;
        let mut sums = vec![0.0f32; chunks as usize];
        self.download(&partials, &mut sums)?;
        let sum = sums.iter().fold(0.0f64, |acc, &s| acc + f64::from(s));
        Ok(sum / n as f64)
    }
}

impl LossOps for VulkanBackend {
    fn mse_loss(
        &self,
        pred: &VulkanBuffer,
        target: &VulkanBuffer,
        grad: Option<&mut VulkanBuffer>,
    ) -> Result<f64, VulkanError> {
        self.loss(LossKind::Mse, pred, target, grad)
    }

    fn l1_loss(
        &self,
        pred: &VulkanBuffer,
        target: &VulkanBuffer,
        grad: Option<&mut VulkanBuffer>,
    ) -> Result<f64, VulkanError> {
        self.loss(LossKind::L1, pred, target, grad)
    }

    fn mean_loss(&self, x: &VulkanBuffer, grad: Option<&mut VulkanBuffer>) -> Result<f64, VulkanError> {
        // One input: it is bound as the target too and ignored there.
        self.loss(LossKind::Mean, x, x, grad)
    }

    fn hinge_loss(
        &self,
        logits: &VulkanBuffer,
        real: bool,
        grad: Option<&mut VulkanBuffer>,
    ) -> Result<f64, VulkanError> {
        self.loss(LossKind::Hinge(if real { 1.0 } else { -1.0 }), logits, logits, grad)
    }
}
