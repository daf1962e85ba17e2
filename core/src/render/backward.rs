//! The reference splat backward (spec 2.2), per Gaussian, in f64.

use super::{check_image, check_len, footprint, pixel_coord, ShapeError, SplatDesc, SplatKernel};
use crate::token::{GAUSSIAN_PARAMS, MEAN_X, MEAN_Y, RHO, SIGMA_X, SIGMA_Y};

// ---------------------------------------------------------------------------------------------
// Backward (spec 2.2)
// ---------------------------------------------------------------------------------------------

/// Colour-gradient accumulators held on the stack at once. Every released config has C <= 32;
/// a larger C is handled in several passes over the footprint (same results, more `exp`).
const CHANNEL_GROUP: usize = 64;

/// Columns the backward processes together: the per-pixel terms of a chunk land in stack
/// buffers, then each channel is one contiguous pass over the chunk (vectorisable, no allocation).
const CHUNK: usize = 64;

/// Gradient of ONE Gaussian `s` of one image: writes `grad_token` (`5 + C` values) with
/// `dL/d[sigma_x, sigma_y, rho, x, y]` then `dL/d features`, from `grad_out = dL/dF` `[C, H, W]`.
///
/// The analytic formulas of spec 2.2 (exact derivatives of the box-truncated forward; the box
/// edge is treated as constant). Unlike `gs.cu`, which works in f32, every per-pixel term and
/// every accumulator is f64 (`dx`, `dy` from the f32 grid, exactly like the golden f64
/// reference); only the final values are rounded to f32. The pixels are the forward's f32 box
/// (its [`Footprint`]), visited rows then columns; each accumulator is summed in that fixed
/// order, so the result does not depend on threads. `desc.batch` is ignored.
pub fn splat_backward_gaussian(
    desc: &SplatDesc,
    tokens: &[f32],
    s: usize,
    grad_out: &[f32],
    grad_token: &mut [f32],
) -> Result<(), ShapeError> {
    check_image(desc, tokens.len(), grad_out.len())?;
    if s >= desc.gaussians {
        return Err(ShapeError::Length {
            what: "gaussian index (expected: gaussian count)",
            expected: desc.gaussians,
            got: s,
        });
    }
    let stride = desc.token_stride();
    check_len("token gradient", stride, grad_token.len())?;
    backward_one(desc, &tokens[s * stride..(s + 1) * stride], grad_out, grad_token);
    Ok(())
}

/// Splat backward for ONE image: `grad_tokens` `[N, 5+C]` (overwritten) from `grad_out`
/// `[C, H, W]`. Gaussian after Gaussian, see [`splat_backward_gaussian`].
pub fn splat_backward(
    desc: &SplatDesc,
    tokens: &[f32],
    grad_out: &[f32],
    grad_tokens: &mut [f32],
) -> Result<(), ShapeError> {
    check_image(desc, tokens.len(), grad_out.len())?;
    check_len("token gradients", tokens.len(), grad_tokens.len())?;
    let stride = desc.token_stride();
    for (token, grad) in tokens.chunks_exact(stride).zip(grad_tokens.chunks_exact_mut(stride)) {
        backward_one(desc, token, grad_out, grad);
    }
    Ok(())
}

/// The per-Gaussian backward on checked slices.
fn backward_one(desc: &SplatDesc, token: &[f32], grad_out: &[f32], grad_token: &mut [f32]) {
    let (height, width, channels) = (desc.height, desc.width, desc.channels);
    let plane = height * width;
    grad_token.fill(0.0);
    let fp = footprint(&SplatKernel::new(token, desc.kappa), height, width);
    if fp.is_empty() {
        return;
    }
    let [sx, sy, rho, x, y] = [SIGMA_X, SIGMA_Y, RHO, MEAN_X, MEAN_Y].map(|p| f64::from(token[p]));
    let colors = &token[GAUSSIAN_PARAMS..];
    let w1 = -0.5 / (1.0 - rho * rho);
    let w2 = 1.0 / (sx * sx);
    let w3 = 1.0 / (sx * sy);
    let w4 = 1.0 / (sy * sy);
    // Sums over pixels of P*v*(...), the per-pixel factors of spec 2.2 without their constant
    // prefactors (2*w1, 2*w1/sigma, -2*w1), which are applied once at the end.
    let (mut acc_x, mut acc_y, mut acc_sx, mut acc_sy, mut acc_rho) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    let mut group_start = 0;
    loop {
        let group_end = channels.min(group_start + CHANNEL_GROUP);
        // The geometric sums need all channels at once (P = sum_c G*col): done in the first pass.
        let geometry = group_start == 0;
        let mut acc_col = [0.0f64; CHANNEL_GROUP];
        for i in fp.rows() {
            let dy = f64::from(pixel_coord(i, height)) - y;
            for j0 in fp.cols().step_by(CHUNK) {
                let n = CHUNK.min(fp.col_end - j0);
                let mut dx = [0.0f64; CHUNK];
                let mut q = [0.0f64; CHUNK];
                let mut v = [0.0f64; CHUNK];
                for k in 0..n {
                    dx[k] = f64::from(pixel_coord(j0 + k, width)) - x;
                    q[k] = w2 * dx[k] * dx[k] - 2.0 * rho * w3 * dx[k] * dy + w4 * dy * dy;
                    v[k] = exp_f64(w1 * q[k]);
                }
                let mut p = [0.0f64; CHUNK];
                let row = i * width + j0;
                for (c, &col) in colors.iter().enumerate() {
                    let g = &grad_out[c * plane + row..c * plane + row + n];
                    if geometry {
                        let col = f64::from(col);
                        for (pk, &gk) in p[..n].iter_mut().zip(g) {
                            *pk += f64::from(gk) * col;
                        }
                    }
                    if (group_start..group_end).contains(&c) {
                        let acc = &mut acc_col[c - group_start];
                        for (&vk, &gk) in v[..n].iter().zip(g) {
                            *acc += vk * f64::from(gk);
                        }
                    }
                }
                if geometry {
                    for k in 0..n {
                        let (dx, pv) = (dx[k], p[k] * v[k]);
                        let cross = rho * w3 * dx * dy;
                        acc_x += pv * (-w2 * dx + rho * w3 * dy);
                        acc_y += pv * (-w4 * dy + rho * w3 * dx);
                        acc_sx += pv * (cross - w2 * dx * dx);
                        acc_sy += pv * (cross - w4 * dy * dy);
                        acc_rho += pv * (2.0 * w1 * rho * q[k] + w3 * dx * dy);
                    }
                }
            }
        }
        for (g, &acc) in grad_token[GAUSSIAN_PARAMS + group_start..GAUSSIAN_PARAMS + group_end].iter_mut().zip(&acc_col)
        {
            *g = acc as f32;
        }
        if group_end >= channels {
            break;
        }
        group_start = group_end;
    }
    grad_token[SIGMA_X] = (2.0 * w1 / sx * acc_sx) as f32;
    grad_token[SIGMA_Y] = (2.0 * w1 / sy * acc_sy) as f32;
    grad_token[RHO] = (-2.0 * w1 * acc_rho) as f32;
    grad_token[MEAN_X] = (2.0 * w1 * acc_x) as f32;
    grad_token[MEAN_Y] = (2.0 * w1 * acc_y) as f32;
}

/// `exp(x)` for the backward, accurate to a few ulp of f64 and inlinable.
///
/// Why not `libm::exp`: it is an out-of-line call and took over half of the backward's time.
/// The backward only needs accuracy (f64 sums, rounded to f32 at the end) and determinism, not
/// bit-compatibility with anything, so a local version does. Cody-Waite reduction
/// `x = k ln2 + r`, `|r| <= ln2/2`, a degree-12 Taylor polynomial (truncation below 2e-16
/// relative), then scaling by `2^k` built from its bits. `x` is clamped to `[-708, 709]`
/// (results below 3.3e-308 or above 8.2e307 saturate there); NaN stays NaN.
#[inline]
pub(super) fn exp_f64(x: f64) -> f64 {
    // ln 2 split as in fdlibm: the high part has 11 trailing zero bits, so `k * LN2_HI` is exact.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
    let y = x.clamp(-708.0, 709.0);
    let kf = (y * core::f64::consts::LOG2_E + SHIFTER) - SHIFTER;
    let r = (y - kf * LN2_HI) - kf * LN2_LO;
    // 1/n! for n = 12 down to 1 (Horner), then the constant 1.
    const INV_FACT: [f64; 12] = [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        1.0 / 2.0,
        1.0,
    ];
    let mut p = INV_FACT[0];
    for &c in &INV_FACT[1..] {
        p = p * r + c;
    }
    p = p * r + 1.0;
    let scale = f64::from_bits(((kf as i64 + 1023) as u64) << 52);
    if x.is_nan() {
        x
    } else {
        p * scale
    }
}
