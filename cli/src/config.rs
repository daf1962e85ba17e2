//! Model configurations: a built-in name (`s64`, `m128`, `l256`, `golden`, `tiny64`, `cpu-tiny`) or a yaml
//! file in the official format (`configs/gpstoken_*.yaml`, spec 7.1):
//!
//! ```yaml
//! model:
//!   decoderconfig: {double_z: False, z_channels: 16, resolution: 256, in_channels: 3, out_ch: 3,
//!                   ch: 128, ch_mult: [1,2,4], num_res_blocks: 2, attn_resolutions: [], dropout: 0.0}
//!   gpsconfig: {rois: 8, gpsenc_n: 30, gpsenc_c: 512, gps_c: 16, gps_num: 128, gps_dmax: 3,
//!               gps_adaptive_w: 2.5, gps_rs: [64, 64]}
//! ```
//!
//! Every key of `gpsconfig` and `decoderconfig` is required except `double_z` (ignored by the
//! official `DecoderNP`); unknown keys there or under `model` are errors naming the key. Other
//! top-level sections (training, data) are ignored. The patch size is `gps_rs` times the
//! decoder's upsampling, as the official model takes its input (`gps_rs` is `[height, width]`, so
//! patches may be non-square); `model.image_hw: [h, w]` or `model.image_size: S` (for `[S, S]`),
//! neither in the official files, may state it, and must then agree.
//!
//! `model.lossconfig` (taming's `target` + `params`) is read by [`parse_loss_settings`] for the
//! adversarial stage: `disc_start`, `disc_weight`; `disc_conditional` must be False and
//! `disc_in_channels` 3 (the only discriminator implemented); `perceptual_weight > 0` and any
//! other key give warnings (perceptual losses need pretrained networks this port does not have).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use gpstoken_core::model::{DecoderConfig, GpsConfig, ModelConfig};
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlLoader};

/// A built-in config by name, else the yaml file at `name_or_path`.
pub fn load_config(name_or_path: &str) -> Result<ModelConfig> {
    if let Some(c) = ModelConfig::builtin(name_or_path) {
        return Ok(c);
    }
    let path = Path::new(name_or_path);
    if !path.is_file() {
        bail!(
            "unknown model config {name_or_path:?}: not a built-in ({}) and not a file",
            ModelConfig::BUILTIN.join(", ")
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_config(&text, name_or_path).with_context(|| format!("model config {}", path.display()))
}

/// The config to build the model file at `path` with, from `--config` (`flag`) and the config
/// the file's metadata names (`stored`, written by `train`). The file's own config wins: a
/// `--config` that describes a different model is an error rather than silently ignored or
/// silently applied. `--config` is still needed when the file names none, and may stand in for
/// a stored yaml path that no longer exists (a run folder moved to another machine).
pub fn config_for_model(flag: Option<&str>, stored: Option<&str>, path: &Path) -> Result<ModelConfig> {
    match (flag, stored) {
        (Some(given), Some(stored)) if given != stored => {
            let given_cfg = load_config(given)?;
            let Ok(stored_cfg) = load_config(stored) else { return Ok(given_cfg) };
            let same = ModelConfig { name: given_cfg.name.clone(), ..stored_cfg.clone() } == given_cfg;
            if !same {
                bail!(
                    "--config {given} differs from config '{stored}' recorded in model '{}'; omit --config",
                    path.display()
                );
            }
            Ok(stored_cfg)
        }
        (_, Some(name)) | (Some(name), None) => load_config(name),
        (None, None) => bail!("model '{}' does not say its config; pass --config NAME|FILE", path.display()),
    }
}

/// Parses the official yaml format (see the module docs) and validates the result.
pub fn parse_config(text: &str, name: &str) -> Result<ModelConfig> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow!("invalid yaml: {e}"))?;
    let root = docs.first().ok_or_else(|| anyhow!("empty yaml document"))?;
    let root = root.as_hash().ok_or_else(|| anyhow!("the top level must be a mapping with a `model` key"))?;
    let model = section(root, "model", "")?;
    let mut keys = Keys::new(model, "model");
    let gps = section(model, "gpsconfig", "model.")?;
    let dec = section(model, "decoderconfig", "model.")?;
    // The loss settings are read by `parse_loss_settings`.
    keys.seen(&["gpsconfig", "decoderconfig", "lossconfig"]);
    let image_size = keys.optional("image_size").map(|v| uint(v, "model.image_size")).transpose()?;
    let image_hw = keys.optional("image_hw").map(|v| uint_list(v, "model.image_hw")).transpose()?;
    keys.reject_unknown()?;

    let p = "model.gpsconfig";
    let mut g = Keys::new(gps, p);
    let rs = g.required("gps_rs")?;
    let rs = uint_list(rs, &format!("{p}.gps_rs"))?;
    if rs.len() != 2 {
        bail!("{p}.gps_rs: expected [height, width], got {} values", rs.len());
    }
    let gps = GpsConfig {
        rois: uint(g.required("rois")?, &format!("{p}.rois"))?,
        gpsenc_n: uint(g.required("gpsenc_n")?, &format!("{p}.gpsenc_n"))?,
        gpsenc_c: uint(g.required("gpsenc_c")?, &format!("{p}.gpsenc_c"))?,
        gps_c: uint(g.required("gps_c")?, &format!("{p}.gps_c"))?,
        gps_num: uint(g.required("gps_num")?, &format!("{p}.gps_num"))?,
        gps_dmax: float(g.required("gps_dmax")?, &format!("{p}.gps_dmax"))? as f32,
        gps_adaptive_w: float(g.required("gps_adaptive_w")?, &format!("{p}.gps_adaptive_w"))?,
        gps_rs: (rs[0], rs[1]),
    };
    g.reject_unknown()?;

    let p = "model.decoderconfig";
    let mut d = Keys::new(dec, p);
    if let Some(v) = d.optional("double_z") {
        if boolean(v, &format!("{p}.double_z"))? {
            bail!("{p}.double_z: must be False for the GPSToken decoder");
        }
    }
    let decoder = DecoderConfig {
        z_channels: uint(d.required("z_channels")?, &format!("{p}.z_channels"))?,
        resolution: uint(d.required("resolution")?, &format!("{p}.resolution"))?,
        in_channels: uint(d.required("in_channels")?, &format!("{p}.in_channels"))?,
        out_ch: uint(d.required("out_ch")?, &format!("{p}.out_ch"))?,
        ch: uint(d.required("ch")?, &format!("{p}.ch"))?,
        ch_mult: uint_list(d.required("ch_mult")?, &format!("{p}.ch_mult"))?,
        num_res_blocks: uint(d.required("num_res_blocks")?, &format!("{p}.num_res_blocks"))?,
        attn_resolutions: uint_list(d.required("attn_resolutions")?, &format!("{p}.attn_resolutions"))?,
        dropout: float(d.required("dropout")?, &format!("{p}.dropout"))? as f32,
    };
    d.reject_unknown()?;

    let image_hw = match (image_hw, image_size) {
        (Some(_), Some(_)) => bail!("model.image_hw and model.image_size: give one of them"),
        (Some(hw), None) if hw.len() != 2 => {
            bail!("model.image_hw: expected [height, width], got {} values", hw.len())
        }
        (Some(hw), None) => (hw[0], hw[1]),
        (None, Some(s)) => (s, s),
        // The size the official model is run at: the render size times the decoder's upsampling.
        (None, None) => {
            let up = decoder.upsampling();
            (gps.gps_rs.0.saturating_mul(up), gps.gps_rs.1.saturating_mul(up))
        }
    };
    let cfg = ModelConfig { name: name.to_string(), gps, decoder, image_hw };
    cfg.validate()?;
    Ok(cfg)
}

/// What an official yaml's `model.lossconfig.params` asks of the adversarial stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossSettings {
    pub disc_start: Option<u64>,
    pub disc_weight: Option<f64>,
    /// One line each: settings that are read but not implemented (and so skipped).
    pub warnings: Vec<String>,
}

/// The loss settings of a config: none for a built-in name, else `model.lossconfig` of the yaml.
pub fn load_loss_settings(name_or_path: &str) -> Result<LossSettings> {
    if ModelConfig::builtin(name_or_path).is_some() {
        return Ok(LossSettings::default());
    }
    let text = std::fs::read_to_string(name_or_path).with_context(|| format!("reading {name_or_path}"))?;
    parse_loss_settings(&text).with_context(|| format!("model config {name_or_path}"))
}

/// `model.lossconfig` of an official yaml (absent: no settings).
pub fn parse_loss_settings(text: &str) -> Result<LossSettings> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow!("invalid yaml: {e}"))?;
    let root = docs.first().and_then(Yaml::as_hash).ok_or_else(|| anyhow!("the top level must be a mapping"))?;
    let model = section(root, "model", "")?;
    let mut out = LossSettings::default();
    if model.get(&Yaml::String("lossconfig".into())).is_none() {
        return Ok(out);
    }
    let loss = section(model, "lossconfig", "model.")?;
    let mut keys = Keys::new(loss, "model.lossconfig");
    // The class name (taming's `VQLPIPSWithDiscriminator` family); only its params matter here.
    keys.optional("target");
    let params = keys.optional("params");
    keys.reject_unknown()?;
    let Some(params) = params else { return Ok(out) };
    let p = "model.lossconfig.params";
    let params = params.as_hash().ok_or_else(|| anyhow!("{p}: expected a mapping"))?;
    let mut k = Keys::new(params, p);
    out.disc_start =
        k.optional("disc_start").map(|v| uint(v, &format!("{p}.disc_start"))).transpose()?.map(|v| v as u64);
    if let Some(v) = k.optional("disc_weight") {
        let w = float(v, &format!("{p}.disc_weight"))?;
        if !(w.is_finite() && w >= 0.0) {
            bail!("{p}.disc_weight: must be a non-negative number, got {w}");
        }
        out.disc_weight = Some(w);
    }
    if let Some(v) = k.optional("disc_conditional") {
        if boolean(v, &format!("{p}.disc_conditional"))? {
            bail!("{p}.disc_conditional: only the unconditional discriminator is implemented");
        }
    }
    if let Some(v) = k.optional("disc_in_channels") {
        let c = uint(v, &format!("{p}.disc_in_channels"))?;
        if c != 3 {
            bail!("{p}.disc_in_channels: the discriminator sees RGB images (3 channels), got {c}");
        }
    }
    if let Some(v) = k.optional("perceptual_weight") {
        let w = float(v, &format!("{p}.perceptual_weight"))?;
        if w > 0.0 {
            out.warnings.push(format!(
                "{p}.perceptual_weight {w}: the perceptual losses (LPIPS, Inception features) are not implemented \
                 (no pretrained weights here) and are skipped"
            ));
        }
    }
    let ignored: Vec<String> = params
        .keys()
        .map(|key| match key {
            Yaml::String(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .filter(|key| !k.seen.contains(key))
        .map(|key| format!("{p}.{key}"))
        .collect();
    if !ignored.is_empty() {
        out.warnings.push(format!("not implemented, ignored: {}", ignored.join(", ")));
    }
    Ok(out)
}

/// A required sub-mapping.
fn section<'a>(h: &'a Hash, key: &str, prefix: &str) -> Result<&'a Hash> {
    match h.get(&Yaml::String(key.to_string())) {
        None => bail!("missing key {prefix}{key}"),
        Some(v) => v.as_hash().ok_or_else(|| anyhow!("{prefix}{key}: expected a mapping")),
    }
}

/// Tracks which keys of a mapping were read, to reject the others.
struct Keys<'a> {
    hash: &'a Hash,
    path: &'a str,
    seen: Vec<String>,
}

impl<'a> Keys<'a> {
    fn new(hash: &'a Hash, path: &'a str) -> Self {
        Keys { hash, path, seen: Vec::new() }
    }
    fn seen(&mut self, keys: &[&str]) {
        self.seen.extend(keys.iter().map(|k| k.to_string()));
    }
    fn optional(&mut self, key: &str) -> Option<&'a Yaml> {
        self.seen.push(key.to_string());
        self.hash.get(&Yaml::String(key.to_string()))
    }
    fn required(&mut self, key: &str) -> Result<&'a Yaml> {
        let path = self.path;
        self.optional(key).ok_or_else(|| anyhow!("missing key {path}.{key}"))
    }
    fn reject_unknown(&self) -> Result<()> {
        let unknown: Vec<String> = self
            .hash
            .keys()
            .map(|k| match k {
                Yaml::String(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .filter(|k| !self.seen.contains(k))
            .map(|k| format!("{}.{k}", self.path))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            bail!("unknown key(s): {}", unknown.join(", "))
        }
    }
}

fn uint(v: &Yaml, key: &str) -> Result<usize> {
    match v {
        Yaml::Integer(i) if *i >= 0 => Ok(*i as usize),
        other => bail!("{key}: expected a non-negative integer, got {}", show(other)),
    }
}

fn float(v: &Yaml, key: &str) -> Result<f64> {
    match v {
        Yaml::Integer(i) => Ok(*i as f64),
        Yaml::Real(_) => v.as_f64().ok_or_else(|| anyhow!("{key}: invalid number {}", show(v))),
        other => bail!("{key}: expected a number, got {}", show(other)),
    }
}

/// YAML 1.1 spellings too (`False`, as the official files write it).
fn boolean(v: &Yaml, key: &str) -> Result<bool> {
    match v {
        Yaml::Boolean(b) => Ok(*b),
        Yaml::String(s) if matches!(s.as_str(), "True" | "TRUE" | "true") => Ok(true),
        Yaml::String(s) if matches!(s.as_str(), "False" | "FALSE" | "false") => Ok(false),
        other => bail!("{key}: expected True or False, got {}", show(other)),
    }
}

fn uint_list(v: &Yaml, key: &str) -> Result<Vec<usize>> {
    let items = v.as_vec().ok_or_else(|| anyhow!("{key}: expected a list, got {}", show(v)))?;
    items.iter().enumerate().map(|(i, x)| uint(x, &format!("{key}[{i}]"))).collect()
}

fn show(v: &Yaml) -> String {
    match v {
        Yaml::Real(s) | Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".into(),
        Yaml::Array(_) => "a list".into(),
        Yaml::Hash(_) => "a mapping".into(),
        _ => format!("{v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `configs/gpstoken_m128.yaml` of the official repository, verbatim.
    const M128: &str = "model:
  decoderconfig:
    double_z: False
    z_channels: 16 # origin 256
    resolution: 256
    in_channels: 3
    out_ch: 3
    ch: 128
    ch_mult: [1,2,4] # origin (1,1,2,2,4)
    num_res_blocks: 2
    attn_resolutions: []
    dropout: 0.0
  gpsconfig:
    rois: 8
    gpsenc_n: 30
    gpsenc_c: 512
    gps_c: 16
    gps_num: 128
    gps_dmax: 3
    gps_adaptive_w: 2.5
    gps_rs: [64, 64]
";

    #[test]
    fn official_yaml_gives_the_builtin_config() {
        let mut c = parse_config(M128, "m128").unwrap();
        assert_eq!(c, ModelConfig::m128());
        c.name = "x".into();
        assert_eq!(c.parameter_count().unwrap(), 128_663_478);
        assert_eq!(load_config("l256").unwrap(), ModelConfig::l256());
        let with_train = format!("{M128}train:\n  lr: 5.0e-5\n");
        assert_eq!(parse_config(&with_train, "m128").unwrap(), ModelConfig::m128());
    }

    #[test]
    fn lossconfig_is_read_and_unimplemented_terms_are_reported() {
        let loss = "  lossconfig:
    target: losses.vqperceptual.VQLPIPSWithDiscriminator
    params:
      disc_conditional: False
      disc_in_channels: 3
      disc_start: 600000
      disc_weight: 0.3
      codebook_weight: 1.0
      perceptual_weight: 1.0
";
        let text = format!("{M128}{loss}");
        assert_eq!(parse_config(&text, "m128").unwrap(), ModelConfig::m128());
        let l = parse_loss_settings(&text).unwrap();
        assert_eq!((l.disc_start, l.disc_weight), (Some(600_000), Some(0.3)));
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("perceptual_weight 1") && l.warnings[0].contains("not implemented"));
        assert!(l.warnings[1].contains("model.lossconfig.params.codebook_weight"));
        let zero = text
            .replace("perceptual_weight: 1.0", "perceptual_weight: 0.0")
            .replace("      codebook_weight: 1.0\n", "");
        assert!(parse_loss_settings(&zero).unwrap().warnings.is_empty());
        assert_eq!(parse_loss_settings(M128).unwrap(), LossSettings::default());
        let err = |t: &str| format!("{:#}", parse_loss_settings(t).unwrap_err());
        assert!(err(&text.replace("disc_weight: 0.3", "disc_weight: -1")).contains("disc_weight"));
        assert!(err(&text.replace("disc_conditional: False", "disc_conditional: True")).contains("unconditional"));
        assert!(err(&text.replace("disc_in_channels: 3", "disc_in_channels: 1")).contains("disc_in_channels"));
        assert!(err(&text.replace("    params:", "    extra: 1\n    params:")).contains("model.lossconfig.extra"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = |text: &str| format!("{:#}", parse_config(text, "t").unwrap_err());
        assert!(err(&M128.replace("    rois: 8\n", "")).contains("missing key model.gpsconfig.rois"));
        assert!(err(&M128.replace("    ch: 128\n", "    ch: 128\n    chh: 1\n"))
            .contains("unknown key(s): model.decoderconfig.chh"));
        assert!(err(&M128.replace("gps_rs: [64, 64]", "gps_rs: [64]")).contains("model.gpsconfig.gps_rs"));
        assert!(err(&M128.replace("gps_num: 128", "gps_num: -3")).contains("model.gpsconfig.gps_num"));
        assert!(err(&M128.replace("ch_mult: [1,2,4]", "ch_mult: [1,x,4]")).contains("model.decoderconfig.ch_mult[1]"));
        assert!(err(&M128.replace("z_channels: 16", "z_channels: 8")).contains("z_channels"));
        assert!(err("train: {}\n").contains("missing key model"));
        assert!(err(&M128.replace("model:\n", "model:\n  target: x\n")).contains("model.target"));
        let e = format!("{:#}", load_config("no/such/config.yaml").unwrap_err());
        assert!(e.contains("not a built-in") && e.contains("m128"), "{e}");
    }

    #[test]
    fn non_square_render_size_gives_a_non_square_patch() {
        let wide = M128.replace("gps_rs: [64, 64]", "gps_rs: [32, 64]");
        assert_eq!(parse_config(&wide, "t").unwrap().image_hw, (128, 256), "gps_rs [h, w] times 4");
        let stated = wide.replace("model:\n", "model:\n  image_hw: [128, 256]\n");
        assert_eq!(parse_config(&stated, "t").unwrap().image_hw, (128, 256));
        let err = |text: &str| format!("{:#}", parse_config(text, "t").unwrap_err());
        let e = err(&wide.replace("model:\n", "model:\n  image_hw: [256, 128]\n"));
        assert!(e.contains("gps_rs = [32, 64]") && e.contains("[256, 128]"), "{e}");
        assert!(err(&wide.replace("model:\n", "model:\n  image_hw: [128]\n")).contains("model.image_hw"));
        let square = M128.replace("model:\n", "model:\n  image_size: 256\n");
        assert_eq!(parse_config(&square, "t").unwrap().image_hw, (256, 256));
        let both = square.replace("model:\n", "model:\n  image_hw: [256, 256]\n");
        assert!(err(&both).contains("give one of them"));
    }
}
