//! `gpstoken reconstruct`: encode and decode photos with a trained model; PSNR and SSIM.

use super::model::{inputs, CropArgs, EachPhoto, ModelArgs, Processed, View};
use anyhow::{bail, Result};
use gpstoken_cli::backends::{with_backend, BackendSelection};
use gpstoken_cli::imageio;
use gpstoken_cli::tiling::Grid;
use gpstoken_cli::{json, model_io, viz, whole};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const EXAMPLES: &str = "Examples:\n  gpstoken reconstruct samples/coffee.png -o recon.png\n  gpstoken reconstruct photo.jpg --tokens 64 -o recon.png --viz gaussians.png --json\n  gpstoken reconstruct photos/ -o recons/ --overlap 16";

#[derive(clap::Args)]
pub struct Args {
    /// Input photo, whole at its own size (or its centre crop, see --crop); or a folder: every
    /// PNG/JPEG under it, one at a time, each written under the -o folder.
    input: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    crop: CropArgs,
    /// Pixels shared by neighbouring patches of a whole photo, blended linearly so no seam shows
    /// between them; 0 lays patches side by side; at most half a patch [default: a quarter patch,
    /// 16 for tiny64: +0.42 dB over side by side on the eval photos, docs/RESULTS.md].
    #[arg(long)]
    overlap: Option<usize>,
    /// Output PNG (the reconstruction, the size of the input); a folder for a folder of photos.
    #[arg(short = 'o', long = "output", value_name = "OUT.png")]
    output: PathBuf,
    /// Write a picture: input with initial Gaussians | refined Gaussians | reconstruction.
    #[arg(long, value_name = "OUT.png")]
    viz: Option<PathBuf>,
    /// Print one JSON object per photo.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { input, model, crop: CropArgs { crop, focus }, overlap, output, viz: viz_path, json } = args;
    let folder = input.is_dir();
    if !folder {
        // One photo: every output is checked before the work (never an input, folders exist).
        let ins: Vec<&Path> = [Some(input.as_path()), focus.as_deref()].into_iter().flatten().collect();
        let mut outs = vec![("-o", output.as_path())];
        outs.extend(viz_path.as_deref().map(|p| ("--viz", p)));
        gpstoken_cli::outputs::check(&ins, &outs)?;
    }
    let opened = model.open()?;
    let layout = model.layout(&opened, crop, overlap)?;
    if folder && (viz_path.is_some() || focus.is_some()) {
        bail!("--viz and --focus take one photo, not a folder");
    }
    let pairs = inputs(&input, &output, "png")?;
    let photos: Vec<PathBuf> = pairs.iter().map(|(p, _)| p.clone()).collect();
    let out_of: HashMap<PathBuf, PathBuf> = pairs.into_iter().collect();
    let n = layout.tokens;
    let c = opened.config.gps.gps_c;
    let each = |path: &Path, done: &Processed| -> Result<()> {
        let Processed { reference, output: out, grid } = done;
        let (w, h) = (reference.width, reference.height);
        let recon = imageio::chw_unit_to_rgb8(&out.decoded, w, h);
        let target = &out_of[path];
        if folder {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create '{}': {e}", dir.display()))?;
            }
        }
        // Scored first: a non-finite output is an error before anything is written.
        let (psnr, ssim) = model_io::score(&out.decoded, reference)?;
        let mut files = vec![(target.as_path(), imageio::png_bytes(&recon)?)];
        // The crop's patches as a grid, so both views draw alike.
        let grid = match grid {
            Some(g) => g.clone(),
            None => Grid::with_patch(w, h, layout.patch, 0)?,
        };
        if let Some(p) = &viz_path {
            // Tokens are local to their patch: move them onto the whole image first.
            let before = viz::draw_gaussians(reference, &whole::tokens_on_image(&out.g_init, 5, &grid), 5);
            let after = viz::draw_gaussians(reference, &whole::tokens_on_image(&out.tokens, 5 + c, &grid), 5 + c);
            let scale = before.width / reference.width;
            files.push((
                p.as_path(),
                imageio::png_bytes(&viz::side_by_side(&[&before, &after, &viz::upscale(&recon, scale)]))?,
            ));
        }
        // All outputs or none.
        gpstoken_cli::outputs::write_all(&files.iter().map(|(p, b)| (*p, b.as_slice())).collect::<Vec<_>>())?;
        let size = match layout.view {
            View::Crop { side } => format!(",\"size\":{side}"),
            View::Whole { .. } => String::new(),
        };
        if json {
            outln!(
                "{{\"image\":{},\"model\":{},\"tokens\":{n},\"width\":{w},\"height\":{h}{size},\"patches\":{},\"overlap\":{},\"multi_patch\":\"{}\",\"psnr\":{},\"ssim\":{}}}",
                json::string(&path.to_string_lossy()),
                json::string(&opened.path.to_string_lossy()),
                grid.len(),
                layout.overlap(),
                layout.mode.name(),
                json::num(psnr),
                json::num(ssim)
            );
        } else {
            outln!(
                "{}: {} x {n} tokens: PSNR {psnr:.2} dB, SSIM {ssim:.4}",
                path.display(),
                layout.describe((w, h), done.grid.as_ref()),
            );
        }
        Ok(())
    };
    let task = EachPhoto {
        args: &model,
        opened: &opened,
        layout: &layout,
        photos: &photos,
        focus: focus.as_deref(),
        skip_unreadable: folder,
        each,
    };
    let skipped = with_backend(backend, task)?;
    if skipped == photos.len() {
        bail!("none of the {skipped} photo(s) in '{}' could be read", input.display());
    }
    Ok(())
}
