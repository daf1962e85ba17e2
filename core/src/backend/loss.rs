//! Reconstruction losses and the adversarial (hinge) terms. Each writes the scalar loss into a
//! one-value device buffer (`*_into`: no wait for the device, the caller reads the buffer when it
//! needs the value) and optionally its gradient w.r.t. the prediction; the f64-returning forms
//! are conveniences that allocate that buffer and read it back. Empty inputs give NaN, as PyTorch's mean of
//! nothing does.

use super::Buffers;
use crate::shape::{check_len, check_optional, ShapeError};

pub trait LossOps: Buffers {
    /// `mean((pred - target)²)` into `loss` (one value); `grad = 2 (pred - target) / n`, overwritten.
    fn mse_loss_into(
        &self,
        pred: &Self::Buffer,
        target: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
        loss: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `mean(|pred - target|)` into `loss`; `grad = sign(pred - target) / n` (0 where equal), overwritten.
    fn l1_loss_into(
        &self,
        pred: &Self::Buffer,
        target: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
        loss: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `mean(x)` into `loss`; `grad = 1/n` everywhere, overwritten. The generator's adversarial
    /// loss is `g = -mean(D(x̂))` (spec 8): the caller negates the value and the gradient.
    fn mean_loss_into(
        &self,
        x: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
        loss: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// The hinge terms of the discriminator loss (spec 8) into `loss`: `mean(relu(1 - logits))`
    /// for real images (`real = true`), `mean(relu(1 + logits))` for reconstructions; `grad`
    /// (overwritten) is `∓1/n` where the hinge is active and 0 elsewhere (0 at the kink too, as
    /// PyTorch's relu).
    fn hinge_loss_into(
        &self,
        logits: &Self::Buffer,
        real: bool,
        grad: Option<&mut Self::Buffer>,
        loss: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// [`LossOps::mse_loss_into`], the loss returned to the host (f64: the CPU's f64 sum
    /// exactly; a device backend's f32 value otherwise).
    fn mse_loss(
        &self,
        pred: &Self::Buffer,
        target: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
    ) -> Result<f64, Self::Error>;

    /// [`LossOps::l1_loss_into`], the loss returned to the host.
    fn l1_loss(
        &self,
        pred: &Self::Buffer,
        target: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
    ) -> Result<f64, Self::Error>;

    /// [`LossOps::mean_loss_into`], the loss returned to the host.
    fn mean_loss(&self, x: &Self::Buffer, grad: Option<&mut Self::Buffer>) -> Result<f64, Self::Error>;

    /// [`LossOps::hinge_loss_into`], the loss returned to the host.
    fn hinge_loss(
        &self,
        logits: &Self::Buffer,
        real: bool,
        grad: Option<&mut Self::Buffer>,
    ) -> Result<f64, Self::Error>;
}

/// The kernels behind [`LossOps`]: the `*_into` forms. Called only after the front end (the
/// blanket `impl<T: LossKernels> LossOps for T` below) has checked every buffer length:
/// implementations contain no shape logic. Each writes the loss (f32) into `loss` and returns
/// `Some(value)` when the backend has the value on the host anyway without waiting for the
/// device (the CPU: its f64 sum before rounding), `None` otherwise; the f64 conveniences then
/// read `loss` back.
pub trait LossKernels: Buffers {
    /// [`LossOps::mse_loss_into`].
    fn mse_loss_into(
        &self,
        pred: &Self::Buffer,
        target: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
        loss: &mut Self::Buffer,
    ) -> Result<Option<f64>, Self::Error>;
    /// [`LossOps::l1_loss_into`].
    fn l1_loss_into(
        &self,
        pred: &Self::Buffer,
        target: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
        loss: &mut Self::Buffer,
    ) -> Result<Option<f64>, Self::Error>;
    /// [`LossOps::mean_loss_into`].
    fn mean_loss_into(
        &self,
        x: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
        loss: &mut Self::Buffer,
    ) -> Result<Option<f64>, Self::Error>;
    /// [`LossOps::hinge_loss_into`].
    fn hinge_loss_into(
        &self,
        logits: &Self::Buffer,
        real: bool,
        grad: Option<&mut Self::Buffer>,
        loss: &mut Self::Buffer,
    ) -> Result<Option<f64>, Self::Error>;
}

/// The loss buffers' lengths: `target` (when the loss has one) and `grad` (when asked for) as
/// long as the prediction, `loss` one value.
fn check_loss(pred: usize, target: Option<usize>, grad: Option<usize>, loss: usize) -> Result<(), ShapeError> {
    check_optional("loss target", pred, target)?;
    check_optional("loss gradient", pred, grad)?;
    check_len("loss value", 1, loss)
}

/// Runs a checked loss kernel into a fresh one-value buffer and returns the loss on the host.
fn host_loss<T: LossKernels>(
    backend: &T,
    kernel: impl FnOnce(&mut T::Buffer) -> Result<Option<f64>, T::Error>,
) -> Result<f64, T::Error> {
    let mut loss = backend.zeros(1)?;
    if let Some(value) = kernel(&mut loss)? {
        return Ok(value);
    }
    let mut host = [0.0f32];
    backend.download(&loss, &mut host)?;
    Ok(f64::from(host[0]))
}

impl<T: LossKernels> LossOps for T {
    fn mse_loss_into(
        &self,
        pred: &T::Buffer,
        target: &T::Buffer,
        grad: Option<&mut T::Buffer>,
        loss: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        check_loss(self.len(pred), Some(self.len(target)), grad.as_deref().map(|g| self.len(g)), self.len(loss))?;
        LossKernels::mse_loss_into(self, pred, target, grad, loss).map(drop)
    }

    fn l1_loss_into(
        &self,
        pred: &T::Buffer,
        target: &T::Buffer,
        grad: Option<&mut T::Buffer>,
        loss: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        check_loss(self.len(pred), Some(self.len(target)), grad.as_deref().map(|g| self.len(g)), self.len(loss))?;
        LossKernels::l1_loss_into(self, pred, target, grad, loss).map(drop)
    }

    fn mean_loss_into(
        &self,
        x: &T::Buffer,
        grad: Option<&mut T::Buffer>,
        loss: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        check_loss(self.len(x), None, grad.as_deref().map(|g| self.len(g)), self.len(loss))?;
        LossKernels::mean_loss_into(self, x, grad, loss).map(drop)
    }

    fn hinge_loss_into(
        &self,
        logits: &T::Buffer,
        real: bool,
        grad: Option<&mut T::Buffer>,
        loss: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        check_loss(self.len(logits), None, grad.as_deref().map(|g| self.len(g)), self.len(loss))?;
        LossKernels::hinge_loss_into(self, logits, real, grad, loss).map(drop)
    }

    fn mse_loss(&self, pred: &T::Buffer, target: &T::Buffer, grad: Option<&mut T::Buffer>) -> Result<f64, T::Error> {
        check_loss(self.len(pred), Some(self.len(target)), grad.as_deref().map(|g| self.len(g)), 1)?;
        host_loss(self, |loss| LossKernels::mse_loss_into(self, pred, target, grad, loss))
    }

    fn l1_loss(&self, pred: &T::Buffer, target: &T::Buffer, grad: Option<&mut T::Buffer>) -> Result<f64, T::Error> {
        check_loss(self.len(pred), Some(self.len(target)), grad.as_deref().map(|g| self.len(g)), 1)?;
        host_loss(self, |loss| LossKernels::l1_loss_into(self, pred, target, grad, loss))
    }

    fn mean_loss(&self, x: &T::Buffer, grad: Option<&mut T::Buffer>) -> Result<f64, T::Error> {
        check_loss(self.len(x), None, grad.as_deref().map(|g| self.len(g)), 1)?;
        host_loss(self, |loss| LossKernels::mean_loss_into(self, x, grad, loss))
    }

    fn hinge_loss(&self, logits: &T::Buffer, real: bool, grad: Option<&mut T::Buffer>) -> Result<f64, T::Error> {
        check_loss(self.len(logits), None, grad.as_deref().map(|g| self.len(g)), 1)?;
        host_loss(self, |loss| LossKernels::hinge_loss_into(self, logits, real, grad, loss))
    }
}
