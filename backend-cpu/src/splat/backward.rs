//! The CPU's splat backward for up to [`MAX_CHANNELS`] channels: the gradient of one Gaussian
//! in f32 lanes (more channels: `backward_wide.rs`).
//!
//! The same formulas as the core's f64 reference (`gpstoken_core::render::splat_backward`,
//! spec 2.2), rearranged so that a pixel costs little more than its `2C` multiply-adds: with
//! `u = dx/sigma_x`, `w = dy/sigma_y` (each rounded once from f64) the kernel is
//! `v = exp(w1 (u^2 - 2 rho u w + w^2))` and every geometric gradient is a combination of five
//! sums `S1..S5 = sum P v (u, w, u^2, w^2, u w)` with `P = sum_c G_c col_c`.
//!
//! Lanes: a block of 16 lanes is 16 pixels of one row, or, where a row ends in at most 8
//! columns (most footprints here are 4 to 16 columns wide), the last 8 columns of two rows:
//! that halves the blocks of narrow footprints, whose rows would otherwise be mostly padding.
//! Lanes outside the footprint are masked by AND-ing `G` and `v` with an all-ones or all-zeros
//! pattern (also for a non-finite `G`, which must not reach another Gaussian's sums).
//! The channel count is a const (`K`, 4 or 16): a fixed loop bound and fixed-size colour
//! accumulators, which stay in L1 (a load and a store per channel and block; written out so
//! that they could stay in registers, the channel loop compiled into shuffles and ran slower).
//!
//! Accuracy without f64 per pixel: the terms are f32 (`exp` is `libm::expf`'s bits, see
//! `expf.rs`); each sum is kept in 16 lanes, and every [`FLUSH_ROWS`] rows a lane pair
//! `(l, l + 8)` is added in f64 into one of 8 f64 lanes, so no f32 partial sum holds more than
//! 8 terms; the 8 f64 lanes are added once per Gaussian. Against the golden f64 gradients this
//! stays within about 1e-6 of the largest value (the golden tolerance is 5e-6; gs.cu's f32 loop
//! reaches 3.1e-6).
//!
//! Determinism: the pixels are visited in a fixed order that depends only on the Gaussian, and
//! the lanes are plain loops without FMA, so the AVX-512, AVX2 and baseline builds give the
//! same bits (`multiversion!`).

use super::expf::{expf16, LANES};
use gpstoken_core::render::{Footprint, SplatDesc};
use gpstoken_core::token::{GAUSSIAN_PARAMS, MEAN_X, MEAN_Y, RHO, SIGMA_X, SIGMA_Y};

/// Most channels of this kernel.
pub(super) const MAX_CHANNELS: usize = 16;
/// Columns per chunk: the per-column offsets of a chunk live on the stack.
const CHUNK: usize = 64;
/// Half a block: where a row ends in at most `HALF` columns, two rows share a block.
const HALF: usize = LANES / 2;
/// Rows between the flushes of the f32 lane sums into the f64 totals.
const FLUSH_ROWS: usize = 8;

type Lanes = [f32; LANES];
/// Lane masks: all ones (inside the footprint) or all zeros.
type Mask = [u32; LANES];

/// Where value `(c, i, j)` of the upstream gradient lies in its buffer: `c * channel + i * row
/// + j` (`[C, H, W]`: `channel = H W`, `row = W`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Strides {
    pub channel: usize,
    pub row: usize,
}

/// Writes `grad_token` (`5 + C` values: `dL/d[sigma_x, sigma_y, rho, x, y]`, then
/// `dL/d features`) of the Gaussian `token` with footprint `fp` from `grad = dL/dF` of its image
/// (laid out as `strides` says; `C <= MAX_CHANNELS`); `grid` holds `pixel_coord` of every column,
/// then of every row. Buffers are the checked ones of the front end.
pub(super) fn backward_gaussian(
    desc: &SplatDesc,
    grid: &[f32],
    token: &[f32],
    fp: &Footprint,
    grad: &[f32],
    strides: Strides,
    grad_token: &mut [f32],
) {
    debug_assert!(desc.channels <= MAX_CHANNELS);
    // Few channels (an RGB fit) need not carry 16 accumulators.
    match (desc.channels <= 4, needs_checked_loads(desc, fp, strides, grad.len())) {
        (true, false) => backward4(desc, grid, token, fp, grad, strides, grad_token),
        (false, false) => backward16(desc, grid, token, fp, grad, strides, grad_token),
        (true, true) => backward4_checked(desc, grid, token, fp, grad, strides, grad_token),
        (false, true) => backward16_checked(desc, grid, token, fp, grad, strides, grad_token),
    }
}

/// Whether a block load of the footprint may pass the end of a gradient buffer of `len`
/// values: the last block of a row is loaded whole, up to `LANES - 1` values past the
/// footprint, which passes the end only in the last rows of the last channel (few Gaussians;
/// copying the gradient into a padded buffer instead cost more than it saved).
fn needs_checked_loads(desc: &SplatDesc, fp: &Footprint, strides: Strides, len: usize) -> bool {
    let last_row = (desc.channels.max(1) - 1) * strides.channel + fp.row_end.saturating_sub(1) * strides.row;
    last_row + fp.col_end + LANES > len
}

super::multiversion! {
    fn backward4(desc: &SplatDesc, grid: &[f32], token: &[f32], fp: &Footprint, grad: &[f32], strides: Strides, grad_token: &mut [f32])
        => backward_impl::<4, false>
}

super::multiversion! {
    fn backward4_checked(desc: &SplatDesc, grid: &[f32], token: &[f32], fp: &Footprint, grad: &[f32], strides: Strides, grad_token: &mut [f32])
        => backward_impl::<4, true>
}

super::multiversion! {
    fn backward16(desc: &SplatDesc, grid: &[f32], token: &[f32], fp: &Footprint, grad: &[f32], strides: Strides, grad_token: &mut [f32])
        => backward_impl::<16, false>
}

super::multiversion! {
    fn backward16_checked(desc: &SplatDesc, grid: &[f32], token: &[f32], fp: &Footprint, grad: &[f32], strides: Strides, grad_token: &mut [f32])
        => backward_impl::<16, true>
}

/// The f32 lane sums of one Gaussian (`K` colour sums, then `S1..S5`) and their f64 totals.
struct Sums<const K: usize> {
    colour: [Lanes; K],
    geometry: [Lanes; 5],
    colour_total: [[f64; HALF]; K],
    geometry_total: [[f64; HALF]; 5],
}

impl<const K: usize> Sums<K> {
    fn new() -> Self {
        Sums {
            colour: [[0.0; LANES]; K],
            geometry: [[0.0; LANES]; 5],
            colour_total: [[0.0; HALF]; K],
            geometry_total: [[0.0; HALF]; 5],
        }
    }

    /// Adds every lane pair `(l, l + HALF)` into f64 lane `l` of its total and clears the lanes.
    #[inline(always)]
    fn flush(&mut self) {
        // Plain loops per sum (a chained iterator over both kinds was compiled to scalar code).
        #[inline(always)]
        fn one(lanes: &mut Lanes, total: &mut [f64; HALF]) {
            for l in 0..HALF {
                total[l] += f64::from(lanes[l]) + f64::from(lanes[l + HALF]);
            }
            *lanes = [0.0; LANES];
        }
        for k in 0..K {
            one(&mut self.colour[k], &mut self.colour_total[k]);
        }
        for k in 0..5 {
            one(&mut self.geometry[k], &mut self.geometry_total[k]);
        }
    }

    /// One pixel block: `u`, `w` per lane, `keep` the lanes inside the footprint, `load(c)` the
    /// upstream gradient of channel `c` on the block's pixels (lanes outside may hold anything).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn block(
        &mut self,
        channels: usize,
        colours: &[f32; K],
        (w1, two_rho): (f32, f32),
        u: &Lanes,
        w: &Lanes,
        keep: &Mask,
        load: impl Fn(usize) -> Lanes,
    ) {
        let mut e = [0.0f32; LANES];
        for l in 0..LANES {
            e[l] = w1 * ((u[l] * u[l] - two_rho * w[l] * u[l]) + w[l] * w[l]);
        }
        let mut v = expf16(e);
        for l in 0..LANES {
            v[l] = f32::from_bits(v[l].to_bits() & keep[l]);
        }
        let mut p = [0.0f32; LANES];
        for (c, (acc, &colour)) in self.colour.iter_mut().zip(colours).enumerate().take(channels) {
            let g = load(c);
            for l in 0..LANES {
                let g = f32::from_bits(g[l].to_bits() & keep[l]);
                p[l] += g * colour;
                acc[l] += v[l] * g;
            }
        }
        let s = &mut self.geometry;
        for l in 0..LANES {
            let pv = p[l] * v[l];
            let (pvu, pvw) = (pv * u[l], pv * w[l]);
            s[0][l] += pvu;
            s[1][l] += pvw;
            s[2][l] += pvu * u[l];
            s[3][l] += pvw * w[l];
            s[4][l] += pvu * w[l];
        }
    }
}

/// The sum of the 8 f64 lanes of a total, in a fixed order.
#[inline(always)]
fn total(t: &[f64; HALF]) -> f64 {
    ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]))
}

/// `grad[at..at + N]`; `CHECKED`: zeros past the end of `grad` (such lanes are masked anyway).
/// Two versions: the checked one compiled into scalar code.
#[inline(always)]
fn load<const N: usize, const CHECKED: bool>(grad: &[f32], at: usize) -> [f32; N] {
    if CHECKED {
        core::array::from_fn(|l| grad.get(at + l).copied().unwrap_or(0.0))
    } else {
        *<&[f32; N]>::try_from(&grad[at..at + N]).expect("N values")
    }
}

/// `PAIR_MASKS[r]`: the lanes `l` with `l % HALF < r`, the first `r` columns of both rows of a
/// shared block. A table: assembled from two halves per chunk, the 16-lane reload stalled on
/// the two half stores (store forwarding, 4.6% of the backward).
const PAIR_MASKS: [Mask; HALF + 1] = {
    let mut t = [[0u32; LANES]; HALF + 1];
    let mut r = 0;
    while r <= HALF {
        let mut l = 0;
        while l < LANES {
            if l % HALF < r {
                t[r][l] = u32::MAX;
            }
            l += 1;
        }
        r += 1;
    }
    t
};

#[inline(always)]
fn backward_impl<const K: usize, const CHECKED: bool>(
    desc: &SplatDesc,
    grid: &[f32],
    token: &[f32],
    fp: &Footprint,
    grad: &[f32],
    st: Strides,
    grad_token: &mut [f32],
) {
    let (width, channels) = (desc.width, desc.channels);
    let (grid_x, grid_y) = grid.split_at(width);
    grad_token.fill(0.0);
    if fp.is_empty() {
        return;
    }
    // Plain reads: `array::map` was left as a call (not inlined into the kernel).
    let (sx, sy, rho) = (f64::from(token[SIGMA_X]), f64::from(token[SIGMA_Y]), f64::from(token[RHO]));
    let (x, y) = (f64::from(token[MEAN_X]), f64::from(token[MEAN_Y]));
    let mut colours = [0.0f32; K];
    colours[..channels].copy_from_slice(&token[GAUSSIAN_PARAMS..]);
    let w1 = -0.5 / (1.0 - rho * rho);
    let coef = (w1 as f32, (2.0 * rho) as f32);
    let (inv_sx, inv_sy) = (1.0 / sx, 1.0 / sy);
    let row_w = |i: usize| ((f64::from(grid_y[i]) - y) * inv_sy) as f32;
    let mut sums = Sums::<K>::new();
    for j0 in fp.cols().step_by(CHUNK) {
        let n = CHUNK.min(fp.col_end - j0);
        let (full, rem) = (n / LANES, n % LANES);
        let mut u = [0.0f32; CHUNK];
        for (q, uq) in u[..n].iter_mut().enumerate() {
            *uq = ((f64::from(grid_x[j0 + q]) - x) * inv_sx) as f32;
        }
        let lanes_at = |b: usize| -> &Lanes { u[b * LANES..(b + 1) * LANES].try_into().expect("LANES values") };
        let all = [u32::MAX; LANES];
        // The masks of the chunk's last block: alone, or two rows sharing it.
        // Opaque to the optimiser (`black_box`): knowing the pattern, it split the masked loads
        // into odd pieces and shuffles. A shared block of a last single row keeps its first half.
        let last = std::hint::black_box(super::prefix_mask::<LANES>(rem));
        let pair = std::hint::black_box(PAIR_MASKS[rem.min(HALF)]);
        let pair_last_row = std::hint::black_box(super::prefix_mask::<LANES>(rem.min(HALF)));
        // The full blocks of row `i` (a macro, not a closure: the closure was left as an
        // out-of-line call, 7% of the backward).
        macro_rules! full_blocks {
            ($i:expr) => {{
                let i = $i;
                let w = [row_w(i); LANES];
                for b in 0..full {
                    let at = i * st.row + j0 + b * LANES;
                    sums.block(channels, &colours, coef, lanes_at(b), &w, &all, |c| {
                        load::<LANES, CHECKED>(grad, c * st.channel + at)
                    });
                }
            }};
        }
        let mut rows_since_flush = 0;
        let mut i = fp.row_start;
        while i < fp.row_end {
            let rows = if rem == 0 || rem > HALF {
                full_blocks!(i);
                if rem > 0 {
                    let (w, keep) = ([row_w(i); LANES], &last);
                    let at = i * st.row + j0 + full * LANES;
                    sums.block(channels, &colours, coef, lanes_at(full), &w, keep, |c| {
                        load::<LANES, CHECKED>(grad, c * st.channel + at)
                    });
                }
                1
            } else {
                // The last `rem <= HALF` columns of rows `i` and `i + 1` share a block.
                let second = (i + 1 < fp.row_end).then_some(i + 1);
                full_blocks!(i);
                if let Some(i2) = second {
                    full_blocks!(i2);
                }
                let i2 = second.unwrap_or(i);
                let (w_lo, w_hi) = (row_w(i), row_w(i2));
                let w: Lanes = core::array::from_fn(|l| if l < HALF { w_lo } else { w_hi });
                let tail = &u[full * LANES..full * LANES + HALF];
                let ut: Lanes = core::array::from_fn(|l| tail[l % HALF]);
                let keep = if second.is_some() { &pair } else { &pair_last_row };
                let (at_lo, at_hi) = (i * st.row + j0 + full * LANES, i2 * st.row + j0 + full * LANES);
                sums.block(channels, &colours, coef, &ut, &w, keep, |c| {
                    let lo = load::<HALF, CHECKED>(grad, c * st.channel + at_lo);
                    let hi = load::<HALF, CHECKED>(grad, c * st.channel + at_hi);
                    core::array::from_fn(|l| if l < HALF { lo[l] } else { hi[l - HALF] })
                });
                if second.is_some() {
                    2
                } else {
                    1
                }
            };
            i += rows;
            rows_since_flush += rows;
            if rows_since_flush >= FLUSH_ROWS || i >= fp.row_end {
                rows_since_flush = 0;
                sums.flush();
            }
        }
    }
    for (g, t) in grad_token[GAUSSIAN_PARAMS..].iter_mut().zip(&sums.colour_total) {
        *g = total(t) as f32;
    }
    let s = &sums.geometry_total;
    let (s1, s2, s3, s4, s5) = (total(&s[0]), total(&s[1]), total(&s[2]), total(&s[3]), total(&s[4]));
    // The reference's sums in these units: acc_x = (rho S2 - S1)/sx, acc_y = (rho S1 - S2)/sy,
    // acc_sx = rho S5 - S3, acc_sy = rho S5 - S4, acc_rho = 2 w1 rho (S3 - 2 rho S5 + S4) + S5.
    grad_token[SIGMA_X] = (2.0 * w1 / sx * (rho * s5 - s3)) as f32;
    grad_token[SIGMA_Y] = (2.0 * w1 / sy * (rho * s5 - s4)) as f32;
    grad_token[RHO] = (-2.0 * w1 * (2.0 * w1 * rho * (s3 - 2.0 * rho * s5 + s4) + s5)) as f32;
    grad_token[MEAN_X] = (2.0 * w1 * ((rho * s2 - s1) / sx)) as f32;
    grad_token[MEAN_Y] = (2.0 * w1 * ((rho * s1 - s2) / sy)) as f32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpstoken_core::render::{self, footprint, pixel_coord, SplatKernel};
    use gpstoken_core::rng::SplitMix64;

    /// The dispatched (AVX-512/AVX2) and the baseline build give the same bits, and both agree
    /// with the core's f64 reference to f32 accuracy: 1 to 16 channels (both kernels, channels
    /// below `K`), footprints from one pixel to wider than a chunk (row remainders of 0, at most
    /// 8 and more than 8 columns, odd and even row counts, clipped at every edge), checked and
    /// unchecked loads, the gradient `[C, H, W]` and `[H, C, W]`, and non-finite gradients
    /// outside every footprint.
    #[test]
    fn every_build_gives_the_same_bits_close_to_the_f64_reference() {
        let mut rng = SplitMix64::new(5);
        for channels in [1usize, 3, 4, 5, 16] {
            let desc = SplatDesc { batch: 1, gaussians: 60, channels, height: 41, width: 150, kappa: 3.0 };
            let (h, w, stride) = (desc.height, desc.width, desc.token_stride());
            let mut uniform = |lo: f32, hi: f32| lo + (hi - lo) * rng.unit_f32();
            let mut tokens = vec![0.0f32; desc.gaussians * stride];
            for (k, t) in tokens.chunks_exact_mut(stride).enumerate() {
                // Narrow (a pixel to ~20 columns) and wide (past one chunk) footprints.
                let (sigma_x, sigma_y) =
                    if k % 12 == 0 { ((0.15, 0.3), (0.01, 0.1)) } else { ((0.002, 0.06), (0.002, 0.06)) };
                t[SIGMA_X] = uniform(sigma_x.0, sigma_x.1);
                t[SIGMA_Y] = uniform(sigma_y.0, sigma_y.1);
                t[RHO] = uniform(-0.9, 0.9);
                t[MEAN_X] = uniform(-1.1, 1.1);
                t[MEAN_Y] = uniform(-1.1, 1.1);
                t[GAUSSIAN_PARAMS..].iter_mut().for_each(|f| *f = uniform(-1.0, 1.0));
                if k == 1 {
                    // In the last rows and columns: its loads need checks.
                    (t[MEAN_X], t[MEAN_Y]) = (0.99, 0.98);
                }
            }
            let mut grad_out: Vec<f32> = (0..desc.image_len()).map(|_| uniform(-1.0, 1.0)).collect();
            let fps: Vec<Footprint> =
                tokens.chunks_exact(stride).map(|t| footprint(&SplatKernel::new(t, desc.kappa), h, w)).collect();
            // Pixels outside every footprint get NaN and infinity: no Gaussian may see them.
            let mut poisoned = 0;
            for i in 0..h {
                for j in 0..w {
                    if !fps.iter().any(|fp| fp.rows().contains(&i) && fp.cols().contains(&j)) {
                        for c in 0..channels {
                            grad_out[(c * h + i) * w + j] = if (i + j + c) % 2 == 0 { f32::NAN } else { f32::INFINITY };
                        }
                        poisoned += 1;
                    }
                }
            }
            assert!(poisoned > 0);
            let remainders: Vec<usize> = fps.iter().map(|fp| (fp.col_end - fp.col_start) % LANES).collect();
            assert!(remainders.contains(&0) && remainders.iter().any(|&r| r > 0 && r <= HALF));
            assert!(remainders.iter().any(|&r| r > HALF) && fps.iter().any(|fp| fp.col_end - fp.col_start > CHUNK));
            let mut want = vec![0.0f32; tokens.len()];
            render::splat_backward(&desc, &tokens, &grad_out, &mut want).unwrap();
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(scale.is_finite() && scale > 0.0);
            // The same gradient as [H, C, W], and as [C, H, W] padded with NaN (which the masks
            // must keep out), where no load needs a check.
            let mut hcw = vec![0.0f32; grad_out.len()];
            for c in 0..channels {
                for i in 0..h {
                    hcw[(i * channels + c) * w..][..w].copy_from_slice(&grad_out[(c * h + i) * w..][..w]);
                }
            }
            let padded: Vec<f32> = grad_out.iter().copied().chain([f32::NAN; LANES]).collect();
            let chw = Strides { channel: h * w, row: w };
            let hcw_strides = Strides { channel: w, row: channels * w };
            let checked = fps.iter().filter(|fp| needs_checked_loads(&desc, fp, chw, grad_out.len())).count();
            assert!(checked > 0 && fps.iter().all(|fp| !needs_checked_loads(&desc, fp, chw, padded.len())));
            let grid: Vec<f32> = (0..w).map(|j| pixel_coord(j, w)).chain((0..h).map(|i| pixel_coord(i, h))).collect();
            for (g, (token, fp)) in tokens.chunks_exact(stride).zip(&fps).enumerate() {
                let mut fast = vec![0.0f32; stride];
                backward_gaussian(&desc, &grid, token, fp, &grad_out, chw, &mut fast);
                let mut others = vec![vec![0.0f32; stride]; 4];
                backward_gaussian(&desc, &grid, token, fp, &hcw, hcw_strides, &mut others[0]);
                backward_gaussian(&desc, &grid, token, fp, &padded, chw, &mut others[1]);
                // The baseline builds, with and without checked loads.
                if channels <= 4 {
                    backward_impl::<4, false>(&desc, &grid, token, fp, &padded, chw, &mut others[2]);
                    backward_impl::<4, true>(&desc, &grid, token, fp, &grad_out, chw, &mut others[3]);
                } else {
                    backward_impl::<16, false>(&desc, &grid, token, fp, &padded, chw, &mut others[2]);
                    backward_impl::<16, true>(&desc, &grid, token, fp, &grad_out, chw, &mut others[3]);
                }
                for (k, other) in others.iter().enumerate() {
                    assert_eq!(bits(&fast), bits(other), "C = {channels}, gaussian {g}, variant {k}");
                }
                for (k, (a, b)) in fast.iter().zip(&want[g * stride..(g + 1) * stride]).enumerate() {
                    assert!((a - b).abs() <= 2e-6 * scale, "C = {channels}, gaussian {g}, value {k}: {a} vs {b}");
                }
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }
}
