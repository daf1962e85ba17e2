//! `gpstoken train-generator`: flow matching (spec 9.3) of a layout, texture or one-stage
//! generator on the tokens of a labelled folder. The run folder holds `tokens.safetensors` (the
//! cached training tokens), `checkpoint.safetensors` (weights, Adam moments, metadata; written
//! atomically every `--checkpoint-every` steps and at the end), `generator.safetensors` (weights
//! and metadata, for `generate`), `log.jsonl` (`{"step","loss","seconds","elapsed"}` per step,
//! `{"samples","file"}` per sample grid) and `samples_STEP.png`.
//!
//! Determinism: the batch of step `t` (indices drawn with replacement from the training samples)
//! and the step's draws (`t`, noise, label dropout, condition noise) come from generators seeded
//! by `(seed, t)`, so a resumed run computes exactly what an uninterrupted one does.

use super::checkpoint::{self, Moments};
use super::model::{GeneratorInfo, SitSize, Stage, TrainingState};
use super::sample::{decode_all, draw_layouts, grid, Generator};
use super::tokens::TokenSet;
use crate::backends::{device_error, BackendTask};
use crate::imageio::{save_png, Rgb8};
use crate::model_io::{MultiPatch, Runner};
use anyhow::{bail, Context, Result};
use gpstoken_core::backend::{AdamConfig, Backend};
use gpstoken_core::model::sit::{
    tokens_to_latents, CondNoise, FlowScratch, LatentStats, OdeMethod, Sampler, Sit, TrainingBatch,
};
use gpstoken_core::model::GpsToken;
use gpstoken_core::rng::SplitMix64;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const WEIGHTS: &str = "generator.safetensors";
pub const LOG: &str = "log.jsonl";

/// The settings of one run (the flags, resolved).
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub stage: Stage,
    pub steps: u64,
    pub size: SitSize,
    pub training: TrainingState,
    pub out: PathBuf,
    pub resume: bool,
    pub checkpoint_every: u64,
    pub sample_every: u64,
    pub samples: usize,
    pub quiet: bool,
}

/// The training task: the settings, the tokenizer (weights and config) and the token set (`None`:
/// encode the images, then cache the tokens at `cache.0` under the key `cache.1`).
pub struct TrainTask {
    pub settings: RunSettings,
    pub tokenizer: (Vec<u8>, gpstoken_core::model::ModelConfig),
    pub images: Option<super::data::LabelledImages>,
    pub cached: Option<TokenSet>,
    pub cache: (PathBuf, String),
}

/// The training latents `[M, C, N, 1]`, conditions `[M, N, 5]` and statistics of a stage.
pub fn stage_latents(stage: Stage, set: &TokenSet, which: &[usize]) -> Result<(Vec<f32>, Vec<f32>, LatentStats)> {
    let (n, stride) = (set.tokens, set.stride);
    let rows_of = |i: usize| &set.rows[i * n * stride..(i + 1) * n * stride];
    let g_of = |i: usize| &set.g_init[i * n * 5..(i + 1) * n * 5];
    let g: Vec<f32> = which.iter().flat_map(|&i| g_of(i).iter().copied()).collect();
    let rows: Vec<f32> = match stage {
        Stage::Layout => g.clone(),
        _ => which.iter().flat_map(|&i| rows_of(i).iter().copied()).collect(),
    };
    let c = rows.len() / (which.len() * n).max(1);
    let g_init = (stage == Stage::Texture).then_some(g.as_slice());
    let residual = gpstoken_core::model::sit::postprocess::residual_rows(&rows, c, g_init);
    let stats = LatentStats::from_token_rows_unit_if_constant(&residual, c).map_err(|e| anyhow::anyhow!("{e}"))?;
    let latents = tokens_to_latents(&stats, &rows, n, g_init).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((latents, g, stats))
}

/// A generator seeded by `(seed, step, stream)`.
fn stream(seed: u64, step: u64, which: u64) -> SplitMix64 {
    let mut r = SplitMix64::new(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    SplitMix64::new(r.next_u64() ^ which.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
}

impl BackendTask for TrainTask {
    type Output = f64;

    fn run<B: Backend>(self, be: &B) -> Result<f64> {
        let s = &self.settings;
        let err = device_error(be);
        let build_tokenizer = || -> Result<GpsToken<B>> {
            crate::model_io::build_model(be, &self.tokenizer.1, None, &self.tokenizer.0, "the tokenizer")
        };
        let set = match (self.cached, &self.images) {
            (Some(set), _) => set,
            (None, Some(images)) => {
                eprintln!(
                    "gpstoken: encoding {} images (and their mirror images) with the tokenizer",
                    images.images.len()
                );
                let set = super::tokens::encode_all(be, build_tokenizer()?, images)?;
                super::tokens::save_cache(&self.cache.0, &set, &self.cache.1)?;
                set
            }
            (None, None) => bail!("internal error: neither tokens nor images"),
        };
        let train = set.training();
        if train.is_empty() {
            bail!("no training images (all held out)");
        }
        let (latents, g_init, stats) = stage_latents(s.stage, &set, &train)?;
        let features = set.stride - 5;
        let config = s.stage.sit_config(&s.size, set.classes.len(), set.tokens, features);
        let mut info = GeneratorInfo {
            stage: s.stage,
            config: config.clone(),
            class_names: set.classes.clone(),
            stats,
            patch: self.tokenizer.1.image_hw.0,
            features,
            training: s.training,
        };
        let mut sit = Sit::new(be, config.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        sit.init(be, s.training.seed).map_err(err)?;
        let mut moments = Moments::zeros(be, &sit)?;
        // EMA weights start as a copy of the initial weights (SiT's train.py)
        let mut ema: Option<Vec<B::Buffer>> = if s.training.ema > 0.0 {
            let mut bufs = Vec::with_capacity(sit.params.len());
            for id in 0..sit.params.len() {
                let mut e = be.zeros(sit.params.spec(id).numel()).map_err(err)?;
                be.copy(sit.params.value(id), &mut e).map_err(err)?;
                bufs.push(e);
            }
            Some(bufs)
        } else {
            None
        };
        let ckpt = s.out.join(CHECKPOINT);
        let mut start = 0;
        if s.resume && ckpt.is_file() {
            let stored = checkpoint::load(be, &ckpt, &mut sit, &mut moments, ema.as_deref_mut())?;
            check_resume(&stored, &info)?;
            start = stored.training.step;
            crate::train::checkpoint::truncate_log(&s.out.join(LOG), start)?;
        } else {
            let _ = std::fs::remove_file(s.out.join(LOG));
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.out.join(LOG))
            .with_context(|| format!("cannot open the log in '{}'", s.out.display()))?;
        let per = config.in_channels * config.tokens;
        let (bsz, n) = (s.training.batch, config.tokens);
        let mut acts = sit.activations(be, bsz).map_err(err)?;
        let mut scratch = FlowScratch::default();
        let adam = AdamConfig { lr: s.training.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let noise =
            if s.training.cond_noise > 0.0 { CondNoise::Additive(s.training.cond_noise) } else { CondNoise::None };
        let bar = progress(s, start);
        let (t0, mut last_loss) = (Instant::now(), f64::NAN);
        let (mut x1, mut labels, mut cond) = (Vec::new(), Vec::new(), Vec::new());
        for t in start + 1..=s.steps {
            let ts = Instant::now();
            let mut pick = stream(s.training.seed, t, 0);
            x1.clear();
            labels.clear();
            cond.clear();
            for _ in 0..bsz {
                let k = (pick.next_u64() % train.len() as u64) as usize;
                x1.extend_from_slice(&latents[k * per..(k + 1) * per]);
                labels.push(set.labels[train[k]]);
                cond.extend_from_slice(&g_init[k * n * 5..(k + 1) * n * 5]);
            }
            let batch = TrainingBatch {
                x1: &x1,
                labels: &labels,
                cond: (s.stage == Stage::Texture).then_some(cond.as_slice()),
            };
            let mut rng = stream(s.training.seed, t, 1);
            let loss = sit.training_step(be, &mut acts, batch, noise, &mut rng, &mut scratch).map_err(err)?;
            if !loss.is_finite() {
                bail!("the loss diverged at step {t} (try a smaller --lr)");
            }
            moments.step(be, &mut sit, &adam, t)?;
            if let Some(ema) = ema.as_mut() {
                crate::train::state::ema_update_params(be, &sit.params, ema, s.training.ema)?;
            }
            last_loss = loss;
            let line = format!(
                "{{\"step\":{t},\"loss\":{loss},\"seconds\":{:.4},\"elapsed\":{:.3}}}",
                ts.elapsed().as_secs_f64(),
                t0.elapsed().as_secs_f64()
            );
            writeln!(log, "{line}").and_then(|_| log.flush()).context("cannot write the training log")?;
            bar.set_position(t);
            bar.set_message(format!("loss {loss:.4}"));
            if s.quiet && t % 50 == 0 {
                eprintln!("gpstoken: step {t}/{} loss {loss:.5}", s.steps);
            }
            info.training.step = t;
            if t % s.checkpoint_every == 0 || t == s.steps {
                checkpoint::save(be, &ckpt, &sit, Some(&moments), ema.as_deref(), &info)?;
            }
            if s.samples > 0 && (t % s.sample_every == 0 || t == s.steps) {
                let file = format!("samples_{t:06}.png");
                let gen = Generator { sit, info: info.clone() };
                let img = sample_grid(be, &gen, &set, &self.tokenizer, s.samples, s.training.seed)?;
                sit = gen.sit;
                save_png(&s.out.join(&file), &img)?;
                writeln!(log, "{{\"samples\":{t},\"file\":\"{file}\"}}").context("cannot write the training log")?;
            }
        }
        bar.finish_and_clear();
        info.training.step = info.training.step.max(start);
        checkpoint::save(be, &s.out.join(WEIGHTS), &sit, None, ema.as_deref(), &info)?;
        Ok(last_loss)
    }
}

/// A resumed run must train the same model the same way.
fn check_resume(stored: &GeneratorInfo, now: &GeneratorInfo) -> Result<()> {
    let (a, b) = (&stored.training, &now.training);
    let same = stored.stage == now.stage
        && stored.config == now.config
        && stored.class_names == now.class_names
        && (a.seed, a.batch, a.lr.to_bits(), a.cond_noise.to_bits(), a.ema.to_bits())
            == (b.seed, b.batch, b.lr.to_bits(), b.cond_noise.to_bits(), b.ema.to_bits());
    if !same {
        bail!(
            "--resume: the checkpoint was trained with other settings (stage {}, seed {}, batch {}, lr {}, cond noise {}, ema {}, width {}, depth {}, {} classes); pass the same flags or a new --out",
            stored.stage.name(), a.seed, a.batch, a.lr, a.cond_noise, a.ema, stored.config.hidden, stored.config.depth, stored.class_names.len()
        );
    }
    Ok(())
}

fn progress(s: &RunSettings, start: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(s.steps);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "train-generator {bar:30} {pos}/{len} steps  {msg}  {per_sec}  eta {eta}",
    ) {
        bar.set_style(style);
    }
    if s.quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_position(start);
    bar
}

/// `count` samples (labels cycling through the classes) with a 16-step Heun ODE: layouts drawn
/// as ellipses for a layout model; for the texture model, around the layouts of the first held-out
/// (else training) samples; decoded by the tokenizer.
fn sample_grid<B: Backend>(
    be: &B,
    gen: &Generator<B>,
    set: &TokenSet,
    tokenizer: &(Vec<u8>, gpstoken_core::model::ModelConfig),
    count: usize,
    seed: u64,
) -> Result<Rgb8> {
    let sampler = Sampler::Ode { method: OdeMethod::Heun, steps: 16 };
    let mut rng = SplitMix64::new(seed);
    let (n, patch, cols) = (set.tokens, tokenizer.1.image_hw.0, super::sample::grid_shape(count).0);
    let mut labels: Vec<u32> = (0..count).map(|k| (k % set.classes.len()) as u32).collect();
    if gen.info.stage == Stage::Layout {
        let layouts = gen.layouts(be, &labels, sampler, false, &mut rng)?;
        let blank = Rgb8 { width: patch, height: patch, data: vec![255; patch * patch * 3] };
        let canvas = grid(&vec![blank; count], cols);
        return Ok(draw_layouts(&canvas, &layouts, 5, n, cols, patch));
    }
    let layouts = if gen.info.stage == Stage::Texture {
        let mut order: Vec<usize> = (0..set.len()).filter(|&i| set.held_out[i]).collect();
        order.extend(set.training());
        let picked: Vec<usize> = order.iter().copied().cycle().take(count).collect();
        labels = picked.iter().map(|&i| set.labels[i]).collect();
        Some(picked.iter().flat_map(|&i| set.g_init[i * n * 5..(i + 1) * n * 5].iter().copied()).collect::<Vec<_>>())
    } else {
        None
    };
    let rows = gen.tokens(be, &labels, layouts.as_deref(), sampler, 1.0, &mut rng)?;
    let model = crate::model_io::build_model(be, &tokenizer.1, Some(n), &tokenizer.0, "the tokenizer")?;
    let mut runner = Runner::new(be, model, 1, 1, MultiPatch::Tiled, crate::data::Init::Adaptive)?;
    Ok(grid(&decode_all(be, &mut runner, &rows, count)?, cols))
}

/// Where a run's files go, created if needed.
pub fn prepare_out(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create run folder '{}'", out.display()))
}
