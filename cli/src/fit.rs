//! Training-free tokenization of one image (`gpstoken fit`).
//!
//! The initial Gaussians come from Algorithm 1 (or a uniform grid, for comparison); the RGB
//! features start at the region means. Then Adam minimises the MSE between the image and the
//! splat of the tokens at full image resolution. The Gaussian parameters are optimised through the
//! same sigmoid reparameterisation as the official encoder (spec 1): `sigma = sig(a)`,
//! `rho, x, y = 2 sig(b) - 1`, so sigmas stay in (0, 1) and means inside the canvas whatever the
//! step size. Everything but the splat runs on the host in a fixed order, so with the CPU backend
//! the same inputs give the same bits for any thread count.

use anyhow::{bail, Result};
use gpstoken_core::backend::SplatOps;
use gpstoken_core::metrics;
use gpstoken_core::partition::{self, PartitionParams, Region};
use gpstoken_core::render::SplatDesc;
use gpstoken_core::token::GAUSSIAN_PARAMS;
use std::time::Instant;

/// RGB tokens: three feature channels.
pub const CHANNELS: usize = 3;
const STRIDE: usize = GAUSSIAN_PARAMS + CHANNELS;

/// Where the initial Gaussians come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Init {
    /// Algorithm 1: dense where the image is complex.
    Adaptive,
    /// A uniform grid of (nearly) square cells.
    Grid,
}

impl Init {
    pub fn name(self) -> &'static str {
        match self {
            Init::Adaptive => "adaptive",
            Init::Grid => "grid",
        }
    }
}

/// Settings of one fit.
#[derive(Clone, Debug)]
pub struct FitOptions {
    pub tokens: usize,
    pub steps: usize,
    pub init: Init,
    /// Adam learning rate of the (reparameterised) Gaussian parameters.
    pub lr_gaussian: f32,
    /// Adam learning rate of the RGB features.
    pub lr_feature: f32,
    /// Algorithm 1's entropy exponent (2.5 in every config).
    pub weight: f64,
    /// Algorithm 1's minimum region side (8).
    pub min_size: usize,
    /// Splat support factor (3 in every config).
    pub kappa: f32,
}

impl FitOptions {
    pub fn new(tokens: usize, steps: usize, init: Init) -> FitOptions {
        FitOptions {
            tokens,
            steps,
            init,
            lr_gaussian: 0.05,
            lr_feature: 0.05,
            weight: 2.5,
            min_size: 8,
            kappa: gpstoken_core::token::DEFAULT_KAPPA,
        }
    }
}

/// What a fit produced.
#[derive(Clone, Debug)]
pub struct FitResult {
    /// Initial tokens `[N, 8]` (before any step).
    pub initial: Vec<f32>,
    /// Fitted tokens `[N, 8]`.
    pub tokens: Vec<f32>,
    /// The final render `[3, H, W]` in [-1, 1] (unclamped).
    pub recon: Vec<f32>,
    /// PSNR (dB, on [0,1], unclamped render) before each step, then after the last one.
    pub psnr_trace: Vec<f64>,
    /// Final PSNR and SSIM of the clamped render against the image, both on [0, 1].
    pub psnr: f64,
    pub ssim: f64,
    pub seconds: f64,
}

/// The uniform grid of `n` cells on a `width` x `height` image: `rows x cols = n` with the most
/// square factorisation (cols >= rows), cell edges at `floor(k * size / cols)`.
pub fn grid_regions(n: usize, width: usize, height: usize) -> Result<Vec<Region>> {
    let rows = (1..=n).take_while(|r| r * r <= n).filter(|r| n.is_multiple_of(*r)).max().unwrap_or(1);
    let cols = n / rows;
    // The longer side gets the larger count.
    let (rows, cols) = if width >= height { (rows, cols) } else { (cols, rows) };
    if cols > width || rows > height {
        bail!("a {rows}x{cols} grid of {n} tokens does not fit a {width}x{height} image");
    }
    let edge = |k: usize, size: usize, count: usize| k * size / count;
    let mut regions = Vec::with_capacity(n);
    for r in 0..rows {
        for c in 0..cols {
            regions.push(Region {
                y0: edge(r, height, rows) as u16,
                y1: (edge(r + 1, height, rows) - 1) as u16,
                x0: edge(c, width, cols) as u16,
                x1: (edge(c + 1, width, cols) - 1) as u16,
                score: 0.0,
            });
        }
    }
    Ok(regions)
}

/// The initial regions of a single-patch image, by Algorithm 1 or a grid.
pub fn initial_regions(
    pixels_hwc: &[f32],
    width: usize,
    height: usize,
    opts: &FitOptions,
    bias: Option<&[f32]>,
) -> Result<Vec<Region>> {
    if opts.tokens == 0 {
        bail!("--tokens must be at least 1");
    }
    if opts.tokens > width * height {
        bail!("--tokens {} is more than the {} pixels of the {width}x{height} image", opts.tokens, width * height);
    }
    match opts.init {
        Init::Grid => grid_regions(opts.tokens, width, height),
        Init::Adaptive => {
            let mut grey = vec![0.0f32; width * height];
            gpstoken_core::preprocess::grey(pixels_hwc, &mut grey);
            let params = PartitionParams { tokens: opts.tokens, weight: opts.weight, min_size: opts.min_size };
            let mut regions = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; opts.tokens];
            partition::partition_patch_with(
                &grey,
                width,
                height,
                &params,
                bias,
                &crate::partition_math(),
                &mut regions,
            )
            .map_err(|e| anyhow::anyhow!("Algorithm 1 failed: {e}"))?;
            Ok(regions)
        }
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Parameters of the official refinement reparameterisation (spec 1): logit(sigma) for the
/// sigmas, logit((v+1)/2) for rho, x, y.
fn to_logits(g: &[f32]) -> [f32; GAUSSIAN_PARAMS] {
    let mut z = [0.0; GAUSSIAN_PARAMS];
    for k in 0..2 {
        z[k] = -(1.0 / g[k] - 1.0).ln();
    }
    for k in 2..GAUSSIAN_PARAMS {
        z[k] = -(2.0 / (1.0 + g[k]) - 1.0).ln();
    }
    z
}

/// Adam (Kingma & Ba) on one parameter vector, with bias correction.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

impl Adam {
    fn new(len: usize) -> Adam {
        Adam { m: vec![0.0; len], v: vec![0.0; len] }
    }
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32, t: i32) {
        let c1 = 1.0 - BETA1.powi(t);
        let c2 = 1.0 - BETA2.powi(t);
        for i in 0..params.len() {
            let g = grads[i];
            self.m[i] = BETA1 * self.m[i] + (1.0 - BETA1) * g;
            self.v[i] = BETA2 * self.v[i] + (1.0 - BETA2) * g * g;
            let mh = self.m[i] / c1;
            let vh = self.v[i] / c2;
            params[i] -= lr * mh / (vh.sqrt() + EPS);
        }
    }
}

/// Fits `opts.tokens` RGB Gaussians to one image (`pixels_hwc`: `[H, W, 3]` in [-1, 1]).
/// `on_step(step, psnr)` is called before every step.
pub fn fit<B: SplatOps>(
    backend: &B,
    pixels_hwc: &[f32],
    width: usize,
    height: usize,
    opts: &FitOptions,
    bias: Option<&[f32]>,
    on_step: &mut dyn FnMut(usize, f64),
) -> Result<FitResult> {
    let start = Instant::now();
    let n = opts.tokens;
    let regions = initial_regions(pixels_hwc, width, height, opts, bias)?;
    let target = crate::imageio::hwc_to_chw(pixels_hwc, CHANNELS);
    let pixels = width * height;
    let desc = SplatDesc { batch: 1, gaussians: n, channels: CHANNELS, height, width, kappa: opts.kappa };
    let err = |e: B::Error| anyhow::anyhow!("{} backend: {e}", backend.name());

    // Initial Gaussians, features = 1 to measure how much each region is covered by the sum of
    // overlapping (unnormalised) Gaussians.
    let mut tokens = vec![0.0f32; n * STRIDE];
    for (t, r) in tokens.chunks_exact_mut(STRIDE).zip(&regions) {
        t[..GAUSSIAN_PARAMS].copy_from_slice(&partition::region_gaussian(r, width, height));
        t[GAUSSIAN_PARAMS..].fill(1.0);
    }
    let mut tokens_buf = backend.upload(&tokens).map_err(err)?;
    let mut out_buf = backend.zeros(desc.image_len()).map_err(err)?;
    let mut grad_out_buf = backend.zeros(desc.image_len()).map_err(err)?;
    let mut grad_tokens_buf = backend.zeros(desc.tokens_len()).map_err(err)?;
    let mut out = vec![0.0f32; desc.image_len()];
    let mut grad_out = vec![0.0f32; desc.image_len()];
    let mut grad_tokens = vec![0.0f32; desc.tokens_len()];
    backend.splat_forward(&desc, &tokens_buf, &mut out_buf).map_err(err)?;
    backend.download(&out_buf, &mut out).map_err(err)?;

    // Features: region mean colour divided by the region's mean coverage, so the first render
    // already has the right brightness.
    for (t, r) in tokens.chunks_exact_mut(STRIDE).zip(&regions) {
        let (mut sum, mut cover, mut count) = ([0.0f64; CHANNELS], 0.0f64, 0.0f64);
        for y in r.y0 as usize..=r.y1 as usize {
            for x in r.x0 as usize..=r.x1 as usize {
                for (c, s) in sum.iter_mut().enumerate() {
                    *s += f64::from(target[c * pixels + y * width + x]);
                }
                cover += f64::from(out[y * width + x]);
                count += 1.0;
            }
        }
        let cover = (cover / count).max(1e-3);
        for c in 0..CHANNELS {
            t[GAUSSIAN_PARAMS + c] = (sum[c] / count / cover) as f32;
        }
    }
    let initial = tokens.clone();

    // Optimised variables: logits of the Gaussian parameters, and the features.
    let mut logits: Vec<f32> = tokens.chunks_exact(STRIDE).flat_map(to_logits).collect();
    let mut features: Vec<f32> = tokens.chunks_exact(STRIDE).flat_map(|t| t[GAUSSIAN_PARAMS..].to_vec()).collect();
    let mut adam_g = Adam::new(logits.len());
    let mut adam_f = Adam::new(features.len());
    let mut grad_logits = vec![0.0f32; logits.len()];
    let mut grad_features = vec![0.0f32; features.len()];
    let mut psnr_trace = Vec::with_capacity(opts.steps + 1);
    let values = (CHANNELS * pixels) as f64;

    let render = |tokens: &mut Vec<f32>, logits: &[f32], features: &[f32]| {
        for (i, t) in tokens.chunks_exact_mut(STRIDE).enumerate() {
            let z = &logits[i * GAUSSIAN_PARAMS..(i + 1) * GAUSSIAN_PARAMS];
            t[0] = sigmoid(z[0]);
            t[1] = sigmoid(z[1]);
            for k in 2..GAUSSIAN_PARAMS {
                t[k] = 2.0 * sigmoid(z[k]) - 1.0;
            }
            t[GAUSSIAN_PARAMS..].copy_from_slice(&features[i * CHANNELS..(i + 1) * CHANNELS]);
        }
    };
    let psnr_of = |mse: f64| 10.0 * (4.0 / mse).log10(); // [-1,1] MSE -> [0,1] PSNR

    for step in 0..=opts.steps {
        render(&mut tokens, &logits, &features);
        backend.write(&mut tokens_buf, &tokens).map_err(err)?;
        backend.splat_forward(&desc, &tokens_buf, &mut out_buf).map_err(err)?;
        backend.download(&out_buf, &mut out).map_err(err)?;
        let mut sse = 0.0f64;
        for i in 0..out.len() {
            let r = out[i] - target[i];
            sse += f64::from(r) * f64::from(r);
            grad_out[i] = (2.0 * f64::from(r) / values) as f32;
        }
        let psnr = psnr_of(sse / values);
        psnr_trace.push(psnr);
        if step == opts.steps {
            break;
        }
        on_step(step, psnr);
        backend.write(&mut grad_out_buf, &grad_out).map_err(err)?;
        backend.splat_backward(&desc, &tokens_buf, &grad_out_buf, &mut grad_tokens_buf).map_err(err)?;
        backend.download(&grad_tokens_buf, &mut grad_tokens).map_err(err)?;
        // Chain rule through the reparameterisation: d sig/dz = s(1-s), d(2 sig - 1)/dz = 2 s(1-s).
        for i in 0..n {
            let g = &grad_tokens[i * STRIDE..(i + 1) * STRIDE];
            for k in 0..GAUSSIAN_PARAMS {
                let s = sigmoid(logits[i * GAUSSIAN_PARAMS + k]);
                let ds = if k < 2 { s * (1.0 - s) } else { 2.0 * s * (1.0 - s) };
                grad_logits[i * GAUSSIAN_PARAMS + k] = g[k] * ds;
            }
            grad_features[i * CHANNELS..(i + 1) * CHANNELS].copy_from_slice(&g[GAUSSIAN_PARAMS..]);
        }
        // Cosine decay to 10% of the learning rate: large moves first, fine polish at the end.
        let progress = step as f32 / opts.steps.max(1) as f32;
        let decay = 0.1 + 0.9 * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
        let t = step as i32 + 1;
        adam_g.step(&mut logits, &grad_logits, opts.lr_gaussian * decay, t);
        adam_f.step(&mut features, &grad_features, opts.lr_feature * decay, t);
    }

    // `out` holds the render of the final tokens (the last loop iteration).
    let recon01: Vec<f32> = out.iter().map(|&v| metrics::unit_from_signed(v)).collect();
    let target01: Vec<f32> = target.iter().map(|&v| metrics::unit_from_signed(v)).collect();
    let psnr = metrics::psnr(&recon01, &target01);
    let ssim = metrics::ssim(&recon01, &target01, CHANNELS, height, width).map_err(|e| anyhow::anyhow!("SSIM: {e}"))?;
    Ok(FitResult { initial, tokens, recon: out, psnr_trace, psnr, ssim, seconds: start.elapsed().as_secs_f64() })
}
