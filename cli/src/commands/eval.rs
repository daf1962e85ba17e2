//! `gpstoken eval`: mean PSNR and SSIM of a trained model on a folder, optionally per image and
//! split by complexity.

use super::model::{ModelArgs, OpenedModel};
use anyhow::{bail, Result};
use gpstoken_cli::backends::{with_backend, BackendSelection, BackendTask};
use gpstoken_cli::imageio::Rgb8;
use gpstoken_cli::model_io::{self, Evaluation};
use gpstoken_cli::strata::{self, Strata};
use gpstoken_cli::{data::EvalSet, json};
use gpstoken_core::backend::Backend;
use std::path::{Path, PathBuf};

pub const EXAMPLES: &str = "Examples:\n  gpstoken eval --data ../shared/data/eval --json\n  gpstoken eval --data ../shared/data/eval --tokens 64 --size 64 --json";

#[derive(clap::Args)]
pub struct Args {
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
}

/// The model on every photo of the folder (centre crops), `batch` crops per forward pass.
struct Evaluate<'a> {
    args: &'a ModelArgs,
    opened: &'a OpenedModel,
    batch: usize,
    size: Option<usize>,
    data: &'a Path,
}

impl BackendTask for Evaluate<'_> {
    type Output = (EvalSet, Evaluation);

    fn run<B: Backend>(self, be: &B) -> Result<(EvalSet, Evaluation)> {
        // The model first: a model that does not load fails before the photos are read.
        let mut runner = self.args.runner(be, self.opened, self.batch, self.size)?;
        let set = EvalSet::load(self.data, runner.crop_size())?;
        if set.skipped > 0 {
            eprintln!("gpstoken: warning: skipped {} unreadable image(s) in '{}'", set.skipped, self.data.display());
        }
        let crops: Vec<&Rgb8> = set.images.iter().map(|(_, i)| i).collect();
        let evaluation = model_io::evaluate(be, &mut runner, &crops)?;
        Ok((set, evaluation))
    }
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { model, size, data, batch, by_complexity, per_image, json } = args;
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let opened = model.open()?;
    let layout = model.layout(&opened, size)?;
    let (side, np) = (layout.side, layout.patches);
    let task = Evaluate { args: &model, opened: &opened, batch, size, data: &data };
    let (set, Evaluation { psnr, ssim, per_image: scores, outputs }) = with_backend(backend, task)?;
    let images = set.images.len();
    let path = &opened.path;
    let weight = opened.config.gps.gps_adaptive_w;
    let mut all_strata = Vec::new();
    for ((((name, crop), out), &(p, q)), k) in set.images.iter().zip(&outputs).zip(&scores).zip(1..) {
        let s = if by_complexity {
            let scores = strata::block_scores(crop, weight);
            Some(strata::stratify(&out.decoded, crop, &scores)?)
        } else {
            None
        };
        all_strata.extend(s);
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
    let strata = by_complexity.then(|| Strata::mean(&all_strata));
    if json {
        outln!(
            "{{\"model\":{},\"tokens\":{},\"size\":{side},\"patches\":{},\"multi_patch\":\"{}\",\"images\":{},\"psnr\":{},\"ssim\":{}{}}}",
            json::string(&path.to_string_lossy()),
            layout.tokens,
            np * np,
            layout.mode.name(),
            images,
            json::num(psnr),
            json::num(ssim),
            strata.map_or(String::new(), |s| strata_json(&s))
        );
    } else {
        outln!(
            "{}: {} image(s), {side}x{side} centre crops, {} patch(es) x {} tokens: PSNR {psnr:.2} dB, SSIM {ssim:.4}",
            path.display(),
            images,
            np * np,
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
