//! Classifier-free guidance with the guidance interval (`SiT.forward_with_cfg`, spec 9.6), and
//! the model as a velocity field on host latents (what the samplers integrate).

use alloc::vec::Vec;

use super::network::{Sit, SitActs};
use crate::backend::Backend;
use crate::model::layers::Res;
use crate::shape::{check_len, ensure};

/// Guidance settings in the official units: the interval bounds are thousandths of `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guidance {
    /// `cfg_scale`: `v = v_u + scale·(v_c − v_u)`.
    pub scale: f32,
    /// `guidance_low`: guidance applies for `t ≥ low/1000`.
    pub low: f64,
    /// `guidance_high`: guidance applies for `t ≤ high/1000`.
    pub high: f64,
}

impl Guidance {
    /// The official command line defaults: scale 1, the whole interval.
    pub fn cli_default() -> Self {
        Guidance { scale: 1.0, low: 0.0, high: 1000.0 }
    }

    /// `scripts/generate.sh`: scale 1.5 for `t ∈ [0.2, 1]`.
    pub fn generate_sh() -> Self {
        Guidance { scale: 1.5, low: 200.0, high: 1000.0 }
    }

    /// Whether a model call at time `t` is guided: PyTorch compares the f32 time with the Python
    /// floats `low/1000`, `high/1000` converted to f32.
    pub fn active_at(&self, t: f32) -> bool {
        t >= (self.low / 1000.0) as f32 && t <= (self.high / 1000.0) as f32
    }
}

impl<B: Backend> Sit<B> {
    /// `SiT.forward` with the output downloaded into `v` (`[B, C, N, 1]`, host).
    #[allow(clippy::too_many_arguments)]
    pub fn velocity(
        &self,
        be: &B,
        a: &mut SitActs<B>,
        x: &[f32],
        t: &[f32],
        y: &[u32],
        cond: Option<&[f32]>,
        v: &mut [f32],
    ) -> Res<B> {
        self.forward(be, a, x, t, y, cond)?;
        be.download(a.pred(), v)
    }

    /// `SiT.forward_with_cfg` on a doubled batch `x = [x_c; x_u]` (`y = [labels; null]`,
    /// `cond = [cond; cond]`, `a` sized for the doubled batch): inside the interval (decided by
    /// `t[0]`) the model runs on `[x_c; x_c]` and both halves of `v` get
    /// `v_u + scale·(v_c − v_u)`; outside it the model runs on `x` as it is. `half` is host
    /// scratch (resized to `x.len()`).
    #[allow(clippy::too_many_arguments)]
    pub fn velocity_with_cfg(
        &self,
        be: &B,
        a: &mut SitActs<B>,
        x: &[f32],
        t: &[f32],
        y: &[u32],
        cond: Option<&[f32]>,
        guidance: &Guidance,
        v: &mut [f32],
        half: &mut Vec<f32>,
    ) -> Res<B> {
        check_len("guided velocity", x.len(), v.len())?;
        ensure(a.batch().is_multiple_of(2), "classifier-free guidance needs a doubled (even) batch")?;
        let Some(&t0) = t.first() else { return check_len("times t", a.batch(), 0).map_err(Into::into) };
        if !guidance.active_at(t0) {
            return self.velocity(be, a, x, t, y, cond, v);
        }
        let n = x.len() / 2;
        half.clear();
        half.extend_from_slice(&x[..n]);
        half.extend_from_slice(&x[..n]);
        self.velocity(be, a, half, t, y, cond, v)?;
        let (vc, vu) = v.split_at_mut(n);
        for (c, u) in vc.iter_mut().zip(vu) {
            let g = *u + guidance.scale * (*c - *u);
            *c = g;
            *u = g;
        }
        Ok(())
    }
}
