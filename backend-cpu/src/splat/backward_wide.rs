//! The CPU's splat backward for more than `backward::MAX_CHANNELS` channels: the gradient of
//! one Gaussian in f32 lanes, the channels in groups of 32 (one pass over the footprint each).
//!
//! The same formulas as the core's f64 reference (`gpstoken_core::render::splat_backward`,
//! spec 2.2), rearranged so that a pixel costs little more than its `2C` multiply-adds: with
//! `u = dx/sigma_x`, `w = dy/sigma_y` (each rounded once from f64) the kernel is
//! `v = exp(w1 (u^2 - 2 rho u w + w^2))` and every geometric gradient is a combination of five
//! sums `S1..S5 = sum P v (u, w, u^2, w^2, u w)` with `P = sum_c G_c col_c`; along a row `w` is
//! constant, so a pixel adds only to `P v`, `P v u` and `P v u^2` (row sums `R0, R1, R2`).
//!
//! Accuracy without f64 per pixel: the terms are f32 (`exp` is `libm::expf`'s bits, see
//! `expf.rs`); each sum is kept in 16 lanes (a lane sums one column of every 16), and the lanes
//! are added into f64 totals every [`FLUSH_ROWS`] rows, so no f32 partial sum holds more than a
//! few dozen terms. Against the golden f64 gradients this stays within about 1e-6 of the largest
//! value (the golden tolerance is 5e-6; gs.cu's f32 loop reaches 3.1e-6).
//!
//! Determinism: the pixels are visited in a fixed order (column chunks, rows, lanes) that
//! depends only on the Gaussian, and the lanes are plain loops without FMA, so the AVX-512,
//! AVX2 and baseline builds of the loop give the same bits (`multiversion!`).

use super::expf::{expf16, LANES};
use gpstoken_core::render::{Footprint, SplatDesc};
use gpstoken_core::token::{GAUSSIAN_PARAMS, MEAN_X, MEAN_Y, RHO, SIGMA_X, SIGMA_Y};

/// Columns per chunk: the per-column offsets of a chunk live on the stack.
const CHUNK: usize = 64;
/// Rows between the flushes of the f32 lane sums into the f64 totals.
const FLUSH_ROWS: usize = 8;

type Lanes = [f32; LANES];

/// Writes `grad_token` (`5 + C` values: `dL/d[sigma_x, sigma_y, rho, x, y]`, then
/// `dL/d features`) of the Gaussian `token` with footprint `fp` from `grad_out = dL/dF`
/// `[C, H, W]` of its image; `grid` holds `pixel_coord` of every column, then of every row.
/// Buffers are the checked ones of the front end.
pub(super) fn backward_gaussian(
    desc: &SplatDesc,
    grid: &[f32],
    token: &[f32],
    fp: &Footprint,
    grad_out: &[f32],
    grad_token: &mut [f32],
) {
    backward32(desc, grid, token, fp, grad_out, grad_token)
}

super::multiversion! {
    fn backward32(desc: &SplatDesc, grid: &[f32], token: &[f32], fp: &Footprint, grad_out: &[f32], grad_token: &mut [f32])
        => backward_impl::<32>
}

/// Adds the f32 lanes into an f64 total, in lane order, and clears them.
#[inline(always)]
fn flush(lanes: &mut Lanes, total: &mut f64) {
    for v in lanes.iter_mut() {
        *total += f64::from(*v);
        *v = 0.0;
    }
}

/// `CHANNEL_GROUP`: colour-gradient lane accumulators on the stack at once; more channels take
/// more passes over the footprint.
#[inline(always)]
fn backward_impl<const CHANNEL_GROUP: usize>(
    desc: &SplatDesc,
    grid: &[f32],
    token: &[f32],
    fp: &Footprint,
    grad_out: &[f32],
    grad_token: &mut [f32],
) {
    let (height, width, channels) = (desc.height, desc.width, desc.channels);
    let plane = height * width;
    let (grid_x, grid_y) = grid.split_at(width);
    grad_token.fill(0.0);
    if fp.is_empty() {
        return;
    }
    let [sx, sy, rho, x, y] = [SIGMA_X, SIGMA_Y, RHO, MEAN_X, MEAN_Y].map(|p| f64::from(token[p]));
    let colors = &token[GAUSSIAN_PARAMS..];
    let w1 = -0.5 / (1.0 - rho * rho);
    let (w1f, two_rho) = (w1 as f32, (2.0 * rho) as f32);
    let (inv_sx, inv_sy) = (1.0 / sx, 1.0 / sy);
    let mut s_totals = [0.0f64; 5];
    let mut group_start = 0;
    loop {
        let group = group_start..channels.min(group_start + CHANNEL_GROUP);
        // The geometric sums need every channel (P = sum_c G_c col_c): the first pass does them.
        let geometry = group_start == 0;
        let mut col_lanes = [[0.0f32; LANES]; CHANNEL_GROUP];
        let mut col_totals = [0.0f64; CHANNEL_GROUP];
        for j0 in fp.cols().step_by(CHUNK) {
            let n = CHUNK.min(fp.col_end - j0);
            let blocks = n.div_ceil(LANES);
            let mut u = [0.0f32; CHUNK];
            for (q, uq) in u[..n].iter_mut().enumerate() {
                *uq = ((f64::from(grid_x[j0 + q]) - x) * inv_sx) as f32;
            }
            let (mut s_lanes, mut rows_since_flush) = ([[0.0f32; LANES]; 5], 0);
            for i in fp.rows() {
                let wv = ((f64::from(grid_y[i]) - y) * inv_sy) as f32;
                let (ww, tw) = (wv * wv, two_rho * wv);
                let mut r = [[0.0f32; LANES]; 3];
                for b in 0..blocks {
                    let ub: &Lanes = u[b * LANES..(b + 1) * LANES].try_into().expect("LANES values");
                    let mut e = [0.0f32; LANES];
                    for l in 0..LANES {
                        e[l] = w1f * ((ub[l] * ub[l] - tw * ub[l]) + ww);
                    }
                    let mut v = expf16(e);
                    let valid = n - b * LANES; // lanes `< valid` are inside the footprint
                    for (l, vl) in v.iter_mut().enumerate() {
                        if l >= valid {
                            *vl = 0.0;
                        }
                    }
                    let at = i * width + j0 + b * LANES;
                    let mut p = [0.0f32; LANES];
                    for (c, &col) in colors.iter().enumerate() {
                        let g = grad_lanes(grad_out, c * plane + at, valid);
                        if geometry {
                            for l in 0..LANES {
                                p[l] += g[l] * col;
                            }
                        }
                        if group.contains(&c) {
                            let acc = &mut col_lanes[c - group.start];
                            for l in 0..LANES {
                                acc[l] += v[l] * g[l];
                            }
                        }
                    }
                    if geometry {
                        for l in 0..LANES {
                            let pv = p[l] * v[l];
                            let pvu = pv * ub[l];
                            r[0][l] += pv;
                            r[1][l] += pvu;
                            r[2][l] += pvu * ub[l];
                        }
                    }
                }
                if geometry {
                    // S1..S5 += (R1, w R0, R2, w^2 R0, w R1).
                    for l in 0..LANES {
                        s_lanes[0][l] += r[1][l];
                        s_lanes[1][l] += wv * r[0][l];
                        s_lanes[2][l] += r[2][l];
                        s_lanes[3][l] += ww * r[0][l];
                        s_lanes[4][l] += wv * r[1][l];
                    }
                }
                rows_since_flush += 1;
                if rows_since_flush == FLUSH_ROWS || i + 1 == fp.row_end {
                    rows_since_flush = 0;
                    if geometry {
                        for (lanes, total) in s_lanes.iter_mut().zip(&mut s_totals) {
                            flush(lanes, total);
                        }
                    }
                    for (lanes, total) in col_lanes.iter_mut().zip(&mut col_totals).take(group.len()) {
                        flush(lanes, total);
                    }
                }
            }
        }
        for (g, acc) in
            grad_token[GAUSSIAN_PARAMS + group.start..GAUSSIAN_PARAMS + group.end].iter_mut().zip(&col_totals)
        {
            *g = *acc as f32;
        }
        if group.end >= channels {
            break;
        }
        group_start = group.end;
    }
    let [s1, s2, s3, s4, s5] = s_totals;
    // The reference's sums in these units: acc_x = (rho S2 - S1)/sx, acc_y = (rho S1 - S2)/sy,
    // acc_sx = rho S5 - S3, acc_sy = rho S5 - S4, acc_rho = 2 w1 rho (S3 - 2 rho S5 + S4) + S5.
    grad_token[SIGMA_X] = (2.0 * w1 / sx * (rho * s5 - s3)) as f32;
    grad_token[SIGMA_Y] = (2.0 * w1 / sy * (rho * s5 - s4)) as f32;
    grad_token[RHO] = (-2.0 * w1 * (2.0 * w1 * rho * (s3 - 2.0 * rho * s5 + s4) + s5)) as f32;
    grad_token[MEAN_X] = (2.0 * w1 * ((rho * s2 - s1) / sx)) as f32;
    grad_token[MEAN_Y] = (2.0 * w1 * ((rho * s1 - s2) / sy)) as f32;
}

/// `grad_out[at..at + LANES]` with the lanes from `valid` on (outside the footprint, possibly
/// past the end of the buffer) zero.
#[inline(always)]
fn grad_lanes(grad_out: &[f32], at: usize, valid: usize) -> Lanes {
    let mut g: Lanes = match grad_out.get(at..at + LANES) {
        Some(src) => *<&Lanes>::try_from(src).expect("LANES values"),
        None => core::array::from_fn(|l| grad_out.get(at + l).copied().unwrap_or(0.0)),
    };
    for (l, gl) in g.iter_mut().enumerate() {
        if l >= valid {
            *gl = 0.0;
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpstoken_core::render::{self, footprint, pixel_coord, SplatKernel};
    use gpstoken_core::rng::SplitMix64;

    /// The dispatched (AVX-512/AVX2) and the baseline build give the same bits, and both agree
    /// with the core's f64 reference to f32 accuracy, for 3, 20, 40 and 70 channels (one, two
    /// and three channel groups) and footprints wider than a chunk.
    #[test]
    fn every_build_gives_the_same_bits_close_to_the_f64_reference() {
        let mut rng = SplitMix64::new(5);
        for channels in [3usize, 20, 40, 70] {
            let desc = SplatDesc { batch: 1, gaussians: 24, channels, height: 37, width: 90, kappa: 3.0 };
            let stride = desc.token_stride();
            let mut uniform = |lo: f32, hi: f32| lo + (hi - lo) * rng.unit_f32();
            let mut tokens = vec![0.0f32; desc.gaussians * stride];
            for t in tokens.chunks_exact_mut(stride) {
                t[SIGMA_X] = uniform(0.02, 0.5);
                t[SIGMA_Y] = uniform(0.02, 0.5);
                t[RHO] = uniform(-0.9, 0.9);
                t[MEAN_X] = uniform(-1.1, 1.1);
                t[MEAN_Y] = uniform(-1.1, 1.1);
                t[GAUSSIAN_PARAMS..].iter_mut().for_each(|f| *f = uniform(-1.0, 1.0));
            }
            let grad_out: Vec<f32> = (0..desc.image_len()).map(|_| uniform(-1.0, 1.0)).collect();
            let mut want = vec![0.0f32; tokens.len()];
            render::splat_backward(&desc, &tokens, &grad_out, &mut want).unwrap();
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let grid: Vec<f32> = (0..desc.width)
                .map(|j| pixel_coord(j, desc.width))
                .chain((0..desc.height).map(|i| pixel_coord(i, desc.height)))
                .collect();
            for (g, token) in tokens.chunks_exact(stride).enumerate() {
                let fp = footprint(&SplatKernel::new(token, desc.kappa), desc.height, desc.width);
                let (mut fast, mut base) = (vec![0.0f32; stride], vec![0.0f32; stride]);
                backward_gaussian(&desc, &grid, token, &fp, &grad_out, &mut fast);
                backward_impl::<32>(&desc, &grid, token, &fp, &grad_out, &mut base);
                assert_eq!(fast.map_bits(), base.map_bits(), "C = {channels}, gaussian {g}");
                for (k, (a, b)) in fast.iter().zip(&want[g * stride..(g + 1) * stride]).enumerate() {
                    assert!((a - b).abs() <= 2e-6 * scale, "C = {channels}, gaussian {g}, value {k}: {a} vs {b}");
                }
            }
        }
    }

    trait Bits {
        fn map_bits(&self) -> Vec<u32>;
    }
    impl Bits for Vec<f32> {
        fn map_bits(&self) -> Vec<u32> {
            self.iter().map(|v| v.to_bits()).collect()
        }
    }
}
