//! `gpstoken`: turn images into 2D Gaussian tokens and back.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gpstoken_cli::backends::{self, BackendKind};
use gpstoken_cli::fit::{self, FitOptions, Init};
use gpstoken_cli::imageio::{self, Framing};
use gpstoken_cli::{json, model_io, plot, train, viz};
use gpstoken_core::backend::{Buffers, SplatOps};
use gpstoken_core::gpst::{self, DType, Header};
use gpstoken_core::model::ModelConfig;
use gpstoken_core::partition::{self, PartitionParams};
use gpstoken_core::render::{self, SplatDesc};
use std::path::PathBuf;
use std::process::ExitCode;

/// `println!` that never panics: a closed pipe (`gpstoken ... | head`) ends the program quietly,
/// any other write error is an error.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(anyhow::anyhow!("cannot write to standard output: {e}"));
        }
    }};
}

/// The patch size of every official config: Algorithm 1 and the encoder work on 256² tiles.
const PATCH: usize = 256;

const EXAMPLES: &str = "\
Examples:
  gpstoken partition samples/astronaut.png --tokens 128 --viz partition.png
  gpstoken partition photo.jpg --tokens 256 --json > init.json
  gpstoken fit samples/astronaut.png --tokens 256 --steps 500 -o astronaut.gpst --recon recon.png --viz fit.png
  gpstoken render astronaut.gpst -o render.png --size 512x512
  gpstoken train --config tiny64 --data ../shared/data/train --eval ../shared/data/eval --steps 2000 --out runs/a
  gpstoken reconstruct samples/coffee.png -o recon.png --viz gaussians.png
  gpstoken eval --data ../shared/data/eval --tokens 64 --json
  gpstoken info --json";

#[derive(Parser)]
#[command(
    name = "gpstoken",
    version,
    about = "GPSToken: images as a few hundred 2D Gaussian tokens",
    long_about = "GPSToken: images as a few hundred 2D Gaussian tokens [sigma_x, sigma_y, rho, x, y] + features.\n\
                  Algorithm 1 places Gaussians densely where the image is complex; the splatting renderer \
                  turns tokens back into pixels.",
    after_help = EXAMPLES
)]
struct Cli {
    /// Device for tensor work. `cpu` is bit-reproducible for any thread count.
    #[arg(long, global = true, value_enum, default_value = "cpu")]
    backend: BackendKind,
    /// CPU worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Algorithm 1 (entropy-driven partition) and print the initial Gaussians and RoI boxes.
    #[command(
        after_help = "Examples:\n  gpstoken partition samples/coffee.png --tokens 128 --viz regions.png\n  gpstoken partition samples/coffee.png --tokens 64 --focus mask.png --json"
    )]
    Partition {
        /// Input image (PNG or JPEG).
        image: PathBuf,
        /// Gaussians per 256x256 patch (N).
        #[arg(long)]
        tokens: usize,
        /// Entropy exponent of the complexity metric (gps_adaptive_w).
        #[arg(long, default_value_t = 2.5)]
        weight: f64,
        /// Regions whose sides are both <= min-size+1 pixels are not split (minhw).
        #[arg(long, default_value_t = 8)]
        min_size: usize,
        /// Focus mask, same size as the image: pixels with luma >= 128 get denser Gaussians (cdbias).
        #[arg(long, value_name = "MASK.png")]
        focus: Option<PathBuf>,
        /// Bias added per focus pixel to the complexity score (entropy^2.5 is about 50-90 per pixel).
        #[arg(long, default_value_t = 60.0)]
        focus_strength: f32,
        /// Keep the whole image, cut into 256x256 patches, instead of the 256x256 centre crop.
        #[arg(long)]
        full: bool,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Draw the regions and 1-sigma Gaussian ellipses over the image.
        #[arg(long, value_name = "OUT.png")]
        viz: Option<PathBuf>,
    },
    /// Tokenize one image without a model: Adam on the Gaussians and RGB features through the splat.
    #[command(
        after_help = "Examples:\n  gpstoken fit samples/astronaut.png --tokens 256 -o astronaut.gpst --recon recon.png\n  gpstoken fit samples/coffee.png --tokens 128 --init grid --steps 300 --json"
    )]
    Fit {
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
    },
    /// Render RGB tokens (from `gpstoken fit`) to a PNG.
    #[command(after_help = "Example:\n  gpstoken render astronaut.gpst -o render.png --size 512x512")]
    Render {
        /// Token file.
        tokens: PathBuf,
        /// Output PNG.
        #[arg(short = 'o', long = "output", value_name = "OUT.png")]
        output: PathBuf,
        /// Canvas size (default: the size of the image the tokens describe).
        #[arg(long, value_name = "WxH", value_parser = parse_size)]
        size: Option<(usize, usize)>,
    },
    /// Version and the backends compiled in and usable here; with --config, a model config's sizes.
    #[command(after_help = "Examples:\n  gpstoken info --json\n  gpstoken info --config tiny64 --json")]
    Info {
        /// Describe this model config (a built-in name or an official yaml file) instead.
        #[arg(long, value_name = "NAME|FILE")]
        config: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Train the tokenizer (L2 loss, Adam, EMA; optional adversarial stage) on a folder of photos.
    #[command(after_help = TRAIN_HELP)]
    Train {
        #[command(flatten)]
        opts: train::TrainOptions,
    },
    /// Encode an image into learned tokens (.gpst with the config's feature channels).
    #[command(after_help = "Example:\n  gpstoken encode photo.png -o photo.gpst --tokens 32")]
    Encode {
        /// Input image; its square centre crop (see --size) is encoded.
        image: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        crop: CropArgs,
        /// Output token file.
        #[arg(short = 'o', long = "output", value_name = "OUT.gpst")]
        output: PathBuf,
    },
    /// Decode learned tokens (.gpst from `encode`) to an image with the model's renderer and decoder.
    Decode {
        /// Token file from `gpstoken encode`.
        #[arg(value_name = "TOKENS.gpst")]
        token_file: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Output PNG.
        #[arg(short = 'o', long = "output", value_name = "OUT.png")]
        output: PathBuf,
    },
    /// Encode and decode an image with a trained model; prints PSNR and SSIM.
    #[command(
        after_help = "Examples:\n  gpstoken reconstruct samples/coffee.png -o recon.png\n  gpstoken reconstruct photo.jpg --tokens 64 -o recon.png --viz gaussians.png --json"
    )]
    Reconstruct {
        /// Input image; its square centre crop (see --size) is reconstructed.
        image: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        crop: CropArgs,
        /// Output PNG (the reconstruction).
        #[arg(short = 'o', long = "output", value_name = "OUT.png")]
        output: PathBuf,
        /// Write a picture: input with initial Gaussians | refined Gaussians | reconstruction.
        #[arg(long, value_name = "OUT.png")]
        viz: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the weights of a training checkpoint (raw, or EMA with --ema) as a weights-only file.
    #[command(
        after_help = "Example:\n  gpstoken export runs/a/checkpoint.safetensors --ema -o models/tiny64.safetensors"
    )]
    Export {
        /// Training checkpoint (or weights file).
        checkpoint: PathBuf,
        /// Export the EMA weights.
        #[arg(long)]
        ema: bool,
        /// Output weights file.
        #[arg(short = 'o', long = "output", value_name = "OUT.safetensors")]
        output: PathBuf,
    },
    /// Plot training curves of `train` logs: running mean of the training PSNR (lines) and eval PSNR (dots).
    #[command(after_help = "Example:\n  gpstoken plot runs/adaptive/log.jsonl runs/grid/log.jsonl -o curves.png")]
    Plot {
        /// log.jsonl files; colours in order: blue, orange, green, red.
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// Running-mean window of the training PSNR, in steps.
        #[arg(long, default_value_t = 50)]
        window: usize,
        /// Output PNG.
        #[arg(short = 'o', long = "output", value_name = "OUT.png")]
        output: PathBuf,
    },
    /// Mean PSNR and SSIM of a trained model on a folder (square centre crops, 256x256 by default).
    #[command(
        after_help = "Examples:\n  gpstoken eval --data ../shared/data/eval --json\n  gpstoken eval --data ../shared/data/eval --tokens 64 --size 64 --json"
    )]
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        /// Side of the square centre crop: a multiple of the model's patch size S, cut into patches
        /// of S with --tokens tokens each, decoded as --multi-patch says (spec 2.4 / 3.6)
        /// [default: 256 when S divides it (the official crop), else S].
        #[arg(long, value_name = "PIXELS")]
        size: Option<usize>,
        /// Evaluation photos (PNG/JPEG, searched recursively).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Images per forward pass.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Also score the most complex and the flattest quarter of 8x8 blocks (ranked by
        /// Algorithm 1's complexity) separately: PSNR, and on the complex quarter the detail kept
        /// (gradient energy of the reconstruction / of the photo).
        #[arg(long)]
        by_complexity: bool,
        /// Also print one line per image (JSON with --json).
        #[arg(long)]
        per_image: bool,
        /// Print JSON: one object (after the per-image lines with --per-image).
        #[arg(long)]
        json: bool,
    },
}

/// Which part of the photo the model sees (encode, reconstruct).
#[derive(clap::Args)]
struct CropArgs {
    /// Side of the square centre crop: a multiple of the model's patch size S, cut into patches
    /// of S with --tokens tokens each, decoded as --multi-patch says (spec 2.4 / 3.6)
    /// [default: 256 when S divides it (the official crop), else S].
    #[arg(long, value_name = "PIXELS")]
    size: Option<usize>,
    /// Focus mask for Algorithm 1 (see `partition --focus`). Every patch keeps its N tokens, so
    /// the mask moves tokens inside each patch, towards the masked part.
    #[arg(long, value_name = "MASK.png")]
    focus: Option<PathBuf>,
}

/// Which trained model to run and how.
#[derive(clap::Args)]
struct ModelArgs {
    /// Weights file or training checkpoint [default: $GPSTOKEN_MODEL, else models/tiny64.safetensors of the repository].
    #[arg(long, value_name = "CKPT")]
    model: Option<PathBuf>,
    /// Config of the model when the file does not name one (files written by `train` do).
    #[arg(long, value_name = "NAME|FILE")]
    config: Option<String>,
    /// Use the EMA weights of a training checkpoint.
    #[arg(long)]
    ema: bool,
    /// Tokens per patch (default: the config's gps_num; any N Algorithm 1 can make works without retraining).
    #[arg(long)]
    tokens: Option<usize>,
    /// Initial Gaussians: Algorithm 1 (adaptive) or a uniform grid.
    #[arg(long, value_enum, default_value = "adaptive")]
    init: Init,
    /// How crops of several patches (--size above the patch size) are decoded [default: merged
    /// for s64 and m128 as the official code does, tiled for every other config].
    #[arg(long, value_enum)]
    multi_patch: Option<model_io::MultiPatch>,
}

const TRAIN_HELP: &str = "\
Examples:
  gpstoken train --config tiny64 --data ../shared/data/train --eval ../shared/data/eval --steps 2000 --out runs/a
  gpstoken train --data photos --steps 4000 --out runs/a --resume      # continue (settings come from the checkpoint)
  gpstoken train --config tiny64 --data photos --init grid --out runs/grid

Data: photos are read recursively (PNG/JPEG; unreadable ones are skipped with a warning and counted).
Each sample: a random square crop of random side between the image size and the photo's shorter side,
resized to the image size (scale jitter), a horizontal flip with p = 0.5, then Algorithm 1.
Batches depend only on --seed and the step, so --resume continues bit-exactly.

Adversarial stage (optional): --disc-start S adds taming's PatchGAN discriminator from the 0-based step S
(log step S+1): hinge loss, its own Adam, odd steps after S train the discriminator, the others the
tokenizer with mse + d_weight * (-mean D(x)), d_weight adaptive (see docs/TRAINING.md). The perceptual
losses (LPIPS, Inception) are not implemented.";

/// The weights and config of `--model` (or the default model), and its path.
fn open_model(args: &ModelArgs) -> Result<(Vec<u8>, ModelConfig, PathBuf)> {
    let path = match &args.model {
        Some(p) => p.clone(),
        None => model_io::default_model_path()?,
    };
    let which = if args.ema { model_io::Which::Ema } else { model_io::Which::Raw };
    let (weights, cfg) = model_io::read_model(&path, which, args.config.as_deref())?;
    Ok((weights, cfg, path))
}

/// Loads `--model` (or the default model) with the token override, ready for `batch` crops of
/// side `size` (`None`: see [`model_io::crop_side`]).
fn load_runner(
    be: &gpstoken_backend_cpu::CpuBackend,
    args: &ModelArgs,
    batch: usize,
    size: Option<usize>,
) -> Result<(model_io::Runner, PathBuf)> {
    let (weights, cfg, path) = open_model(args)?;
    runner_for(be, args, batch, size, &weights, &cfg, path)
}

/// [`load_runner`] for an opened model.
fn runner_for(
    be: &gpstoken_backend_cpu::CpuBackend,
    args: &ModelArgs,
    batch: usize,
    size: Option<usize>,
    weights: &[u8],
    cfg: &ModelConfig,
    path: PathBuf,
) -> Result<(model_io::Runner, PathBuf)> {
    let side = model_io::crop_side(size, cfg.image_size)?;
    let model = model_io::build_model(be, cfg, args.tokens, weights, &format!("model '{}'", path.display()))?;
    let mode = args.multi_patch.unwrap_or(model_io::MultiPatch::default_for(cfg));
    Ok((model_io::Runner::new(be, model, batch, side / cfg.image_size, mode, args.init)?, path))
}

/// One crop through the model, with an optional focus mask (cdbias) for Algorithm 1.
fn run_one(
    be: &gpstoken_backend_cpu::CpuBackend,
    runner: &mut model_io::Runner,
    crop: &imageio::Rgb8,
    photo: &imageio::Rgb8,
    focus: Option<&std::path::Path>,
) -> Result<model_io::Output> {
    if let Some(f) = focus {
        let bias = imageio::focus_bias(f, photo, Framing::CentreCrop, runner.crop_size(), 60.0)?;
        runner.bias = Some(bias);
    }
    let mut outs = runner.run(be, &[crop])?;
    outs.pop().context("internal error: no output")
}

/// The `--by-complexity` fields of a JSON object, with a leading comma.
fn strata_json(s: &gpstoken_cli::strata::Strata) -> String {
    format!(
        ",\"rich_psnr\":{},\"flat_psnr\":{},\"rich_detail\":{}",
        json::num(s.rich_psnr),
        json::num(s.flat_psnr),
        json::num(s.rich_detail)
    )
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("'{s}' is not WxH (e.g. 512x512)"))?;
    let w: usize = w.parse().map_err(|_| format!("bad width in '{s}'"))?;
    let h: usize = h.parse().map_err(|_| format!("bad height in '{s}'"))?;
    if !(2..=16384).contains(&w) || !(2..=16384).contains(&h) {
        return Err(format!("size {w}x{h} must be between 2x2 and 16384x16384"));
    }
    Ok((w, h))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpstoken: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Partition { image, tokens, weight, min_size, focus, focus_strength, full, json, viz } => {
            let framing = if full { Framing::Full } else { Framing::CentreCrop };
            let photo = imageio::load_rgb8(&image)?;
            let framed = imageio::frame(&photo, framing, PATCH)?;
            let bias = focus.map(|f| imageio::focus_bias(&f, &photo, framing, PATCH, focus_strength)).transpose()?;
            if tokens == 0 {
                bail!("--tokens must be at least 1");
            }
            if !(weight.is_finite() && weight > 0.0) {
                bail!("--weight must be a positive number, got {weight}");
            }
            let pixels = imageio::to_unit(&framed);
            let mut grey = vec![0.0f32; framed.width * framed.height];
            gpstoken_core::preprocess::grey(&pixels, &mut grey);
            let params = PartitionParams { tokens, weight, min_size };
            let math = gpstoken_cli::partition_math();
            let part = partition::partition_image_with(
                &grey,
                framed.width,
                framed.height,
                PATCH,
                &params,
                bias.as_deref(),
                &math,
            )
            .map_err(|e| anyhow::anyhow!("Algorithm 1 failed: {e}"))?;
            if let Some(path) = &viz {
                let pic = viz::draw_partition(&framed, PATCH, tokens, &part.regions, &part.gaussians);
                imageio::save_png(path, &pic)?;
            }
            if json {
                outln!(
                    "{{\"width\":{},\"height\":{},\"patch\":{PATCH},\"tokens\":{tokens},\"gaussians\":{},\"boxes\":{}}}",
                    framed.width,
                    framed.height,
                    json::rows(&part.gaussians),
                    json::rows(&part.boxes)
                );
            } else {
                outln!(
                    "{}: {}x{} canvas, {} patch(es) of {PATCH}x{PATCH}, {tokens} Gaussians per patch",
                    image.display(),
                    framed.width,
                    framed.height,
                    part.patches_x * part.patches_y
                );
                outln!(
                    "{:>5} {:>5} {:>11} {:>11} {:>4} {:>11} {:>11}   {:>9} {:>9} {:>9} {:>9}   pixels (x0..x1, y0..y1)",
                    "patch",
                    "token",
                    "sigma_x",
                    "sigma_y",
                    "rho",
                    "x",
                    "y",
                    "box_x0",
                    "box_y0",
                    "box_x1",
                    "box_y1"
                );
                for (i, ((g, b), r)) in part.gaussians.iter().zip(&part.boxes).zip(&part.regions).enumerate() {
                    outln!(
                        "{:>5} {:>5} {:>11.7} {:>11.7} {:>4} {:>11.7} {:>11.7}   {:>9.5} {:>9.5} {:>9.5} {:>9.5}   {}..{}, {}..{}",
                        i / tokens, i % tokens, g[0], g[1], g[2], g[3], g[4], b[0], b[1], b[2], b[3], r.x0, r.x1, r.y0, r.y1
                    );
                }
            }
            Ok(())
        }
        Command::Fit { image, tokens, steps, init, lr, lr_features, focus, output, dtype, recon, viz, size, json } => {
            let size = size as usize;
            let dtype = DType::parse(&dtype).context("--dtype must be f32, f16 or bf16")?;
            let photo = imageio::load_rgb8(&image)?;
            let framed = imageio::frame(&photo, Framing::CentreCrop, size)?;
            let bias = focus.map(|f| imageio::focus_bias(&f, &photo, Framing::CentreCrop, size, 60.0)).transpose()?;
            if !(lr.is_finite() && lr > 0.0 && lr_features.is_finite() && lr_features > 0.0) {
                bail!("learning rates must be positive numbers");
            }
            let backend = backends::cpu(cli.backend, cli.threads)?;
            let pixels = imageio::to_unit(&framed);
            let mut opts = FitOptions::new(tokens, steps, init);
            opts.lr_gaussian = lr;
            opts.lr_feature = lr_features;
            let bar = indicatif::ProgressBar::new(steps as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "fit {bar:30} {pos}/{len} steps  PSNR {msg} dB  {per_sec}  eta {eta}",
                )
                .expect("valid template"),
            );
            if json {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let result =
                fit::fit(&backend, &pixels, framed.width, framed.height, &opts, bias.as_deref(), &mut |step, psnr| {
                    bar.set_position(step as u64);
                    if step % 10 == 0 {
                        bar.set_message(format!("{psnr:.2}"));
                    }
                })?;
            bar.finish_and_clear();
            if let Some(path) = &output {
                let header = Header {
                    dtype,
                    image_width: framed.width as u32,
                    image_height: framed.height as u32,
                    patch_size: size as u32,
                    patches_x: 1,
                    patches_y: 1,
                    tokens_per_patch: tokens as u32,
                    channels: fit::CHANNELS as u32,
                    kappa: opts.kappa,
                };
                let bytes = gpst::to_bytes(&header, &result.tokens)
                    .map_err(|e| anyhow::anyhow!("cannot encode tokens: {e}"))?;
                imageio::write_atomically(path, &bytes)?;
            }
            let recon_img = imageio::chw_unit_to_rgb8(&result.recon, framed.width, framed.height);
            if let Some(path) = &recon {
                imageio::save_png(path, &recon_img)?;
            }
            if let Some(path) = &viz {
                let stride = 5 + fit::CHANNELS;
                let before = viz::draw_gaussians(&framed, &result.initial, stride);
                let after = viz::draw_gaussians(&framed, &result.tokens, stride);
                let scale = before.width / framed.width;
                let pic = viz::side_by_side(&[&before, &after, &viz::upscale(&recon_img, scale)]);
                imageio::save_png(path, &pic)?;
            }
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
        Command::Render { tokens, output, size } => {
            let bytes =
                std::fs::read(&tokens).with_context(|| format!("cannot read token file '{}'", tokens.display()))?;
            let (header, values) = gpst::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("'{}' is not a valid .gpst file: {e}", tokens.display()))?;
            if header.channels != 3 {
                bail!(
                    "'{}' has {} feature channels; only RGB tokens (3 channels, from `gpstoken fit`) can be rendered without a decoder model",
                    tokens.display(),
                    header.channels
                );
            }
            let backend = backends::cpu(cli.backend, cli.threads)?;
            let (px, py) = (header.patches_x as usize, header.patches_y as usize);
            let n = header.tokens_per_patch as usize;
            let merged = if px == 1 && py == 1 {
                values
            } else {
                let mut merged = vec![0.0f32; values.len()];
                render::merge_patches(px, py, n, 3, &values, &mut merged)
                    .map_err(|e| anyhow::anyhow!("cannot merge patches: {e}"))?;
                merged
            };
            let (width, height) = size.unwrap_or((header.image_width as usize, header.image_height as usize));
            let desc = SplatDesc { batch: 1, gaussians: px * py * n, channels: 3, height, width, kappa: header.kappa };
            let err = |e| anyhow::anyhow!("cpu backend: {e}");
            let tokens_buf = backend.upload(&merged).map_err(err)?;
            let mut out_buf = backend.zeros(desc.image_len()).map_err(err)?;
            backend.splat_forward(&desc, &tokens_buf, &mut out_buf).map_err(err)?;
            let mut out = vec![0.0f32; desc.image_len()];
            backend.download(&out_buf, &mut out).map_err(err)?;
            imageio::save_png(&output, &imageio::chw_unit_to_rgb8(&out, width, height))?;
            Ok(())
        }
        Command::Info { config: Some(name), json } => {
            let cfg = gpstoken_cli::config::load_config(&name)?;
            let params = cfg.parameter_count().map_err(|e| anyhow::anyhow!("{e}"))?;
            let g = &cfg.gps;
            if json {
                outln!(
                    "{{\"config\":{},\"params\":{params},\"tokens\":{},\"image_size\":{},\"channels\":{},\"encoder_blocks\":{},\"encoder_width\":{},\"render_size\":[{},{}],\"decoder_ch\":{},\"decoder_ch_mult\":[{}]}}",
                    json::string(&cfg.name),
                    g.gps_num,
                    cfg.image_size,
                    g.gps_c,
                    g.gpsenc_n,
                    g.gpsenc_c,
                    g.gps_rs.0,
                    g.gps_rs.1,
                    cfg.decoder.ch,
                    cfg.decoder.ch_mult.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")
                );
            } else {
                outln!("config {}: {params} parameters", cfg.name);
                outln!(
                    "  tokens per patch {} ({} feature channels), image size {}",
                    g.gps_num,
                    g.gps_c,
                    cfg.image_size
                );
                outln!("  encoder {} blocks of width {}, render {}x{}", g.gpsenc_n, g.gpsenc_c, g.gps_rs.0, g.gps_rs.1);
                outln!("  decoder ch {} mult {:?}", cfg.decoder.ch, cfg.decoder.ch_mult);
            }
            Ok(())
        }
        Command::Train { mut opts } => {
            opts.backend = cli.backend;
            opts.threads = cli.threads;
            let s = train::train(&opts)?;
            outln!(
                "trained steps {}..{} in {:.1} s ({:.2} images/s), last loss {:.5}; run folder {}",
                s.last_step - s.steps_run + 1,
                s.last_step,
                s.seconds,
                s.images_per_second,
                s.last_loss,
                opts.out.display()
            );
            Ok(())
        }
        Command::Encode { image, model, crop: CropArgs { size, focus }, output } => {
            let be = backends::cpu(cli.backend, cli.threads)?;
            let (mut runner, path) = load_runner(&be, &model, 1, size)?;
            let (s, np, side) = (runner.spec.size, runner.patches(), runner.crop_size());
            let photo = imageio::load_rgb8(&image)?;
            let crop = imageio::frame(&photo, Framing::CentreCrop, side)?;
            let out = run_one(&be, &mut runner, &crop, &photo, focus.as_deref())?;
            let cfg = runner.model.config();
            let header = Header {
                dtype: DType::F32,
                image_width: side as u32,
                image_height: side as u32,
                patch_size: s as u32,
                patches_x: np as u32,
                patches_y: np as u32,
                tokens_per_patch: runner.spec.tokens as u32,
                channels: cfg.gps.gps_c as u32,
                kappa: cfg.gps.gps_dmax,
            };
            let bytes =
                gpst::to_bytes(&header, &out.tokens).map_err(|e| anyhow::anyhow!("cannot encode tokens: {e}"))?;
            imageio::write_atomically(&output, &bytes)?;
            eprintln!(
                "{}: {} tokens ({np}x{np} patches of {s}x{s}, {} each) from {}",
                output.display(),
                runner.spec.tokens * np * np,
                runner.spec.tokens,
                path.display()
            );
            Ok(())
        }
        Command::Decode { token_file, mut model, output } => {
            let bytes = std::fs::read(&token_file)
                .with_context(|| format!("cannot read token file '{}'", token_file.display()))?;
            let (header, values) = gpst::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("'{}' is not a valid .gpst file: {e}", token_file.display()))?;
            if header.patches_x != header.patches_y {
                bail!(
                    "'{}' holds a {}x{} patch grid; the decoder takes square grids (from `gpstoken encode`)",
                    token_file.display(),
                    header.patches_x,
                    header.patches_y
                );
            }
            let np = header.patches_x as usize;
            let n = header.tokens_per_patch as usize;
            match model.tokens {
                Some(t) if t != n => bail!("--tokens {t} does not match the {n} tokens of '{}'", token_file.display()),
                _ => model.tokens = Some(n),
            }
            let be = backends::cpu(cli.backend, cli.threads)?;
            let (weights, cfg, path) = open_model(&model)?;
            if header.channels as usize != cfg.gps.gps_c || header.patch_size as usize != cfg.image_size {
                bail!(
                    "'{}' has {} feature channels on {} pixel patches, but model '{}' ({}) uses {} channels on {} pixel patches",
                    token_file.display(),
                    header.channels,
                    header.patch_size,
                    path.display(),
                    cfg.name,
                    cfg.gps.gps_c,
                    cfg.image_size
                );
            }
            let side = Some(np * cfg.image_size);
            let (mut runner, _) = runner_for(&be, &model, 1, side, &weights, &cfg, path)?;
            let decoded = runner.decode(&be, &values)?;
            let side = runner.crop_size();
            imageio::save_png(&output, &imageio::chw_unit_to_rgb8(&decoded, side, side))?;
            Ok(())
        }
        Command::Reconstruct { image, model, crop: CropArgs { size, focus }, output, viz: viz_path, json } => {
            let be = backends::cpu(cli.backend, cli.threads)?;
            let (mut runner, path) = load_runner(&be, &model, 1, size)?;
            let (s, np) = (runner.crop_size(), runner.patches());
            let photo = imageio::load_rgb8(&image)?;
            let crop = imageio::frame(&photo, Framing::CentreCrop, s)?;
            let out = run_one(&be, &mut runner, &crop, &photo, focus.as_deref())?;
            let recon = imageio::chw_unit_to_rgb8(&out.decoded, s, s);
            imageio::save_png(&output, &recon)?;
            if let Some(p) = &viz_path {
                let (n, c) = (runner.spec.tokens, runner.model.config().gps.gps_c);
                // Tokens are local to their patch: merge them onto the whole crop first (spec 2.4).
                let merged = |t: &[f32], c: usize| -> Result<Vec<f32>> {
                    let mut m = vec![0.0; t.len()];
                    render::merge_patches(np, np, n, c, t, &mut m)
                        .map_err(|e| anyhow::anyhow!("internal error: {e}"))?;
                    Ok(m)
                };
                let before = viz::draw_gaussians(&crop, &merged(&out.g_init, 0)?, 5);
                let after = viz::draw_gaussians(&crop, &merged(&out.tokens, c)?, 5 + c);
                let scale = before.width / crop.width;
                let pic = viz::side_by_side(&[&before, &after, &viz::upscale(&recon, scale)]);
                imageio::save_png(p, &pic)?;
            }
            let (psnr, ssim) = model_io::score(&out.decoded, &crop)?;
            if json {
                outln!(
                    "{{\"model\":{},\"tokens\":{},\"size\":{s},\"patches\":{},\"multi_patch\":\"{}\",\"psnr\":{},\"ssim\":{}}}",
                    json::string(&path.to_string_lossy()),
                    runner.spec.tokens,
                    np * np,
                    runner.mode.name(),
                    json::num(psnr),
                    json::num(ssim)
                );
            } else {
                outln!(
                    "{}: {s}x{s} centre crop, {} patch(es) x {} tokens: PSNR {psnr:.2} dB, SSIM {ssim:.4}",
                    image.display(),
                    np * np,
                    runner.spec.tokens
                );
            }
            Ok(())
        }
        Command::Plot { logs, window, output } => {
            if logs.len() > plot::COLOURS.len() {
                bail!("at most {} logs can be plotted together", plot::COLOURS.len());
            }
            let mut series = Vec::new();
            for (k, path) in logs.iter().enumerate() {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("cannot read log '{}'", path.display()))?;
                let (mut train_pts, mut eval_pts) = (Vec::new(), Vec::new());
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .with_context(|| format!("'{}' is not a gpstoken train log", path.display()))?;
                    if let (Some(t), Some(p)) = (v.get("step").and_then(|x| x.as_f64()), v["psnr"].as_f64()) {
                        train_pts.push((t, p));
                    } else if let (Some(t), Some(p)) = (v.get("eval").and_then(|x| x.as_f64()), v["psnr"].as_f64()) {
                        eval_pts.push((t, p));
                    }
                }
                let colour = plot::COLOURS[k];
                series.push(plot::Series {
                    points: plot::running_mean(&train_pts, window.max(1)),
                    colour,
                    dots: false,
                });
                series.push(plot::Series { points: eval_pts, colour, dots: true });
            }
            imageio::save_png(&output, &plot::plot(&series, 800, 450))?;
            Ok(())
        }
        Command::Export { checkpoint, ema, output } => {
            let which = if ema { model_io::Which::Ema } else { model_io::Which::Raw };
            let (weights, cfg) = model_io::read_model(&checkpoint, which, None)?;
            let be = backends::cpu(cli.backend, cli.threads)?;
            // Strict load: only a complete, matching set of weights is exported.
            model_io::build_model(&be, &cfg, None, &weights, &format!("checkpoint '{}'", checkpoint.display()))?;
            imageio::write_atomically(&output, &weights)?;
            outln!("{}: {} weights of config {}", output.display(), if ema { "EMA" } else { "raw" }, cfg.name);
            Ok(())
        }
        Command::Eval { model, size, data, batch, by_complexity, per_image, json } => {
            if batch == 0 {
                bail!("--batch must be at least 1");
            }
            let be = backends::cpu(cli.backend, cli.threads)?;
            let (mut runner, path) = load_runner(&be, &model, batch, size)?;
            let (side, np) = (runner.crop_size(), runner.patches());
            let set = gpstoken_cli::data::EvalSet::load(&data, side)?;
            if set.skipped > 0 {
                eprintln!("gpstoken: warning: skipped {} unreadable image(s) in '{}'", set.skipped, data.display());
            }
            let crops: Vec<&imageio::Rgb8> = set.images.iter().map(|(_, i)| i).collect();
            let model_io::Evaluation { psnr, ssim, per_image: scores, outputs } =
                model_io::evaluate(&be, &mut runner, &crops)?;
            let weight = runner.model.config().gps.gps_adaptive_w;
            let mut strata = Vec::new();
            for ((((name, crop), out), &(p, q)), k) in set.images.iter().zip(&outputs).zip(&scores).zip(1..) {
                let s = if by_complexity {
                    let scores = gpstoken_cli::strata::block_scores(crop, weight);
                    Some(gpstoken_cli::strata::stratify(&out.decoded, crop, &scores)?)
                } else {
                    None
                };
                strata.extend(s);
                if per_image {
                    let name = name.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
                    if json {
                        outln!(
                            "{{\"image\":{},\"psnr\":{},\"ssim\":{}{}}}",
                            json::string(&name),
                            json::num(p),
                            json::num(q),
                            s.map_or(String::new(), |s| strata_json(&s))
                        );
                    } else {
                        let extra = s.map_or(String::new(), |s| {
                            format!(
                                "; texture-rich {:.2} dB, detail {:.3}; flat {:.2} dB",
                                s.rich_psnr, s.rich_detail, s.flat_psnr
                            )
                        });
                        outln!("{k:>4} {name}: PSNR {p:.2} dB, SSIM {q:.4}{extra}");
                    }
                }
            }
            let strata = by_complexity.then(|| gpstoken_cli::strata::Strata::mean(&strata));
            if json {
                outln!(
                    "{{\"model\":{},\"tokens\":{},\"size\":{side},\"patches\":{},\"multi_patch\":\"{}\",\"images\":{},\"psnr\":{},\"ssim\":{}{}}}",
                    json::string(&path.to_string_lossy()),
                    runner.spec.tokens,
                    np * np,
                    runner.mode.name(),
                    crops.len(),
                    json::num(psnr),
                    json::num(ssim),
                    strata.map_or(String::new(), |s| strata_json(&s))
                );
            } else {
                outln!(
                    "{}: {} image(s), {side}x{side} centre crops, {} patch(es) x {} tokens: PSNR {psnr:.2} dB, SSIM {ssim:.4}",
                    path.display(),
                    crops.len(),
                    np * np,
                    runner.spec.tokens
                );
                if let Some(s) = strata {
                    outln!(
                        "  texture-rich quarter: PSNR {:.2} dB, detail {:.3}; flat quarter: PSNR {:.2} dB",
                        s.rich_psnr,
                        s.rich_detail,
                        s.flat_psnr
                    );
                }
            }
            Ok(())
        }
        Command::Info { config: None, json } => {
            let threads = rayon::current_num_threads();
            let kinds = [BackendKind::Cpu, BackendKind::Vulkan, BackendKind::Cuda];
            if json {
                let entries: Vec<String> = kinds
                    .iter()
                    .map(|&k| {
                        let usable = backends::compiled(k) && backends::cpu(k, None).is_ok();
                        let extra =
                            if k == BackendKind::Cpu { format!(",\"threads\":{threads}") } else { String::new() };
                        format!(
                            "\"{}\":{{\"compiled\":{},\"usable\":{usable}{extra}}}",
                            k.name(),
                            backends::compiled(k)
                        )
                    })
                    .collect();
                outln!(
                    "{{\"version\":{},\"backends\":{{{}}}}}",
                    json::string(env!("CARGO_PKG_VERSION")),
                    entries.join(",")
                );
            } else {
                outln!("gpstoken {}", env!("CARGO_PKG_VERSION"));
                for k in kinds {
                    let state = match k {
                        BackendKind::Cpu => format!("compiled in, usable ({threads} threads, deterministic)"),
                        _ => "not compiled in (planned)".to_string(),
                    };
                    outln!("  {:<7} {state}", k.name());
                }
            }
            Ok(())
        }
    }
}
