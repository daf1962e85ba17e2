//! Between the generator's latents and the tokenizer's tokens (spec 9.1, 9.7).
//!
//! The texture model generates `z = (t − mean)/std` with `t = [g − g_init, f]`: the geometry is
//! a residual around the layout `g_init` it was conditioned on. The one-stage baseline and the
//! layout model generate absolute values (`g_init = None` below). After sampling, the official
//! inference denormalises, adds `g_init` back, and clamps σ to `[1e-5, 0.99999]` and ρ to
//! `[−0.99999, 0.99999]` so that every covariance is valid before decoding. Training runs the
//! inverse, [`tokens_to_latents`], on the encoder's tokens.

use alloc::vec;
use alloc::vec::Vec;

use super::stats::LatentStats;
use crate::calibrate::{calibrate, repair_duplicates, CalibrateError, CalibrateParams};
use crate::partition::{region_gaussian, Region};
use crate::shape::{ensure, ShapeError};

/// Geometry values per token: `[σx, σy, ρ, x, y]`.
pub const GEOMETRY: usize = 5;
/// The clamps of spec 9.7.
pub const SIGMA_MIN: f32 = 1e-5;
pub const SIGMA_MAX: f32 = 0.99999;
pub const RHO_MAX: f32 = 0.99999;

/// Clamps `σx, σy, ρ` of one token row (spec 9.7). NaN stays NaN so that a diverged sample is
/// caught by whoever checks finiteness, not hidden as a plausible value.
pub fn clamp_geometry(row: &mut [f32]) {
    for s in row.iter_mut().take(2) {
        *s = s.clamp(SIGMA_MIN, SIGMA_MAX);
    }
    if let Some(r) = row.get_mut(2) {
        *r = r.clamp(-RHO_MAX, RHO_MAX);
    }
}

fn check_layout(stats: &LatentStats, len: usize, tokens: usize, g_init: Option<&[f32]>) -> Result<usize, ShapeError> {
    let c = stats.channels();
    ensure(c >= GEOMETRY, "latents need at least the 5 geometry channels")?;
    ensure(tokens > 0 && len.is_multiple_of(tokens * c), "latents must be [B, channels, tokens, 1]")?;
    let batch = len / (tokens * c);
    if let Some(g) = g_init {
        ensure(g.len() == batch * tokens * GEOMETRY, "g_init must be [B, tokens, 5]")?;
    }
    Ok(batch)
}

/// Generated latents `[B, C, N, 1]` to token rows `[B, N, C]` (spec 9.7): `t = z·std + mean`,
/// `+ g_init` on the geometry when the model generated residuals, then the clamps.
pub fn latents_to_tokens(
    stats: &LatentStats,
    latents: &[f32],
    tokens: usize,
    g_init: Option<&[f32]>,
) -> Result<Vec<f32>, ShapeError> {
    check_layout(stats, latents.len(), tokens, g_init)?;
    let c = stats.channels();
    let mut rows = vec![0.0f32; latents.len()];
    stats.denormalize(latents, tokens, &mut rows)?;
    for (k, row) in rows.chunks_exact_mut(c).enumerate() {
        if let Some(g) = g_init {
            row.iter_mut().zip(&g[k * GEOMETRY..(k + 1) * GEOMETRY]).for_each(|(t, gi)| *t += gi);
        }
        clamp_geometry(row);
    }
    Ok(rows)
}

/// The inverse of [`latents_to_tokens`] for training data: token rows `[B, N, C]` (absolute
/// geometry) minus `g_init` on the geometry when given, normalised to `[B, C, N, 1]`.
pub fn tokens_to_latents(
    stats: &LatentStats,
    rows: &[f32],
    tokens: usize,
    g_init: Option<&[f32]>,
) -> Result<Vec<f32>, ShapeError> {
    check_layout(stats, rows.len(), tokens, g_init)?;
    let residual = residual_rows(rows, stats.channels(), g_init);
    let mut latents = vec![0.0f32; rows.len()];
    stats.normalize(&residual, tokens, &mut latents)?;
    Ok(latents)
}

/// Token rows `[.., C]` with `g_init` (`[.., 5]`, row for row) subtracted from the geometry: what
/// the texture model's statistics are computed on (spec 9.1).
pub fn residual_rows(rows: &[f32], channels: usize, g_init: Option<&[f32]>) -> Vec<f32> {
    let mut out = rows.to_vec();
    if let Some(g) = g_init {
        for (row, gi) in out.chunks_exact_mut(channels).zip(g.chunks_exact(GEOMETRY)) {
            row.iter_mut().zip(gi).for_each(|(t, g)| *t -= g);
        }
    }
    out
}

/// Why generated latents could not become a layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayoutError {
    Shape(ShapeError),
    Calibrate(CalibrateError),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::Shape(e) => write!(f, "{e}"),
            LayoutError::Calibrate(e) => write!(f, "calibration: {e}"),
        }
    }
}

impl core::error::Error for LayoutError {}

/// The layout model's latents `[B, 5, N, 1]` to calibrated layouts `[B, N, 5]`: denormalised,
/// then snapped by Algorithm 2 to the nearest layout Algorithm 1 can make (spec 4.2, 9.8), so the
/// texture model is conditioned on the kind of layout it was trained on. With `repair`, tokens of
/// one sample that snapped to the same rectangle are moved apart (`repair_duplicates`, off by
/// default in the spec).
pub fn latents_to_layouts(
    stats: &LatentStats,
    latents: &[f32],
    tokens: usize,
    params: &CalibrateParams,
    repair: bool,
) -> Result<Vec<f32>, LayoutError> {
    if stats.channels() != GEOMETRY {
        return Err(LayoutError::Shape(ShapeError::Invalid { what: "a layout has exactly 5 channels" }));
    }
    let rows = latents_to_tokens(stats, latents, tokens, None).map_err(LayoutError::Shape)?;
    let gaussians: Vec<[f32; 5]> = rows.chunks_exact(GEOMETRY).map(|r| [r[0], r[1], r[2], r[3], r[4]]).collect();
    let mut regions = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; gaussians.len()];
    calibrate(&gaussians, params, &mut regions).map_err(LayoutError::Calibrate)?;
    if repair {
        for sample in regions.chunks_mut(tokens) {
            repair_duplicates(sample, params).map_err(LayoutError::Calibrate)?;
        }
    }
    Ok(regions.iter().flat_map(|r| region_gaussian(r, params.patch, params.patch)).collect())
}
