//! Loading trained models: weights files and training checkpoints, the default model, the
//! token-count check; running them is `inference`.
//!
//! `--model` accepts either a weights file (safetensors with exactly the official state-dict
//! names, as `models/tiny64.safetensors`) or a training checkpoint written by `gpstoken train`
//! (the same names plus `ema.*`, `adam_m.*`, `adam_v.*` and a metadata entry); for a checkpoint
//! the raw weights are used, or the EMA weights with `--ema`. The config is taken from the
//! checkpoint's metadata (`gpstoken_config`, written by `train`), else from `--config`.

use anyhow::{bail, Context, Result};
use gpstoken_core::backend::Backend;
use gpstoken_core::model::{serialize_safetensors, GpsToken, Gradients, ModelConfig, WeightsError};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod inference;
pub use inference::*;

/// Environment variable naming the default model file.
pub const MODEL_ENV: &str = "GPSTOKEN_MODEL";
/// File name of the shipped model, looked up in `models/` next to the executable's ancestors.
pub const DEFAULT_MODEL: &str = "tiny64.safetensors";

/// Where the default model is: `$GPSTOKEN_MODEL`, else `models/tiny64.safetensors` in the
/// first ancestor folder of the executable that has one (so `target/release/gpstoken` in a
/// clone finds the repository's `models/`), else in the current folder's `models/`.
pub fn default_model_path() -> Result<PathBuf> {
    // An empty value counts as unset (`GPSTOKEN_MODEL= gpstoken ...`).
    if let Some(p) = std::env::var_os(MODEL_ENV).filter(|p| !p.is_empty()) {
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
    let (packed, config) = repack(bytes, which)?;
    Ok((packed.unwrap_or_else(|| bytes.to_vec()), config))
}

/// [`weights_only`] without copying a file that already is weights-only (`None` then).
fn repack(bytes: &[u8], which: Which) -> Result<(Option<Vec<u8>>, Option<String>)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e}"))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e}"))?;
    let config = meta.metadata().as_ref().and_then(|m| m.get(META_CONFIG).cloned());
    let names = st.names();
    let is_ckpt = names.iter().any(|n| n.starts_with(ADAM_M_PREFIX) || n.starts_with(EMA_PREFIX));
    if !is_ckpt {
        if which == Which::Ema {
            bail!("--ema needs a training checkpoint (this file holds only weights)");
        }
        return Ok((None, config));
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
    let meta: Vec<(String, String)> = config.iter().map(|c| (META_CONFIG.to_string(), c.clone())).collect();
    let out = serialize_safetensors(views, &meta).map_err(|e| anyhow::anyhow!("cannot re-pack weights: {e}"))?;
    Ok((Some(out), config))
}

/// Reads a model file and returns its weights-only bytes and the config to build it with (see
/// [`crate::config::config_for_model`]).
pub fn read_model(path: &Path, which: Which, config: Option<&str>) -> Result<(Vec<u8>, ModelConfig)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model '{}'", path.display()))?;
    crate::integrity::verify(&bytes, path, crate::integrity::is_training_checkpoint(&bytes))?;
    let (packed, stored) = repack(&bytes, which).with_context(|| format!("model '{}'", path.display()))?;
    // A weights file is used as read: no second copy of the weights.
    let weights = packed.unwrap_or(bytes);
    if let Some(what) = crate::integrity::first_non_finite(&weights) {
        bail!("model '{}': {what}", path.display());
    }
    let cfg = crate::config::config_for_model(config, stored.as_deref(), path)?;
    Ok((weights, cfg))
}

/// Builds the model of `cfg` (with `tokens` tokens per patch if given: the encoder is
/// permutation-equivariant and has no positional embedding, and `gps_num` has no parameters, so
/// the same weights run with any N) and loads `weights` strictly.
pub fn build_model<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    tokens: Option<usize>,
    weights: &[u8],
    what: &str,
) -> Result<GpsToken<B>> {
    let mut cfg = cfg.clone();
    if let Some(n) = tokens {
        let (h, w) = cfg.image_hw;
        check_tokens_hw(n, (w, h))?;
        cfg.gps.gps_num = n;
    }
    // Inference only: no gradient buffers (a second copy of the weights).
    let mut model = GpsToken::with_gradients(be, cfg.clone(), Gradients::No).map_err(|e| anyhow::anyhow!("{e}"))?;
    gpstoken_core::model::load_safetensors(be, &mut model.params, weights)
        .map_err(|e| anyhow::anyhow!("{what} does not match config '{}': {}", cfg.name, mismatch_summary(&e)))?;
    Ok(model)
}

/// Algorithm 1 can make at most `max_regions(S, S, 8)` regions of an S x S patch.
pub fn check_tokens(n: usize, size: usize) -> Result<()> {
    check_tokens_hw(n, (size, size))
}

/// [`check_tokens`] for a `width x height` patch.
pub fn check_tokens_hw(n: usize, (width, height): (usize, usize)) -> Result<()> {
    let max = gpstoken_core::partition::max_regions(width, height, gpstoken_core::partition::DEFAULT_MIN_SIZE);
    if n == 0 || n > max {
        bail!("--tokens must be between 1 and {max} for {width}x{height} patches, got {n}");
    }
    Ok(())
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
    let meta: Vec<(String, String)> = meta.into_iter().collect();
    serialize_safetensors(views, &meta).map_err(|e| anyhow::anyhow!("cannot build safetensors: {e}"))
}
