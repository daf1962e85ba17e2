//! Generator files: the SiT weights (official names) with, in the safetensors metadata, what
//! `generate` needs to use them: the stage, the SiT hyper-parameters, the class names, the latent
//! statistics (spec 9.1, the keys of `gpstoken_core::model::sit::checkpoint`), the tokenizer's
//! patch size and feature channels, and the training state (step, seed, batch, lr). Training
//! checkpoints add the Adam moments (`adam_m.*`, `adam_v.*`); both kinds load for generation.
//! With `train-generator --ema`, both also hold the exponential moving average of the weights
//! under the official prefix `ema_model.` (spec 9.2), which `generate` uses by default.

use anyhow::{bail, Context, Result};
use gpstoken_core::model::sit::checkpoint::{MEAN_KEY, STD_KEY};
use gpstoken_core::model::sit::{LatentStats, SitConfig};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// What a generator generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Layouts `[σx, σy, ρ, x, y]` per token (spec 9.8), class-conditional, with `pos_embed`.
    Layout,
    /// Token residuals around a layout and the features, conditioned on the layout (spec 9.1).
    Texture,
    /// Geometry and features together, no layout (the one-stage baseline).
    OneStage,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Layout => "layout",
            Stage::Texture => "texture",
            Stage::OneStage => "one-stage",
        }
    }

    pub fn parse(s: &str) -> Result<Stage> {
        Ok(match s {
            "layout" => Stage::Layout,
            "texture" => Stage::Texture,
            "one-stage" => Stage::OneStage,
            other => bail!("unknown generator stage '{other}'"),
        })
    }

    /// The SiT for `classes` classes on `tokens` tokens with `features` feature channels.
    pub fn sit_config(self, size: &SitSize, classes: usize, tokens: usize, features: usize) -> SitConfig {
        SitConfig {
            name: format!("gpstoken-{}", self.name()),
            tokens,
            in_channels: if self == Stage::Layout { 5 } else { 5 + features },
            hidden: size.hidden,
            depth: size.depth,
            heads: size.heads,
            mlp_ratio: 4.0,
            classes,
            class_dropout_prob: 0.1,
            learn_sigma: true,
            cond_channels: if self == Stage::Texture { Some(5) } else { None },
        }
    }
}

/// Width, depth and heads of a generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SitSize {
    pub hidden: usize,
    pub depth: usize,
    pub heads: usize,
}

/// Everything a generator file says besides its weights.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorInfo {
    pub stage: Stage,
    pub config: SitConfig,
    pub class_names: Vec<String>,
    pub stats: LatentStats,
    /// The tokenizer's patch side and feature channels the latents belong to.
    pub patch: usize,
    pub features: usize,
    pub training: TrainingState,
}

/// Where training stood when the file was written; `seed`, `batch`, `lr` and `cond_noise` must
/// match on `--resume`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainingState {
    pub step: u64,
    pub seed: u64,
    pub batch: usize,
    pub lr: f32,
    pub cond_noise: f32,
    /// EMA decay per step (0: no EMA).
    pub ema: f32,
}

/// The prefix of the EMA weights in generator files (the official checkpoints' `ema_model.`).
pub const EMA_MODEL_PREFIX: &str = "ema_model.";

fn floats(v: &[f32]) -> String {
    v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(",")
}

impl GeneratorInfo {
    pub fn to_map(&self) -> Result<HashMap<String, String>> {
        let c = &self.config;
        let t = &self.training;
        let mut m = HashMap::new();
        let mut put = |k: &str, v: String| m.insert(k.to_string(), v);
        put("format", "gpstoken-generator-1".into());
        put("stage", self.stage.name().into());
        put("tokens", c.tokens.to_string());
        put("hidden", c.hidden.to_string());
        put("depth", c.depth.to_string());
        put("heads", c.heads.to_string());
        put("classes", serde_json::to_string(&self.class_names)?);
        put(MEAN_KEY, floats(&self.stats.mean));
        put(STD_KEY, floats(&self.stats.std));
        put("patch", self.patch.to_string());
        put("features", self.features.to_string());
        put("step", t.step.to_string());
        put("seed", t.seed.to_string());
        put("batch", t.batch.to_string());
        put("lr", format!("{:?}", t.lr));
        put("cond_noise", format!("{:?}", t.cond_noise));
        put("ema", format!("{:?}", t.ema));
        Ok(m)
    }

    pub fn from_map(m: &HashMap<String, String>) -> Result<GeneratorInfo> {
        let get = |k: &str| m.get(k).map(String::as_str).with_context(|| format!("no '{k}' in the metadata"));
        let num = |k: &str| -> Result<usize> { get(k)?.parse().with_context(|| format!("bad '{k}' in the metadata")) };
        let list = |k: &str| -> Result<Vec<f32>> {
            get(k)?.split(',').map(|s| s.parse().with_context(|| format!("bad '{k}' in the metadata"))).collect()
        };
        if get("format")? != "gpstoken-generator-1" {
            bail!("not a gpstoken generator (format '{}')", get("format")?);
        }
        let stage = Stage::parse(get("stage")?)?;
        let class_names: Vec<String> =
            serde_json::from_str(get("classes")?).context("bad 'classes' in the metadata")?;
        let size = SitSize { hidden: num("hidden")?, depth: num("depth")?, heads: num("heads")? };
        let features = num("features")?;
        let config = stage.sit_config(&size, class_names.len(), num("tokens")?, features);
        config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let stats = LatentStats { mean: list(MEAN_KEY)?, std: list(STD_KEY)? };
        if stats.mean.len() != config.in_channels || stats.std.len() != config.in_channels {
            bail!("latent statistics for {} channels, the model has {}", stats.mean.len(), config.in_channels);
        }
        let training = TrainingState {
            step: get("step")?.parse().context("bad 'step'")?,
            seed: get("seed")?.parse().context("bad 'seed'")?,
            batch: num("batch")?,
            lr: get("lr")?.parse().context("bad 'lr'")?,
            cond_noise: get("cond_noise")?.parse().context("bad 'cond_noise'")?,
            // files written before EMA existed have no key: no EMA
            ema: m.get("ema").map_or(Ok(0.0), |v| v.parse()).context("bad 'ema'")?,
        };
        Ok(GeneratorInfo { stage, config, class_names, stats, patch: num("patch")?, features, training })
    }

    /// The label of `--class NAME|K`.
    pub fn label(&self, class: &str) -> Result<u32> {
        if let Some(k) = self.class_names.iter().position(|c| c == class) {
            return Ok(k as u32);
        }
        match class.parse::<usize>() {
            Ok(k) if k < self.class_names.len() => Ok(k as u32),
            _ => bail!("unknown class '{class}': the generator knows {}", self.class_names.join(", ")),
        }
    }
}

/// A generator file read from disk: its info and weights-only bytes (the raw weights, or the EMA
/// weights after [`GeneratorFile::select`]).
pub struct GeneratorFile {
    pub info: GeneratorInfo,
    pub weights: Vec<u8>,
    /// The EMA weights (`ema_model.*`, prefix stripped), when the file has them.
    pub ema: Option<Vec<u8>>,
}

/// Which weights of a generator file to sample with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsChoice {
    /// The EMA weights when the file has them, else the raw weights.
    Auto,
    /// The EMA weights (an error if the file has none).
    Ema,
    /// The raw (last optimiser step) weights.
    Raw,
}

impl GeneratorFile {
    /// Makes `weights` the chosen ones; returns whether they are the EMA weights.
    pub fn select(&mut self, choice: WeightsChoice, path: &Path) -> Result<bool> {
        match (choice, self.ema.take()) {
            (WeightsChoice::Raw, _) | (WeightsChoice::Auto, None) => Ok(false),
            (WeightsChoice::Ema, None) => {
                bail!("generator '{}' has no EMA weights (train it with --ema)", path.display())
            }
            (_, Some(ema)) => {
                self.weights = ema;
                Ok(true)
            }
        }
    }
}

/// Splits weights-only bytes into the raw weights and the `ema_model.` weights (prefix stripped).
fn split_ema(bytes: Vec<u8>) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e}"))?;
    if !st.names().iter().any(|n| n.starts_with(EMA_MODEL_PREFIX)) {
        return Ok((bytes, None));
    }
    let (mut raw, mut ema) = (Vec::new(), Vec::new());
    for (name, view) in st.tensors() {
        match name.strip_prefix(EMA_MODEL_PREFIX) {
            Some(n) => ema.push((n.to_string(), view)),
            None => raw.push((name, view)),
        }
    }
    let pack = |views: Vec<(String, safetensors::tensor::TensorView<'_>)>| {
        safetensors::serialize(views, None).map_err(|e| anyhow::anyhow!("cannot re-pack weights: {e}"))
    };
    Ok((pack(raw)?, Some(pack(ema)?)))
}

pub fn read_generator(path: &Path) -> Result<GeneratorFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read generator '{}'", path.display()))?;
    let what = || format!("generator '{}'", path.display());
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("generator '{}' is not a safetensors file: {e}", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let info = GeneratorInfo::from_map(&meta).with_context(what)?;
    let (weights, _) = crate::model_io::weights_only(&bytes, crate::model_io::Which::Raw).with_context(what)?;
    let (weights, ema) = split_ema(weights).with_context(what)?;
    Ok(GeneratorFile { info, weights, ema })
}
