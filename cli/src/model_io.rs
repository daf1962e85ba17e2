//! Loading trained models and running them: weights files and training checkpoints, the
//! default model, the token-count override, batched inference and evaluation.
//!
//! `--model` accepts either a weights file (safetensors with exactly the official state-dict
//! names, as `models/tiny64.safetensors`) or a training checkpoint written by `gpstoken train`
//! (the same names plus `ema.*`, `adam_m.*`, `adam_v.*` and a metadata entry); for a checkpoint
//! the raw weights are used, or the EMA weights with `--ema`. The config is taken from the
//! checkpoint's metadata (`gpstoken_config`, written by `train`), else from `--config`.

use crate::data::{push_sample, Batch, SampleSpec};
use crate::fit::Init;
use crate::imageio::Rgb8;
use anyhow::{bail, Context, Result};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::Buffers;
use gpstoken_core::metrics;
use gpstoken_core::model::{Activations, GpsToken, ModelConfig, WeightsError};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Environment variable naming the default model file.
pub const MODEL_ENV: &str = "GPSTOKEN_MODEL";
/// File name of the shipped model, looked up in `models/` next to the executable's ancestors.
pub const DEFAULT_MODEL: &str = "tiny64.safetensors";

/// Where the default model is: `$GPSTOKEN_MODEL`, else `models/tiny64.safetensors` in the
/// first ancestor folder of the executable that has one (so `target/release/gpstoken` in a
/// clone finds the repository's `models/`), else in the current folder's `models/`.
pub fn default_model_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(MODEL_ENV) {
        return Ok(PathBuf::from(p));
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let p = dir.join("models").join(DEFAULT_MODEL);
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
        }
    }
    let p = Path::new("models").join(DEFAULT_MODEL);
    if p.is_file() {
        return Ok(p);
    }
    bail!("no --model given and no default model found (set {MODEL_ENV} or keep models/{DEFAULT_MODEL} next to the repository's target/ folder)")
}

/// Which weights of a training checkpoint to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Raw,
    Ema,
}

/// Prefixes of the non-weight tensors of a training checkpoint.
pub const EMA_PREFIX: &str = "ema.";
pub const ADAM_M_PREFIX: &str = "adam_m.";
pub const ADAM_V_PREFIX: &str = "adam_v.";
/// The discriminator of the adversarial stage in a training checkpoint: its weights and BatchNorm
/// buffers (`disc.main.*`, official names after the prefix) and its Adam moments.
pub const DISC_PREFIX: &str = "disc.";
pub const DISC_ADAM_M_PREFIX: &str = "disc_adam_m.";
pub const DISC_ADAM_V_PREFIX: &str = "disc_adam_v.";

/// Whether a checkpoint tensor is training state rather than a tokenizer weight.
fn is_training_state(name: &str) -> bool {
    [EMA_PREFIX, ADAM_M_PREFIX, ADAM_V_PREFIX, DISC_PREFIX, DISC_ADAM_M_PREFIX, DISC_ADAM_V_PREFIX]
        .iter()
        .any(|p| name.starts_with(p))
}
/// Metadata key holding the config name (or yaml path) in files written by `gpstoken train`.
pub const META_CONFIG: &str = "gpstoken_config";

/// One-line summary of a strict-load mismatch, naming up to 6 keys per kind.
pub fn mismatch_summary(e: &WeightsError) -> String {
    fn names<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
        let mut s: Vec<String> = v.iter().take(6).map(f).collect();
        if v.len() > 6 {
            s.push(format!("... {} more", v.len() - 6));
        }
        s.join(", ")
    }
    match e {
        WeightsError::Mismatch { missing, unexpected, shape, dtype } => {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("{} missing key(s): {}", missing.len(), names(missing, |(n, _)| n.clone())));
            }
            if !unexpected.is_empty() {
                parts.push(format!(
                    "{} unexpected key(s): {}",
                    unexpected.len(),
                    names(unexpected, |(n, _)| n.clone())
                ));
            }
            if !shape.is_empty() {
                parts.push(format!(
                    "{} shape mismatch(es): {}",
                    shape.len(),
                    names(shape, |(n, w, g)| format!("{n} (model {w:?}, file {g:?})"))
                ));
            }
            if !dtype.is_empty() {
                parts.push(format!(
                    "{} unsupported dtype(s): {}",
                    dtype.len(),
                    names(dtype, |(n, d)| format!("{n} {d}"))
                ));
            }
            parts.join("; ")
        }
        other => other.to_string(),
    }
}

/// The weights of `bytes` (a weights file or a training checkpoint) as a weights-only
/// safetensors file, and the config name stored in its metadata, if any.
pub fn weights_only(bytes: &[u8], which: Which) -> Result<(Vec<u8>, Option<String>)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e}"))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e}"))?;
    let config = meta.metadata().as_ref().and_then(|m| m.get(META_CONFIG).cloned());
    let names = st.names();
    let is_ckpt = names.iter().any(|n| n.starts_with(ADAM_M_PREFIX) || n.starts_with(EMA_PREFIX));
    if !is_ckpt {
        if which == Which::Ema {
            bail!("--ema needs a training checkpoint (this file holds only weights)");
        }
        return Ok((bytes.to_vec(), config));
    }
    let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, view) in st.tensors() {
        let keep = match which {
            Which::Raw => !is_training_state(&name),
            Which::Ema => name.starts_with(EMA_PREFIX),
        };
        if keep {
            let n = if which == Which::Ema { name[EMA_PREFIX.len()..].to_string() } else { name };
            views.push((n, view));
        }
    }
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta = HashMap::new();
    if let Some(c) = &config {
        meta.insert(META_CONFIG.to_string(), c.clone());
    }
    let out = safetensors::serialize(views, Some(meta)).map_err(|e| anyhow::anyhow!("cannot re-pack weights: {e}"))?;
    Ok((out, config))
}

/// Reads a model file and returns its weights-only bytes and the config to build it with:
/// `config` if given, else the one named in the file's metadata.
pub fn read_model(path: &Path, which: Which, config: Option<&str>) -> Result<(Vec<u8>, ModelConfig)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model '{}'", path.display()))?;
    let (weights, stored) = weights_only(&bytes, which).with_context(|| format!("model '{}'", path.display()))?;
    let name = match (config, stored.as_deref()) {
        (Some(c), _) => c.to_string(),
        (None, Some(c)) => c.to_string(),
        (None, None) => bail!("model '{}' does not say its config; pass --config NAME|FILE", path.display()),
    };
    let cfg = crate::config::load_config(&name)?;
    Ok((weights, cfg))
}

/// Builds the model of `cfg` (with `tokens` tokens per patch if given: the encoder is
/// permutation-equivariant and has no positional embedding, and `gps_num` has no parameters, so
/// the same weights run with any N) and loads `weights` strictly.
pub fn build_model(
    be: &CpuBackend,
    cfg: &ModelConfig,
    tokens: Option<usize>,
    weights: &[u8],
    what: &str,
) -> Result<GpsToken<CpuBackend>> {
    let mut cfg = cfg.clone();
    if let Some(n) = tokens {
        check_tokens(n, cfg.image_size)?;
        cfg.gps.gps_num = n;
    }
    let mut model = GpsToken::new(be, cfg.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    gpstoken_core::model::load_safetensors(be, &mut model.params, weights)
        .map_err(|e| anyhow::anyhow!("{what} does not match config '{}': {}", cfg.name, mismatch_summary(&e)))?;
    Ok(model)
}

/// Algorithm 1 can make at most `max_regions(S, S, 8)` regions of an S x S patch.
pub fn check_tokens(n: usize, size: usize) -> Result<()> {
    let max = gpstoken_core::partition::max_regions(size, size, gpstoken_core::partition::DEFAULT_MIN_SIZE);
    if n == 0 || n > max {
        bail!("--tokens must be between 1 and {max} for {size}x{size} patches, got {n}");
    }
    Ok(())
}

/// A model with activations for a fixed batch size, for inference.
pub struct Runner {
    pub model: GpsToken<CpuBackend>,
    pub acts: Activations<CpuBackend>,
    pub spec: SampleSpec,
    /// Optional cdbias map (focus mask) applied to every crop's Algorithm 1.
    pub bias: Option<Vec<f32>>,
}

/// What one inference gives per image.
pub struct Output {
    /// `[3, S, S]` in [-1, 1] (unclamped decoder output).
    pub decoded: Vec<f32>,
    /// `[N, 5 + C]` encoder tokens.
    pub tokens: Vec<f32>,
    /// `[N, 5]` initial Gaussians.
    pub g_init: Vec<f32>,
}

impl Runner {
    pub fn new(be: &CpuBackend, model: GpsToken<CpuBackend>, batch: usize, init: Init) -> Result<Runner> {
        let cfg = model.config();
        let spec = SampleSpec { size: cfg.image_size, tokens: cfg.gps.gps_num, weight: cfg.gps.gps_adaptive_w, init };
        let acts = model.activations(be, batch, 1).map_err(|e| anyhow::anyhow!("cpu backend: {e}"))?;
        Ok(Runner { model, acts, spec, bias: None })
    }

    /// Runs `crops` (each S x S) in chunks of the batch size (see [`infer`]).
    pub fn run(&mut self, be: &CpuBackend, crops: &[&Rgb8]) -> Result<Vec<Output>> {
        infer(be, &self.model, &mut self.acts, &self.spec, self.bias.as_deref(), crops)
    }
}

/// Runs `crops` (each S x S) through `model` in chunks of the activations' batch size (the last
/// chunk padded by repeating its last crop).
pub fn infer(
    be: &CpuBackend,
    model: &GpsToken<CpuBackend>,
    acts: &mut Activations<CpuBackend>,
    spec: &SampleSpec,
    bias: Option<&[f32]>,
    crops: &[&Rgb8],
) -> Result<Vec<Output>> {
    let bsz = acts.batch();
    let s = spec.size;
    let stride = 5 + model.config().gps.gps_c;
    let n = spec.tokens;
    let mut outs = Vec::with_capacity(crops.len());
    let err = |e| anyhow::anyhow!("cpu backend: {e}");
    for chunk in crops.chunks(bsz) {
        let mut batch = Batch { step: 0, image: Vec::new(), g_init: Vec::new(), regions: Vec::new() };
        for i in 0..bsz {
            push_sample(chunk[i.min(chunk.len() - 1)], spec, bias, &mut batch)?;
        }
        model.forward(be, acts, &batch.image, &batch.g_init, &batch.regions).map_err(err)?;
        let mut decoded = vec![0.0f32; bsz * 3 * s * s];
        be.download(acts.decoded(), &mut decoded).map_err(err)?;
        let mut tokens = vec![0.0f32; bsz * n * stride];
        be.download(acts.tokens(), &mut tokens).map_err(err)?;
        for i in 0..chunk.len() {
            outs.push(Output {
                decoded: decoded[i * 3 * s * s..(i + 1) * 3 * s * s].to_vec(),
                tokens: tokens[i * n * stride..(i + 1) * n * stride].to_vec(),
                g_init: batch.g_init[i * n * 5..(i + 1) * n * 5].to_vec(),
            });
        }
    }
    Ok(outs)
}

/// PSNR and SSIM (on [0, 1], the decoder output clamped) of a `[3, S, S]` reconstruction
/// against the `S x S` crop.
pub fn score(decoded: &[f32], crop: &Rgb8) -> Result<(f64, f64)> {
    let s = crop.width;
    let target: Vec<f32> = crate::imageio::hwc_to_chw(&crate::imageio::to_unit(crop), 3)
        .iter()
        .map(|&v| metrics::unit_from_signed(v))
        .collect();
    let pred: Vec<f32> = decoded.iter().map(|&v| metrics::unit_from_signed(v)).collect();
    let psnr = metrics::psnr(&pred, &target);
    let ssim = metrics::ssim(&pred, &target, 3, s, s).map_err(|e| anyhow::anyhow!("ssim: {e}"))?;
    Ok((psnr, ssim))
}

/// Mean PSNR and SSIM of `runner` over `crops`, plus the outputs.
pub fn evaluate(be: &CpuBackend, runner: &mut Runner, crops: &[&Rgb8]) -> Result<(f64, f64, Vec<Output>)> {
    let outs = runner.run(be, crops)?;
    mean_scores(outs, crops)
}

/// Mean PSNR and SSIM of `outs` against `crops`, plus the outputs.
pub fn mean_scores(outs: Vec<Output>, crops: &[&Rgb8]) -> Result<(f64, f64, Vec<Output>)> {
    let (mut p, mut q) = (0.0, 0.0);
    for (o, c) in outs.iter().zip(crops) {
        let (a, b) = score(&o.decoded, c)?;
        p += a;
        q += b;
    }
    let k = crops.len().max(1) as f64;
    Ok((p / k, q / k, outs))
}

/// Writes `f32` tensors with names and shapes plus string metadata as safetensors bytes.
pub fn serialize_f32(tensors: &[(String, Vec<usize>, Vec<f32>)], meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| Ok((n.as_str(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("cannot build safetensors: {e}"))?;
    safetensors::serialize(views, Some(meta)).map_err(|e| anyhow::anyhow!("cannot build safetensors: {e}"))
}
