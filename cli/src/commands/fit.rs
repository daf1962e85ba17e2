//! `gpstoken fit`: training-free tokenization of one image (Adam on RGB Gaussians through the splat).

use anyhow::{bail, Context, Result};
use gpstoken_cli::backends::{with_backend, BackendSelection, BackendTask};
use gpstoken_cli::fit::{self, FitOptions, FitResult, Init};
use gpstoken_cli::imageio::{self, Framing};
use gpstoken_cli::outputs;
use gpstoken_cli::{json, viz};
use gpstoken_core::backend::Backend;
use gpstoken_core::gpst::{DType, Header};
use std::path::{Path, PathBuf};

pub const EXAMPLES: &str = "Examples:\n  gpstoken fit samples/astronaut.png --tokens 256 -o astronaut.gpst --recon recon.png\n  gpstoken fit samples/coffee.png --tokens 128 --init grid --steps 300 --json";

#[derive(clap::Args)]
pub struct Args {
    /// Input image (PNG or JPEG); its 256x256 centre crop is fitted.
    image: PathBuf,
    /// Number of Gaussians.
    #[arg(long)]
    tokens: usize,
    /// Optimisation steps.
    #[arg(long, default_value_t = 500)]
    steps: usize,
    /// Initial Gaussians: Algorithm 1 (adaptive) or a uniform grid.
    #[arg(long, value_enum, default_value = "adaptive")]
    init: Init,
    /// Learning rate of the Gaussian parameters (in logit space).
    #[arg(long, default_value_t = 0.05)]
    lr: f32,
    /// Learning rate of the RGB features.
    #[arg(long, default_value_t = 0.05)]
    lr_features: f32,
    /// Focus mask for the adaptive init (see `partition --focus`).
    #[arg(long, value_name = "MASK.png")]
    focus: Option<PathBuf>,
    /// Write the tokens to a .gpst file.
    #[arg(short = 'o', long = "output", value_name = "OUT.gpst")]
    output: Option<PathBuf>,
    /// Value type of the .gpst body.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    dtype: String,
    /// Write the reconstruction as PNG.
    #[arg(long, value_name = "OUT.png")]
    recon: Option<PathBuf>,
    /// Write a picture: initial Gaussians | fitted Gaussians | reconstruction.
    #[arg(long, value_name = "OUT.png")]
    viz: Option<PathBuf>,
    /// Side of the centre crop that is fitted (the official 256 by default; e.g. 64 to compare
    /// with the small trained model).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=4096))]
    size: u64,
    /// Print one JSON object with the result.
    #[arg(long)]
    json: bool,
}

/// The fit itself, with its progress bar (hidden with `--json`).
struct Fit<'a> {
    pixels: &'a [f32],
    width: usize,
    height: usize,
    opts: &'a FitOptions,
    bias: Option<&'a [f32]>,
    show_progress: bool,
}

impl BackendTask for Fit<'_> {
    type Output = FitResult;

    fn run<B: Backend>(self, be: &B) -> Result<FitResult> {
        let bar = indicatif::ProgressBar::new(self.opts.steps as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "fit {bar:30} {pos}/{len} steps  PSNR {msg} dB  {per_sec}  eta {eta}",
        ) {
            bar.set_style(style);
        }
        if !self.show_progress {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let result = fit::fit(be, self.pixels, self.width, self.height, self.opts, self.bias, &mut |step, psnr| {
            bar.set_position(step as u64);
            if step % 10 == 0 {
                bar.set_message(format!("{psnr:.2}"));
            }
        })?;
        bar.finish_and_clear();
        Ok(result)
    }
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { image, tokens, steps, init, lr, lr_features, focus, output, dtype, recon, viz, size, json } = args;
    let size = size as usize;
    let dtype = DType::parse(&dtype).context("--dtype must be f32, f16 or bf16")?;
    let inputs: Vec<&Path> = [Some(image.as_path()), focus.as_deref()].into_iter().flatten().collect();
    outputs::check(
        &inputs,
        &[("-o", output.as_deref()), ("--recon", recon.as_deref()), ("--viz", viz.as_deref())]
            .into_iter()
            .filter_map(|(flag, p)| Some((flag, p?)))
            .collect::<Vec<_>>(),
    )?;
    let photo = imageio::load_rgb8(&image)?;
    let framed = imageio::frame(&photo, Framing::CentreCrop, size)?;
    let bias = focus.map(|f| imageio::focus_bias(&f, &photo, Framing::CentreCrop, size, 60.0)).transpose()?;
    if !(lr.is_finite() && lr > 0.0 && lr_features.is_finite() && lr_features > 0.0) {
        bail!("learning rates must be positive numbers");
    }
    let pixels = imageio::to_unit(&framed);
    let mut opts = FitOptions::new(tokens, steps, init);
    opts.lr_gaussian = lr;
    opts.lr_feature = lr_features;
    let task = Fit {
        pixels: &pixels,
        width: framed.width,
        height: framed.height,
        opts: &opts,
        bias: bias.as_deref(),
        show_progress: !json,
    };
    let result = with_backend(backend, task)?;
    check_converged(&result)?;
    // Everything is encoded first, then written together: all outputs or none.
    let mut files: Vec<(&Path, Vec<u8>)> = Vec::new();
    if let Some(path) = &output {
        let header = Header {
            dtype,
            image_width: framed.width as u32,
            image_height: framed.height as u32,
            patch_width: size as u32,
            patch_height: size as u32,
            patches_x: 1,
            patches_y: 1,
            tokens_per_patch: tokens as u32,
            channels: fit::CHANNELS as u32,
            kappa: opts.kappa,
        };
        let bytes = gpstoken_core::gpst::to_bytes(&header, &result.tokens)
            .map_err(|e| anyhow::anyhow!("cannot encode the tokens: {e}"))?;
        files.push((path, bytes));
    }
    let recon_img = imageio::chw_unit_to_rgb8(&result.recon, framed.width, framed.height);
    if let Some(path) = &recon {
        files.push((path, imageio::png_bytes(&recon_img)?));
    }
    if let Some(path) = &viz {
        let stride = 5 + fit::CHANNELS;
        let before = viz::draw_gaussians(&framed, &result.initial, stride);
        let after = viz::draw_gaussians(&framed, &result.tokens, stride);
        let scale = before.width / framed.width;
        let pic = viz::side_by_side(&[&before, &after, &viz::upscale(&recon_img, scale)]);
        files.push((path, imageio::png_bytes(&pic)?));
    }
    outputs::write_all(&files.iter().map(|(p, b)| (*p, b.as_slice())).collect::<Vec<_>>())?;
    if json {
        outln!(
            "{{\"tokens\":{tokens},\"steps\":{steps},\"init\":{},\"psnr\":{},\"ssim\":{},\"seconds\":{}}}",
            json::string(init.name()),
            json::num(result.psnr),
            json::num(result.ssim),
            json::num(result.seconds)
        );
    } else {
        outln!(
            "{}: {tokens} Gaussians, {steps} steps, {} init: PSNR {:.2} dB (initial {:.2}), SSIM {:.4}, {:.1} s",
            image.display(),
            init.name(),
            result.psnr,
            result.psnr_trace[0],
            result.ssim,
            result.seconds
        );
    }
    Ok(())
}

/// A fit whose loss became NaN or infinite has nothing worth writing: report the divergence
/// (and the step it happened at) instead of a black image and `"psnr": null`.
fn check_converged(result: &FitResult) -> Result<()> {
    // PSNR is +inf for an exact fit; NaN means the loss itself was NaN or infinite.
    let diverged_at = result.psnr_trace.iter().position(|p| p.is_nan());
    if let Some(i) = result.tokens.iter().position(|v| !v.is_finite()) {
        bail!(
            "the fit diverged: token {} is not finite{}; try a smaller --lr or --lr-features",
            i / (5 + fit::CHANNELS),
            diverged_at.map_or(String::new(), |s| format!(" (PSNR not finite from step {s})"))
        );
    }
    if result.psnr.is_nan() || result.recon.iter().any(|v| !v.is_finite()) || diverged_at.is_some() {
        bail!(
            "the fit diverged: the reconstruction is not finite{}; try a smaller --lr or --lr-features",
            diverged_at.map_or(String::new(), |s| format!(" (PSNR not finite from step {s})"))
        );
    }
    Ok(())
}
