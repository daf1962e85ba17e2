//! `LossKernels` on Vulkan (MSE, L1, mean, hinge), reduced on the device: no wait for the host.
//!
//! 1. `shaders/loss/loss_partials.comp`: each invocation adds [`LOSS_PER_PARTIAL`] terms in
//!    order (values [`LOSS_LANES`] apart, so neighbouring invocations read neighbouring values)
//!    into a compensated pair (hi, lo) and writes the gradient of those values in the same pass.
//! 2. `shaders/loss/loss_reduce.comp`, repeated: one invocation per [`LOSS_FAN`] pairs adds them
//!    in order, compensated, until one pair is left; the last pass writes `sum / n` (rounded
//!    once) into the caller's one-value `loss` buffer.
//!
//! Compensated (TwoSum) additions keep every rounding error, so the loss is as close to the f64
//! sum of the f32 terms as an f64 sum is, even when the terms cancel (the mean of zero-mean
//! values; measured: within 1 ulp of the f32-rounded f64 value). The order depends on the length
//! only: the same bits run to run, with or without the gradient.
//! Gradients follow the CPU backend's f32 formulas (`(p - t) · f32(2/n)`, `sign(p - t) ·
//! f32(1/n)`, ...). An empty input gives NaN (PyTorch's mean of nothing).

use crate::pipeline::{push_constants, Shader};
use crate::recorder::{read, write};
use crate::{dims, PoolKind, VulkanBackend, VulkanBuffer, VulkanError};
use gpstoken_core::backend::kernels::LossKernels;

/// Partial sums per block of values (`LANES` in `loss_partials.comp`).
const LOSS_LANES: u32 = 256;
/// Values per partial sum (`PER` in `loss_partials.comp`).
const LOSS_PER_PARTIAL: u32 = 16;
/// Pairs added by one invocation of a reduction pass (`FAN` in `loss_reduce.comp`).
const LOSS_FAN: u32 = 256;

push_constants! {
    /// `shaders/loss/loss_partials.comp`.
    struct LossParams { total: u32, partial_count: u32, kind: u32, write_grad: u32, norm: f32, sign: f32 }
}
push_constants! {
    /// `shaders/loss/loss_reduce.comp`.
    struct ReduceParams { count: u32, finish: u32, n: f32 }
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
    /// `Σ term / n` into `loss` in the fixed order of the partial sums and reduction passes,
    /// with the gradient when asked for; recorded, not waited for.
    fn loss(
        &self,
        kind: LossKind,
        pred: &VulkanBuffer,
        target: &VulkanBuffer,
        grad: Option<&mut VulkanBuffer>,
        loss: &VulkanBuffer,
    ) -> Result<Option<f64>, VulkanError> {
        let n = pred.len;
        if n == 0 {
            self.fill_buffer(loss, f32::NAN)?;
            return Ok(None);
        }
        let [total] = dims([n])?;
        let partial_count = total.div_ceil(LOSS_LANES * LOSS_PER_PARTIAL) * LOSS_LANES;
        let partials = self.allocate(PoolKind::Device, 2 * partial_count as usize)?;
        let inverse_n = (1.0 / n as f64) as f32;
        let (code, norm, sign) = match kind {
            LossKind::Mse => (0, (2.0 / n as f64) as f32, 0.0),
            LossKind::L1 => (1, inverse_n, 0.0),
            LossKind::Mean => (2, inverse_n, 0.0),
            LossKind::Hinge(sign) => (3, inverse_n, sign),
        };
        let write_grad = u32::from(grad.is_some());
        let params = LossParams { total, partial_count, kind: code, write_grad, norm, sign };
        // Without a gradient, `partials` stands in for the unused grad binding (never written).
        let grad_binding = grad.as_deref().unwrap_or(&partials);
        let bindings = [read(pred), read(target), write(grad_binding), write(&partials)];
        self.run(Shader::LossPartials, &bindings, &params, partial_count)?;
        let (mut src, mut count) = (partials, partial_count);
        loop {
            let outputs = count.div_ceil(LOSS_FAN);
            let params = ReduceParams { count, finish: u32::from(outputs == 1), n: n as f32 };
            if outputs == 1 {
                return self.run(Shader::LossReduce, &[read(&src), write(loss)], &params, 1).map(|()| None);
            }
            let dst = self.allocate(PoolKind::Device, 2 * outputs as usize)?;
            self.run(Shader::LossReduce, &[read(&src), write(&dst)], &params, outputs)?;
            (src, count) = (dst, outputs);
        }
    }
}

impl LossKernels for VulkanBackend {
    fn mse_loss_into(
        &self,
        pred: &VulkanBuffer,
        target: &VulkanBuffer,
        grad: Option<&mut VulkanBuffer>,
        loss: &mut VulkanBuffer,
    ) -> Result<Option<f64>, VulkanError> {
        self.loss(LossKind::Mse, pred, target, grad, loss)
    }

    fn l1_loss_into(
        &self,
        pred: &VulkanBuffer,
        target: &VulkanBuffer,
        grad: Option<&mut VulkanBuffer>,
        loss: &mut VulkanBuffer,
    ) -> Result<Option<f64>, VulkanError> {
        self.loss(LossKind::L1, pred, target, grad, loss)
    }

    fn mean_loss_into(
        &self,
        x: &VulkanBuffer,
        grad: Option<&mut VulkanBuffer>,
        loss: &mut VulkanBuffer,
    ) -> Result<Option<f64>, VulkanError> {
        // One input: it is bound as the target too and ignored there.
        self.loss(LossKind::Mean, x, x, grad, loss)
    }

    fn hinge_loss_into(
        &self,
        logits: &VulkanBuffer,
        real: bool,
        grad: Option<&mut VulkanBuffer>,
        loss: &mut VulkanBuffer,
    ) -> Result<Option<f64>, VulkanError> {
        self.loss(LossKind::Hinge(if real { 1.0 } else { -1.0 }), logits, logits, grad, loss)
    }
}
