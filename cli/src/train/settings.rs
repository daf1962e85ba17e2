//! The settings of a run: the flags, or the checkpoint's values when resuming (explicit flags
//! must then agree with it), over the defaults and the yaml's loss settings.

use super::checkpoint::{read_meta, Meta};
use super::{GanSettings, TrainOptions, CHECKPOINT, DEFAULT_BATCH, DEFAULT_DISC_WEIGHT, DEFAULT_LR, DEFAULT_SEED};
use crate::data::{Init, SampleSpec};
use anyhow::{bail, Result};
use gpstoken_core::model::ModelConfig;

/// Everything a run needs to know besides its folders.
#[derive(Clone)]
pub(super) struct Settings {
    /// The config's name (or yaml path), as recorded in the checkpoint.
    pub config_name: String,
    pub cfg: ModelConfig,
    pub batch: usize,
    pub seed: u64,
    pub lr: f32,
    pub init: Init,
    pub gan: Option<GanSettings>,
    /// One training sample: the config's image size and tokens, the init.
    pub spec: SampleSpec,
    /// Whether a checkpoint is continued (`--resume` and one exists).
    pub resume: bool,
}

impl Settings {
    /// The checkpoint metadata at step `step`.
    pub fn meta_at(&self, step: u64) -> Meta {
        Meta {
            config: self.config_name.clone(),
            step,
            seed: self.seed,
            batch: self.batch,
            lr: self.lr,
            init: self.init,
            gan: self.gan,
        }
    }
}

/// Checks the flags (and, when resuming, that they agree with the checkpoint) and settles every
/// setting.
pub(super) fn resolve(o: &TrainOptions) -> Result<Settings> {
    if o.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if o.checkpoint_every == 0 || o.eval_every == 0 {
        bail!("--checkpoint-every and --eval-every must be at least 1");
    }
    let ckpt_path = o.out.join(CHECKPOINT);
    let stored = if o.resume && ckpt_path.is_file() { Some(read_meta(&ckpt_path)?) } else { None };
    match &stored {
        Some(m) => check_against_checkpoint(o, m)?,
        None if ckpt_path.exists() && !o.resume => bail!(
            "'{}' already holds a checkpoint; pass --resume to continue it or choose another --out",
            o.out.display()
        ),
        None => {}
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
    let gan = match &stored {
        Some(m) => m.gan,
        None => gan_from_flags_and_yaml(o, &config_name)?,
    };
    if let Some(g) = &gan {
        if !(g.disc_weight.is_finite() && g.disc_weight >= 0.0) {
            bail!("--disc-weight must be a non-negative number, got {}", g.disc_weight);
        }
    }
    let spec = SampleSpec { size: cfg.image_size, tokens: cfg.gps.gps_num, weight: cfg.gps.gps_adaptive_w, init };
    Ok(Settings { config_name, cfg, batch, seed, lr, init, gan, spec, resume: stored.is_some() })
}

/// A resumed run takes its settings from the checkpoint; a flag given anyway must agree.
fn check_against_checkpoint(o: &TrainOptions, m: &Meta) -> Result<()> {
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
    Ok(())
}

/// The adversarial stage of a fresh run: the flags over the yaml's `lossconfig`.
fn gan_from_flags_and_yaml(o: &TrainOptions, config_name: &str) -> Result<Option<GanSettings>> {
    let yaml = crate::config::load_loss_settings(config_name)?;
    for w in &yaml.warnings {
        eprintln!("gpstoken: warning: {w}");
    }
    let weight = o.disc_weight.or(yaml.disc_weight.map(|w| w as f32)).unwrap_or(DEFAULT_DISC_WEIGHT);
    match o.disc_start.or(yaml.disc_start) {
        Some(disc_start) => Ok(Some(GanSettings { disc_start, disc_weight: weight })),
        None if o.disc_weight.is_some() => bail!("--disc-weight needs --disc-start"),
        None => Ok(None),
    }
}
