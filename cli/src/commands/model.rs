//! What the commands that run a trained model share: `--model` and its options, the view of
//! the photo (the whole photo by default, `--crop`, `--focus`), loading the model into a
//! [`Runner`] on the selected backend, and running it over photos one at a time ([`EachPhoto`]).

use anyhow::{bail, Result};
use gpstoken_cli::backends::BackendTask;
use gpstoken_cli::fit::Init;
use gpstoken_cli::imageio::{self, Framing, Rgb8};
use gpstoken_cli::model_io::{self, MultiPatch, Output, Runner};
use gpstoken_cli::tiling::Grid;
use gpstoken_cli::whole::{self, FocusMap};
use gpstoken_core::backend::Backend;
use gpstoken_core::model::ModelConfig;
use indicatif::{ProgressBar, ProgressStyle};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Which part of the photo the model sees (encode, reconstruct).
#[derive(clap::Args)]
pub struct CropArgs {
    /// Use only the square centre crop of this side, the official evaluation framing (spec 3.7:
    /// shortest side resized to it, then cropped): a multiple of the model's patch size S, cut
    /// into patches of S, decoded as --multi-patch says [default: the whole photo at its own size,
    /// each side padded by edge replication to a multiple of S and the output cropped back].
    #[arg(long, visible_alias = "size", value_name = "PIXELS")]
    pub crop: Option<usize>,
    /// Focus mask for Algorithm 1 (see `partition --focus`), the size of the photo. Every patch
    /// keeps its N tokens, so the mask moves tokens inside each patch, towards the masked part.
    #[arg(long, value_name = "MASK.png")]
    pub focus: Option<PathBuf>,
}

/// Which trained model to run and how.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Weights file or training checkpoint [default: $GPSTOKEN_MODEL, else models/tiny64.safetensors of the repository].
    #[arg(long, value_name = "CKPT")]
    pub model: Option<PathBuf>,
    /// Config of the model when the file does not name one (files written by `train` do; a
    /// different config than the file's own is an error).
    #[arg(long, value_name = "NAME|FILE")]
    pub config: Option<String>,
    /// Use the EMA weights of a training checkpoint.
    #[arg(long)]
    pub ema: bool,
    /// Tokens per patch (default: the config's gps_num; any N Algorithm 1 can make works without retraining).
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Initial Gaussians: Algorithm 1 (adaptive) or a uniform grid.
    #[arg(long, value_enum, default_value = "adaptive")]
    pub init: Init,
    /// How the patches of a photo are decoded [default: tiled for whole photos; with --crop,
    /// merged for s64 and m128 as the official code does, tiled for every other config]. Merged
    /// needs a square grid of patches.
    #[arg(long, value_enum)]
    pub multi_patch: Option<MultiPatch>,
    /// Patches per forward pass (crops with --crop): each holds its activations until the pass
    /// ends, so memory grows with it; the CPU gains no speed from more than one.
    #[arg(long)]
    pub batch: Option<usize>,
}

/// How the model sees a photo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The whole photo; neighbouring patches share `overlap` pixels, blended.
    Whole { overlap: usize },
    /// The square centre crop of this side.
    Crop { side: usize },
}

/// How the model sees photos: the view, the patch size, the tokens per patch, the multi-patch
/// mode and the forward-pass batch.
pub struct Layout {
    pub view: View,
    /// The model's patch `(width, height)`.
    pub patch: (usize, usize),
    /// Tokens per patch (N).
    pub tokens: usize,
    pub mode: MultiPatch,
    /// Patches (whole photos) or crops (--crop) per forward pass.
    pub batch: usize,
}

impl Layout {
    /// Pixels shared by neighbouring patches (0 for a crop).
    pub fn overlap(&self) -> usize {
        match self.view {
            View::Whole { overlap } => overlap,
            View::Crop { .. } => 0,
        }
    }

    /// Patches per side of a crop (np); 1 for whole photos (their grid depends on the photo).
    pub fn crop_patches(&self) -> usize {
        match self.view {
            // A crop needs square patches (`ModelArgs::layout` checks).
            View::Crop { side } => side / self.patch.0,
            View::Whole { .. } => 1,
        }
    }

    /// `600x400 whole photo, 3x2 patches` or `256x256 centre crop, 4x4 patches`.
    pub fn describe(&self, (width, height): (usize, usize), grid: Option<&Grid>) -> String {
        match (self.view, grid) {
            (View::Whole { overlap }, Some(g)) => format!(
                "{width}x{height} whole photo, {}x{} patches{}",
                g.xs.len(),
                g.ys.len(),
                if overlap > 0 { format!(" overlapping by {overlap}") } else { String::new() }
            ),
            _ => {
                let np = self.crop_patches();
                format!("{width}x{height} centre crop, {np}x{np} patches")
            }
        }
    }
}

/// A model file read from disk: weights-only bytes, its config and where it came from.
pub struct OpenedModel {
    /// Taken (emptied) by the first [`ModelArgs::runner`], so the file's bytes are not kept
    /// next to the loaded weights while photos are processed.
    pub weights: std::cell::RefCell<Vec<u8>>,
    pub config: ModelConfig,
    pub path: PathBuf,
}

impl ModelArgs {
    /// The weights and config of `--model` (or the default model).
    pub fn open(&self) -> Result<OpenedModel> {
        let path = match &self.model {
            Some(p) => p.clone(),
            None => model_io::default_model_path()?,
        };
        let which = if self.ema { model_io::Which::Ema } else { model_io::Which::Raw };
        let (weights, config) = model_io::read_model(&path, which, self.config.as_deref())?;
        Ok(OpenedModel { weights: std::cell::RefCell::new(weights), config, path })
    }

    /// The opened model on `be` with the token override, ready for `layout`.
    pub fn runner<B: Backend>(&self, be: &B, opened: &OpenedModel, layout: &Layout) -> Result<Runner<B>> {
        let what = format!("model '{}'", opened.path.display());
        let weights = std::mem::take(&mut *opened.weights.borrow_mut());
        if weights.is_empty() {
            bail!("internal error: the weights of {what} were already used");
        }
        let model = model_io::build_model(be, &opened.config, self.tokens, &weights, &what)?;
        drop(weights);
        Runner::new(be, model, layout.batch, layout.crop_patches(), layout.mode, self.init)
    }

    /// The [`Layout`] of `--crop` (`None`: the whole photo, patches sharing `overlap` pixels,
    /// by default [`default_overlap`]).
    pub fn layout(&self, opened: &OpenedModel, crop: Option<usize>, overlap: Option<usize>) -> Result<Layout> {
        let cfg = &opened.config;
        let patch = (cfg.image_hw.1, cfg.image_hw.0);
        let (view, mode) = match crop {
            Some(c) => {
                if overlap.is_some_and(|o| o > 0) {
                    bail!("--overlap applies to whole photos; a --crop is cut into patches side by side");
                }
                if patch.0 != patch.1 {
                    bail!(
                        "--crop {c} takes a square centre crop in square patches, but model '{}' has {}x{} patches; \
                         omit --crop to run the whole photo",
                        opened.path.display(),
                        patch.0,
                        patch.1
                    );
                }
                let side = model_io::crop_side(Some(c), patch.0)?;
                (View::Crop { side }, self.multi_patch.unwrap_or(MultiPatch::default_for(cfg)))
            }
            None => {
                let overlap = overlap.unwrap_or(default_overlap(patch.0.min(patch.1)));
                (View::Whole { overlap }, self.multi_patch.unwrap_or(MultiPatch::Tiled))
            }
        };
        let batch = self.batch.unwrap_or(whole::DEFAULT_BATCH);
        if batch == 0 {
            bail!("--batch must be at least 1");
        }
        let (w, h) = match view {
            View::Crop { side } => (side, side),
            View::Whole { .. } => patch,
        };
        whole::check_pass(batch.saturating_mul(w * h), &format!("--batch {batch} of {w}x{h}"))?;
        if self.multi_patch == Some(MultiPatch::Merged) && MultiPatch::default_for(cfg) != MultiPatch::Merged {
            eprintln!(
                "gpstoken: warning: --multi-patch merged with config '{}': only s64 and m128 were trained for \
                 merged canvases; a model trained on single patches decodes them poorly (docs/RESULTS.md)",
                cfg.name
            );
        }
        Ok(Layout { view, patch, tokens: self.tokens.unwrap_or(cfg.gps.gps_num), mode, batch })
    }
}

/// Overlap of neighbouring patches of a whole photo by default: a quarter of the patch's
/// shorter side (16 pixels for tiny64), which removes the seams and measured +0.42 dB over
/// patches side by side on the eval photos (docs/RESULTS.md), for about 1.8x the patches.
pub fn default_overlap(patch: usize) -> usize {
    patch / 4
}

/// The photos of `input`: the file itself, or every PNG/JPEG under a folder (sorted), each with
/// its output path: `output` for a file, `output/<path under input>.<ext>` for a folder.
pub fn inputs(input: &Path, output: &Path, ext: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
    if !input.is_dir() {
        return Ok(vec![(input.to_path_buf(), output.to_path_buf())]);
    }
    if output.exists() && !output.is_dir() {
        bail!("'{}' is a folder, so -o must be a folder too ('{}' is a file)", input.display(), output.display());
    }
    let photos = gpstoken_cli::data::list_images(input)?;
    Ok(photos
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(input).unwrap_or(&p).with_extension(ext);
            let out = output.join(rel);
            (p, out)
        })
        .collect())
}

/// A bar on stderr (drawn only when stderr is a terminal).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}}  {{per_sec}}  eta {{eta}}"))
    {
        bar.set_style(style);
    }
    bar
}

/// What the model made of one photo.
pub struct Processed<'a> {
    /// The image the output reconstructs: the whole photo or its centre crop.
    pub reference: Cow<'a, Rgb8>,
    pub output: Output,
    /// The patch grid of a whole photo.
    pub grid: Option<Grid>,
}

/// Photos at least this many patches get a bar of their own.
const LARGE_PHOTO_PATCHES: usize = 64;

/// One photo through `runner` as `layout` says, with an optional focus mask.
pub fn process<'a, B: Backend>(
    be: &B,
    runner: &mut Runner<B>,
    layout: &Layout,
    photo: &'a Rgb8,
    focus: Option<&Path>,
) -> Result<Processed<'a>> {
    match layout.view {
        View::Crop { side } => {
            let crop = imageio::frame(photo, Framing::CentreCrop, side)?;
            runner.bias = focus.map(|f| imageio::focus_bias(f, photo, Framing::CentreCrop, side, 60.0)).transpose()?;
            let output = runner.run(be, &[&crop])?.pop().ok_or_else(|| anyhow::anyhow!("internal error: no output"))?;
            Ok(Processed { reference: Cow::Owned(crop), output, grid: None })
        }
        View::Whole { overlap } => {
            let grid = Grid::with_patch(photo.width, photo.height, layout.patch, overlap)?;
            // The mask framed like the photo: padded by edge replication to whole patches.
            let focus = focus
                .map(|f| -> Result<FocusMap> {
                    // Full framing in 1-pixel tiles is the mask as it is; the padding follows.
                    let values = imageio::focus_bias(f, photo, Framing::Full, 1, 60.0)?;
                    let (pw, ph) = layout.patch;
                    let (width, height) = (photo.width.div_ceil(pw) * pw, photo.height.div_ceil(ph) * ph);
                    let values =
                        gpstoken_cli::tiling::cut(&values, (photo.width, photo.height, 1), (0, 0), (width, height));
                    Ok(FocusMap { values, width, height })
                })
                .transpose()?;
            let patches = if grid.len() >= LARGE_PHOTO_PATCHES {
                bar(grid.len() as u64, "patches")
            } else {
                ProgressBar::hidden()
            };
            let output = runner.run_whole(be, photo, focus.as_ref(), &grid, &mut |k| patches.inc(k as u64))?;
            patches.finish_and_clear();
            Ok(Processed { reference: Cow::Borrowed(photo), output, grid: Some(grid) })
        }
    }
}

/// The model over photos, one at a time: each is read, run, handed to `each` and dropped before
/// the next is read, so memory does not grow with the number of photos. With `skip_unreadable`
/// a photo that cannot be read is reported and skipped (a folder), else it is an error.
pub struct EachPhoto<'a, F> {
    pub args: &'a ModelArgs,
    pub opened: &'a OpenedModel,
    pub layout: &'a Layout,
    pub photos: &'a [PathBuf],
    pub focus: Option<&'a Path>,
    pub skip_unreadable: bool,
    pub each: F,
}

impl<F: FnMut(&Path, &Processed) -> Result<()>> BackendTask for EachPhoto<'_, F> {
    /// Photos that could not be read.
    type Output = usize;

    fn run<B: Backend>(mut self, be: &B) -> Result<usize> {
        // The model first: a model that does not load fails before any photo is read.
        let mut runner = self.args.runner(be, self.opened, self.layout)?;
        let photos =
            if self.photos.len() > 1 { bar(self.photos.len() as u64, "photos") } else { ProgressBar::hidden() };
        let mut skipped = 0;
        for path in self.photos {
            let photo = match imageio::load_rgb8(path) {
                Ok(p) => p,
                Err(e) if self.skip_unreadable => {
                    photos.suspend(|| eprintln!("gpstoken: warning: skipping {e:#}"));
                    skipped += 1;
                    photos.inc(1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let done = process(be, &mut runner, self.layout, &photo, self.focus)?;
            photos.suspend(|| (self.each)(path, &done))?;
            photos.inc(1);
        }
        photos.finish_and_clear();
        Ok(skipped)
    }
}
