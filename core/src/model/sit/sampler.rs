//! The official samplers (`sample/transport.py`, `sample/integrators.py`, spec 9.4-9.5) on host
//! latents, for any velocity field `v(x, t)`: the SDE with SBDM diffusion (Euler-Maruyama or
//! Heun, with the "Mean"/"Euler" last step) and the fixed-grid ODE (torchdiffeq `euler`,
//! `heun2`). The adaptive Dormand-Prince ODE is in `dopri5.rs`.
//!
//! Every f32 operation follows the official order (time grids are PyTorch's f32 `linspace`),
//! so with the same model outputs and the same Gaussian draws the states agree to rounding.

use alloc::vec;
use alloc::vec::Vec;

use crate::rng::SplitMix64;
use crate::shape::ShapeError;

/// PyTorch's f32 `torch.linspace(start, end, steps)` (CPU kernel): `step = (end − start)/(steps − 1)`
/// in f32, the first half counted from `start`, the second half back from `end`.
pub fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps).map(|i| if i < halfway { s + step * i as f32 } else { e - step * (steps - i - 1) as f32 }).collect()
}

/// Where the Gaussian draws of a stochastic sampler come from.
pub trait NoiseSource {
    /// Fills `out` with independent N(0, 1) values (one call per integration step).
    fn fill_normal(&mut self, out: &mut [f32]) -> Result<(), ShapeError>;
}

/// Draws from the seeded SplitMix64 (Box-Muller), so a seed gives the same samples everywhere.
/// The official streams (CUDA and CPU torch generators) cannot be reproduced (spec 9.4).
#[derive(Clone, Debug)]
pub struct SeededNoise(pub SplitMix64);

impl NoiseSource for SeededNoise {
    fn fill_normal(&mut self, out: &mut [f32]) -> Result<(), ShapeError> {
        out.iter_mut().for_each(|v| *v = self.0.normal());
        Ok(())
    }
}

/// Replays stored draws in order (the golden trajectory's `noise`); running out is an error.
#[derive(Clone, Debug)]
pub struct StoredNoise<'a> {
    draws: &'a [f32],
    used: usize,
}

impl<'a> StoredNoise<'a> {
    pub fn new(draws: &'a [f32]) -> Self {
        StoredNoise { draws, used: 0 }
    }
}

impl NoiseSource for StoredNoise<'_> {
    fn fill_normal(&mut self, out: &mut [f32]) -> Result<(), ShapeError> {
        let end = self.used + out.len();
        let Some(src) = self.draws.get(self.used..end) else {
            return Err(ShapeError::Invalid { what: "the stored noise ran out" });
        };
        out.copy_from_slice(src);
        self.used = end;
        Ok(())
    }
}

/// The SDE integrator (`sampling_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdeMethod {
    /// Euler-Maruyama (the official default).
    Euler,
    /// The official stochastic Heun step (two model calls per step).
    Heun,
}

/// The step after the last SDE step (`last_step`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastStep {
    /// None: the last state as it is (the grid then ends at t = 1).
    Identity,
    /// `x + drift_sde(x, t1)·size` (the official default).
    Mean,
    /// `x + v(x, t1)·size`.
    Euler,
}

/// `Sampler.sample_sde` settings with the SBDM diffusion `norm·(1−t)/t·(1−t+t)` of the Linear
/// path (the only form GPSToken uses).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SdeConfig {
    pub method: SdeMethod,
    /// `num_steps`: the grid has this many points, so `steps − 1` noisy steps and the last step.
    pub steps: usize,
    pub diffusion_norm: f32,
    pub last_step: LastStep,
    pub last_step_size: f64,
}

impl SdeConfig {
    /// The official defaults: Euler-Maruyama, norm 1, a "Mean" last step of 0.04, `steps` (250).
    pub fn official(steps: usize) -> Self {
        SdeConfig {
            method: SdeMethod::Euler,
            steps,
            diffusion_norm: 1.0,
            last_step: LastStep::Mean,
            last_step_size: 0.04,
        }
    }

    /// The time grid: `linspace(t0, t1, steps)` with `t0 = 1e-3` (the SBDM floor) and
    /// `t1 = 1 − last_step_size` (1 without a last step).
    pub fn grid(&self) -> Vec<f32> {
        let size = if self.last_step == LastStep::Identity { 0.0 } else { self.last_step_size };
        linspace_f32(1e-3, 1.0 - size, self.steps)
    }

    /// The SBDM diffusion `D(t)` of the Linear path: `norm·((1/t)·(1−t)² − (1−t)·(−1))`
    /// (subtracting `(1−t)·(−1)` is adding `1−t`, bit for bit).
    pub fn diffusion(&self, t: f32) -> f32 {
        let sigma = 1.0 - t;
        self.diffusion_norm * ((1.0 / t) * (sigma * sigma) + sigma)
    }
}

/// The SDE drift `v + D(t)·score` with `score = (t·v − x)/((1−t)² − (t·(−1))·(1−t))`, in place
/// of `v` (the official code calls the model twice for it; once is the same value). Negation is
/// exact, so `− (t·(−1))·(1−t)` is `+ t·(1−t)` bit for bit.
fn sde_drift(cfg: &SdeConfig, t: f32, x: &[f32], v: &mut [f32]) {
    let sigma = 1.0 - t;
    let var = sigma * sigma + t * sigma;
    let d = cfg.diffusion(t);
    for (vi, &xi) in v.iter_mut().zip(x) {
        let score = (t * *vi - xi) / var;
        *vi += d * score;
    }
}

/// Integrates the SDE from `x` (the initial noise, replaced by the sample), calling
/// `velocity(x, t, v)` for the model and `on_step(k, x)` after each step (the last call is the
/// last step). Noise is drawn from `noise` once per step over the whole of `x`.
pub fn sample_sde<E: From<ShapeError>>(
    cfg: &SdeConfig,
    x: &mut [f32],
    noise: &mut dyn NoiseSource,
    mut velocity: impl FnMut(&[f32], f32, &mut [f32]) -> Result<(), E>,
    mut on_step: impl FnMut(usize, &[f32]),
) -> Result<(), E> {
    if cfg.steps < 2 {
        return Err(ShapeError::Invalid { what: "the SDE sampler needs at least 2 steps" }.into());
    }
    if cfg.method == SdeMethod::Heun && cfg.last_step == LastStep::Identity {
        // the grid then ends at t = 1, where Heun's second stage divides by (1 − t)² = 0
        return Err(
            ShapeError::Invalid { what: "the Heun SDE needs a last step (its grid must end below t = 1)" }.into()
        );
    }
    let n = x.len();
    let ts = cfg.grid();
    let dt = ts[1] - ts[0];
    let sqrt_dt = libm::sqrtf(dt);
    let (mut v, mut w, mut k1, mut xp) = (vec![0.0f32; n], vec![0.0f32; n], Vec::new(), Vec::new());
    for (k, &t) in ts[..ts.len() - 1].iter().enumerate() {
        noise.fill_normal(&mut w)?;
        let amp = libm::sqrtf(2.0 * cfg.diffusion(t));
        match cfg.method {
            SdeMethod::Euler => {
                velocity(x, t, &mut v)?;
                sde_drift(cfg, t, x, &mut v);
                for i in 0..n {
                    let mean = x[i] + v[i] * dt;
                    x[i] = mean + amp * (w[i] * sqrt_dt);
                }
            }
            SdeMethod::Heun => {
                // xhat = x + sqrt(2D)·dw; K1 = drift(xhat, t); K2 = drift(xhat + dt·K1, t + dt)
                for i in 0..n {
                    x[i] += amp * (w[i] * sqrt_dt);
                }
                k1.resize(n, 0.0);
                velocity(x, t, &mut k1)?;
                sde_drift(cfg, t, x, &mut k1);
                xp.clear();
                xp.extend(x.iter().zip(&k1).map(|(&xi, &ki)| xi + dt * ki));
                let t2 = t + dt;
                velocity(&xp, t2, &mut v)?;
                sde_drift(cfg, t2, &xp, &mut v);
                let half_dt = 0.5 * dt;
                for i in 0..n {
                    x[i] += half_dt * (k1[i] + v[i]);
                }
            }
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(ShapeError::Invalid { what: "the SDE state is not finite" }.into());
        }
        on_step(k, x);
    }
    let t1 = ts[ts.len() - 1];
    let size = cfg.last_step_size as f32;
    match cfg.last_step {
        LastStep::Identity => {}
        LastStep::Mean | LastStep::Euler => {
            velocity(x, t1, &mut v)?;
            if cfg.last_step == LastStep::Mean {
                sde_drift(cfg, t1, x, &mut v);
            }
            x.iter_mut().zip(&v).for_each(|(xi, &vi)| *xi += vi * size);
        }
    }
    on_step(ts.len() - 1, x);
    Ok(())
}

/// The ODE integrator of `sample_ode` (torchdiffeq's `method`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OdeMethod {
    /// Fixed grid, one model call per step.
    Euler,
    /// Fixed grid, torchdiffeq's `heun2` (two calls per step).
    Heun,
    /// Adaptive Dormand-Prince 5(4) (the official default: rtol 1e-3, atol 1e-6).
    Dopri5 { rtol: f64, atol: f64 },
}

/// Integrates `dx/dt = v(x, t)` from t = 0 to 1 on `linspace(0, 1, steps)` (the output times;
/// the fixed-grid methods also step on them), replacing `x` by the solution at t = 1 and calling
/// `on_output(k, x)` at every output time (k = 0 is the initial state).
pub fn sample_ode<E: From<ShapeError>>(
    method: OdeMethod,
    steps: usize,
    x: &mut [f32],
    mut velocity: impl FnMut(&[f32], f32, &mut [f32]) -> Result<(), E>,
    mut on_output: impl FnMut(usize, &[f32]),
) -> Result<(), E> {
    if steps < 2 {
        return Err(ShapeError::Invalid { what: "the ODE sampler needs at least 2 output times" }.into());
    }
    if let OdeMethod::Dopri5 { rtol, atol } = method {
        return super::dopri5::dopri5(x, &linspace_f32(0.0, 1.0, steps), rtol, atol, velocity, on_output);
    }
    let n = x.len();
    let ts = linspace_f32(0.0, 1.0, steps);
    let (mut k1, mut k2, mut y) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    on_output(0, x);
    for (k, pair) in ts.windows(2).enumerate() {
        let (t0, t1) = (pair[0], pair[1]);
        let dt = t1 - t0;
        velocity(x, t0, &mut k1)?;
        if method == OdeMethod::Euler {
            x.iter_mut().zip(&k1).for_each(|(xi, &f)| *xi += dt * f);
        } else {
            // heun2 tableau: k2 = f(t0 + dt·1, y0 + dt·k1·1); dy = dt·(k1·0.5 + k2·0.5)
            // (the products by 1 are exact and left out)
            y.iter_mut().zip(x.iter().zip(&k1)).for_each(|(yi, (&xi, &f))| *yi = xi + dt * f);
            velocity(&y, t0 + dt, &mut k2)?;
            for i in 0..n {
                x[i] += dt * (k1[i] * 0.5 + k2[i] * 0.5);
            }
        }
        on_output(k + 1, x);
    }
    Ok(())
}
