//! `gpstoken eval`: mean PSNR and SSIM of a trained model on a folder of whole photos (or their
//! centre crops), read one at a time, optionally per image and split by complexity.

use super::model::{EachPhoto, ModelArgs, Processed, View};
use anyhow::{bail, Result};
use gpstoken_cli::backends::{with_backend, BackendSelection};
use gpstoken_cli::data::list_images;
use gpstoken_cli::strata::{self, Strata};
use gpstoken_cli::{json, model_io};
use std::path::{Path, PathBuf};

pub const EXAMPLES: &str = "Examples:\n  gpstoken eval --data ../shared/data/eval --json\n  gpstoken eval --data ../shared/data/eval --overlap 16 --json\n  gpstoken eval --data ../shared/data/eval --crop 256 --json";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Score the square centre crop of this side instead of the whole photo: a multiple of the
    /// model's patch size S, cut into patches of S, decoded as --multi-patch says (the official
    /// evaluation uses 256, spec 3.7) [default: every photo whole, at its own size].
    #[arg(long, visible_alias = "size", value_name = "PIXELS")]
    crop: Option<usize>,
    /// Pixels shared by neighbouring patches of a whole photo, blended linearly so no seam shows
    /// between them; 0 lays patches side by side; at most half a patch [default: a quarter patch,
    /// 16 for tiny64: +0.42 dB over side by side on the eval photos, docs/RESULTS.md].
    #[arg(long)]
    overlap: Option<usize>,
    /// Evaluation photos (PNG/JPEG, searched recursively), read and scored one at a time.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
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
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { model, crop, overlap, data, by_complexity, per_image, json } = args;
    let opened = model.open()?;
    let layout = model.layout(&opened, crop, overlap)?;
    let photos = list_images(&data)?;
    let weight = opened.config.gps.gps_adaptive_w;
    let mut scores: Vec<(f64, f64)> = Vec::with_capacity(photos.len());
    let mut all_strata = Vec::new();
    let mut patches = 0usize;
    let each = |path: &Path, done: &Processed| -> Result<()> {
        let (p, q) = model_io::score(&done.output.decoded, &done.reference)?;
        let k = scores.len() + 1;
        scores.push((p, q));
        patches += done.grid.as_ref().map_or(layout.crop_patches().pow(2), |g| g.len());
        let s = if by_complexity {
            let block = strata::block_scores(&done.reference, weight);
            Some(strata::stratify(&done.output.decoded, &done.reference, &block)?)
        } else {
            None
        };
        all_strata.extend(s);
        if per_image {
            let name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
            if json {
                outln!(
                    "{{\"image\":{},\"width\":{},\"height\":{},\"psnr\":{},\"ssim\":{}{}}}",
                    json::string(&name),
                    done.reference.width,
                    done.reference.height,
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
        Ok(())
    };
    let task = EachPhoto {
        args: &model,
        opened: &opened,
        layout: &layout,
        photos: &photos,
        focus: None,
        skip_unreadable: true,
        each,
    };
    let skipped = with_backend(backend, task)?;
    if scores.is_empty() {
        bail!("data folder '{}': none of its {skipped} image(s) could be read", data.display());
    }
    if skipped > 0 {
        eprintln!("gpstoken: warning: skipped {skipped} unreadable image(s) in '{}'", data.display());
    }
    let images = scores.len();
    let psnr = scores.iter().map(|s| s.0).sum::<f64>() / images as f64;
    let ssim = scores.iter().map(|s| s.1).sum::<f64>() / images as f64;
    let strata = by_complexity.then(|| Strata::mean(&all_strata));
    let path = &opened.path;
    let (view, size) = match layout.view {
        View::Crop { side } => (format!("{side}x{side} centre crops"), format!(",\"size\":{side}")),
        View::Whole { overlap } => (format!("whole photos (overlap {overlap})"), String::new()),
    };
    if json {
        outln!(
            "{{\"model\":{},\"tokens\":{}{size},\"overlap\":{},\"patches\":{patches},\"multi_patch\":\"{}\",\"images\":{},\"psnr\":{},\"ssim\":{}{}}}",
            json::string(&path.to_string_lossy()),
            layout.tokens,
            layout.overlap(),
            layout.mode.name(),
            images,
            json::num(psnr),
            json::num(ssim),
            strata.map_or(String::new(), |s| strata_json(&s))
        );
    } else {
        outln!(
            "{}: {images} image(s), {view}, {patches} patches x {} tokens: PSNR {psnr:.2} dB, SSIM {ssim:.4}",
            path.display(),
            layout.tokens
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

/// The `--by-complexity` fields of a JSON object, with a leading comma.
fn strata_json(s: &Strata) -> String {
    format!(
        ",\"rich_psnr\":{},\"flat_psnr\":{},\"rich_detail\":{}",
        json::num(s.rich_psnr),
        json::num(s.flat_psnr),
        json::num(s.rich_detail)
    )
}
