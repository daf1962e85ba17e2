//! `gpstoken eval-generator`: distribution metrics of a generator's samples on the features of a
//! classifier trained here ([`super::classify`]): Fréchet and kernel distances to the held-out
//! real images and the classifier's accuracy on the samples (overall and per class), with the
//! references that bound them (the classifier on held-out real images and on their tokenizer
//! reconstructions; the training images against the held-out ones).

use super::classify::progress_bar;
use super::classify::{accuracy, features_of, ClassifierFile};
use super::metrics::{frechet_distance, kernel_distance};
use super::model::{GeneratorFile, Stage};
use super::sample::{grid, to_rgb8_truncated, Generator};
use super::tokens::TokenSet;
use crate::backends::BackendTask;
use crate::imageio::Rgb8;
use crate::model_io::{self, MultiPatch, Runner};
use anyhow::{bail, Result};
use gpstoken_core::backend::Backend;
use gpstoken_core::model::sit::{OdeMethod, Sampler};
use gpstoken_core::rng::SplitMix64;
use std::time::Instant;

/// Where a two-stage evaluation's layouts come from.
pub enum EvalLayouts {
    /// The layout model (dopri5 on this many output times, then Algorithm 2, with the duplicate
    /// repair when the flag is set).
    Model(Box<GeneratorFile>, usize, bool),
    /// Algorithm 1 layouts of the training images of the class (cycled; an upper bound on what
    /// a layout model can give).
    Training,
}

/// What to evaluate: the samples of a generator (one-stage, or texture with layouts), or only the
/// references (`generator` None).
pub struct EvalTask {
    pub classifier: ClassifierFile,
    /// Held-out real images (and mirrors) with labels: the reference distribution.
    pub held: Vec<(Rgb8, u32)>,
    /// Training real images with labels (for the real-vs-real reference).
    pub train: Vec<(Rgb8, u32)>,
    /// The cached tokens of the same images (held-out reconstructions, training layouts).
    pub tokens: Option<TokenSet>,
    pub tokenizer: (Vec<u8>, gpstoken_core::model::ModelConfig),
    pub generator: Option<(GeneratorFile, Option<EvalLayouts>)>,
    pub per_class: usize,
    pub steps: usize,
    pub cfg: f32,
    pub seed: u64,
    pub grid_columns: usize,
    /// No progress bar.
    pub quiet: bool,
}

/// Decodes token rows `[n, N, 5 + C]` one patch at a time, ticking `bar`.
fn decode_with_progress<B: Backend>(
    be: &B,
    runner: &mut Runner<B>,
    rows: &[f32],
    n: usize,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Rgb8>> {
    let (side, per) = (runner.crop_size(), rows.len() / n.max(1));
    bar.set_length(n as u64);
    bar.set_position(0);
    bar.set_message("decoding");
    (0..n)
        .map(|i| {
            let img = to_rgb8_truncated(&runner.decode(be, &rows[i * per..(i + 1) * per])?, side);
            bar.inc(1);
            Ok(img)
        })
        .collect()
}

/// Distances and accuracy of one image set against the held-out real images.
#[derive(Clone, Debug)]
pub struct SetScore {
    pub images: usize,
    pub fd: f64,
    pub kid: f64,
    pub accuracy: f64,
    pub per_class: Vec<(String, f64)>,
}

#[derive(Debug)]
pub struct EvalReport {
    pub reference_images: usize,
    /// The classifier on the held-out real images (the ceiling of `samples.accuracy`).
    pub real_accuracy: f64,
    /// Tokenizer reconstructions of the held-out images: the floor the tokenizer leaves.
    pub reconstructions: Option<SetScore>,
    /// The training images against the held-out ones: the metric between two real samples.
    pub training_images: Option<SetScore>,
    pub samples: Option<SetScore>,
    pub seconds: f64,
    pub grid: Option<Rgb8>,
}

fn score(
    feats: &[f32],
    logits: &[f32],
    labels: &[u32],
    reference: &[f32],
    names: &[String],
    f: usize,
) -> Result<SetScore> {
    let classes = names.len();
    let per_class = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] as usize == k).collect();
            let rows: Vec<f32> =
                idx.iter().flat_map(|&i| logits[i * classes..(i + 1) * classes].iter().copied()).collect();
            (name.clone(), accuracy(&rows, &vec![k as u32; idx.len()], classes))
        })
        .collect();
    Ok(SetScore {
        images: labels.len(),
        fd: frechet_distance(feats, reference, f)?,
        kid: kernel_distance(feats, reference, f)?,
        accuracy: accuracy(logits, labels, classes),
        per_class,
    })
}

impl BackendTask for EvalTask {
    type Output = EvalReport;

    fn run<B: Backend>(self, be: &B) -> Result<EvalReport> {
        let t0 = Instant::now();
        let bar = progress_bar(1, "eval-generator", self.quiet);
        let c = self.classifier.build(be)?;
        let (f, names) = (c.config.features(), &self.classifier.classes);
        let batch = 32;
        let split = |set: &[(Rgb8, u32)]| -> (Vec<Rgb8>, Vec<u32>) { set.iter().cloned().unzip() };
        let (held_images, held_labels) = split(&self.held);
        let (reference, held_logits) = features_of(be, &c, &held_images, batch)?;
        let mut report = EvalReport {
            reference_images: held_images.len(),
            real_accuracy: accuracy(&held_logits, &held_labels, names.len()),
            reconstructions: None,
            training_images: None,
            samples: None,
            seconds: 0.0,
            grid: None,
        };
        let n = self.generator.as_ref().map(|g| g.0.info.config.tokens).or(self.tokens.as_ref().map(|t| t.tokens));
        let mut runner = match n {
            Some(n) => {
                let model = model_io::build_model(be, &self.tokenizer.1, Some(n), &self.tokenizer.0, "the tokenizer")?;
                Some(Runner::new(be, model, 1, 1, MultiPatch::Tiled, crate::data::Init::Adaptive)?)
            }
            None => None,
        };
        let Some((file, layouts)) = &self.generator else {
            if !self.train.is_empty() {
                let (images, labels) = split(&self.train);
                let (feats, logits) = features_of(be, &c, &images, batch)?;
                report.training_images = Some(score(&feats, &logits, &labels, &reference, names, f)?);
            }
            if let (Some(set), Some(runner)) = (&self.tokens, runner.as_mut()) {
                let which: Vec<usize> = (0..set.len()).filter(|&i| set.held_out[i]).collect();
                let per = set.tokens * set.stride;
                let rows: Vec<f32> =
                    which.iter().flat_map(|&i| set.rows[i * per..(i + 1) * per].iter().copied()).collect();
                let images = decode_with_progress(be, runner, &rows, which.len(), &bar)?;
                let labels: Vec<u32> = which.iter().map(|&i| set.labels[i]).collect();
                let (feats, logits) = features_of(be, &c, &images, batch)?;
                report.reconstructions = Some(score(&feats, &logits, &labels, &reference, names, f)?);
            }
            bar.finish_and_clear();
            report.seconds = t0.elapsed().as_secs_f64();
            return Ok(report);
        };
        let Some(runner) = runner.as_mut() else { bail!("internal error: no tokenizer runner") };
        let labels: Vec<u32> = (0..names.len() as u32).flat_map(|k| std::iter::repeat_n(k, self.per_class)).collect();
        let sampler = Sampler::Ode { method: OdeMethod::Heun, steps: self.steps };
        let mut rng = SplitMix64::new(self.seed);
        let texture = Generator::build(be, file, "the generator")?;
        bar.set_message(format!("sampling {} layouts and tokens", labels.len()));
        bar.tick();
        let layout_rows = match layouts {
            None => None,
            Some(EvalLayouts::Model(lf, steps, repair)) => {
                let layout = Generator::build(be, lf, "the layout generator")?;
                Some(layout.layouts(be, &labels, Sampler::dopri5(*steps), *repair, &mut rng)?)
            }
            Some(EvalLayouts::Training) => {
                let Some(set) = &self.tokens else { bail!("training layouts need the token cache") };
                let mut out = Vec::new();
                for k in 0..names.len() as u32 {
                    let of: Vec<usize> = set.training().into_iter().filter(|&i| set.labels[i] == k).collect();
                    if of.is_empty() {
                        bail!("class '{}' has no training layouts", names[k as usize]);
                    }
                    let per = set.tokens * 5;
                    for j in 0..self.per_class {
                        let i = of[j % of.len()];
                        out.extend_from_slice(&set.g_init[i * per..(i + 1) * per]);
                    }
                }
                Some(out)
            }
        };
        if file.info.stage == Stage::Texture && layout_rows.is_none() {
            bail!("a texture generator needs layouts");
        }
        let rows = texture.tokens(be, &labels, layout_rows.as_deref(), sampler, self.cfg, &mut rng)?;
        let images = decode_with_progress(be, runner, &rows, labels.len(), &bar)?;
        bar.finish_and_clear();
        let (feats, logits) = features_of(be, &c, &images, batch)?;
        report.samples = Some(score(&feats, &logits, &labels, &reference, names, f)?);
        if self.grid_columns > 0 {
            let cols = self.grid_columns.min(self.per_class);
            let tiles: Vec<Rgb8> =
                images.chunks(self.per_class).flat_map(|class| class[..cols].iter().cloned()).collect();
            report.grid = Some(grid(&tiles, cols));
        }
        report.seconds = t0.elapsed().as_secs_f64();
        Ok(report)
    }
}

impl SetScore {
    pub fn to_json(&self) -> serde_json::Value {
        let per: serde_json::Map<String, serde_json::Value> =
            self.per_class.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
        serde_json::json!({"images": self.images, "fd": self.fd, "kid": self.kid, "accuracy": self.accuracy, "per_class": per})
    }
}

impl EvalReport {
    /// `{"reference_images","real_accuracy","reconstructions","training_images","samples","seconds"}`,
    /// each set `{"images","fd","kid","accuracy","per_class":{class: accuracy}}` or null.
    pub fn to_json(&self) -> serde_json::Value {
        let set = |s: &Option<SetScore>| s.as_ref().map_or(serde_json::Value::Null, SetScore::to_json);
        serde_json::json!({
            "reference_images": self.reference_images,
            "real_accuracy": self.real_accuracy,
            "reconstructions": set(&self.reconstructions),
            "training_images": set(&self.training_images),
            "samples": set(&self.samples),
            "seconds": self.seconds,
        })
    }
}
