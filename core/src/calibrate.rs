//! Algorithm 2: layout calibration (spec 4.2).
//!
//! A layout model generates Gaussians `[sigma_x, sigma_y, rho, x, y]` that are close to, but
//! not exactly, layouts Algorithm 1 can produce. Calibration snaps each one independently to the
//! nearest *valid* region and recomputes its Gaussian exactly as Algorithm 1 does
//! ([`region_gaussian`]), so the texture model sees the same kind of layout it was trained on.
//!
//! A region of a `P x P` patch is valid when Algorithm 1 can produce it (spec 3.3): both sides
//! are powers of two between the smallest side the split rule reaches ([`CalibrateParams::min_side`],
//! 8 for `min_size` 8) and `P`, the aspect ratio is at most 2, and the origin is aligned
//! (`x0` a multiple of the width, `y0` of the height). `P` must be a power of two.
//!
//! "Nearest" is the spec's two-step rule: first the size pair nearest in log2 space (ties to the
//! smaller width exponent, then the smaller height exponent), then, for that size, the aligned
//! origin whose centre is nearest on each axis (ties to the even origin index: round half to
//! even). The official code contains no Algorithm 2; this is the spec's reconstruction.

use crate::partition::{region_gaussian, Region, DEFAULT_MIN_SIZE};
use core::fmt;

/// The largest patch side calibration accepts (the same bound as Algorithm 1's).
pub const MAX_PATCH: usize = crate::partition::MAX_PATCH_SIDE;

/// The patch the layout lives in and Algorithm 1's `min_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalibrateParams {
    /// Patch side `P` in pixels (a power of two, 2..=[`MAX_PATCH`]).
    pub patch: usize,
    /// Algorithm 1's `minhw` (8 by default).
    pub min_size: usize,
}

/// Why a layout cannot be calibrated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalibrateError {
    /// The patch side is not a power of two in `2..=MAX_PATCH`.
    Patch { patch: usize },
    /// Gaussian `token` has a NaN or infinite value at parameter `param` (0..5).
    NonFinite { token: usize, param: usize },
    /// The output slice does not have one region per Gaussian.
    OutputLength { gaussians: usize, out: usize },
}

impl fmt::Display for CalibrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CalibrateError::Patch { patch } => {
                write!(f, "patch side {patch} cannot be calibrated: it must be a power of two from 2 to {MAX_PATCH}")
            }
            CalibrateError::NonFinite { token, param } => {
                let name = ["sigma_x", "sigma_y", "rho", "x", "y"].get(param).copied().unwrap_or("?");
                write!(f, "Gaussian {token} has a non-finite {name}")
            }
            CalibrateError::OutputLength { gaussians, out } => {
                write!(f, "{gaussians} Gaussians but room for {out} calibrated regions")
            }
        }
    }
}

impl core::error::Error for CalibrateError {}

impl CalibrateParams {
    /// A `patch x patch` patch with Algorithm 1's default `min_size` (8).
    pub fn new(patch: usize) -> Self {
        CalibrateParams { patch, min_size: DEFAULT_MIN_SIZE }
    }

    /// `Ok` when the patch side is usable.
    pub fn check(&self) -> Result<(), CalibrateError> {
        if self.patch < 2 || self.patch > MAX_PATCH || !self.patch.is_power_of_two() {
            return Err(CalibrateError::Patch { patch: self.patch });
        }
        Ok(())
    }

    /// log2 of the patch side.
    fn max_exp(&self) -> u32 {
        self.patch.trailing_zeros()
    }

    /// log2 of the smallest side Algorithm 1 produces: a region of side `2s` is split only when
    /// its span `2s - 1` exceeds `min_size` (spec 3.3), so the smallest side is the smallest power
    /// of two `s` with `2s - 1 > min_size` (8 for `min_size` 8), or the patch itself when the
    /// patch is never split.
    fn min_exp(&self) -> u32 {
        let mut a = 0;
        while a < self.max_exp() && (2usize << a) - 1 <= self.min_size {
            a += 1;
        }
        a
    }

    /// The smallest region side Algorithm 1 produces in this patch.
    pub fn min_side(&self) -> usize {
        1 << self.min_exp()
    }

    /// Whether Algorithm 1 can produce `r` in this patch (see the module docs).
    pub fn is_valid(&self, r: &Region) -> bool {
        let (w, h) = (r.width(), r.height());
        let (a, b) = (w.trailing_zeros(), h.trailing_zeros());
        let side_ok = |s: usize, e: u32| s.is_power_of_two() && (self.min_exp()..=self.max_exp()).contains(&e);
        side_ok(w, a)
            && side_ok(h, b)
            && a.abs_diff(b) <= 1
            && usize::from(r.x0) % w == 0
            && usize::from(r.y0) % h == 0
            && usize::from(r.x1) < self.patch
            && usize::from(r.y1) < self.patch
    }
}

/// The valid region nearest to one Gaussian `[sigma_x, sigma_y, rho, x, y]` (normalised as
/// Algorithm 1 writes them, spec 3.4); `rho` is ignored. `token` only names the Gaussian in an
/// error. The region's `score` is 0.
pub fn snap(g: &[f32; 5], params: &CalibrateParams, token: usize) -> Result<Region, CalibrateError> {
    params.check()?;
    if let Some(param) = g.iter().position(|v| !v.is_finite()) {
        return Err(CalibrateError::NonFinite { token, param });
    }
    let p = params.patch as f64;
    // Inverse of sigma = (side - 1) / P * 2 / 3, and of x = ((x0 + x1) / 2 / (P - 1) - 0.5) * 2.
    let w_hat = 1.5 * p * f64::from(g[0]) + 1.0;
    let h_hat = 1.5 * p * f64::from(g[1]) + 1.0;
    let cx = (f64::from(g[3]) + 1.0) * (p - 1.0) / 2.0;
    let cy = (f64::from(g[4]) + 1.0) * (p - 1.0) / 2.0;
    let (a, b) = nearest_sizes(libm::log2(w_hat.max(1.0)), libm::log2(h_hat.max(1.0)), params);
    let (w, h) = (1usize << a, 1usize << b);
    let x0 = nearest_origin(cx, w, params.patch);
    let y0 = nearest_origin(cy, h, params.patch);
    // Sides and origins are below MAX_PATCH_SIDE = 2^16, so they fit in u16.
    Ok(Region { y0: y0 as u16, y1: (y0 + h - 1) as u16, x0: x0 as u16, x1: (x0 + w - 1) as u16, score: 0.0 })
}

/// Algorithm 2 on a whole layout: every Gaussian snapped with [`snap`] into `out`. Use
/// [`region_gaussian`] (or [`calibrate_gaussians`]) for the recomputed Gaussians.
pub fn calibrate(gaussians: &[[f32; 5]], params: &CalibrateParams, out: &mut [Region]) -> Result<(), CalibrateError> {
    if gaussians.len() != out.len() {
        return Err(CalibrateError::OutputLength { gaussians: gaussians.len(), out: out.len() });
    }
    for (k, (g, o)) in gaussians.iter().zip(out.iter_mut()).enumerate() {
        *o = snap(g, params, k)?;
    }
    Ok(())
}

/// [`calibrate`], writing the recomputed Gaussians (spec 3.4: sigma from the side, rho 0, the
/// centre of the region) in place.
pub fn calibrate_gaussians(gaussians: &mut [[f32; 5]], params: &CalibrateParams) -> Result<(), CalibrateError> {
    for (k, g) in gaussians.iter_mut().enumerate() {
        let r = snap(g, params, k)?;
        *g = region_gaussian(&r, params.patch, params.patch);
    }
    Ok(())
}

/// Size exponents `(a, b)` minimising `(lw - a)² + (lh - b)²` over the valid pairs
/// (`|a - b| <= 1`), ties to the smaller `a`, then the smaller `b` (first found in that order).
fn nearest_sizes(lw: f64, lh: f64, params: &CalibrateParams) -> (u32, u32) {
    let (lo, hi) = (params.min_exp(), params.max_exp());
    let mut best = (lo, lo);
    let mut best_d = f64::INFINITY;
    for a in lo..=hi {
        for b in a.saturating_sub(1).max(lo)..=(a + 1).min(hi) {
            let d = (lw - f64::from(a)) * (lw - f64::from(a)) + (lh - f64::from(b)) * (lh - f64::from(b));
            if d < best_d {
                best = (a, b);
                best_d = d;
            }
        }
    }
    best
}

/// The aligned origin `k * side` (`k` in `0..patch/side`) whose region centre `k*side + (side-1)/2`
/// is nearest to `centre`, ties to the even `k` (round half to even, then clamped).
fn nearest_origin(centre: f64, side: usize, patch: usize) -> usize {
    let k = libm::rint((centre - (side as f64 - 1.0) / 2.0) / side as f64);
    let last = (patch / side - 1) as f64;
    // NaN cannot occur (inputs are finite); `clamp` keeps huge values in range.
    k.clamp(0.0, last) as usize * side
}

#[cfg(feature = "alloc")]
pub use repair::repair_duplicates;

#[cfg(feature = "alloc")]
mod repair {
    use super::*;
    use alloc::vec;

    /// The optional duplicate repair of spec 4.2 (off by default): when several regions are the
    /// same rectangle, the first keeps it and each later one moves to the aligned rectangle of
    /// the same size that overlaps no other region and whose centre is nearest to its own (ties
    /// to the first in row-major order); when there is none, it stays. Returns how many moved.
    /// This does not make the layout a tiling. `regions` must be valid for `params`.
    pub fn repair_duplicates(regions: &mut [Region], params: &CalibrateParams) -> Result<usize, CalibrateError> {
        params.check()?;
        // Coverage counts on the grid of the smallest side: every valid region is a union of cells.
        let s = params.min_side();
        let cells = params.patch / s;
        let mut cover = vec![0u32; cells * cells];
        let cells_of = |r: &Region| {
            let (y0, x0) = (usize::from(r.y0) / s, usize::from(r.x0) / s);
            (y0, y0 + r.height() / s, x0, x0 + r.width() / s)
        };
        let paint = |cover: &mut [u32], r: &Region, add: bool| {
            let (y0, y1, x0, x1) = cells_of(r);
            for y in y0..y1 {
                for c in &mut cover[y * cells + x0..y * cells + x1] {
                    *c = if add { *c + 1 } else { *c - 1 };
                }
            }
        };
        for r in regions.iter() {
            paint(&mut cover, r, true);
        }
        let mut moved = 0;
        for i in 0..regions.len() {
            let r = regions[i];
            if !regions[..i].iter().any(|q| same_rect(q, &r)) {
                continue;
            }
            paint(&mut cover, &r, false);
            let (w, h) = (r.width(), r.height());
            let centre = |x0: usize, y0: usize| (2 * x0 + w, 2 * y0 + h);
            let (cx, cy) = centre(r.x0.into(), r.y0.into());
            let mut best: Option<(usize, usize, usize)> = None;
            for y0 in (0..params.patch).step_by(h) {
                for x0 in (0..params.patch).step_by(w) {
                    let cand = Region {
                        y0: y0 as u16,
                        y1: (y0 + h - 1) as u16,
                        x0: x0 as u16,
                        x1: (x0 + w - 1) as u16,
                        score: 0.0,
                    };
                    let (qy0, qy1, qx0, qx1) = cells_of(&cand);
                    let free = (qy0..qy1).all(|y| cover[y * cells + qx0..y * cells + qx1].iter().all(|&c| c == 0));
                    if !free {
                        continue;
                    }
                    let (px, py) = centre(x0, y0);
                    let d = px.abs_diff(cx).pow(2) + py.abs_diff(cy).pow(2);
                    if best.is_none_or(|b| d < b.0) {
                        best = Some((d, x0, y0));
                    }
                }
            }
            let new = match best {
                Some((_, x0, y0)) => {
                    moved += 1;
                    Region {
                        y0: y0 as u16,
                        y1: (y0 + h - 1) as u16,
                        x0: x0 as u16,
                        x1: (x0 + w - 1) as u16,
                        score: r.score,
                    }
                }
                None => r,
            };
            paint(&mut cover, &new, true);
            regions[i] = new;
        }
        Ok(moved)
    }

    fn same_rect(a: &Region, b: &Region) -> bool {
        (a.x0, a.x1, a.y0, a.y1) == (b.x0, b.x1, b.y0, b.y1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_side_follows_the_split_rule() {
        assert_eq!(CalibrateParams::new(256).min_side(), 8);
        assert_eq!(CalibrateParams { patch: 256, min_size: 6 }.min_side(), 4);
        assert_eq!(CalibrateParams { patch: 8, min_size: 8 }.min_side(), 8);
        // Algorithm 1 split to the end tiles the patch with squares of the smallest side.
        for patch in [16, 64, 256] {
            for min_size in 0..40 {
                let s = CalibrateParams { patch, min_size }.min_side();
                assert_eq!(
                    crate::partition::max_regions(patch, patch, min_size),
                    (patch / s).pow(2),
                    "{patch} {min_size}"
                );
            }
        }
    }

    #[test]
    fn bad_patches_and_values_are_errors() {
        let g = [0.1, 0.1, 0.0, 0.0, 0.0];
        for patch in [0, 1, 96, MAX_PATCH * 2] {
            assert_eq!(snap(&g, &CalibrateParams::new(patch), 0), Err(CalibrateError::Patch { patch }));
        }
        let nan = [0.1, f32::NAN, 0.0, 0.0, 0.0];
        assert_eq!(snap(&nan, &CalibrateParams::new(256), 3), Err(CalibrateError::NonFinite { token: 3, param: 1 }));
        let mut out = [Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; 1];
        assert!(calibrate(&[g, g], &CalibrateParams::new(256), &mut out).is_err());
    }

    #[test]
    fn a_square_near_an_aligned_square_snaps_to_it() {
        // A 32x32 region at (64, 96) of a 256 patch, sizes and centre slightly off.
        let p = CalibrateParams::new(256);
        let r = Region { y0: 96, y1: 127, x0: 64, x1: 95, score: 0.0 };
        let mut g = region_gaussian(&r, 256, 256);
        g[0] *= 1.2;
        g[1] *= 0.85;
        g[2] = 0.4;
        g[3] += 0.02;
        g[4] -= 0.03;
        assert_eq!(snap(&g, &p, 0).unwrap(), r);
    }

    #[test]
    fn duplicates_move_to_the_nearest_free_rectangle() {
        let p = CalibrateParams::new(32);
        let r = |x0: u16, y0: u16, s: u16| Region { y0, y1: y0 + s - 1, x0, x1: x0 + s - 1, score: 0.0 };
        let mut regions = [r(0, 0, 16), r(16, 0, 16), r(0, 0, 16), r(0, 16, 8)];
        assert_eq!(repair_duplicates(&mut regions, &p).unwrap(), 1);
        // (16, 16) is the only free 16x16 square ((0, 16) overlaps the 8x8 one).
        assert_eq!(regions[2], r(16, 16, 16));
        assert!(regions.iter().all(|q| p.is_valid(q)));
    }
}
