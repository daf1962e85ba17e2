//! Reconstruction losses and the adversarial (hinge) terms. Each returns the scalar loss (f64, summed in a fixed order on the CPU)
//! and optionally writes its gradient w.r.t. the prediction. Empty inputs give NaN, as PyTorch's
//! mean of nothing does.

use super::Buffers;

pub trait LossOps: Buffers {
    /// `mean((pred - target)²)`; `grad = 2 (pred - target) / n`, overwritten.
    fn mse_loss(
        &self,
        pred: &Self::Buffer,
        target: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
    ) -> Result<f64, Self::Error>;

    /// `mean(|pred - target|)`; `grad = sign(pred - target) / n` (0 where equal), overwritten.
    fn l1_loss(
        &self,
        pred: &Self::Buffer,
        target: &Self::Buffer,
        grad: Option<&mut Self::Buffer>,
    ) -> Result<f64, Self::Error>;

    /// `mean(x)`; `grad = 1/n` everywhere, overwritten. The generator's adversarial loss is
    /// `g = -mean(D(x̂))` (spec 8): the caller negates the value and the gradient.
    fn mean_loss(&self, x: &Self::Buffer, grad: Option<&mut Self::Buffer>) -> Result<f64, Self::Error>;

    /// The hinge terms of the discriminator loss (spec 8): `mean(relu(1 - logits))` for real
    /// images (`real = true`), `mean(relu(1 + logits))` for reconstructions; `grad` (overwritten)
    /// is `∓1/n` where the hinge is active and 0 elsewhere (0 at the kink too, as PyTorch's relu).
    fn hinge_loss(
        &self,
        logits: &Self::Buffer,
        real: bool,
        grad: Option<&mut Self::Buffer>,
    ) -> Result<f64, Self::Error>;
}
