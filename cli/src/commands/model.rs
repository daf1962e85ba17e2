//! What the commands that run a trained model share: `--model` and its options, the centre crop
//! (`--size`, `--focus`), and loading the model into a [`Runner`] on the selected backend.

use anyhow::{Context, Result};
use gpstoken_cli::backends::BackendTask;
use gpstoken_cli::fit::Init;
use gpstoken_cli::imageio::{self, Framing, Rgb8};
use gpstoken_cli::model_io::{self, MultiPatch, Output, Runner};
use gpstoken_core::backend::Backend;
use gpstoken_core::model::ModelConfig;
use std::path::{Path, PathBuf};

/// Which part of the photo the model sees (encode, reconstruct).
#[derive(clap::Args)]
pub struct CropArgs {
    /// Side of the square centre crop: a multiple of the model's patch size S, cut into patches
    /// of S with --tokens tokens each, decoded as --multi-patch says (spec 2.4 / 3.6)
    /// [default: 256 when S divides it (the official crop), else S].
    #[arg(long, value_name = "PIXELS")]
    pub size: Option<usize>,
    /// Focus mask for Algorithm 1 (see `partition --focus`). Every patch keeps its N tokens, so
    /// the mask moves tokens inside each patch, towards the masked part.
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
    /// How crops of several patches (--size above the patch size) are decoded [default: merged
    /// for s64 and m128 as the official code does, tiled for every other config].
    #[arg(long, value_enum)]
    pub multi_patch: Option<MultiPatch>,
}

/// How the model sees a crop: its side, the patch grid, the tokens per patch, the multi-patch mode.
pub struct Layout {
    /// Side of the square centre crop.
    pub side: usize,
    /// The model's patch size S.
    pub patch: usize,
    /// Patches per side (np).
    pub patches: usize,
    /// Tokens per patch (N).
    pub tokens: usize,
    pub mode: MultiPatch,
}

/// A model file read from disk: weights-only bytes, its config and where it came from.
pub struct OpenedModel {
    pub weights: Vec<u8>,
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
        Ok(OpenedModel { weights, config, path })
    }

    /// The opened model on `be` with the token override, ready for `batch` crops of side `size`
    /// (`None`: see [`model_io::crop_side`]).
    pub fn runner<B: Backend>(
        &self,
        be: &B,
        opened: &OpenedModel,
        batch: usize,
        size: Option<usize>,
    ) -> Result<Runner<B>> {
        let layout = self.layout(opened, size)?;
        let what = format!("model '{}'", opened.path.display());
        let model = model_io::build_model(be, &opened.config, self.tokens, &opened.weights, &what)?;
        Runner::new(be, model, batch, layout.patches, layout.mode, self.init)
    }

    /// The [`Layout`] of `--size` (`None`: see [`model_io::crop_side`]) for the opened model.
    pub fn layout(&self, opened: &OpenedModel, size: Option<usize>) -> Result<Layout> {
        let cfg = &opened.config;
        let side = model_io::crop_side(size, cfg.image_size)?;
        Ok(Layout {
            side,
            patch: cfg.image_size,
            patches: side / cfg.image_size,
            tokens: self.tokens.unwrap_or(cfg.gps.gps_num),
            mode: self.multi_patch.unwrap_or(MultiPatch::default_for(cfg)),
        })
    }
}

/// The centre crop of one photo through the model, with an optional focus mask (cdbias) for
/// Algorithm 1 (encode, reconstruct). Returns the crop and what the model made of it.
pub struct OneCrop<'a> {
    pub args: &'a ModelArgs,
    pub opened: &'a OpenedModel,
    pub size: Option<usize>,
    pub image: &'a Path,
    pub focus: Option<&'a Path>,
}

impl BackendTask for OneCrop<'_> {
    type Output = (Rgb8, Output);

    fn run<B: Backend>(self, be: &B) -> Result<(Rgb8, Output)> {
        // The model first: a model that does not load fails before the photo is read.
        let mut runner = self.args.runner(be, self.opened, 1, self.size)?;
        let side = runner.crop_size();
        let photo = imageio::load_rgb8(self.image)?;
        let crop = imageio::frame(&photo, Framing::CentreCrop, side)?;
        if let Some(f) = self.focus {
            runner.bias = Some(imageio::focus_bias(f, &photo, Framing::CentreCrop, side, 60.0)?);
        }
        let mut outs = runner.run(be, &[&crop])?;
        let out = outs.pop().context("internal error: no output")?;
        Ok((crop, out))
    }
}
