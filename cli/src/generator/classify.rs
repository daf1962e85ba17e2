//! `gpstoken train-classifier`: trains the [`super::classifier`] network on the training part of
//! a labelled folder (the same images and hold-out split as `train-generator`), with mirrored
//! and shifted copies, and measures its accuracy on the held-out images; the weights file holds
//! that accuracy with the settings. Also the feature extraction the evaluation uses.

use super::classifier::{argmax, cross_entropy, to_chw, Classifier, ClassifierConfig};
use super::data::{load_labelled, mirrored};
use crate::backends::{device_error, with_backend, BackendSelection, BackendTask};
use crate::imageio::Rgb8;
use anyhow::{anyhow, bail, Context, Result};
use gpstoken_core::backend::{AdamConfig, AdamTensor, Backend};
use gpstoken_core::rng::SplitMix64;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `gpstoken train-classifier` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct ClassifierTrainOptions {
    /// Labelled images: one sub-folder per class, as for train-generator.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Image side the images are resized to (the generator's patch size; a multiple of 8).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Hold out every K-th image of each class (use the generator's --hold-out).
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub hold_out: usize,
    /// Optimiser steps (few: with ~20 images per class the held-out accuracy falls with longer training).
    #[arg(long, default_value_t = 500)]
    pub steps: u64,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Adam learning rate (divided by 10 for the last quarter of the steps).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weights file.
    #[arg(short = 'o', long = "output", value_name = "CLASSIFIER.safetensors")]
    pub output: PathBuf,
    /// Training log (`{"step","loss","accuracy"}` per step).
    #[arg(long, value_name = "LOG.jsonl")]
    pub log: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

/// A trained classifier file: weights, config, class names and the hold-out it was trained with.
pub struct ClassifierFile {
    pub config: ClassifierConfig,
    pub classes: Vec<String>,
    pub hold_out: usize,
    pub weights: Vec<u8>,
}

pub fn read_classifier(path: &Path) -> Result<ClassifierFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read classifier '{}'", path.display()))?;
    let what = || format!("classifier '{}'", path.display());
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("classifier '{}' is not a safetensors file: {e}", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let config = super::classifier::config_from_metadata(&meta).with_context(what)?;
    let classes: Vec<String> = meta
        .get("classes")
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or_else(|| anyhow!("no 'classes' metadata"))
        .with_context(what)?;
    let hold_out = meta.get("hold_out").and_then(|h| h.parse().ok()).ok_or_else(|| anyhow!("no 'hold_out' metadata"));
    if classes.len() != config.classes {
        bail!("{}: {} class names for {} classes", what(), classes.len(), config.classes);
    }
    Ok(ClassifierFile { config, classes, hold_out: hold_out.with_context(what)?, weights: bytes })
}

impl ClassifierFile {
    pub fn build<B: Backend>(&self, be: &B) -> Result<Classifier<B>> {
        let mut c = Classifier::new(be, self.config)?;
        gpstoken_core::model::load_safetensors(be, &mut c.params, &self.weights)
            .map_err(|e| anyhow!("the classifier's weights: {}", crate::model_io::mismatch_summary(&e)))?;
        Ok(c)
    }
}

/// Features `[n, F]` and logits `[n, classes]` of images, in batches of `batch`.
pub fn features_of<B: Backend>(
    be: &B,
    c: &Classifier<B>,
    images: &[Rgb8],
    batch: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut acts = c.activations(be, batch)?;
    let per = 3 * c.config.image * c.config.image;
    let (mut feats, mut logits) = (Vec::new(), Vec::new());
    for chunk in images.chunks(batch) {
        let mut input = vec![0.0; batch * per];
        for (k, img) in chunk.iter().enumerate() {
            if (img.width, img.height) != (c.config.image, c.config.image) {
                bail!("the classifier takes {0}x{0} images, got {1}x{2}", c.config.image, img.width, img.height);
            }
            input[k * per..(k + 1) * per].copy_from_slice(&to_chw(img));
        }
        let (f, l) = c.forward(be, &mut acts, &input)?;
        feats.extend_from_slice(&f[..chunk.len() * c.config.features()]);
        logits.extend_from_slice(&l[..chunk.len() * c.config.classes]);
    }
    Ok((feats, logits))
}

/// Fraction of `logits` rows whose arg-max is the label.
pub fn accuracy(logits: &[f32], labels: &[u32], classes: usize) -> f64 {
    let right = logits.chunks_exact(classes).zip(labels).filter(|(row, &y)| argmax(row) == y as usize).count();
    right as f64 / labels.len().max(1) as f64
}

/// `img` moved by `(dx, dy)` pixels, the uncovered border white (the cut-outs' background).
fn shifted(img: &Rgb8, dx: isize, dy: isize) -> Rgb8 {
    let (w, h) = (img.width as isize, img.height as isize);
    let mut data = vec![255u8; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = (x - dx, y - dy);
            if (0..w).contains(&sx) && (0..h).contains(&sy) {
                let (d, s) = (((y * w + x) * 3) as usize, ((sy * w + sx) * 3) as usize);
                data[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
            }
        }
    }
    Rgb8 { width: img.width, height: img.height, data }
}

/// A progress bar of `len` steps (hidden with `quiet`).
pub fn progress_bar(len: u64, what: &str, quiet: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}}  {{msg}}  eta {{eta}}"))
    {
        bar.set_style(style);
    }
    if quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

struct Train {
    o: ClassifierTrainOptions,
    classes: Vec<String>,
    train: Vec<(Rgb8, u32)>,
    held: Vec<(Rgb8, u32)>,
}

impl BackendTask for Train {
    type Output = (f64, f64);

    fn run<B: Backend>(self, be: &B) -> Result<(f64, f64)> {
        let o = &self.o;
        let err = device_error(be);
        let config = ClassifierConfig { image: o.size, classes: self.classes.len() };
        let mut c = Classifier::new(be, config)?;
        c.init(be, o.seed)?;
        let zeros = |c: &Classifier<B>| -> Result<Vec<B::Buffer>> {
            c.params.specs().iter().map(|s| be.zeros(s.numel()).map_err(err)).collect()
        };
        let (mut m, mut v) = (zeros(&c)?, zeros(&c)?);
        let mut acts = c.activations(be, o.batch)?;
        let mut log = match &o.log {
            Some(p) => Some(std::fs::File::create(p).with_context(|| format!("cannot create log '{}'", p.display()))?),
            None => None,
        };
        let bar = progress_bar(o.steps, "train-classifier", o.quiet);
        let per = 3 * o.size * o.size;
        let shift = (o.size / 16).max(1) as u64;
        let mut last = (0.0, 0.0);
        for t in 1..=o.steps {
            let mut rng = SplitMix64::new(o.seed ^ t.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (mut input, mut labels) = (vec![0.0; o.batch * per], Vec::with_capacity(o.batch));
            for k in 0..o.batch {
                let (img, y) = &self.train[(rng.next_u64() % self.train.len() as u64) as usize];
                let img = if rng.next_u64() % 2 == 1 { mirrored(img) } else { img.clone() };
                let (dx, dy) =
                    ((rng.next_u64() % (2 * shift + 1)) as isize, (rng.next_u64() % (2 * shift + 1)) as isize);
                let img = shifted(&img, dx - shift as isize, dy - shift as isize);
                input[k * per..(k + 1) * per].copy_from_slice(&to_chw(&img));
                labels.push(*y);
            }
            let (_, logits) = c.forward(be, &mut acts, &input)?;
            let (loss, correct, grad) = cross_entropy(&logits, &labels, config.classes);
            if !loss.is_finite() {
                bail!("the classifier's loss diverged at step {t} (try a smaller --lr)");
            }
            c.backward(be, &mut acts, &grad)?;
            let lr = if t > o.steps * 3 / 4 { o.lr * 0.1 } else { o.lr };
            let adam = AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
            let step = u32::try_from(t).context("too many steps")?;
            let mut tensors: Vec<AdamTensor<'_, B::Buffer>> = c
                .params
                .values_and_grads_mut()
                .zip(&c.grads)
                .zip(m.iter_mut().zip(v.iter_mut()))
                .map(|(((param, _), grad), (m, v))| AdamTensor { param, grad, m, v })
                .collect();
            be.adam_step_many(&adam, step, &mut tensors).map_err(err)?;
            let acc = correct as f64 / o.batch as f64;
            last = (loss, acc);
            if let Some(f) = log.as_mut() {
                writeln!(f, "{{\"step\":{t},\"loss\":{loss},\"accuracy\":{acc}}}").context("cannot write the log")?;
            }
            bar.set_position(t);
            bar.set_message(format!("loss {loss:.3}"));
            if o.quiet && t % 100 == 0 {
                eprintln!("gpstoken: classifier step {t}/{} loss {loss:.4}", o.steps);
            }
        }
        bar.finish_and_clear();
        let images: Vec<Rgb8> = self.held.iter().map(|(i, _)| i.clone()).collect();
        let labels: Vec<u32> = self.held.iter().map(|(_, y)| *y).collect();
        let (_, logits) = features_of(be, &c, &images, o.batch)?;
        let held_acc = accuracy(&logits, &labels, config.classes);
        let mut tensors = Vec::new();
        for (id, spec) in c.params.specs().iter().enumerate() {
            tensors.push((
                spec.name.clone(),
                spec.shape.clone(),
                crate::train::checkpoint::host(be, c.params.value(id))?,
            ));
        }
        let meta: HashMap<String, String> = [
            ("gpstoken_classifier", "1".to_string()),
            ("image", o.size.to_string()),
            ("classes_count", config.classes.to_string()),
            ("classes", serde_json::to_string(&self.classes)?),
            ("hold_out", o.hold_out.to_string()),
            ("steps", o.steps.to_string()),
            ("seed", o.seed.to_string()),
            ("held_out_accuracy", held_acc.to_string()),
            ("train_loss", last.0.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        crate::imageio::write_atomically(&o.output, &crate::model_io::serialize_f32(&tensors, meta)?)?;
        Ok((last.0, held_acc))
    }
}

/// Runs `train-classifier`; returns the last training loss and the held-out accuracy.
pub fn train_classifier(o: &ClassifierTrainOptions, backend: &BackendSelection) -> Result<(f64, f64)> {
    if o.batch == 0 || o.steps == 0 || !(o.lr.is_finite() && o.lr > 0.0) {
        bail!("--batch and --steps must be at least 1 and --lr positive");
    }
    if o.size < 8 || !o.size.is_multiple_of(8) || o.size > 1024 {
        bail!("--size must be a multiple of 8 between 8 and 1024, got {}", o.size);
    }
    crate::outputs::check(&[], &[("-o", &o.output)])?;
    let images = load_labelled(&o.data, o.size, o.hold_out)?;
    if images.classes.len() < 2 {
        bail!("data folder '{}' needs at least 2 class sub-folders", o.data.display());
    }
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for img in images.images {
        let pair = (img.image, img.class);
        if img.held_out {
            held.push((mirrored(&pair.0), pair.1));
            held.push(pair);
        } else {
            train.push(pair);
        }
    }
    if train.is_empty() || held.is_empty() {
        bail!("data folder '{}': need training and held-out images (check --hold-out)", o.data.display());
    }
    with_backend(backend, Train { o: o.clone(), classes: images.classes, train, held })
}
