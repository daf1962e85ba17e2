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
//! Determinism: the batches are a pure function of `(seed, step)` (see [`crate::data`]), the
//! weights are initialised from the seed, and the CPU backend is bit-reproducible, so a resumed
//! run computes exactly the losses of an uninterrupted one.

use crate::backends::{self, BackendKind};
use crate::data::{Batch, Dataset, EvalSet, Init, SampleSpec};
use crate::imageio::{self, Rgb8};
use crate::model_io::{self, Output, ADAM_M_PREFIX, ADAM_V_PREFIX, EMA_PREFIX, META_CONFIG};
use crate::viz;
use anyhow::{bail, Context, Result};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{AdamConfig, Buffers, OptimOps, TensorOps};
use gpstoken_core::model::{GpsToken, ModelConfig};
use safetensors::tensor::SafeTensors;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of a run. `None` means "the checkpoint's value when resuming, else the default".
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub config: Option<String>,
    pub data: PathBuf,
    pub eval: Option<PathBuf>,
    pub steps: u64,
    pub batch: Option<usize>,
    pub lr: Option<f32>,
    pub seed: Option<u64>,
    pub init: Option<Init>,
    pub out: PathBuf,
    pub resume: bool,
    pub checkpoint_every: u64,
    pub eval_every: u64,
    /// Images evaluated at most (the first ones of the sorted eval folder).
    pub eval_images: usize,
    pub backend: BackendKind,
    pub threads: Option<usize>,
    /// Hide the progress bar.
    pub quiet: bool,
}

pub const DEFAULT_BATCH: usize = 4;
pub const DEFAULT_LR: f32 = 4e-4;
pub const DEFAULT_SEED: u64 = 23;
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const LOG: &str = "log.jsonl";

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

/// Downloads a buffer.
fn host(be: &Be, b: &Vec<f32>) -> Result<Vec<f32>> {
    let mut v = vec![0.0f32; be.len(b)];
    be.download(b, &mut v).map_err(be_err)?;
    Ok(v)
}

fn save_checkpoint(be: &Be, dir: &Path, model: &GpsToken<Be>, st: &State, meta: &Meta) -> Result<()> {
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
fn load_checkpoint(be: &Be, path: &Path, model: &mut GpsToken<Be>, st: &mut State) -> Result<Meta> {
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
    let run = |model: &GpsToken<Be>, acts: &mut _| -> Result<(f64, f64, Vec<Output>)> {
        let outs = model_io::infer(be, model, acts, spec, None, crops)?;
        model_io::mean_scores(outs, crops)
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
    let mut start = 0;
    if stored.is_some() {
        remove_stale_temp_files(&o.out);
        let meta = load_checkpoint(&be, &ckpt_path, &mut model, &mut st)?;
        start = meta.step;
        truncate_log(&o.out.join(LOG), start)?;
    } else {
        // A fresh run starts a fresh log.
        imageio::write_atomically(&o.out.join(LOG), b"")?;
    }
    let mut acts = model.activations(&be, batch, 1).map_err(be_err)?;
    let adam = AdamConfig::official(lr);
    let meta_at = |step: u64| Meta { config: config_name.clone(), step, seed, batch, lr, init };

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
    let eval_crops: Vec<&Rgb8> =
        eval_set.as_ref().map(|e| e.images.iter().take(o.eval_images).map(|(_, i)| i).collect()).unwrap_or_default();

    let t0 = Instant::now();
    let mut last_loss = f64::NAN;
    let mut ema_psnr_avg = None::<f64>;
    for t in start + 1..=o.steps {
        let ts = Instant::now();
        let b = rx.recv().context("the data thread stopped")??;
        debug_assert_eq!(b.step, t);
        model.forward(&be, &mut acts, &b.image, &b.g_init, &b.regions).map_err(be_err)?;
        let loss = model.mse_backward(&be, &mut acts).map_err(be_err)?;
        if !loss.is_finite() {
            bail!("the loss became {loss} at step {t}; try a smaller --lr");
        }
        let step32 = u32::try_from(t).context("too many steps")?;
        let mut res = Ok(());
        let (ms, vs) = (&mut st.m, &mut st.v);
        model.params.for_each_mut(|id, _, value, grad| {
            if let (Some(g), Some(m), Some(v)) = (grad, ms[id].as_mut(), vs[id].as_mut()) {
                if res.is_ok() {
                    res = be.adam_step(&adam, step32, value, g, m, v).map_err(be_err);
                }
            }
        });
        res?;
        if let Some(decay) = ema_decay(t - 1) {
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
        writeln!(
            log,
            "{{\"step\":{t},\"loss\":{},\"psnr\":{},\"seconds\":{},\"elapsed\":{}}}",
            num(loss),
            num(psnr),
            num(secs),
            num(t0.elapsed().as_secs_f64())
        )
        .and_then(|_| log.flush())
        .context("cannot write the training log")?;
        bar.set_position(t);
        bar.set_message(format!("loss {loss:.5}  PSNR {avg:.2} dB"));
        if t % o.checkpoint_every == 0 || t == o.steps {
            save_checkpoint(&be, &o.out, &model, &st, &meta_at(t))?;
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
