//! The training tokens: every labelled image (and its mirror image) through the tokenizer once,
//! kept as `RUN_DIR/tokens.safetensors` so that later runs and `--resume` do not encode again.
//! The cache is reused only when its key (the tokenizer's bytes, the image files' names and
//! sizes, the patch size and token count) matches; otherwise the images are encoded again.

use super::data::{mirrored, LabelledImages};
use crate::model_io::{self, MultiPatch, Runner};
use anyhow::{bail, Context, Result};
use gpstoken_core::backend::Backend;
use gpstoken_core::model::GpsToken;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// File name of the cache in the run folder.
pub const TOKEN_CACHE: &str = "tokens.safetensors";

/// Encoded samples: `rows [M, N, 5 + C]` (the encoder's tokens), `g_init [M, N, 5]` (Algorithm 1
/// layouts they were encoded with), a label and a held-out flag per sample.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenSet {
    pub classes: Vec<String>,
    pub tokens: usize,
    pub stride: usize,
    pub rows: Vec<f32>,
    pub g_init: Vec<f32>,
    pub labels: Vec<u32>,
    pub held_out: Vec<bool>,
}

impl TokenSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Indices of the training (not held-out) samples.
    pub fn training(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| !self.held_out[i]).collect()
    }
}

/// FNV-1a, 64 bits: a cache key, not a security measure.
pub fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The cache key of a tokenizer and a labelled folder.
pub fn cache_key(tokenizer: &[u8], images: &LabelledImages, size: usize, tokens: usize) -> String {
    let mut h = fnv1a(tokenizer, 0xcbf2_9ce4_8422_2325);
    h = fnv1a(format!("{size}/{tokens}/{}", images.classes.join("/")).as_bytes(), h);
    for im in &images.images {
        let len = std::fs::metadata(&im.path).map_or(0, |m| m.len());
        h = fnv1a(format!("{}:{len}:{}", im.path.display(), im.held_out).as_bytes(), h);
    }
    format!("{h:016x}")
}

/// Encodes every image and its mirror with `model` (one patch each, Algorithm 1 layouts).
pub fn encode_all<B: Backend>(be: &B, model: GpsToken<B>, images: &LabelledImages) -> Result<TokenSet> {
    let cfg = model.config().clone();
    let (tokens, stride) = (cfg.gps.gps_num, 5 + cfg.gps.gps_c);
    let mut runner = Runner::new(be, model, 8, 1, MultiPatch::Tiled, crate::data::Init::Adaptive)?;
    let mut set = TokenSet {
        classes: images.classes.clone(),
        tokens,
        stride,
        rows: Vec::new(),
        g_init: Vec::new(),
        labels: Vec::new(),
        held_out: Vec::new(),
    };
    for chunk in images.images.chunks(8) {
        let flips: Vec<_> = chunk.iter().map(|im| mirrored(&im.image)).collect();
        let crops: Vec<_> = chunk.iter().map(|im| &im.image).chain(flips.iter()).collect();
        let outs = runner.run(be, &crops)?;
        for (k, out) in outs.iter().enumerate() {
            let im = &chunk[k % chunk.len()];
            set.rows.extend_from_slice(&out.tokens);
            set.g_init.extend_from_slice(&out.g_init);
            set.labels.push(im.class);
            set.held_out.push(im.held_out);
        }
    }
    if set.rows.iter().any(|v| !v.is_finite()) {
        bail!("the tokenizer produced non-finite tokens");
    }
    Ok(set)
}

/// Writes the cache (atomically).
pub fn save_cache(path: &Path, set: &TokenSet, key: &str) -> Result<()> {
    let m = set.len();
    let tensors = vec![
        ("rows".to_string(), vec![m, set.tokens, set.stride], set.rows.clone()),
        ("g_init".to_string(), vec![m, set.tokens, 5], set.g_init.clone()),
        ("labels".to_string(), vec![m], set.labels.iter().map(|&l| l as f32).collect()),
        ("held_out".to_string(), vec![m], set.held_out.iter().map(|&h| f32::from(u8::from(h))).collect()),
    ];
    let mut meta = HashMap::new();
    meta.insert("key".to_string(), key.to_string());
    meta.insert("classes".to_string(), serde_json::to_string(&set.classes)?);
    crate::imageio::write_atomically(path, &model_io::serialize_f32(&tensors, meta)?)
}

/// Reads the cache if it exists and its key is `key`.
pub fn load_cache(path: &Path, key: &str) -> Result<Option<TokenSet>> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(None) };
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("token cache '{}' is not a safetensors file: {e}", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("key").map(String::as_str) != Some(key) {
        return Ok(None);
    }
    let classes: Vec<String> =
        serde_json::from_str(meta.get("classes").map_or("", String::as_str)).context("token cache: bad classes")?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("token cache: {e}"))?;
    let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let t = st.tensor(name).with_context(|| format!("token cache lacks '{name}'"))?;
        let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok((t.shape().to_vec(), v))
    };
    let (shape, rows) = read("rows")?;
    let [m, tokens, stride] = shape[..] else { bail!("token cache: 'rows' is not [M, N, 5 + C]") };
    let (_, g_init) = read("g_init")?;
    let (_, labels) = read("labels")?;
    let (_, held) = read("held_out")?;
    if g_init.len() != m * tokens * 5 || labels.len() != m || held.len() != m {
        bail!("token cache '{}' is inconsistent; delete it", path.display());
    }
    Ok(Some(TokenSet {
        classes,
        tokens,
        stride,
        rows,
        g_init,
        labels: labels.iter().map(|&l| l as u32).collect(),
        held_out: held.iter().map(|&h| h != 0.0).collect(),
    }))
}
