//! `gpstoken`: turn images into 2D Gaussian tokens and back.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gpstoken_cli::backends::{self, BackendKind};
use gpstoken_cli::fit::{self, FitOptions, Init};
use gpstoken_cli::imageio::{self, Framing};
use gpstoken_cli::{json, viz};
use gpstoken_core::backend::{Buffers, SplatOps};
use gpstoken_core::gpst::{self, DType, Header};
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
    /// Version and the backends compiled in and usable here.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
        Command::Fit { image, tokens, steps, init, lr, lr_features, focus, output, dtype, recon, viz, json } => {
            let dtype = DType::parse(&dtype).context("--dtype must be f32, f16 or bf16")?;
            let photo = imageio::load_rgb8(&image)?;
            let framed = imageio::frame(&photo, Framing::CentreCrop, PATCH)?;
            let bias = focus.map(|f| imageio::focus_bias(&f, &photo, Framing::CentreCrop, PATCH, 60.0)).transpose()?;
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
                    patch_size: PATCH as u32,
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
        Command::Info { json } => {
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
