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

mod buckets;
pub(crate) mod checkpoint;
mod eval;
mod gan;
mod losses;
mod memory;
pub mod parallel;
mod run;
mod schedule;
mod settings;
pub(crate) mod state;

pub use schedule::{ae_steps_through, ema_decay, GanSettings};

use crate::backends::{with_backend_rank, BackendKind, BackendSelection};
use crate::data::{Dataset, EvalSet, Init};
use crate::rendezvous::LaunchEnv;
use anyhow::{bail, Context, Result};
use parallel::RankPlan;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Data-parallel training in this process: one rank per listed device, each computing
    /// --batch / ranks samples; gradients are averaged over the ranks (NCCL on cuda, the host
    /// elsewhere). On the cpu, `--devices 0,0` runs two ranks that share the cores.
    #[arg(long, value_name = "I,J,...", value_delimiter = ',', num_args = 1..)]
    pub devices: Option<Vec<usize>>,
    /// With several ranks, the gradients are averaged in buckets of this many MiB, each as soon
    /// as the backward pass has finished it, while the pass goes on (PyTorch DDP's
    /// bucket_cap_mb; the first bucket holds at most 1 MiB).
    #[arg(long, value_name = "MIB", default_value_t = buckets::DEFAULT_BUCKET_MIB)]
    pub bucket_mb: f64,
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
    let launch = LaunchEnv::from_env()?;
    let world = match (&o.devices, &launch) {
        (Some(_), Some(_)) => bail!("--devices runs ranks in this process; it cannot be combined with WORLD_SIZE"),
        (Some(d), None) => d.len(),
        (None, Some(e)) => e.world,
        (None, None) => 1,
    };
    if launch.as_ref().is_some_and(|e| e.world > 1) && backend.kind != BackendKind::Cuda {
        bail!("WORLD_SIZE={world}: training across processes needs --backend cuda (NCCL)");
    }
    parallel::check_batch_split(settings.batch, world)?;
    buckets::check_bucket_size(o.bucket_mb)?;
    let data = Dataset::load(&o.data, settings.spec)?;
    if data.skipped > 0 {
        eprintln!("gpstoken: warning: skipped {} unreadable image(s) in '{}'", data.skipped, o.data.display());
    }
    let eval_set = o.eval.as_ref().map(|d| EvalSet::load_flag("--eval", d, settings.spec.width)).transpose()?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("cannot create run folder '{}'", o.out.display()))?;
    let data = Arc::new(data);
    match (&o.devices, launch) {
        (Some(devices), _) if devices.len() > 1 => train_in_process(o, backend, devices, settings, data, eval_set),
        (Some(devices), _) => {
            let selection = BackendSelection { device: devices[0], ..*backend };
            let run = run::TrainRun { options: o, settings, data, eval_set };
            with_backend_rank(&selection, &RankPlan::Single, run)
        }
        (None, Some(env)) => {
            // One process per GPU: LOCAL_RANK picks the device; only rank 0 writes.
            let selection = BackendSelection { device: env.local_rank, ..*backend };
            let eval_set = if env.rank == 0 { eval_set } else { None };
            let run = run::TrainRun { options: o, settings, data, eval_set };
            with_backend_rank(&selection, &RankPlan::Launched(env), run)
        }
        (None, None) => {
            with_backend_rank(backend, &RankPlan::Single, run::TrainRun { options: o, settings, data, eval_set })
        }
    }
}

/// Ranks as threads of this process, one per device; rank 0's summary, or the first error (a
/// rank that stopped because another failed does not hide the failure that stopped it).
fn train_in_process(
    o: &TrainOptions,
    backend: &BackendSelection,
    devices: &[usize],
    settings: settings::Settings,
    data: Arc<Dataset>,
    eval_set: Option<EvalSet>,
) -> Result<TrainSummary> {
    if backend.kind == BackendKind::Cpu && devices.iter().any(|&d| d != 0) {
        bail!("--devices {devices:?}: the cpu backend has one device, 0 (--devices 0,0 runs two ranks that share it)");
    }
    if backend.kind == BackendKind::Cuda {
        let mut seen = devices.to_vec();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            bail!("--devices {devices:?}: NCCL needs a different GPU for every rank");
        }
    }
    let world = devices.len();
    // CPU ranks share the cores: each gets its share unless --threads says otherwise.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = backend.threads.or(Some((cores / world).max(1)));
    let hub = parallel::HostHub::new(world);
    let nccl_id = parallel::Shared::new();
    let mut eval_set = eval_set;
    let results: Vec<Result<TrainSummary>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(rank, &device)| {
                let selection = BackendSelection { device, threads, ..*backend };
                let plan = RankPlan::InProcess { rank, hub: hub.clone(), nccl_id: nccl_id.clone() };
                let run = run::TrainRun {
                    options: o,
                    settings: settings.clone(),
                    data: data.clone(),
                    eval_set: if rank == 0 { eval_set.take() } else { None },
                };
                scope.spawn(move || {
                    let result = with_backend_rank(&selection, &plan, run);
                    if result.is_err() {
                        plan.abort();
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a training rank panicked"))))
            .collect()
    });
    let mut errors = results.iter().filter_map(|r| r.as_ref().err());
    if let Some(first) = errors.clone().find(|e| !e.to_string().contains("another rank failed")).or(errors.next()) {
        return Err(anyhow::anyhow!("{first:#}"));
    }
    results.into_iter().next().unwrap_or_else(|| Err(anyhow::anyhow!("no rank ran")))
}
