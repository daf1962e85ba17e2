//! A line-by-line port of the official brute-force splatting kernels (`gscuda/gs.cu`), on one
//! image, single-threaded. It is the reference the fast paths must match (the forward bit for
//! bit) and the baseline the benchmarks beat.
//!
//! Written independently of `gpstoken_core::render` (only the shape types are shared), so that a
//! bit-identical result really checks the fast path's precomputations and pixel ranges.
//! C's implicit promotions are spelled out: `1.0 / float` and `2.0*j/(w-1)` are evaluated in
//! f64 and rounded to f32 on assignment; `dmax*sigma` and everything else is f32; no FMA.
//! `exp` on a float is the core's [`expf`] (`libm::expf`; CUDA's `expf` differs by up to 2 ulp).
//!
//! Layouts follow the rest of the crate: tokens `[N, 5+C]`, feature maps `[C, H, W]` (gs.cu's
//! `[H, W, C]` buffer is permuted to CHW by its caller; the per-value arithmetic is unchanged).

use gpstoken_core::render::{expf, ShapeError, SplatDesc};

/// `float curw_f = 2.0*curw/(w-1) - 1.0;`
fn grid(index: usize, size: usize) -> f32 {
    (2.0 * index as f64 / (size as f64 - 1.0) - 1.0) as f32
}

/// C's `1.0 / x` with a float `x`, assigned to a float.
fn recip(x: f32) -> f32 {
    (1.0 / f64::from(x)) as f32
}

fn check(desc: &SplatDesc, tokens: usize, image: usize) -> Result<(), ShapeError> {
    SplatDesc { batch: 1, ..*desc }.check(tokens, image)
}

/// `_gs_render_cuda`: every pixel loops over every Gaussian in index order. `out` `[C, H, W]`
/// is overwritten. `desc.batch` is ignored (one image).
pub fn splat_forward_brute(desc: &SplatDesc, tokens: &[f32], out: &mut [f32]) -> Result<(), ShapeError> {
    splat_forward_brute_with(desc, tokens, out, expf)
}

/// [`splat_forward_brute`] with another float `exp`. With a correctly rounded one (e.g.
/// `|x| f64::from(x).exp() as f32`) it reproduces the golden `out_f32` (gs.cu compiled on a CPU
/// without FMA) bit for bit.
pub fn splat_forward_brute_with(
    desc: &SplatDesc,
    tokens: &[f32],
    out: &mut [f32],
    expf: impl Fn(f32) -> f32,
) -> Result<(), ShapeError> {
    check(desc, tokens.len(), out.len())?;
    let (h, w, c, s) = (desc.height, desc.width, desc.channels, desc.gaussians);
    let stride = desc.token_stride();
    let dmax = desc.kappa;
    out.fill(0.0);
    for curh in 0..h {
        for curw in 0..w {
            let curw_f = grid(curw, w);
            let curh_f = grid(curh, h);
            for si in 0..s {
                let tok = &tokens[si * stride..(si + 1) * stride];
                let (sigma_x, sigma_y, rho, x, y) = (tok[0], tok[1], tok[2], tok[3], tok[4]);
                let one_div_one_minus_rho2 = recip(1.0 - rho * rho);
                let one_div_sigma_x = recip(sigma_x);
                let one_div_sigma_y = recip(sigma_y);
                let d_x = curw_f - x;
                let d_y = curh_f - y;
                if d_x > dmax * sigma_x || d_x < -dmax * sigma_x || d_y > dmax * sigma_y || d_y < -dmax * sigma_y {
                    continue;
                }
                let mut v = one_div_sigma_x * one_div_sigma_x * d_x * d_x;
                v -= 2.0 * rho * d_x * d_y * one_div_sigma_x * one_div_sigma_y;
                v += d_y * d_y * one_div_sigma_y * one_div_sigma_y;
                // `v *= -r / 2.0;` is a double multiplication rounded to float.
                v = (f64::from(v) * (f64::from(-one_div_one_minus_rho2) / 2.0)) as f32;
                let v = expf(v);
                for ci in 0..c {
                    out[(ci * h + curh) * w + curw] += v * tok[5 + ci];
                }
            }
        }
    }
    Ok(())
}

/// `_gs_render_backward_cuda` for Gaussian `curs`: loops over every pixel of the canvas (rows,
/// then columns, then channels) with f32 accumulators, in gs.cu's order. `grad_token` (`5+C`
/// values: sigma_x, sigma_y, rho, x, y, features) is overwritten.
pub fn splat_backward_brute_gaussian(
    desc: &SplatDesc,
    tokens: &[f32],
    curs: usize,
    grad_out: &[f32],
    grad_token: &mut [f32],
) -> Result<(), ShapeError> {
    backward_gaussian(desc, tokens, curs, grad_out, grad_token, &expf)
}

fn backward_gaussian(
    desc: &SplatDesc,
    tokens: &[f32],
    curs: usize,
    grad_out: &[f32],
    grad_token: &mut [f32],
    expf: &impl Fn(f32) -> f32,
) -> Result<(), ShapeError> {
    check(desc, tokens.len(), grad_out.len())?;
    let stride = desc.token_stride();
    if curs >= desc.gaussians || grad_token.len() != stride {
        return Err(ShapeError::Length { what: "token gradient", expected: stride, got: grad_token.len() });
    }
    let (h, w, c) = (desc.height, desc.width, desc.channels);
    let dmax = desc.kappa;
    let tok = &tokens[curs * stride..(curs + 1) * stride];
    let (sigma_x, sigma_y, rho, x, y) = (tok[0], tok[1], tok[2], tok[3], tok[4]);
    let colors = &tok[5..];
    let w1 = (-0.5 / f64::from(1.0 - rho * rho)) as f32;
    let w2 = recip(sigma_x * sigma_x);
    let w3 = recip(sigma_x * sigma_y);
    let w4 = recip(sigma_y * sigma_y);
    let od_sx = recip(sigma_x);
    let od_sy = recip(sigma_y);
    let (mut g_sx, mut g_sy, mut g_rho, mut g_x, mut g_y) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
    let grad_colors = &mut grad_token[5..];
    grad_colors.fill(0.0);
    for hi in 0..h {
        for wi in 0..w {
            let curw_f = grid(wi, w);
            let curh_f = grid(hi, h);
            let d_x = curw_f - x;
            let d_y = curh_f - y;
            if d_x > dmax * sigma_x || d_x < -dmax * sigma_x || d_y > dmax * sigma_y || d_y < -dmax * sigma_y {
                continue;
            }
            let d = w2 * d_x * d_x - 2.0 * rho * w3 * d_x * d_y + w4 * d_y * d_y;
            let v = expf(w1 * d);
            let v_2_w1 = v * 2.0 * w1;
            let g_vst_to_gsx = v_2_w1 * (-w2 * d_x + rho * w3 * d_y);
            let g_vst_to_gsy = v_2_w1 * (-w4 * d_y + rho * w3 * d_x);
            let g_vst_to_gsigx = v_2_w1 * od_sx * (w3 * rho * d_x * d_y - w2 * d_x * d_x);
            let g_vst_to_gsigy = v_2_w1 * od_sy * (w3 * rho * d_x * d_y - w4 * d_y * d_y);
            let g_vst_to_rho = -v_2_w1 * (2.0 * w1 * rho * d + w3 * d_x * d_y);
            for ci in 0..c {
                let gptc = grad_out[(ci * h + hi) * w + wi];
                let gpt = gptc * colors[ci];
                grad_colors[ci] += v * gptc;
                g_x += gpt * g_vst_to_gsx;
                g_y += gpt * g_vst_to_gsy;
                g_sx += gpt * g_vst_to_gsigx;
                g_sy += gpt * g_vst_to_gsigy;
                g_rho += gpt * g_vst_to_rho;
            }
        }
    }
    grad_token[..5].copy_from_slice(&[g_sx, g_sy, g_rho, g_x, g_y]);
    Ok(())
}

/// `_gs_render_backward_cuda` for every Gaussian of one image (`grad_tokens` `[N, 5+C]`,
/// overwritten), one after the other.
pub fn splat_backward_brute(
    desc: &SplatDesc,
    tokens: &[f32],
    grad_out: &[f32],
    grad_tokens: &mut [f32],
) -> Result<(), ShapeError> {
    splat_backward_brute_with(desc, tokens, grad_out, grad_tokens, expf)
}

/// [`splat_backward_brute`] with another float `exp` (see [`splat_forward_brute_with`]): with a
/// correctly rounded one it reproduces the golden `grad_*_f32` bit for bit.
pub fn splat_backward_brute_with(
    desc: &SplatDesc,
    tokens: &[f32],
    grad_out: &[f32],
    grad_tokens: &mut [f32],
    expf: impl Fn(f32) -> f32,
) -> Result<(), ShapeError> {
    check(desc, tokens.len(), grad_out.len())?;
    if grad_tokens.len() != tokens.len() {
        return Err(ShapeError::Length { what: "token gradients", expected: tokens.len(), got: grad_tokens.len() });
    }
    for (s, grad) in grad_tokens.chunks_exact_mut(desc.token_stride()).enumerate() {
        backward_gaussian(desc, tokens, s, grad_out, grad, &expf)?;
    }
    Ok(())
}
