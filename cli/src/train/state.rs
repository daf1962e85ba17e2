//! The tokenizer's optimiser and EMA state. It lives on the device next to the weights: Adam
//! and the EMA update run as backend ops, and the host sees it only when a checkpoint is written
//! or loaded (see [`super::checkpoint`]).

use super::schedule::ema_decay;
use crate::backends::device_error;
use anyhow::{Context, Result};
use gpstoken_core::backend::{AdamConfig, Backend, EmaTensor};
use gpstoken_core::model::params::ParamStore;
use gpstoken_core::model::GpsToken;

/// Adam moments of every parameter with a gradient (`None` for parameters the model does not
/// use) and the EMA weights of every parameter, indexed by parameter id.
pub(super) struct OptimState<B: Backend> {
    pub m: Vec<Option<B::Buffer>>,
    pub v: Vec<Option<B::Buffer>>,
    pub ema: Vec<B::Buffer>,
}

impl<B: Backend> OptimState<B> {
    /// Zero moments, and EMA weights equal to the model's current weights.
    pub fn new(be: &B, model: &GpsToken<B>) -> Result<OptimState<B>> {
        let err = device_error(be);
        let (mut m, mut v, mut ema) = (Vec::new(), Vec::new(), Vec::new());
        for id in 0..model.params.len() {
            let n = model.params.spec(id).numel();
            let trained = model.params.grad(id).is_some();
            m.push(if trained { Some(be.zeros(n).map_err(err)?) } else { None });
            v.push(if trained { Some(be.zeros(n).map_err(err)?) } else { None });
            let mut e = be.zeros(n).map_err(err)?;
            be.copy(model.params.value(id), &mut e).map_err(err)?;
            ema.push(e);
        }
        Ok(OptimState { m, v, ema })
    }

    /// One Adam step number `step` on every parameter with a gradient.
    pub fn adam_step(&mut self, be: &B, model: &mut GpsToken<B>, adam: &AdamConfig, step: u64) -> Result<()> {
        adam_step_params(be, &mut model.params, &mut self.m, &mut self.v, adam, step)
    }

    /// The EMA update after the optimiser step number `ae_step` (`ema_pytorch`'s schedule: a
    /// copy of the weights early on, then every 10th step a decayed average).
    pub fn ema_step(&mut self, be: &B, model: &GpsToken<B>, ae_step: u64) -> Result<()> {
        let Some(decay) = ema_decay(ae_step - 1) else { return Ok(()) };
        let err = device_error(be);
        if decay == 0.0 {
            // A copy, not a lerp with weight 1 (which turns -0.0 into +0.0 and inf into NaN);
            // only before the decayed averages start (every 10th of the first 100 steps).
            for (id, e) in self.ema.iter_mut().enumerate() {
                be.copy(model.params.value(id), e).map_err(err)?;
            }
            return Ok(());
        }
        ema_update_params(be, &model.params, &mut self.ema, decay)
    }

    /// Exchanges the model's weights with the EMA weights (the buffers themselves: nothing is
    /// copied, and a second call restores both).
    pub fn swap_ema(&mut self, model: &mut GpsToken<B>) {
        for (id, e) in self.ema.iter_mut().enumerate() {
            std::mem::swap(model.params.value_mut(id), e);
        }
    }
}

/// One Adam step number `step` on every parameter of `params` with a gradient, with the moments
/// `m`, `v` indexed by parameter id (`None` for parameters without a gradient), as one op (one
/// kernel launch on CUDA). Shared by the tokenizer's and the generators' training.
pub(crate) fn adam_step_params<B: Backend>(
    be: &B,
    params: &mut ParamStore<B>,
    ms: &mut [Option<B::Buffer>],
    vs: &mut [Option<B::Buffer>],
    adam: &AdamConfig,
    step: u64,
) -> Result<()> {
    let step = u32::try_from(step).context("too many steps")?;
    let mut tensors = params.adam_tensors(ms.iter_mut().zip(vs.iter_mut()).map(|(m, v)| m.as_mut().zip(v.as_mut())));
    be.adam_step_many(adam, step, &mut tensors).map_err(device_error(be))
}

/// `ema += (1 - decay)(param - ema)` for every parameter of `params`, with the averages `emas`
/// indexed by parameter id, as one op. Shared by the tokenizer's and the generators' training.
pub(crate) fn ema_update_params<B: Backend>(
    be: &B,
    params: &ParamStore<B>,
    emas: &mut [B::Buffer],
    decay: f32,
) -> Result<()> {
    let mut tensors: Vec<EmaTensor<'_, B::Buffer>> =
        emas.iter_mut().enumerate().map(|(id, ema)| EmaTensor { ema, param: params.value(id) }).collect();
    be.ema_update_many(decay, &mut tensors).map_err(device_error(be))
}
