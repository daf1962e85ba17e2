//! `LossOps` on the CPU (MSE, L1, mean, hinge).
//!
//! The values are cut into fixed chunks of [`LOSS_CHUNK`]; each chunk sums its terms in f64 in
//! index order (writing its part of the gradient in the same pass), then the chunk sums are added
//! in chunk order in f64. The order depends on the length only, so the loss is bit-identical for
//! any thread count. Gradients follow PyTorch's f32 formulas: `(p - t) · f32(2/n)` and
//! `sign(p - t) · f32(1/n)`. An empty input gives NaN (PyTorch's mean of nothing). The f64 mean is
//! rounded into the one-value loss buffer and also returned, so `LossOps::mse_loss` etc. hand the
//! host the unrounded f64 without reading the buffer.

use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::LossKernels;
use rayon::prelude::*;

/// Values per chunk of the loss sums.
const LOSS_CHUNK: usize = 1 << 13;

impl CpuBackend {
    /// `Σ term(p, t) / n` in the fixed chunk order, with `grad[i] = g(p, t)` when asked for;
    /// the mean is rounded into `loss[0]` and returned in f64.
    fn loss_mean(
        &self,
        pred: &[f32],
        target: &[f32],
        grad: Option<&mut Vec<f32>>,
        loss: &mut [f32],
        term: impl Fn(f32, f32) -> f64 + Sync,
        g: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<Option<f64>, CpuError> {
        debug_assert!(target.len() == pred.len() && loss.len() == 1);
        let n = pred.len();
        if n == 0 {
            loss[0] = f32::NAN;
            return Ok(Some(f64::NAN));
        }
        let chunks = n.div_ceil(LOSS_CHUNK);
        let sum = self.install(|| {
            let mut partials = self.scratch64.take(chunks);
            let chunk_sum = |p: &[f32], t: &[f32]| p.iter().zip(t).fold(0.0f64, |acc, (&p, &t)| acc + term(p, t));
            match grad {
                Some(grad) => partials
                    .par_iter_mut()
                    .zip(grad.par_chunks_mut(LOSS_CHUNK))
                    .zip(pred.par_chunks(LOSS_CHUNK).zip(target.par_chunks(LOSS_CHUNK)))
                    .for_each(|((part, grad), (p, t))| {
                        for ((gv, &pv), &tv) in grad.iter_mut().zip(p).zip(t) {
                            *gv = g(pv, tv);
                        }
                        *part = chunk_sum(p, t);
                    }),
                None => partials
                    .par_iter_mut()
                    .zip(pred.par_chunks(LOSS_CHUNK).zip(target.par_chunks(LOSS_CHUNK)))
                    .for_each(|(part, (p, t))| *part = chunk_sum(p, t)),
            }
            partials.iter().fold(0.0f64, |acc, &part| acc + part)
        });
        let mean = sum / n as f64;
        loss[0] = mean as f32;
        Ok(Some(mean))
    }
}

impl LossKernels for CpuBackend {
    fn mse_loss_into(
        &self,
        pred: &Vec<f32>,
        target: &Vec<f32>,
        grad: Option<&mut Vec<f32>>,
        loss: &mut Vec<f32>,
    ) -> Result<Option<f64>, CpuError> {
        let norm = (2.0 / pred.len() as f64) as f32;
        self.loss_mean(
            pred,
            target,
            grad,
            loss,
            |p, t| {
                let d = f64::from(p) - f64::from(t);
                d * d
            },
            |p, t| (p - t) * norm,
        )
    }

    fn l1_loss_into(
        &self,
        pred: &Vec<f32>,
        target: &Vec<f32>,
        grad: Option<&mut Vec<f32>>,
        loss: &mut Vec<f32>,
    ) -> Result<Option<f64>, CpuError> {
        let norm = (1.0 / pred.len() as f64) as f32;
        self.loss_mean(
            pred,
            target,
            grad,
            loss,
            |p, t| (f64::from(p) - f64::from(t)).abs(),
            |p, t| {
                let d = p - t;
                if d > 0.0 {
                    norm
                } else if d < 0.0 {
                    -norm
                } else {
                    0.0
                }
            },
        )
    }

    fn mean_loss_into(
        &self,
        x: &Vec<f32>,
        grad: Option<&mut Vec<f32>>,
        loss: &mut Vec<f32>,
    ) -> Result<Option<f64>, CpuError> {
        let norm = (1.0 / x.len() as f64) as f32;
        // One input: it is passed as the target too and ignored there.
        self.loss_mean(x, x, grad, loss, |p, _| f64::from(p), |_, _| norm)
    }

    fn hinge_loss_into(
        &self,
        logits: &Vec<f32>,
        real: bool,
        grad: Option<&mut Vec<f32>>,
        loss: &mut Vec<f32>,
    ) -> Result<Option<f64>, CpuError> {
        // relu(1 - sign·x) with sign +1 for real images, -1 for reconstructions.
        let sign = if real { 1.0f32 } else { -1.0f32 };
        let norm = (1.0 / logits.len() as f64) as f32;
        self.loss_mean(
            logits,
            logits,
            grad,
            loss,
            |p, _| (1.0 - f64::from(sign) * f64::from(p)).max(0.0),
            |p, _| if 1.0 - f64::from(sign) * f64::from(p) > 0.0 { -sign * norm } else { 0.0 },
        )
    }
}
