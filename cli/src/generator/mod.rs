//! The generators' command-line side (spec 9): the labelled data and its cached tokens
//! ([`data`], [`tokens`]), the layout bank ([`bank`]), generator files ([`model`]), training
//! ([`train`], [`checkpoint`]) and sampling with the post-processing into tokens ([`sample`]).
//! The network, flow matching and the samplers are in `gpstoken_core::model::sit`.

pub mod bank;
pub mod checkpoint;
pub mod classifier;
pub mod classify;
pub mod data;
pub mod evaluate;
pub mod initg;
pub mod metrics;
pub mod model;
pub mod sample;
pub mod tokens;
pub mod train;

use crate::backends::{with_backend, BackendSelection};
use anyhow::{bail, Result};
use model::{SitSize, Stage, TrainingState};
use std::path::PathBuf;

/// The `gpstoken train-generator` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct GeneratorTrainOptions {
    /// What to train: the layout model, the texture model (conditioned on layouts) or the
    /// one-stage baseline (geometry and features together).
    #[arg(long, value_enum)]
    pub stage: Stage,
    /// The tokenizer whose tokens are generated [default: $GPSTOKEN_MODEL, else models/tiny64.safetensors].
    #[arg(long, value_name = "MODEL")]
    pub tokenizer: Option<PathBuf>,
    /// Labelled images: one sub-folder per class (DIR/<class>/*.png); alpha is composited onto white.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Total optimiser steps (a resumed run continues up to this step).
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Samples per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Adam learning rate (betas 0.9, 0.999, as SiT).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f32,
    /// Seed of the weights, the batches and every draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SiT width D.
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    /// SiT blocks.
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
    /// Attention heads (must divide --width).
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Texture stage: additive Gaussian noise of this std on the layout condition in training
    /// (the paper's "0.5 Gaussian noise", spec 9.3; 0 = none).
    #[arg(long, value_name = "STD", default_value_t = 0.0)]
    pub cond_noise: f32,
    /// Keep an exponential moving average of the weights with this decay per step (SiT's
    /// train.py: 0.9999, starting from a copy of the initial weights), saved under the official
    /// prefix `ema_model.`; `generate` samples with it. 0 = none.
    #[arg(long, value_name = "DECAY", default_value_t = 0.0)]
    pub ema: f32,
    /// Hold out every K-th image of each class (by file name) from training; 0 = none.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub hold_out: usize,
    /// Run folder.
    #[arg(long, value_name = "RUN_DIR", default_value = "gen-run")]
    pub out: PathBuf,
    /// Where the encoded training tokens are cached (read when its key matches, else written), so
    /// that the stages of one data set share one encoding [default: RUN_DIR/tokens.safetensors].
    #[arg(long, value_name = "FILE")]
    pub token_cache: Option<PathBuf>,
    /// Continue from RUN_DIR/checkpoint.safetensors (bit-exact on the CPU backend); starts fresh if there is none.
    #[arg(long)]
    pub resume: bool,
    /// Write the checkpoint every K steps (and at the end).
    #[arg(long, value_name = "K", default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Write a sample grid every K steps (and at the end).
    #[arg(long, value_name = "K", default_value_t = 250)]
    pub sample_every: u64,
    /// Samples in each grid (0: no grids).
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    /// No progress bar (a status line every 50 steps on stderr instead).
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `train-generator`: checks the flags, loads the tokenizer and the images (or the cached
/// tokens) before any device work, then trains on the selected backend. Returns the last loss.
pub fn train_generator(o: &GeneratorTrainOptions, backend: &BackendSelection) -> Result<f64> {
    if o.batch == 0 || o.steps == 0 || o.checkpoint_every == 0 || o.sample_every == 0 {
        bail!("--batch, --steps, --checkpoint-every and --sample-every must be at least 1");
    }
    if !(o.lr.is_finite() && o.lr > 0.0 && o.cond_noise.is_finite() && o.cond_noise >= 0.0) {
        bail!("--lr must be positive and --cond-noise non-negative");
    }
    if !(0.0..1.0).contains(&o.ema) {
        bail!("--ema must be in [0, 1) (0 = no EMA), got {}", o.ema);
    }
    if o.width == 0 || o.heads == 0 || o.depth == 0 || !o.width.is_multiple_of(o.heads) {
        bail!("--width {} must be a positive multiple of --heads {} and --depth at least 1", o.width, o.heads);
    }
    let path = match &o.tokenizer {
        Some(p) => p.clone(),
        None => crate::model_io::default_model_path()?,
    };
    let tokenizer = crate::model_io::read_model(&path, crate::model_io::Which::Raw, None)?;
    let cfg = &tokenizer.1;
    let patch = cfg.square_patch().map_err(|e| anyhow::anyhow!("train-generator: tokenizer {}", e.0))?;
    let images = data::load_labelled(&o.data, patch, o.hold_out)?;
    if images.images.is_empty() {
        bail!("data folder '{}': no readable images", o.data.display());
    }
    train::prepare_out(&o.out)?;
    let key = tokens::cache_key(&tokenizer.0, &images, patch, cfg.gps.gps_num);
    let cache = o.token_cache.clone().unwrap_or_else(|| o.out.join(tokens::TOKEN_CACHE));
    let cached = tokens::load_cache(&cache, &key)?;
    let settings = train::RunSettings {
        stage: o.stage,
        steps: o.steps,
        size: SitSize { hidden: o.width, depth: o.depth, heads: o.heads },
        training: TrainingState {
            step: 0,
            seed: o.seed,
            batch: o.batch,
            lr: o.lr,
            cond_noise: o.cond_noise,
            ema: o.ema,
        },
        out: o.out.clone(),
        resume: o.resume,
        checkpoint_every: o.checkpoint_every,
        sample_every: o.sample_every,
        samples: o.samples,
        quiet: o.quiet,
    };
    let images = if cached.is_some() { None } else { Some(images) };
    with_backend(backend, train::TrainTask { settings, tokenizer, images, cached, cache: (cache, key) })
}
