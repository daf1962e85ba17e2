//! `gpstoken train`: the reconstruction stage of the official training (spec 8) on any backend
//! (`--backend`): L2 loss, Adam with betas (0.5, 0.9), EMA weights as `ema_pytorch` keeps them,
//! atomic checkpoints and bit-exact `--resume`.
//!
//! Run folder (`--out`):
//!
//! * `checkpoint.safetensors`: weights (official names), `ema.*` (EMA weights), `adam_m.*`,
//!   `adam_v.*` (Adam moments of every parameter with a gradient) and metadata (step, seed,
//!   batch, lr, init, config). Written every `--checkpoint-every` steps and at the end, to a
//!   temporary file that is then renamed: the file always loads, and a killed run loses at most
//!   the steps since the last checkpoint.
//! * `weights.safetensors`, `weights_ema.safetensors`: weights only (for `--model`), at the end.
//! * `log.jsonl`: one line per step `{"step","loss","psnr","seconds","elapsed"}` and one per
//!   evaluation `{"eval","psnr","ssim","ema_psnr","ema_ssim","images"}`. On `--resume` the lines
//!   after the checkpoint's step are dropped first, so the log reads as one uninterrupted run.
//! * `eval_STEP.png`: evaluation crops, raw reconstruction, EMA reconstruction, one row each.
//!
//! Adversarial stage (optional, `--disc-start STEP`, spec 8): a PatchGAN discriminator (taming's
//! `NLayerDiscriminator`, BatchNorm in training mode) with its own Adam (same lr and betas). With
//! the official 0-based step `s = t - 1` of log step `t`: `disc_factor = 1` from `s >= disc_start`;
//! odd `s > disc_start` are discriminator steps (hinge loss on real images and detached
//! reconstructions), every other step updates the autoencoder with
//! `L = mse + d_weight·disc_factor·(-mean(D(x̂)))`, `d_weight = clamp(‖∇_W mse‖ / (‖∇_W g‖ + 1e-4),
//! 0, 1e4)·disc_weight`, `W = decoder.conv_out.weight`. Adam's step count and the EMA counter
//! advance on autoencoder steps only (each optimiser counts its own steps, as in PyTorch). The
//! checkpoint then also holds `disc.*` (weights and BatchNorm buffers, official names after the
//! prefix), `disc_adam_m.*`, `disc_adam_v.*`, and `disc_start`/`disc_weight` in the metadata.
//! Not implemented: the perceptual terms (LPIPS, Inception features), which need pretrained
//! networks. Before `disc_start` the official code also runs `D(x̂)` on every step, which only
//! moves the BatchNorm running statistics (unused by the training-mode output); this port skips it.
//!
//! Determinism: the batches are a pure function of `(seed, step)` (see [`crate::data`]), the
//! weights are initialised from the seed, and the CPU backend is bit-reproducible, so a resumed
//! run computes exactly the losses of an uninterrupted one. The optimiser state stays on the
//! device and goes to the host only in checkpoints.
//!
//! Where it lives: [`settings`] (flags against the checkpoint), [`run`] (the loop, as a
//! [`crate::backends::BackendTask`]), [`state`] (Adam moments and EMA weights on the device),
//! [`gan`] (the adversarial stage), [`losses`] (the step's losses on the device, one read per
//! step), [`checkpoint`] (save, load, resume), [`eval`] (evaluation during training),
//! [`schedule`] (which step does what).

pub(crate) mod checkpoint;
mod eval;
mod gan;
mod losses;
mod memory;
mod run;
mod schedule;
mod settings;
pub(crate) mod state;

pub use schedule::{ae_steps_through, ema_decay, GanSettings};

use crate::backends::{with_backend, BackendSelection};
use crate::data::{Dataset, EvalSet, Init};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Settings of a run (the `gpstoken train` flags). `None` means "the checkpoint's value when
/// resuming, else the default".
#[derive(Clone, Debug, clap::Args)]
pub struct TrainOptions {
    /// Model config: a built-in name (tiny64, s64, m128, l256) or an official yaml file [default: tiny64].
    #[arg(long, value_name = "NAME|FILE")]
    pub config: Option<String>,
    /// Training photos (PNG/JPEG, searched recursively).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Evaluation photos (centre crops at the config's image size).
    #[arg(long, value_name = "DIR")]
    pub eval: Option<PathBuf>,
    /// Total optimiser steps (a resumed run continues up to this step).
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Images per step [default: 4].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Adam learning rate (betas 0.5, 0.9 as the official training) [default: 4e-4].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Seed of the weights and of every random choice of the data path [default: 23].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Initial Gaussians: Algorithm 1 (adaptive) or a uniform grid [default: adaptive].
    #[arg(long, value_enum)]
    pub init: Option<Init>,
    /// Run folder: checkpoint, log.jsonl, evaluation pictures, final weights.
    #[arg(long, value_name = "RUN_DIR", default_value = "run")]
    pub out: PathBuf,
    /// Continue from RUN_DIR/checkpoint.safetensors (bit-exact on the CPU backend); starts fresh if there is none.
    #[arg(long)]
    pub resume: bool,
    /// Write the checkpoint every K steps (and at the end).
    #[arg(long, value_name = "K", default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Evaluate on --eval every K steps (and at the end).
    #[arg(long, value_name = "K", default_value_t = 250)]
    pub eval_every: u64,
    /// Evaluate on at most this many images of --eval.
    #[arg(long, default_value_t = 64)]
    pub eval_images: usize,
    /// No progress bar (a status line every 50 steps on stderr instead).
    #[arg(long)]
    pub quiet: bool,
    /// Start the adversarial stage (PatchGAN discriminator, hinge loss, adaptive weight) at this
    /// 0-based step (the official 600000); also read from the yaml's model.lossconfig.params.
    #[arg(long, value_name = "STEP")]
    pub disc_start: Option<u64>,
    /// Weight of the adversarial term's adaptive weight (official 0.3) [default: 0.3].
    #[arg(long, value_name = "W")]
    pub disc_weight: Option<f32>,
}

pub const DEFAULT_BATCH: usize = 4;
pub const DEFAULT_LR: f32 = 4e-4;
pub const DEFAULT_SEED: u64 = 23;
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const LOG: &str = "log.jsonl";
/// The official `disc_weight` (spec 7.1).
pub const DEFAULT_DISC_WEIGHT: f32 = 0.3;

/// Summary of a finished run.
pub struct TrainSummary {
    pub steps_run: u64,
    pub last_step: u64,
    pub seconds: f64,
    pub images_per_second: f64,
    pub last_loss: f64,
}

/// PSNR on [0, 1] of an MSE measured on [-1, 1].
pub fn psnr_from_mse(mse: f64) -> f64 {
    10.0 * (4.0 / mse).log10()
}

/// Runs `gpstoken train` on the selected backend. Settings, data and the run folder are checked
/// before the backend is opened, so bad input fails before any device work.
pub fn train(o: &TrainOptions, backend: &BackendSelection) -> Result<TrainSummary> {
    let settings = settings::resolve(o)?;
    let data = Dataset::load(&o.data, settings.spec)?;
    if data.skipped > 0 {
        eprintln!("gpstoken: warning: skipped {} unreadable image(s) in '{}'", data.skipped, o.data.display());
    }
    let eval_set = o.eval.as_ref().map(|d| EvalSet::load_flag("--eval", d, settings.cfg.image_size)).transpose()?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("cannot create run folder '{}'", o.out.display()))?;
    with_backend(backend, run::TrainRun { options: o, settings, data, eval_set })
}
