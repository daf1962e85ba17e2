//! Sampling latents for labels (and a layout condition) with a chosen sampler: what a
//! `generate` command drives. Guidance doubles the batch as the official script does
//! (`[z; z]`, `[labels; null]`, `[cond; cond]`) and the first half is returned.

use alloc::vec;
use alloc::vec::Vec;

use super::guidance::Guidance;
use super::network::{Sit, SitActs};
use super::sampler::{sample_ode, sample_sde, NoiseSource, OdeMethod, SdeConfig, SeededNoise};
use crate::backend::Backend;
use crate::rng::SplitMix64;
use crate::shape::{check_len, ensure};

/// Which sampler integrates the flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    /// `sample_sde` (the official default: [`SdeConfig::official`] with 250 steps).
    Sde(SdeConfig),
    /// `sample_ode` with `steps` output times (the fixed-grid methods also step on them).
    Ode { method: OdeMethod, steps: usize },
}

impl Sampler {
    /// The official ODE: dopri5, rtol 1e-3, atol 1e-6.
    pub fn dopri5(steps: usize) -> Self {
        Sampler::Ode { method: OdeMethod::Dopri5 { rtol: 1e-3, atol: 1e-6 }, steps }
    }
}

/// What to generate: one latent `[C, N, 1]` per label.
#[derive(Clone, Copy, Debug)]
pub struct GenerateRequest<'a> {
    pub labels: &'a [u32],
    /// The texture model's layout condition `[n, N, c]` (normalised as in training).
    pub cond: Option<&'a [f32]>,
    pub sampler: Sampler,
    /// `None`: the plain conditional model.
    pub guidance: Option<Guidance>,
}

impl<B: Backend> Sit<B> {
    /// The activations [`Sit::generate`] needs for `n` samples (`2n` with guidance).
    pub fn generate_activations(&self, be: &B, n: usize, guided: bool) -> Result<SitActs<B>, B::Error> {
        self.activations(be, if guided { 2 * n } else { n })
    }

    /// Samples `labels.len()` latents `[n, C, N, 1]` (normalised; see
    /// [`super::LatentStats::denormalize`]). The initial noise and every SDE draw come from
    /// `rng`: the same seed gives the same samples on every platform.
    pub fn generate(
        &self,
        be: &B,
        a: &mut SitActs<B>,
        req: &GenerateRequest<'_>,
        rng: &mut SplitMix64,
    ) -> Result<Vec<f32>, B::Error> {
        let n = req.labels.len();
        let per = self.config().in_channels * self.config().tokens;
        let guided = req.guidance.is_some();
        check_len("generation batch", if guided { 2 * n } else { n }, a.batch())?;
        let mut noise = SeededNoise(*rng);
        let mut z = vec![0.0f32; n * per];
        noise.fill_normal(&mut z)?;
        let (mut x, y, cond) = match req.guidance {
            None => (z, req.labels.to_vec(), req.cond.map(<[f32]>::to_vec)),
            Some(_) => {
                let null = self.config().null_label();
                ensure(null.is_some(), "guidance needs a model with the null label (class_dropout_prob > 0)")?;
                let y = req.labels.iter().copied().chain(req.labels.iter().map(|_| null.unwrap_or(0))).collect();
                ([z.as_slice(), &z].concat(), y, req.cond.map(|c| [c, c].concat()))
            }
        };
        let mut half = Vec::new();
        let mut tv = vec![0.0f32; y.len()];
        let velocity = |x: &[f32], t: f32, v: &mut [f32]| {
            tv.iter_mut().for_each(|s| *s = t);
            match &req.guidance {
                Some(g) => self.velocity_with_cfg(be, a, x, &tv, &y, cond.as_deref(), g, v, &mut half),
                None => self.velocity(be, a, x, &tv, &y, cond.as_deref(), v),
            }
        };
        match req.sampler {
            Sampler::Sde(cfg) => sample_sde(&cfg, &mut x, &mut noise, velocity, |_, _| {})?,
            Sampler::Ode { method, steps } => sample_ode(method, steps, &mut x, velocity, |_, _| {})?,
        }
        *rng = noise.0;
        x.truncate(n * per);
        Ok(x)
    }
}
