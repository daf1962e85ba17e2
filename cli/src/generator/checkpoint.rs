//! Training checkpoints of a generator: the weights, the Adam moments (`adam_m.*`, `adam_v.*`)
//! and the [`GeneratorInfo`] metadata, written atomically; `--resume` uploads them back into the
//! buffers the run already allocated, so the continued run is bit-identical on the CPU backend.

use super::model::{GeneratorInfo, EMA_MODEL_PREFIX};
use crate::backends::device_error;
use crate::model_io::{self, ADAM_M_PREFIX, ADAM_V_PREFIX};
use crate::train::checkpoint::host;
use anyhow::{bail, Context, Result};
use gpstoken_core::backend::{AdamConfig, Backend};
use gpstoken_core::model::sit::Sit;
use safetensors::SafeTensors;
use std::path::Path;

/// Adam moments of every parameter with a gradient (`None` for unused parameters).
pub struct Moments<B: Backend> {
    pub m: Vec<Option<B::Buffer>>,
    pub v: Vec<Option<B::Buffer>>,
}

impl<B: Backend> Moments<B> {
    pub fn zeros(be: &B, sit: &Sit<B>) -> Result<Moments<B>> {
        let err = device_error(be);
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for id in 0..sit.params.len() {
            let n = sit.params.spec(id).numel();
            let trained = sit.params.grad(id).is_some();
            m.push(if trained { Some(be.zeros(n).map_err(err)?) } else { None });
            v.push(if trained { Some(be.zeros(n).map_err(err)?) } else { None });
        }
        Ok(Moments { m, v })
    }

    /// Adam step number `step` on every parameter with a gradient.
    pub fn step(&mut self, be: &B, sit: &mut Sit<B>, adam: &AdamConfig, step: u64) -> Result<()> {
        crate::train::state::adam_step_params(be, &mut sit.params, &mut self.m, &mut self.v, adam, step)
    }
}

/// Writes the weights (and the moments and the EMA weights when given) with `info` to `path`,
/// atomically.
pub fn save<B: Backend>(
    be: &B,
    path: &Path,
    sit: &Sit<B>,
    moments: Option<&Moments<B>>,
    ema: Option<&[B::Buffer]>,
    info: &GeneratorInfo,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (id, spec) in sit.params.specs().iter().enumerate() {
        tensors.push((spec.name.clone(), spec.shape.clone(), host(be, sit.params.value(id))?));
        if let Some(e) = ema {
            tensors.push((format!("{EMA_MODEL_PREFIX}{}", spec.name), spec.shape.clone(), host(be, &e[id])?));
        }
        if let Some((Some(m), Some(v))) = moments.map(|s| (&s.m[id], &s.v[id])) {
            tensors.push((format!("{ADAM_M_PREFIX}{}", spec.name), spec.shape.clone(), host(be, m)?));
            tensors.push((format!("{ADAM_V_PREFIX}{}", spec.name), spec.shape.clone(), host(be, v)?));
        }
    }
    let bytes = model_io::serialize_f32(&tensors, info.to_map()?)?;
    crate::imageio::write_atomically(path, &bytes)
}

/// Loads a checkpoint written by [`save`] into `sit`, `moments` and `ema` (when given); returns
/// its info.
pub fn load<B: Backend>(
    be: &B,
    path: &Path,
    sit: &mut Sit<B>,
    moments: &mut Moments<B>,
    ema: Option<&mut [B::Buffer]>,
) -> Result<GeneratorInfo> {
    let file = super::model::read_generator(path)?;
    gpstoken_core::model::load_safetensors(be, &mut sit.params, &file.weights).map_err(|e| {
        anyhow::anyhow!("checkpoint '{}' does not match the model: {}", path.display(), model_io::mismatch_summary(&e))
    })?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint '{}'", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("bad checkpoint: {e}"))?;
    let read = |name: &str, n: usize| -> Result<Vec<f32>> {
        let t = st.tensor(name).with_context(|| format!("checkpoint '{}' lacks '{name}'", path.display()))?;
        if t.dtype() != safetensors::Dtype::F32 || t.data().len() != n * 4 {
            bail!("checkpoint tensor '{name}' has the wrong dtype or size");
        }
        Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    };
    let err = device_error(be);
    for (id, spec) in sit.params.specs().iter().enumerate() {
        if let (Some(m), Some(v)) = (moments.m[id].as_mut(), moments.v[id].as_mut()) {
            be.write(m, &read(&format!("{ADAM_M_PREFIX}{}", spec.name), spec.numel())?).map_err(err)?;
            be.write(v, &read(&format!("{ADAM_V_PREFIX}{}", spec.name), spec.numel())?).map_err(err)?;
        }
    }
    if let Some(ema) = ema {
        for (id, spec) in sit.params.specs().iter().enumerate() {
            be.write(&mut ema[id], &read(&format!("{EMA_MODEL_PREFIX}{}", spec.name), spec.numel())?).map_err(err)?;
        }
    }
    Ok(file.info)
}
