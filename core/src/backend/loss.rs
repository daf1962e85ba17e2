//! Reconstruction losses. Each returns the scalar loss (f64, summed in a fixed order on the CPU)
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
}
