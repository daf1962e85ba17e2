//! Flow matching as the official `sample/transport.py` trains it (spec 9.3): the Linear path,
//! velocity prediction, no loss weighting, `t ~ U[0, 1)`, and label dropout for guidance.

use alloc::vec::Vec;

use super::network::{Sit, SitActs};
use crate::backend::Backend;
use crate::rng::SplitMix64;
use crate::shape::{check_len, ShapeError};

/// `path_sampler.plan(t, x0, x1)` of the Linear path (`ICPlan`), per sample `b` of `[B, ...]`:
/// `xt = t·x1 + (1−t)·x0` and `ut = x1 − x0`, each f32 operation in the official order.
pub fn linear_path(t: &[f32], x0: &[f32], x1: &[f32], xt: &mut [f32], ut: &mut [f32]) -> Result<(), ShapeError> {
    let n = x1.len();
    check_len("noise x0", n, x0.len())?;
    check_len("path xt", n, xt.len())?;
    check_len("path ut", n, ut.len())?;
    if t.is_empty() || !n.is_multiple_of(t.len()) {
        return Err(ShapeError::Invalid { what: "the latents are not a whole number of samples per time" });
    }
    let per = n / t.len();
    for (b, &tb) in t.iter().enumerate() {
        let (alpha, sigma) = (tb, 1.0 - tb);
        for i in b * per..(b + 1) * per {
            xt[i] = alpha * x1[i] + sigma * x0[i];
            // d_alpha = 1, d_sigma = -1
            ut[i] = x1[i] + -x0[i];
        }
    }
    Ok(())
}

/// The official `LabelEmbedder.token_drop` in training: each label becomes `null` with
/// probability `prob` (one uniform draw per label, in order).
pub fn drop_labels(labels: &mut [u32], prob: f32, null: u32, rng: &mut SplitMix64) {
    for y in labels {
        if rng.unit_f32() < prob {
            *y = null;
        }
    }
}

/// Noise on the layout condition during training (spec 9.3: the paper adds "0.5 Gaussian noise"
/// to the condition; its form is unknown, so both readings are offered).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CondNoise {
    /// The condition as it is.
    None,
    /// `cond + s·N(0, 1)`.
    Additive(f32),
    /// `cond·(1 + s·N(0, 1))`.
    Multiplicative(f32),
}

/// One training batch: data latents (normalised, `[B, C, N, 1]`), labels, and the texture
/// model's layout condition `[B, N, c]`.
#[derive(Clone, Copy, Debug)]
pub struct TrainingBatch<'a> {
    pub x1: &'a [f32],
    pub labels: &'a [u32],
    pub cond: Option<&'a [f32]>,
}

/// Host scratch of a training step, allocated once per batch size.
#[derive(Clone, Debug, Default)]
pub struct FlowScratch {
    t: Vec<f32>,
    x0: Vec<f32>,
    xt: Vec<f32>,
    ut: Vec<f32>,
    labels: Vec<u32>,
    cond: Vec<f32>,
}

impl<B: Backend> Sit<B> {
    /// One flow-matching step without the optimiser: draws `t ~ U[0,1)` per sample, the noise
    /// `x0 ~ N(0, I)`, the label dropout and the condition noise from `rng` (in that order),
    /// runs the forward pass on `xt`, and back-propagates the velocity loss. Returns the loss;
    /// the gradients are in [`Sit::params`].
    pub fn training_step(
        &mut self,
        be: &B,
        a: &mut SitActs<B>,
        batch: TrainingBatch<'_>,
        cond_noise: CondNoise,
        rng: &mut SplitMix64,
        s: &mut FlowScratch,
    ) -> Result<f64, B::Error> {
        let (bsz, n) = (a.batch(), a.latent_len());
        check_len("training latents", n, batch.x1.len())?;
        check_len("training labels", bsz, batch.labels.len())?;
        s.t.clear();
        s.t.extend((0..bsz).map(|_| rng.unit_f32()));
        s.x0.clear();
        s.x0.extend((0..n).map(|_| rng.normal()));
        s.xt.resize(n, 0.0);
        s.ut.resize(n, 0.0);
        linear_path(&s.t, &s.x0, batch.x1, &mut s.xt, &mut s.ut)?;
        s.labels.clear();
        s.labels.extend_from_slice(batch.labels);
        if let Some(null) = self.config().null_label() {
            drop_labels(&mut s.labels, self.config().class_dropout_prob, null, rng);
        }
        let cond = match batch.cond {
            Some(c) => {
                s.cond.clear();
                s.cond.extend(c.iter().map(|&v| match cond_noise {
                    CondNoise::None => v,
                    CondNoise::Additive(k) => v + k * rng.normal(),
                    CondNoise::Multiplicative(k) => v * (1.0 + k * rng.normal()),
                }));
                Some(s.cond.as_slice())
            }
            None => None,
        };
        self.forward(be, a, &s.xt, &s.t, &s.labels, cond)?;
        self.velocity_loss_backward(be, a, &s.ut)
    }
}
