//! `LossOps` on the CPU (MSE, L1, mean, hinge).
//!
//! The values are cut into fixed chunks of [`LOSS_CHUNK`]; each chunk sums its terms in f64 in
//! index order (writing its part of the gradient in the same pass), then the chunk sums are added
//! in chunk order in f64. The order depends on the length only, so the loss is bit-identical for
//! any thread count. Gradients follow PyTorch's f32 formulas: `(p - t) · f32(2/n)` and
//! `sign(p - t) · f32(1/n)`. An empty input gives NaN (PyTorch's mean of nothing).

use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::LossOps;
use gpstoken_core::shape::check_len;
use rayon::prelude::*;

/// Values per chunk of the loss sums.
const LOSS_CHUNK: usize = 1 << 13;

impl CpuBackend {
    /// `Σ term(p, t)` in the fixed chunk order, with `grad[i] = g(p, t)` when asked for.
    fn loss_sum(
        &self,
        pred: &[f32],
        target: &[f32],
        grad: Option<&mut Vec<f32>>,
        term: impl Fn(f32, f32) -> f64 + Sync,
        g: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<f64, CpuError> {
        check_len("loss target", pred.len(), target.len())?;
        if let Some(grad) = &grad {
            check_len("loss gradient", pred.len(), grad.len())?;
        }
        let n = pred.len();
        if n == 0 {
            return Ok(f64::NAN);
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
        Ok(sum / n as f64)
    }
}

impl LossOps for CpuBackend {
    fn mse_loss(&self, pred: &Vec<f32>, target: &Vec<f32>, grad: Option<&mut Vec<f32>>) -> Result<f64, CpuError> {
        let norm = (2.0 / pred.len() as f64) as f32;
        self.loss_sum(
            pred,
            target,
            grad,
            |p, t| {
                let d = f64::from(p) - f64::from(t);
                d * d
            },
            |p, t| (p - t) * norm,
        )
    }

    fn l1_loss(&self, pred: &Vec<f32>, target: &Vec<f32>, grad: Option<&mut Vec<f32>>) -> Result<f64, CpuError> {
        let norm = (1.0 / pred.len() as f64) as f32;
        self.loss_sum(
            pred,
            target,
            grad,
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

    fn mean_loss(&self, x: &Vec<f32>, grad: Option<&mut Vec<f32>>) -> Result<f64, CpuError> {
        let norm = (1.0 / x.len() as f64) as f32;
        // One input: it is passed as the target too and ignored there.
        self.loss_sum(x, x, grad, |p, _| f64::from(p), |_, _| norm)
    }

    fn hinge_loss(&self, logits: &Vec<f32>, real: bool, grad: Option<&mut Vec<f32>>) -> Result<f64, CpuError> {
        // relu(1 - sign·x) with sign +1 for real images, -1 for reconstructions.
        let sign = if real { 1.0f32 } else { -1.0f32 };
        let norm = (1.0 / logits.len() as f64) as f32;
        self.loss_sum(
            logits,
            logits,
            grad,
            |p, _| (1.0 - f64::from(sign) * f64::from(p)).max(0.0),
            |p, _| if 1.0 - f64::from(sign) * f64::from(p) > 0.0 { -sign * norm } else { 0.0 },
        )
    }
}
