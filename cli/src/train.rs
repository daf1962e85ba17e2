//! `gpstoken train`: the reconstruction stage of the official training (spec 8) on the CPU
//! backend: L2 loss, Adam with betas (0.5, 0.9), EMA weights as `ema_pytorch` keeps them,
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
//! run computes exactly the losses of an uninterrupted one.

use crate::backends::{self, BackendKind};
use crate::data::{Batch, Dataset, EvalSet, Init, SampleSpec};
use crate::imageio::{self, Rgb8};
use crate::model_io::{
    self, Output, ADAM_M_PREFIX, ADAM_V_PREFIX, DISC_ADAM_M_PREFIX, DISC_ADAM_V_PREFIX, DISC_PREFIX, EMA_PREFIX,
    META_CONFIG,
};
use crate::viz;
use anyhow::{bail, Context, Result};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{AdamConfig, Buffers, LossOps, OptimOps, TensorOps};
use gpstoken_core::model::{DiscActs, DiscGradients, Discriminator, DiscriminatorConfig, GpsToken, ModelConfig};
use safetensors::tensor::SafeTensors;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    /// The global `--backend` (set by the caller, not a flag of its own).
    #[arg(skip)]
    pub backend: BackendKind,
    /// The global `--threads`.
    #[arg(skip)]
    pub threads: Option<usize>,
}

pub const DEFAULT_BATCH: usize = 4;
pub const DEFAULT_LR: f32 = 4e-4;
pub const DEFAULT_SEED: u64 = 23;
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const LOG: &str = "log.jsonl";
/// The official `disc_weight` (spec 7.1).
pub const DEFAULT_DISC_WEIGHT: f32 = 0.3;

/// The adversarial stage's settings and its schedule (spec 8). `t` is the 1-based step of the
/// log; the official code counts `s = t - 1` from 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GanSettings {
    pub disc_start: u64,
    pub disc_weight: f32,
}

impl GanSettings {
    /// `optimizer_idx = s % 2 if s > disc_start else 0`: whether step `t` trains the discriminator.
    pub fn is_disc_step(&self, t: u64) -> bool {
        let s = t - 1;
        s > self.disc_start && s % 2 == 1
    }

    /// `disc_factor = 1 if s >= disc_start else 0`.
    pub fn disc_factor(&self, t: u64) -> f32 {
        // s = t - 1 >= disc_start.
        if t > self.disc_start {
            1.0
        } else {
            0.0
        }
    }

    /// Discriminator steps among steps `1..=t`: the odd `s` in `disc_start + 1 ..= t - 1`.
    pub fn disc_steps_through(&self, t: u64) -> u64 {
        let (first, last) = (self.disc_start + 1, t - 1);
        if last < first {
            return 0;
        }
        // Odd numbers <= n: ceil(n / 2).
        last.div_ceil(2) - first / 2
    }
}

/// Autoencoder optimiser steps among steps `1..=t` (all of them without a discriminator).
pub fn ae_steps_through(gan: Option<&GanSettings>, t: u64) -> u64 {
    t - gan.map_or(0, |g| g.disc_steps_through(t))
}

/// EMA of `ema_pytorch` 0.6 with the official settings (spec 8): beta 0.9999,
/// update_after_step 100, update_every 10, inv_gamma 1, power 2/3. `k_old` is the number of
/// optimiser steps before this one. Returns `None` (no update), `Some(0.0)` (copy the weights)
/// or `Some(decay)`.
pub fn ema_decay(k_old: u64) -> Option<f32> {
    if k_old % 10 != 0 {
        return None;
    }
    if k_old <= 100 {
        return Some(0.0);
    }
    let k_new = k_old + 1;
    let epoch = (k_new - 101) as f64;
    let decay = 1.0 - (1.0 + epoch).powf(-2.0 / 3.0);
    Some(decay.clamp(0.0, 0.9999) as f32)
}

/// What a checkpoint's metadata records.
#[derive(Clone, Debug, PartialEq)]
struct Meta {
    config: String,
    step: u64,
    seed: u64,
    batch: usize,
    lr: f32,
    init: Init,
    gan: Option<GanSettings>,
}

impl Meta {
    fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".to_string(), "gpstoken-train-1".to_string());
        m.insert(META_CONFIG.to_string(), self.config.clone());
        m.insert("step".to_string(), self.step.to_string());
        m.insert("seed".to_string(), self.seed.to_string());
        m.insert("batch".to_string(), self.batch.to_string());
        // f32 Debug output round-trips exactly.
        m.insert("lr".to_string(), format!("{:?}", self.lr));
        m.insert("init".to_string(), self.init.name().to_string());
        // The data RNG state is a pure function of (seed, step): see crate::data.
        m.insert("rng".to_string(), format!("splitmix64(seed={}, step={})", self.seed, self.step));
        if let Some(g) = &self.gan {
            m.insert("disc_start".to_string(), g.disc_start.to_string());
            m.insert("disc_weight".to_string(), format!("{:?}", g.disc_weight));
        }
        m
    }

    fn from_map(m: &HashMap<String, String>) -> Result<Meta> {
        let get = |k: &str| m.get(k).with_context(|| format!("checkpoint metadata lacks '{k}'"));
        let num = |k: &str| -> Result<u64> { get(k)?.parse().with_context(|| format!("bad '{k}' in checkpoint")) };
        let init = match get("init")?.as_str() {
            "adaptive" => Init::Adaptive,
            "grid" => Init::Grid,
            other => bail!("bad init '{other}' in checkpoint"),
        };
        Ok(Meta {
            config: get(META_CONFIG)?.clone(),
            step: num("step")?,
            seed: num("seed")?,
            batch: num("batch")? as usize,
            lr: get("lr")?.parse().context("bad 'lr' in checkpoint")?,
            init,
            gan: match m.get("disc_start") {
                None => None,
                Some(_) => Some(GanSettings {
                    disc_start: num("disc_start")?,
                    disc_weight: get("disc_weight")?.parse().context("bad 'disc_weight' in checkpoint")?,
                }),
            },
        })
    }
}

/// The optimiser and EMA state next to the model.
struct State {
    m: Vec<Option<Vec<f32>>>,
    v: Vec<Option<Vec<f32>>>,
    ema: Vec<Vec<f32>>,
}

type Be = CpuBackend;

fn be_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cpu backend: {e}")
}

impl State {
    fn new(be: &Be, model: &GpsToken<Be>) -> Result<State> {
        let (mut m, mut v, mut ema) = (Vec::new(), Vec::new(), Vec::new());
        let mut res = Ok(());
        model.params.for_each(|_, spec, value, grad| {
            let n = spec.numel();
            m.push(grad.map(|_| vec![0.0f32; n]));
            v.push(grad.map(|_| vec![0.0f32; n]));
            let mut e = vec![0.0f32; n];
            if let Err(err) = be.copy(value, &mut e) {
                res = Err(be_err(err));
            }
            ema.push(e);
        });
        res?;
        Ok(State { m, v, ema })
    }
}

/// The adversarial stage: the discriminator, its Adam moments, and its buffers for one batch.
struct Gan {
    settings: GanSettings,
    disc: Discriminator<Be>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Activations of `D(x)` and `D(x̂)`: separate forwards, separate batch statistics.
    real: DiscActs<Be>,
    fake: DiscActs<Be>,
    /// dL/d logits of the real and the fake forward.
    d_real: Vec<f32>,
    d_fake: Vec<f32>,
    /// The real pass's parameter gradients, kept while the fake pass overwrites them.
    grad_real: Vec<Vec<f32>>,
    /// dL/d(conv_out.weight) of the reconstruction term and of the adversarial term alone.
    w_nll: Vec<f32>,
    w_g: Vec<f32>,
}

/// What one step of the adversarial stage measured, for the log.
enum GanLog {
    Autoencoder { g_loss: f64, d_weight: f32, logits_fake: f64 },
    Discriminator { d_loss: f64, logits_real: f64, logits_fake: f64 },
}

impl Gan {
    fn new(be: &Be, settings: GanSettings, seed: u64, batch: usize, size: usize, conv_out: usize) -> Result<Gan> {
        let mut disc = Discriminator::new(be, DiscriminatorConfig::OFFICIAL).map_err(be_err)?;
        disc.init(be, seed).map_err(be_err)?;
        let specs = disc.params.specs().to_vec();
        let zeros = || specs.iter().map(|s| vec![0.0f32; s.numel()]).collect::<Vec<_>>();
        let real = disc.activations(be, batch, size, size).map_err(be_err)?;
        let fake = disc.activations(be, batch, size, size).map_err(be_err)?;
        let logits = be.len(real.logits());
        Ok(Gan {
            settings,
            m: zeros(),
            v: zeros(),
            grad_real: zeros(),
            disc,
            real,
            fake,
            d_real: vec![0.0; logits],
            d_fake: vec![0.0; logits],
            w_nll: vec![0.0; conv_out],
            w_g: vec![0.0; conv_out],
        })
    }

    /// Checkpoint tensors: weights, BatchNorm buffers, Adam moments.
    fn tensors(&self, be: &Be, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<()> {
        for (id, spec) in self.disc.params.specs().iter().enumerate() {
            out.push((
                format!("{DISC_PREFIX}{}", spec.name),
                spec.shape.clone(),
                host(be, self.disc.params.value(id))?,
            ));
            out.push((format!("{DISC_ADAM_M_PREFIX}{}", spec.name), spec.shape.clone(), self.m[id].clone()));
            out.push((format!("{DISC_ADAM_V_PREFIX}{}", spec.name), spec.shape.clone(), self.v[id].clone()));
        }
        for st in self.disc.norm_states() {
            let c = be.len(&st.running_mean);
            out.push((format!("{DISC_PREFIX}{}.running_mean", st.prefix), vec![c], host(be, &st.running_mean)?));
            out.push((format!("{DISC_PREFIX}{}.running_var", st.prefix), vec![c], host(be, &st.running_var)?));
            // An int64 scalar in PyTorch; f32 holds every count below 2^24 exactly.
            if st.num_batches_tracked >= 1 << 24 {
                bail!("num_batches_tracked {} no longer fits an f32 exactly", st.num_batches_tracked);
            }
            let tracked = vec![st.num_batches_tracked as f32];
            out.push((format!("{DISC_PREFIX}{}.num_batches_tracked", st.prefix), vec![], tracked));
        }
        Ok(())
    }

    /// Restores what [`Gan::tensors`] wrote.
    fn load(&mut self, be: &Be, read: &dyn Fn(&str, usize) -> Result<Vec<f32>>) -> Result<()> {
        let specs = self.disc.params.specs().to_vec();
        for (id, spec) in specs.iter().enumerate() {
            let n = spec.numel();
            let w = read(&format!("{DISC_PREFIX}{}", spec.name), n)?;
            be.write(self.disc.params.value_mut(id), &w).map_err(be_err)?;
            self.m[id] = read(&format!("{DISC_ADAM_M_PREFIX}{}", spec.name), n)?;
            self.v[id] = read(&format!("{DISC_ADAM_V_PREFIX}{}", spec.name), n)?;
        }
        for st in self.disc.norm_states_mut() {
            let c = be.len(&st.running_mean);
            let mean = read(&format!("{DISC_PREFIX}{}.running_mean", st.prefix), c)?;
            be.write(&mut st.running_mean, &mean).map_err(be_err)?;
            let var = read(&format!("{DISC_PREFIX}{}.running_var", st.prefix), c)?;
            be.write(&mut st.running_var, &var).map_err(be_err)?;
            let tracked = read(&format!("{DISC_PREFIX}{}.num_batches_tracked", st.prefix), 1)?[0];
            if !(tracked >= 0.0 && tracked.fract() == 0.0) {
                bail!("checkpoint: bad num_batches_tracked {tracked} for {}", st.prefix);
            }
            st.num_batches_tracked = tracked as u64;
        }
        Ok(())
    }

    /// The autoencoder's step with the adversarial term (`disc_factor` of step `t`): writes
    /// `acts.d_decoded` = d mse + d_weight·disc_factor·d g (the caller then runs the backward);
    /// returns the mse.
    fn autoencoder_gradient(
        &mut self,
        be: &Be,
        model: &GpsToken<Be>,
        acts: &mut gpstoken_core::model::Activations<Be>,
        t: u64,
    ) -> Result<(f64, GanLog)> {
        let nll = model.mse_loss_grad(be, acts).map_err(be_err)?;
        self.disc.forward(be, acts.decoded(), &mut self.fake).map_err(be_err)?;
        // g = -mean(D(x̂)): dg/dlogits = -1/n; D's parameter gradients are not needed.
        let logits_fake = be.mean_loss(self.fake.logits(), Some(&mut self.d_fake)).map_err(be_err)?;
        be.scale(&mut self.d_fake, -1.0).map_err(be_err)?;
        let want = DiscGradients { params: false, input: true };
        self.disc.backward(be, acts.decoded(), &self.d_fake, &mut self.fake, want).map_err(be_err)?;
        // The two weight-gradient norms at decoder.conv_out.weight, each term alone.
        model.conv_out_weight_grad(be, acts, acts.d_decoded(), &mut self.w_nll).map_err(be_err)?;
        model.conv_out_weight_grad(be, acts, self.fake.d_input(), &mut self.w_g).map_err(be_err)?;
        let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
        let (nll_norm, g_norm) = (norm(&self.w_nll), norm(&self.w_g));
        let d_weight = ((nll_norm / (g_norm + 1e-4)).clamp(0.0, 1e4) * f64::from(self.settings.disc_weight)) as f32;
        let factor = self.settings.disc_factor(t);
        be.axpy(d_weight * factor, self.fake.d_input(), acts.d_decoded_mut()).map_err(be_err)?;
        Ok((nll, GanLog::Autoencoder { g_loss: -logits_fake, d_weight, logits_fake }))
    }

    /// The discriminator's step `t`: hinge loss on `D(x)` and `D(x̂)` (x̂ detached), backward,
    /// its own Adam step number `disc_step`.
    fn discriminator_step(
        &mut self,
        be: &Be,
        acts: &gpstoken_core::model::Activations<Be>,
        adam: &AdamConfig,
        t: u64,
    ) -> Result<GanLog> {
        let (image, decoded) = (acts.image(), acts.decoded());
        self.disc.forward(be, image, &mut self.real).map_err(be_err)?;
        self.disc.forward(be, decoded, &mut self.fake).map_err(be_err)?;
        let loss_real = be.hinge_loss(self.real.logits(), true, Some(&mut self.d_real)).map_err(be_err)?;
        let loss_fake = be.hinge_loss(self.fake.logits(), false, Some(&mut self.d_fake)).map_err(be_err)?;
        let factor = self.settings.disc_factor(t);
        // d_loss = disc_factor · 0.5 · (real + fake).
        be.scale(&mut self.d_real, 0.5 * factor).map_err(be_err)?;
        be.scale(&mut self.d_fake, 0.5 * factor).map_err(be_err)?;
        let d_loss = f64::from(factor) * 0.5 * (loss_real + loss_fake);
        let logits_real = be.mean_loss(self.real.logits(), None).map_err(be_err)?;
        let logits_fake = be.mean_loss(self.fake.logits(), None).map_err(be_err)?;
        let want = DiscGradients { params: true, input: false };
        self.disc.backward(be, image, &self.d_real, &mut self.real, want).map_err(be_err)?;
        for (id, keep) in self.grad_real.iter_mut().enumerate() {
            be.copy(self.disc.params.grad(id).expect("every discriminator parameter is used"), keep).map_err(be_err)?;
        }
        self.disc.backward(be, decoded, &self.d_fake, &mut self.fake, want).map_err(be_err)?;
        let step = u32::try_from(self.settings.disc_steps_through(t)).context("too many steps")?;
        let (ms, vs, real) = (&mut self.m, &mut self.v, &self.grad_real);
        let mut res = Ok(());
        self.disc.params.for_each_mut(|id, _, value, grad| {
            let grad = grad.expect("every discriminator parameter is used");
            if res.is_ok() {
                res = be
                    .add_assign(grad, &real[id])
                    .and_then(|_| be.adam_step(adam, step, value, grad, &mut ms[id], &mut vs[id]))
                    .map_err(be_err);
            }
        });
        res?;
        Ok(GanLog::Discriminator { d_loss, logits_real, logits_fake })
    }
}

/// Downloads a buffer.
fn host(be: &Be, b: &Vec<f32>) -> Result<Vec<f32>> {
    let mut v = vec![0.0f32; be.len(b)];
    be.download(b, &mut v).map_err(be_err)?;
    Ok(v)
}

fn save_checkpoint(
    be: &Be,
    dir: &Path,
    model: &GpsToken<Be>,
    st: &State,
    gan: Option<&Gan>,
    meta: &Meta,
) -> Result<()> {
    let mut tensors = Vec::new();
    let mut res = Ok(());
    model.params.for_each(|id, spec, value, _| match host(be, value) {
        Ok(h) => {
            tensors.push((spec.name.clone(), spec.shape.clone(), h));
            tensors.push((format!("{EMA_PREFIX}{}", spec.name), spec.shape.clone(), st.ema[id].clone()));
            if let (Some(m), Some(v)) = (&st.m[id], &st.v[id]) {
                tensors.push((format!("{ADAM_M_PREFIX}{}", spec.name), spec.shape.clone(), m.clone()));
                tensors.push((format!("{ADAM_V_PREFIX}{}", spec.name), spec.shape.clone(), v.clone()));
            }
        }
        Err(e) => res = Err(e),
    });
    res?;
    if let Some(g) = gan {
        g.tensors(be, &mut tensors)?;
    }
    let bytes = model_io::serialize_f32(&tensors, meta.to_map())?;
    imageio::write_atomically(&dir.join(CHECKPOINT), &bytes)
}

/// Weights only (raw or EMA) with the config in the metadata, for `--model`.
fn save_weights(be: &Be, path: &Path, model: &GpsToken<Be>, ema: Option<&[Vec<f32>]>, config: &str) -> Result<()> {
    let mut tensors = Vec::new();
    let mut res = Ok(());
    model.params.for_each(|id, spec, value, _| {
        let v = match ema {
            Some(e) => Ok(e[id].clone()),
            None => host(be, value),
        };
        match v {
            Ok(v) => tensors.push((spec.name.clone(), spec.shape.clone(), v)),
            Err(e) => res = Err(e),
        }
    });
    res?;
    let mut meta = HashMap::new();
    meta.insert(META_CONFIG.to_string(), config.to_string());
    imageio::write_atomically(path, &model_io::serialize_f32(&tensors, meta)?)
}

/// Loads a checkpoint into `model` and `st`; returns its metadata.
fn load_checkpoint(
    be: &Be,
    path: &Path,
    model: &mut GpsToken<Be>,
    st: &mut State,
    gan: Option<&mut Gan>,
) -> Result<Meta> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint '{}'", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("checkpoint '{}' is not a safetensors file: {e}", path.display()))?;
    let meta = header
        .metadata()
        .as_ref()
        .with_context(|| format!("'{}' is not a training checkpoint (no metadata)", path.display()))
        .and_then(Meta::from_map)?;
    let (weights, _) = model_io::weights_only(&bytes, model_io::Which::Raw)?;
    gpstoken_core::model::load_safetensors(be, &mut model.params, &weights).map_err(|e| {
        anyhow::anyhow!("checkpoint '{}' does not match the model: {}", path.display(), model_io::mismatch_summary(&e))
    })?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("bad checkpoint: {e}"))?;
    let read = |name: &str, n: usize| -> Result<Vec<f32>> {
        let t = tensors.tensor(name).with_context(|| format!("checkpoint lacks '{name}'"))?;
        if t.dtype() != safetensors::Dtype::F32 || t.data().len() != n * 4 {
            bail!("checkpoint tensor '{name}' has the wrong dtype or size");
        }
        Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    };
    for (id, spec) in model.params.specs().iter().enumerate() {
        let n = spec.numel();
        st.ema[id] = read(&format!("{EMA_PREFIX}{}", spec.name), n)?;
        if st.m[id].is_some() {
            st.m[id] = Some(read(&format!("{ADAM_M_PREFIX}{}", spec.name), n)?);
            st.v[id] = Some(read(&format!("{ADAM_V_PREFIX}{}", spec.name), n)?);
        }
    }
    if let Some(g) = gan {
        g.load(be, &read)?;
    }
    Ok(meta)
}

/// Removes the temporary files a killed run may have left (`.NAME.PID.tmp`, see
/// [`imageio::write_atomically`]); the files they were meant to replace are intact.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Keeps the log lines of steps `<= step` (drops what a killed run wrote after its last
/// checkpoint).
fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let s = v.get("step").or_else(|| v.get("eval")).and_then(|s| s.as_u64());
        if s.is_some_and(|s| s <= step) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    imageio::write_atomically(path, kept.as_bytes())
}

fn num(v: f64) -> String {
    crate::json::num(v)
}

/// Stacks images of equal width vertically.
fn stack(rows: &[Rgb8]) -> Rgb8 {
    let width = rows.iter().map(|r| r.width).max().unwrap_or(1);
    let height = rows.iter().map(|r| r.height).sum::<usize>().max(1);
    let mut data = vec![0u8; width * height * 3];
    let mut y0 = 0;
    for r in rows {
        for y in 0..r.height {
            let dst = ((y0 + y) * width) * 3;
            data[dst..dst + r.width * 3].copy_from_slice(&r.data[y * r.width * 3..(y + 1) * r.width * 3]);
        }
        y0 += r.height;
    }
    Rgb8 { width, height, data }
}

/// One evaluation: mean PSNR/SSIM of the raw and the EMA weights, and a picture.
struct EvalResult {
    psnr: f64,
    ssim: f64,
    ema_psnr: f64,
    ema_ssim: f64,
    picture: Rgb8,
}

fn evaluate(
    be: &Be,
    model: &mut GpsToken<Be>,
    acts: &mut gpstoken_core::model::Activations<Be>,
    st: &mut State,
    spec: &SampleSpec,
    crops: &[&Rgb8],
) -> Result<EvalResult> {
    let samples: Vec<model_io::Sample> = crops.iter().map(|&c| (c, None)).collect();
    let run = |model: &GpsToken<Be>, acts: &mut _| -> Result<(f64, f64, Vec<Output>)> {
        let e = model_io::score_all(model_io::infer(be, model, acts, spec, &samples)?, crops)?;
        Ok((e.psnr, e.ssim, e.outputs))
    };
    let (psnr, ssim, raw) = run(model, acts)?;
    swap_ema(be, model, st)?;
    let ema = run(model, acts);
    swap_ema(be, model, st)?;
    let (ema_psnr, ema_ssim, ema_outs) = ema?;
    let s = spec.size;
    let scale = if s < 128 { 2 } else { 1 };
    let rows: Vec<Rgb8> = crops
        .iter()
        .zip(raw.iter().zip(&ema_outs))
        .take(8)
        .map(|(c, (r, e))| {
            let a = viz::upscale(c, scale);
            let b = viz::upscale(&imageio::chw_unit_to_rgb8(&r.decoded, s, s), scale);
            let d = viz::upscale(&imageio::chw_unit_to_rgb8(&e.decoded, s, s), scale);
            viz::side_by_side(&[&a, &b, &d])
        })
        .collect();
    Ok(EvalResult { psnr, ssim, ema_psnr, ema_ssim, picture: stack(&rows) })
}

/// Exchanges the model's weights with the EMA weights.
fn swap_ema(be: &Be, model: &mut GpsToken<Be>, st: &mut State) -> Result<()> {
    for (id, e) in st.ema.iter_mut().enumerate() {
        let cur = host(be, model.params.value(id))?;
        be.write(model.params.value_mut(id), e).map_err(be_err)?;
        *e = cur;
    }
    Ok(())
}

/// One Adam step number `step` on every tokenizer parameter with a gradient.
fn autoencoder_update(be: &Be, model: &mut GpsToken<Be>, st: &mut State, adam: &AdamConfig, step: u64) -> Result<()> {
    let step32 = u32::try_from(step).context("too many steps")?;
    let mut res = Ok(());
    let (ms, vs) = (&mut st.m, &mut st.v);
    model.params.for_each_mut(|id, _, value, grad| {
        if let (Some(g), Some(m), Some(v)) = (grad, ms[id].as_mut(), vs[id].as_mut()) {
            if res.is_ok() {
                res = be.adam_step(adam, step32, value, g, m, v).map_err(be_err);
            }
        }
    });
    res
}

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

pub fn train(o: &TrainOptions) -> Result<TrainSummary> {
    if o.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if o.checkpoint_every == 0 || o.eval_every == 0 {
        bail!("--checkpoint-every and --eval-every must be at least 1");
    }
    let ckpt_path = o.out.join(CHECKPOINT);
    // Settings: the checkpoint's when resuming, checked against explicit options.
    let stored = if o.resume && ckpt_path.is_file() {
        let bytes = std::fs::read(&ckpt_path).with_context(|| format!("cannot read '{}'", ckpt_path.display()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow::anyhow!("checkpoint '{}' is not a safetensors file: {e}", ckpt_path.display()))?;
        let map = header.metadata().clone().with_context(|| format!("'{}' has no metadata", ckpt_path.display()))?;
        Some(Meta::from_map(&map)?)
    } else {
        None
    };
    if let Some(m) = &stored {
        let differs = |what: &str, given: String, have: String| -> Result<()> {
            if given != have {
                bail!("--{what} {given} differs from the checkpoint's {have} (omit it when resuming)");
            }
            Ok(())
        };
        if let Some(c) = &o.config {
            differs("config", c.clone(), m.config.clone())?;
        }
        if let Some(b) = o.batch {
            differs("batch", b.to_string(), m.batch.to_string())?;
        }
        if let Some(s) = o.seed {
            differs("seed", s.to_string(), m.seed.to_string())?;
        }
        if let Some(l) = o.lr {
            differs("lr", format!("{l:?}"), format!("{:?}", m.lr))?;
        }
        if let Some(i) = o.init {
            differs("init", i.name().to_string(), m.init.name().to_string())?;
        }
        let stored_start = m.gan.map_or("none".to_string(), |g| g.disc_start.to_string());
        if let Some(d) = o.disc_start {
            differs("disc-start", d.to_string(), stored_start)?;
        } else if let (Some(_), None) = (o.disc_weight, m.gan) {
            bail!("--disc-weight needs the adversarial stage, which this checkpoint does not have");
        }
        if let (Some(w), Some(g)) = (o.disc_weight, m.gan) {
            differs("disc-weight", format!("{w:?}"), format!("{:?}", g.disc_weight))?;
        }
        if m.step >= o.steps {
            bail!("the checkpoint is already at step {} (--steps {}); ask for more steps to continue", m.step, o.steps);
        }
    } else if ckpt_path.exists() && !o.resume {
        bail!("'{}' already holds a checkpoint; pass --resume to continue it or choose another --out", o.out.display());
    }
    let config_name = stored.as_ref().map(|m| m.config.clone()).or(o.config.clone()).unwrap_or("tiny64".into());
    let batch = stored.as_ref().map(|m| m.batch).or(o.batch).unwrap_or(DEFAULT_BATCH);
    let seed = stored.as_ref().map(|m| m.seed).or(o.seed).unwrap_or(DEFAULT_SEED);
    let lr = stored.as_ref().map(|m| m.lr).or(o.lr).unwrap_or(DEFAULT_LR);
    let init = stored.as_ref().map(|m| m.init).or(o.init).unwrap_or(Init::Adaptive);
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    if !(lr.is_finite() && lr > 0.0) {
        bail!("--lr must be a positive number");
    }
    let cfg: ModelConfig = crate::config::load_config(&config_name)?;
    // The adversarial stage: the checkpoint's, else the flags over the yaml's lossconfig.
    let gan_settings = match &stored {
        Some(m) => m.gan,
        None => {
            let yaml = crate::config::load_loss_settings(&config_name)?;
            for w in &yaml.warnings {
                eprintln!("gpstoken: warning: {w}");
            }
            let weight = o.disc_weight.or(yaml.disc_weight.map(|w| w as f32)).unwrap_or(DEFAULT_DISC_WEIGHT);
            match o.disc_start.or(yaml.disc_start) {
                Some(disc_start) => Some(GanSettings { disc_start, disc_weight: weight }),
                None if o.disc_weight.is_some() => bail!("--disc-weight needs --disc-start"),
                None => None,
            }
        }
    };
    if let Some(g) = &gan_settings {
        if !(g.disc_weight.is_finite() && g.disc_weight >= 0.0) {
            bail!("--disc-weight must be a non-negative number, got {}", g.disc_weight);
        }
    }
    let spec = SampleSpec { size: cfg.image_size, tokens: cfg.gps.gps_num, weight: cfg.gps.gps_adaptive_w, init };

    // Data first: bad folders fail before any work.
    let data = Dataset::load(&o.data, spec)?;
    if data.skipped > 0 {
        eprintln!("gpstoken: warning: skipped {} unreadable image(s) in '{}'", data.skipped, o.data.display());
    }
    let eval_set = o.eval.as_ref().map(|d| EvalSet::load(d, cfg.image_size)).transpose()?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("cannot create run folder '{}'", o.out.display()))?;

    let be = backends::cpu(o.backend, o.threads)?;
    let mut model = GpsToken::new(&be, cfg.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    model.init(&be, seed).map_err(be_err)?;
    let mut st = State::new(&be, &model)?;
    let mut gan = match gan_settings {
        Some(g) => Some(Gan::new(&be, g, seed, batch, cfg.image_size, model.conv_out_weight_len())?),
        None => None,
    };
    let mut start = 0;
    if stored.is_some() {
        remove_stale_temp_files(&o.out);
        let meta = load_checkpoint(&be, &ckpt_path, &mut model, &mut st, gan.as_mut())?;
        start = meta.step;
        truncate_log(&o.out.join(LOG), start)?;
    } else {
        // A fresh run starts a fresh log.
        imageio::write_atomically(&o.out.join(LOG), b"")?;
    }
    let mut acts = model.activations(&be, batch, 1).map_err(be_err)?;
    let adam = AdamConfig::official(lr);
    let meta_at = |step: u64| Meta { config: config_name.clone(), step, seed, batch, lr, init, gan: gan_settings };

    // The prefetch thread: batches in step order, at most 2 ahead.
    let data = std::sync::Arc::new(data);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(2);
    let producer = {
        let data = data.clone();
        let (first, last) = (start + 1, o.steps);
        std::thread::spawn(move || {
            for t in first..=last {
                if tx.send(data.batch(seed, t, batch)).is_err() {
                    return;
                }
            }
        })
    };

    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(o.out.join(LOG))
        .with_context(|| format!("cannot open '{}'", o.out.join(LOG).display()))?;
    let bar = indicatif::ProgressBar::new(o.steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("train {bar:30} {pos}/{len} steps  {msg}  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    bar.set_position(start);
    if o.quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let say = |s: String| {
        if bar.is_hidden() {
            eprintln!("{s}");
        } else {
            bar.println(s);
        }
    };
    say(format!(
        "gpstoken train: config {config_name} ({} parameters), {} training image(s), batch {batch}, lr {lr}, seed {seed}, init {}, steps {}..{}",
        model.params.count(),
        data.images.len(),
        init.name(),
        start + 1,
        o.steps
    ));
    if let Some(g) = &gan {
        say(format!(
            "adversarial stage from step {} (0-based; log step {}): PatchGAN discriminator ({} parameters), disc_weight {}",
            g.settings.disc_start,
            g.settings.disc_start + 1,
            g.disc.params.count(),
            g.settings.disc_weight
        ));
    }
    let eval_crops: Vec<&Rgb8> =
        eval_set.as_ref().map(|e| e.images.iter().take(o.eval_images).map(|(_, i)| i).collect()).unwrap_or_default();

    let t0 = Instant::now();
    let mut last_loss = f64::NAN;
    let mut ema_psnr_avg = None::<f64>;
    // The last (g_loss, d_weight) and d_loss, for the progress bar.
    let mut last_gan: (Option<(f64, f32)>, Option<f64>) = (None, None);
    for t in start + 1..=o.steps {
        let ts = Instant::now();
        let b = rx.recv().context("the data thread stopped")??;
        debug_assert_eq!(b.step, t);
        model.forward(&be, &mut acts, &b.image, &b.g_init, &b.regions).map_err(be_err)?;
        let settings = gan.as_ref().map(|g| g.settings);
        let disc_step = settings.is_some_and(|g| g.is_disc_step(t));
        let gan_active = settings.is_some_and(|g| g.disc_factor(t) > 0.0);
        let mut gan_log = None;
        let loss = match gan.as_mut() {
            // The discriminator's step: the autoencoder only runs forward.
            Some(g) if disc_step => {
                gan_log = Some(g.discriminator_step(&be, &acts, &adam, t)?);
                be.mse_loss(acts.decoded(), acts.image(), None).map_err(be_err)?
            }
            Some(g) if gan_active => {
                let (loss, measured) = g.autoencoder_gradient(&be, &model, &mut acts, t)?;
                gan_log = Some(measured);
                model.backward(&be, &mut acts).map_err(be_err)?;
                loss
            }
            _ => model.mse_backward(&be, &mut acts).map_err(be_err)?,
        };
        if !loss.is_finite() {
            bail!("the loss became {loss} at step {t}; try a smaller --lr");
        }
        // Adam and the EMA count autoencoder steps only.
        let ae_step = ae_steps_through(settings.as_ref(), t);
        if !disc_step {
            autoencoder_update(&be, &mut model, &mut st, &adam, ae_step)?;
        }
        if let Some(decay) = ema_decay(ae_step - 1).filter(|_| !disc_step) {
            for (id, e) in st.ema.iter_mut().enumerate() {
                if decay == 0.0 {
                    be.copy(model.params.value(id), e).map_err(be_err)?;
                } else {
                    be.ema_update(decay, e, model.params.value(id)).map_err(be_err)?;
                }
            }
        }
        let secs = ts.elapsed().as_secs_f64();
        let psnr = psnr_from_mse(loss);
        last_loss = loss;
        let avg = ema_psnr_avg.map_or(psnr, |a| 0.95 * a + 0.05 * psnr);
        ema_psnr_avg = Some(avg);
        let gan_fields = match &gan_log {
            None => String::new(),
            Some(GanLog::Autoencoder { g_loss, d_weight, logits_fake }) => {
                last_gan.0 = Some((*g_loss, *d_weight));
                format!(
                    ",\"phase\":\"ae\",\"g_loss\":{},\"d_weight\":{},\"logits_fake\":{}",
                    num(*g_loss),
                    num(f64::from(*d_weight)),
                    num(*logits_fake)
                )
            }
            Some(GanLog::Discriminator { d_loss, logits_real, logits_fake }) => {
                last_gan.1 = Some(*d_loss);
                format!(
                    ",\"phase\":\"disc\",\"d_loss\":{},\"logits_real\":{},\"logits_fake\":{}",
                    num(*d_loss),
                    num(*logits_real),
                    num(*logits_fake)
                )
            }
        };
        writeln!(
            log,
            "{{\"step\":{t},\"loss\":{},\"psnr\":{},\"seconds\":{},\"elapsed\":{}{gan_fields}}}",
            num(loss),
            num(psnr),
            num(secs),
            num(t0.elapsed().as_secs_f64())
        )
        .and_then(|_| log.flush())
        .context("cannot write the training log")?;
        bar.set_position(t);
        let gan_msg = match last_gan {
            (Some((g, w)), Some(d)) => format!("  g {g:.3} d {d:.3} w {w:.2}"),
            (Some((g, w)), None) => format!("  g {g:.3} w {w:.2}"),
            _ => String::new(),
        };
        bar.set_message(format!("loss {loss:.5}  PSNR {avg:.2} dB{gan_msg}"));
        if t % o.checkpoint_every == 0 || t == o.steps {
            save_checkpoint(&be, &o.out, &model, &st, gan.as_ref(), &meta_at(t))?;
        }
        if !eval_crops.is_empty() && (t % o.eval_every == 0 || t == o.steps) {
            let r = evaluate(&be, &mut model, &mut acts, &mut st, &spec, &eval_crops)?;
            writeln!(
                log,
                "{{\"eval\":{t},\"psnr\":{},\"ssim\":{},\"ema_psnr\":{},\"ema_ssim\":{},\"images\":{}}}",
                num(r.psnr),
                num(r.ssim),
                num(r.ema_psnr),
                num(r.ema_ssim),
                eval_crops.len()
            )
            .and_then(|_| log.flush())
            .context("cannot write the training log")?;
            imageio::save_png(&o.out.join(format!("eval_{t:06}.png")), &r.picture)?;
            say(format!(
                "step {t}: eval PSNR {:.2} dB SSIM {:.4} (EMA {:.2} dB, {:.4}) on {} image(s)",
                r.psnr,
                r.ssim,
                r.ema_psnr,
                r.ema_ssim,
                eval_crops.len()
            ));
        } else if bar.is_hidden() && t % 50 == 0 {
            eprintln!("step {t}/{}: loss {loss:.5}, PSNR {avg:.2} dB (running mean)", o.steps);
        }
    }
    drop(rx);
    let _ = producer.join();
    bar.finish_and_clear();
    save_weights(&be, &o.out.join("weights.safetensors"), &model, None, &config_name)?;
    save_weights(&be, &o.out.join("weights_ema.safetensors"), &model, Some(&st.ema), &config_name)?;
    let seconds = t0.elapsed().as_secs_f64();
    let steps_run = o.steps - start;
    Ok(TrainSummary {
        steps_run,
        last_step: o.steps,
        seconds,
        images_per_second: (steps_run as f64 * batch as f64) / seconds.max(1e-9),
        last_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gan_schedule_follows_the_official_step_rule() {
        for disc_start in [0, 1, 2, 7] {
            let g = GanSettings { disc_start, disc_weight: 0.3 };
            let mut disc_steps = 0;
            for t in 1..40u64 {
                let s = t - 1;
                let official_idx = if s > disc_start { s % 2 } else { 0 };
                assert_eq!(g.is_disc_step(t), official_idx == 1, "disc_start {disc_start} step {s}");
                assert_eq!(g.disc_factor(t), if s >= disc_start { 1.0 } else { 0.0 });
                disc_steps += u64::from(official_idx == 1);
                assert_eq!(g.disc_steps_through(t), disc_steps, "disc_start {disc_start} t {t}");
                assert_eq!(ae_steps_through(Some(&g), t), t - disc_steps);
            }
        }
        assert_eq!(ae_steps_through(None, 17), 17);
    }

    #[test]
    fn ema_schedule_follows_ema_pytorch() {
        assert_eq!(ema_decay(0), Some(0.0));
        assert_eq!(ema_decay(5), None);
        assert_eq!(ema_decay(100), Some(0.0));
        // k_old = 110: k_new = 111, epoch 10: 1 - 11^(-2/3)
        let d = ema_decay(110).unwrap();
        assert!((f64::from(d) - (1.0 - 11f64.powf(-2.0 / 3.0))).abs() < 1e-7);
        assert_eq!(ema_decay(100_000_000), Some(0.9999));
    }
}
