//! Conformance suite of [`NormOps`]: GroupNorm (standard, and `NormalizeNP` with per-patch
//! statistics resized bicubically, spec 6.2), LayerNorm and training-mode BatchNorm2d (the
//! discriminator's, spec 8), written once for every backend.
//!
//! Each check draws fresh random inputs from [`TestRng`] and compares the backend with a plain f64
//! reference written here (the bicubic resize as the textbook cubic-convolution kernel, so it is
//! independent of the backends' formulation), and every gradient with central finite differences
//! of the f64 loss `L = Σ dy · y`. Errors are [`max_rel_error`] per tensor.

use super::common::{assert_close, download, garbage, to_f64, upload};
use crate::TestRng;
use gpstoken_core::backend::{BatchNormDesc, GroupNormDesc, LayerNormDesc, NormKind, NormOps};

/// How close a backend must be to the f64 references.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Forward vs the f64 reference, `max_rel_error` per case.
    pub forward: f64,
    /// Gradients vs central finite differences of the f64 reference, per tensor.
    pub finite_difference: f64,
}

/// Central finite-difference step (the references are f64).
pub(crate) const STEP: f64 = 1e-5;

pub(crate) fn normals(rng: &mut TestRng, len: usize, scale: f64, offset: f64) -> Vec<f32> {
    (0..len).map(|_| (offset + scale * rng.normal()) as f32).collect()
}

/// Central finite differences of `loss` w.r.t. every entry of `params`.
pub(crate) fn finite_differences(params: &mut [f64], mut loss: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    (0..params.len())
        .map(|i| {
            let base = params[i];
            params[i] = base + STEP;
            let plus = loss(params);
            params[i] = base - STEP;
            let minus = loss(params);
            params[i] = base;
            (plus - minus) / (2.0 * STEP)
        })
        .collect()
}

mod batch;
mod group;
mod layer;
mod shapes;

pub use batch::*;
pub use group::*;
pub use layer::*;
pub use shapes::*;
