//! `LossKernels` on CUDA (MSE, L1, mean, hinge).
//!
//! Each thread sums [`LOSS_PER_PARTIAL`] f32 terms in order (values [`LOSS_LANES`] apart, so
//! neighbouring threads read neighbouring values) and writes the gradient of those values in
//! the same pass; `loss_finish` adds the partial sums in a fixed order in f64 on the device and
//! writes the mean into the loss buffer, so nothing waits for the device. The order
//! depends on the length only, so the loss is the same bits run to run, with or without the
//! gradient, and with only 16 f32 additions per partial it stays close to an f64 sum even when
//! the terms cancel.
//! Gradients follow the CPU backend's f32 formulas (`(p - t) · f32(2/n)`, `sign(p - t) ·
//! f32(1/n)`, ...). An empty input gives NaN (PyTorch's mean of nothing).

use crate::launch::{params, Kernel};
use crate::launch::{read, write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::LossKernels;

/// Partial sums per block of values (`LANES` in the kernel).
const LOSS_LANES: u32 = 256;
/// Values per partial sum (`PER` in the kernel).
const LOSS_PER_PARTIAL: u32 = 16;

params! {
    /// `kernels/loss.cu` `loss_partials`.
    struct LossParams { total: u32, partial_count: u32, kind: u32, write_grad: u32, norm: f32, sign: f32 }
}
params! {
    /// `kernels/loss.cu` `loss_finish`.
    struct FinishParams { count: u32, n: u32 }
}

#[derive(Clone, Copy)]
enum LossKind {
    Mse,
    L1,
    Mean,
    /// The hinge with the sign of `real` (+1 real images, -1 reconstructions).
    Hinge(f32),
}

impl CudaBackend {
    /// `loss[0] = Σ term / n` in the fixed order of the partial sums (f32 partials of 16 terms,
    /// added in f64 on the device by `loss_finish`), with the gradient when asked for. Nothing
    /// waits for the device; the front end reads `loss` back for the f64 forms.
    fn loss_into(
        &self,
        kind: LossKind,
        pred: &CudaBuffer,
        target: &CudaBuffer,
        grad: Option<&mut CudaBuffer>,
        loss: &mut CudaBuffer,
    ) -> Result<Option<f64>, CudaError> {
        let n = pred.len;
        if n == 0 {
            self.fill_buffer(loss, f32::NAN)?;
            return Ok(None);
        }
        let [total] = dims([n])?;
        let partial_count = total.div_ceil(LOSS_LANES * LOSS_PER_PARTIAL) * LOSS_LANES;
        let partials = self.allocate(partial_count as usize)?;
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
        self.run(Kernel::LossPartials, &bindings, &params, partial_count)?;
        let finish = FinishParams { count: partial_count, n: total };
        self.run_groups(Kernel::LossFinish, &[crate::BLOCK], &[read(&partials), write(loss)], &finish, 1)?;
        Ok(None)
    }
}

impl LossKernels for CudaBackend {
    fn mse_loss_into(
        &self,
        pred: &CudaBuffer,
        target: &CudaBuffer,
        grad: Option<&mut CudaBuffer>,
        loss: &mut CudaBuffer,
    ) -> Result<Option<f64>, CudaError> {
        self.loss_into(LossKind::Mse, pred, target, grad, loss)
    }

    fn l1_loss_into(
        &self,
        pred: &CudaBuffer,
        target: &CudaBuffer,
        grad: Option<&mut CudaBuffer>,
        loss: &mut CudaBuffer,
    ) -> Result<Option<f64>, CudaError> {
        self.loss_into(LossKind::L1, pred, target, grad, loss)
    }

    fn mean_loss_into(
        &self,
        x: &CudaBuffer,
        grad: Option<&mut CudaBuffer>,
        loss: &mut CudaBuffer,
    ) -> Result<Option<f64>, CudaError> {
        // One input: it is bound as the target too and ignored there.
        self.loss_into(LossKind::Mean, x, x, grad, loss)
    }

    fn hinge_loss_into(
        &self,
        logits: &CudaBuffer,
        real: bool,
        grad: Option<&mut CudaBuffer>,
        loss: &mut CudaBuffer,
    ) -> Result<Option<f64>, CudaError> {
        self.loss_into(LossKind::Hinge(if real { 1.0 } else { -1.0 }), logits, logits, grad, loss)
    }
}
