//! `gpstoken partition`: Algorithm 1 on one image, printed as a table or JSON, optionally drawn.

use anyhow::{bail, Result};
use gpstoken_cli::imageio::{self, Framing};
use gpstoken_cli::{json, viz};
use gpstoken_core::partition::{self, PartitionParams};
use std::path::PathBuf;

/// The patch size of every official config: Algorithm 1 and the encoder work on 256² tiles.
const PATCH: usize = 256;

pub const EXAMPLES: &str = "Examples:\n  gpstoken partition samples/coffee.png --tokens 128 --viz regions.png\n  gpstoken partition samples/coffee.png --tokens 64 --focus mask.png --json";

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(args: Args) -> Result<()> {
    let Args { image, tokens, weight, min_size, focus, focus_strength, full, json, viz } = args;
    if let Some(v) = &viz {
        let inputs: Vec<&std::path::Path> = [Some(image.as_path()), focus.as_deref()].into_iter().flatten().collect();
        gpstoken_cli::outputs::check(&inputs, &[("--viz", v.as_path())])?;
    }
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
    let part =
        partition::partition_image_with(&grey, framed.width, framed.height, PATCH, &params, bias.as_deref(), &math)
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
