//! `gpstoken reconstruct`: encode and decode an image with a trained model; PSNR and SSIM.

use super::model::{CropArgs, ModelArgs, OneCrop};
use anyhow::Result;
use gpstoken_cli::backends::{with_backend, BackendSelection};
use gpstoken_cli::imageio;
use gpstoken_cli::{json, model_io, viz};
use gpstoken_core::render;
use std::path::PathBuf;

pub const EXAMPLES: &str = "Examples:\n  gpstoken reconstruct samples/coffee.png -o recon.png\n  gpstoken reconstruct photo.jpg --tokens 64 -o recon.png --viz gaussians.png --json";

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { image, model, crop: CropArgs { size, focus }, output, viz: viz_path, json } = args;
    let inputs: Vec<&std::path::Path> = [Some(image.as_path()), focus.as_deref()].into_iter().flatten().collect();
    let mut outs = vec![("-o", output.as_path())];
    outs.extend(viz_path.as_deref().map(|p| ("--viz", p)));
    gpstoken_cli::outputs::check(&inputs, &outs)?;
    let opened = model.open()?;
    let layout = model.layout(&opened, size)?;
    let (s, np, n) = (layout.side, layout.patches, layout.tokens);
    let task = OneCrop { args: &model, opened: &opened, size, image: &image, focus: focus.as_deref() };
    let (crop, out) = with_backend(backend, task)?;
    let recon = imageio::chw_unit_to_rgb8(&out.decoded, s, s);
    let mut files = vec![(output.as_path(), imageio::png_bytes(&recon)?)];
    if let Some(p) = &viz_path {
        let c = opened.config.gps.gps_c;
        // Tokens are local to their patch: merge them onto the whole crop first (spec 2.4).
        let merged = |t: &[f32], c: usize| -> Result<Vec<f32>> {
            let mut m = vec![0.0; t.len()];
            render::merge_patches(np, np, n, c, t, &mut m).map_err(|e| anyhow::anyhow!("internal error: {e}"))?;
            Ok(m)
        };
        let before = viz::draw_gaussians(&crop, &merged(&out.g_init, 0)?, 5);
        let after = viz::draw_gaussians(&crop, &merged(&out.tokens, c)?, 5 + c);
        let scale = before.width / crop.width;
        let pic = viz::side_by_side(&[&before, &after, &viz::upscale(&recon, scale)]);
        files.push((p.as_path(), imageio::png_bytes(&pic)?));
    }
    let (psnr, ssim) = model_io::score(&out.decoded, &crop)?;
    gpstoken_cli::outputs::write_all(&files.iter().map(|(p, b)| (*p, b.as_slice())).collect::<Vec<_>>())?;
    if json {
        outln!(
            "{{\"model\":{},\"tokens\":{n},\"size\":{s},\"patches\":{},\"multi_patch\":\"{}\",\"psnr\":{},\"ssim\":{}}}",
            json::string(&opened.path.to_string_lossy()),
            np * np,
            layout.mode.name(),
            json::num(psnr),
            json::num(ssim)
        );
    } else {
        outln!(
            "{}: {s}x{s} centre crop, {} patch(es) x {n} tokens: PSNR {psnr:.2} dB, SSIM {ssim:.4}",
            image.display(),
            np * np
        );
    }
    Ok(())
}
