//! Checkpoints: what their metadata records, writing them (and the weights-only files) from the
//! device state, loading them back for `--resume`, and tidying the run folder of a killed run.
//! The device state leaves the device only here: checkpoints and weights are downloaded, resumed
//! state is uploaded into the buffers the run already allocated.

use super::gan::Gan;
use super::state::OptimState;
use super::{GanSettings, CHECKPOINT};
use crate::backends::device_error;
use crate::data::Init;
use crate::imageio;
use crate::model_io::{self, ADAM_M_PREFIX, ADAM_V_PREFIX, EMA_PREFIX, META_CONFIG};
use anyhow::{bail, Context, Result};
use gpstoken_core::backend::Backend;
use gpstoken_core::model::GpsToken;
use safetensors::tensor::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Checkpoint tensors on the host: name, shape, values.
pub(super) type HostTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// What a checkpoint's metadata records.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Meta {
    pub config: String,
    pub step: u64,
    pub seed: u64,
    pub batch: usize,
    pub lr: f32,
    pub init: Init,
    pub gan: Option<GanSettings>,
}

impl Meta {
    pub fn to_map(&self) -> HashMap<String, String> {
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

    pub fn from_map(m: &HashMap<String, String>) -> Result<Meta> {
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

/// Reads the metadata of the checkpoint at `path`.
pub(super) fn read_meta(path: &Path) -> Result<Meta> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    crate::integrity::verify(&bytes, path, true)?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("checkpoint '{}' is not a safetensors file: {e}", path.display()))?;
    let map = header.metadata().clone().with_context(|| format!("'{}' has no metadata", path.display()))?;
    Meta::from_map(&map)
}

/// Downloads a buffer.
pub(crate) fn host<B: Backend>(be: &B, b: &B::Buffer) -> Result<Vec<f32>> {
    let mut v = vec![0.0f32; be.len(b)];
    be.download(b, &mut v).map_err(device_error(be))?;
    Ok(v)
}

/// Writes `RUN_DIR/checkpoint.safetensors`: the weights, the EMA weights, the Adam moments, the
/// discriminator if any, and `meta`.
pub(super) fn save_checkpoint<B: Backend>(
    be: &B,
    dir: &Path,
    model: &GpsToken<B>,
    st: &OptimState<B>,
    gan: Option<&Gan<B>>,
    meta: &Meta,
) -> Result<()> {
    let mut tensors = HostTensors::new();
    for (id, spec) in model.params.specs().iter().enumerate() {
        tensors.push((spec.name.clone(), spec.shape.clone(), host(be, model.params.value(id))?));
        tensors.push((format!("{EMA_PREFIX}{}", spec.name), spec.shape.clone(), host(be, &st.ema[id])?));
        if let (Some(m), Some(v)) = (&st.m[id], &st.v[id]) {
            tensors.push((format!("{ADAM_M_PREFIX}{}", spec.name), spec.shape.clone(), host(be, m)?));
            tensors.push((format!("{ADAM_V_PREFIX}{}", spec.name), spec.shape.clone(), host(be, v)?));
        }
    }
    if let Some(g) = gan {
        g.tensors(be, &mut tensors)?;
    }
    let mut map = meta.to_map();
    crate::integrity::seal(&mut map, &tensors);
    let bytes = model_io::serialize_f32(&tensors, map)?;
    imageio::write_atomically(&dir.join(CHECKPOINT), &bytes)
}

/// Weights only (the model's, or the EMA weights `ema`) with the config in the metadata, for `--model`.
pub(super) fn save_weights<B: Backend>(
    be: &B,
    path: &Path,
    model: &GpsToken<B>,
    ema: Option<&[B::Buffer]>,
    config: &str,
) -> Result<()> {
    let mut tensors = HostTensors::new();
    for (id, spec) in model.params.specs().iter().enumerate() {
        let value = ema.map_or(model.params.value(id), |e| &e[id]);
        tensors.push((spec.name.clone(), spec.shape.clone(), host(be, value)?));
    }
    let mut meta = HashMap::new();
    meta.insert(META_CONFIG.to_string(), config.to_string());
    crate::integrity::seal(&mut meta, &tensors);
    imageio::write_atomically(path, &model_io::serialize_f32(&tensors, meta)?)
}

/// A named f32 tensor of `n` values from a checkpoint.
pub(super) type ReadTensor<'a> = dyn Fn(&str, usize) -> Result<Vec<f32>> + 'a;

/// Loads a checkpoint into `model`, `st` and `gan`; returns its metadata.
pub(super) fn load_checkpoint<B: Backend>(
    be: &B,
    path: &Path,
    model: &mut GpsToken<B>,
    st: &mut OptimState<B>,
    gan: Option<&mut Gan<B>>,
) -> Result<Meta> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint '{}'", path.display()))?;
    crate::integrity::verify(&bytes, path, true)?;
    if let Some(what) = crate::integrity::first_non_finite(&bytes) {
        bail!("checkpoint '{}': {what}", path.display());
    }
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
    let err = device_error(be);
    for (id, spec) in model.params.specs().iter().enumerate() {
        let n = spec.numel();
        be.write(&mut st.ema[id], &read(&format!("{EMA_PREFIX}{}", spec.name), n)?).map_err(err)?;
        if let (Some(m), Some(v)) = (st.m[id].as_mut(), st.v[id].as_mut()) {
            be.write(m, &read(&format!("{ADAM_M_PREFIX}{}", spec.name), n)?).map_err(err)?;
            be.write(v, &read(&format!("{ADAM_V_PREFIX}{}", spec.name), n)?).map_err(err)?;
        }
    }
    if let Some(g) = gan {
        g.load(be, &read)?;
    }
    Ok(meta)
}

/// Removes the temporary files a killed run may have left (`.NAME.PID.tmp`, see
/// [`imageio::write_atomically`]); the files they were meant to replace are intact.
pub(super) fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Keeps the log lines of steps `<= step` (drops what a killed run wrote after its last
/// checkpoint): lines keyed by `step`, `eval` or `samples` (the generators' sample grids).
pub(crate) fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let s = ["step", "eval", "start", "samples"].iter().find_map(|k| v.get(*k)).and_then(|s| s.as_u64());
        if s.is_some_and(|s| s <= step) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    imageio::write_atomically(path, kept.as_bytes())
}
