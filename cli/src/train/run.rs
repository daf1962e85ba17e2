//! The training loop, generic over the backend: batches from a prefetch thread, one optimiser
//! step per batch, the log, the progress bar, checkpoints and evaluations on their schedule.

use super::buckets::GradientBuckets;
use super::checkpoint::{load_checkpoint, remove_stale_temp_files, save_checkpoint, save_weights, truncate_log};
use super::eval::evaluate;
use super::gan::{Gan, GanLog, GanStep};
use super::losses::{Slot, StepLosses};
use super::parallel::{GradientSync, RankInfo};
use super::settings::Settings;
use super::state::OptimState;
use super::{ae_steps_through, psnr_from_mse, TrainOptions, TrainSummary, CHECKPOINT, LOG};
use crate::backends::{device_error, RankTask};
use crate::data::{Batch, Dataset, EvalSet};
use crate::imageio::{self, Rgb8};
use anyhow::{bail, Context, Result};
use gpstoken_core::backend::{AdamConfig, Backend};
use gpstoken_core::model::{Activations, GpsToken};
use std::io::Write;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// A run whose settings, data and run folder are checked: what is left needs the backend. With
/// several ranks (see [`super::parallel`]) each rank runs one of these on its share of every
/// batch; only rank 0 writes the log, checkpoints and weights.
pub(super) struct TrainRun<'a> {
    pub options: &'a TrainOptions,
    pub settings: Settings,
    pub data: Arc<Dataset>,
    pub eval_set: Option<EvalSet>,
}

impl RankTask for TrainRun<'_> {
    type Output = TrainSummary;

    fn run<B: Backend>(self, be: &B, sync: &mut dyn GradientSync<B>) -> Result<TrainSummary> {
        let TrainRun { options: o, settings: s, data, eval_set } = self;
        let rank = sync.info();
        let leader = rank.is_leader();
        let shard = rank.shard(s.batch);
        let err = device_error(be);
        let mut model = GpsToken::new(be, s.cfg.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        model.init(be, s.seed).map_err(err)?;
        super::memory::check_batch(s.batch, || model.activations(be, 1, 1).map_err(err))?;
        let mut st = OptimState::new(be, &model)?;
        let mut gan = match s.gan {
            Some(g) => Some(Gan::new(be, g, s.seed, shard.len(), s.spec.width, model.conv_out_weight_len())?),
            None => None,
        };
        let start = if s.resume {
            remove_stale_temp_files(&o.out);
            let meta = load_checkpoint(be, &o.out.join(CHECKPOINT), &mut model, &mut st, gan.as_mut())?;
            if leader {
                truncate_log(&o.out.join(LOG), meta.step)?;
            }
            meta.step
        } else if leader {
            // A fresh run starts a fresh log.
            imageio::write_atomically(&o.out.join(LOG), b"")?;
            0
        } else {
            0
        };
        let mut acts = model.activations(be, shard.len(), 1).map_err(err)?;
        let mut losses = StepLosses::new(be)?;
        let adam = AdamConfig::official(s.lr);
        let images = data.images.len();
        let skipped = data.skipped;
        let eval_skipped = eval_set.as_ref().map_or(0, |e| e.skipped);
        let batches = Prefetch::start(data, s.seed, start + 1, o.steps, shard);
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(o.out.join(LOG))
            .with_context(|| format!("cannot open '{}'", o.out.join(LOG).display()))?;
        // Images that could not be read (corrupt, truncated) were skipped with a warning; the
        // log keeps their count at the step the (re)started run began from.
        if leader && skipped + eval_skipped > 0 {
            append_line(
                &mut log,
                &format!(
                    "{{\"start\":{start},\"images\":{images},\"skipped\":{skipped},\"eval_skipped\":{eval_skipped}}}"
                ),
            )?;
        }
        let progress = Progress::new(o, start, leader);
        progress.say(format!(
            "gpstoken train: config {} ({} parameters), {images} training image(s), batch {}, lr {}, seed {}, init {}, steps {}..{}",
            s.config_name,
            model.params.count(),
            batch_text(s.batch, rank),
            s.lr,
            s.seed,
            s.init.name(),
            start + 1,
            o.steps
        ));
        if let Some(g) = &gan {
            progress.say(format!(
                "adversarial stage from step {} (0-based; log step {}): PatchGAN discriminator ({} parameters), disc_weight {}",
                g.settings.disc_start,
                g.settings.disc_start + 1,
                g.disc.params.count(),
                g.settings.disc_weight
            ));
        }
        let eval_crops: Vec<&Rgb8> = eval_set
            .as_ref()
            .map(|e| e.images.iter().take(o.eval_images).map(|(_, i)| i).collect())
            .unwrap_or_default();

        let t0 = Instant::now();
        let mut last_loss = f64::NAN;
        let mut psnr_avg = None::<f64>;
        // The last (g_loss, d_weight) and d_loss, for the progress bar.
        let mut last_gan: (Option<(f64, f32)>, Option<f64>) = (None, None);
        for t in start + 1..=o.steps {
            let ts = Instant::now();
            let b = batches.next()?;
            debug_assert_eq!(b.step, t);
            model.forward(be, &mut acts, &b.image, &b.g_init, &b.regions).map_err(err)?;
            let (loss, gan_log) = optimiser_step(
                be,
                &mut model,
                &mut acts,
                &mut st,
                gan.as_mut(),
                &mut losses,
                &adam,
                t,
                (sync, o.bucket_mb),
            )?;
            if !leader {
                continue;
            }
            let psnr = psnr_from_mse(loss);
            last_loss = loss;
            let avg = psnr_avg.map_or(psnr, |a| 0.95 * a + 0.05 * psnr);
            psnr_avg = Some(avg);
            let gan_fields = gan_log.as_ref().map_or(String::new(), |g| g.log_fields(&mut last_gan));
            let line = format!(
                "{{\"step\":{t},\"loss\":{},\"psnr\":{},\"seconds\":{},\"elapsed\":{}{gan_fields}}}",
                num(loss),
                num(psnr),
                num(ts.elapsed().as_secs_f64()),
                num(t0.elapsed().as_secs_f64())
            );
            append_line(&mut log, &line)?;
            progress.bar.set_position(t);
            let gan_msg = match last_gan {
                (Some((g, w)), Some(d)) => format!("  g {g:.3} d {d:.3} w {w:.2}"),
                (Some((g, w)), None) => format!("  g {g:.3} w {w:.2}"),
                _ => String::new(),
            };
            progress.bar.set_message(format!("loss {loss:.5}  PSNR {avg:.2} dB{gan_msg}"));
            if t % o.checkpoint_every == 0 || t == o.steps {
                save_checkpoint(be, &o.out, &model, &st, gan.as_ref(), &s.meta_at(t))?;
            }
            if !eval_crops.is_empty() && (t % o.eval_every == 0 || t == o.steps) {
                let r = evaluate(be, &mut model, &mut acts, &mut st, &s.spec, &eval_crops)?;
                let line = format!(
                    "{{\"eval\":{t},\"psnr\":{},\"ssim\":{},\"ema_psnr\":{},\"ema_ssim\":{},\"images\":{}}}",
                    num(r.psnr),
                    num(r.ssim),
                    num(r.ema_psnr),
                    num(r.ema_ssim),
                    eval_crops.len()
                );
                append_line(&mut log, &line)?;
                imageio::save_png(&o.out.join(format!("eval_{t:06}.png")), &r.picture)?;
                progress.say(format!(
                    "step {t}: eval PSNR {:.2} dB SSIM {:.4} (EMA {:.2} dB, {:.4}) on {} image(s)",
                    r.psnr,
                    r.ssim,
                    r.ema_psnr,
                    r.ema_ssim,
                    eval_crops.len()
                ));
            } else if progress.bar.is_hidden() && t % 50 == 0 {
                eprintln!("step {t}/{}: loss {loss:.5}, PSNR {avg:.2} dB (running mean)", o.steps);
            }
        }
        batches.stop();
        progress.bar.finish_and_clear();
        if !leader {
            return Ok(TrainSummary {
                steps_run: o.steps - start,
                last_step: o.steps,
                seconds: 0.0,
                images_per_second: 0.0,
                last_loss,
            });
        }
        save_weights(be, &o.out.join("weights.safetensors"), &model, None, &s.config_name)?;
        save_weights(be, &o.out.join("weights_ema.safetensors"), &model, Some(&st.ema), &s.config_name)?;
        let seconds = t0.elapsed().as_secs_f64();
        let steps_run = o.steps - start;
        Ok(TrainSummary {
            steps_run,
            last_step: o.steps,
            seconds,
            images_per_second: (steps_run as f64 * s.batch as f64) / seconds.max(1e-9),
            last_loss,
        })
    }
}

/// Step `t` after the forward pass: the loss, the gradients and the update of whichever
/// optimiser the step belongs to (the autoencoder's Adam and EMA, or the discriminator's Adam).
/// Returns the reconstruction MSE and what the adversarial stage measured.
///
/// The losses stay in device buffers (`losses`) until the whole step is queued, then come back
/// to the host in one read: a GPU backend waits once per step, not once per loss. A non-finite
/// loss stops the run before the step's checkpoint is written. With several ranks, the gradients
/// are averaged over the ranks in buckets of `bucket_mib` MiB while the backward pass runs, the
/// reconstruction loss with the last bucket, all before the update (the adversarial stage's
/// logged values stay rank 0's).
#[allow(clippy::too_many_arguments)]
fn optimiser_step<B: Backend>(
    be: &B,
    model: &mut GpsToken<B>,
    acts: &mut Activations<B>,
    st: &mut OptimState<B>,
    gan: Option<&mut Gan<B>>,
    losses: &mut StepLosses<B>,
    adam: &AdamConfig,
    t: u64,
    (sync, bucket_mib): (&mut dyn GradientSync<B>, f64),
) -> Result<(f64, Option<GanLog>)> {
    let err = device_error(be);
    let settings = gan.as_ref().map(|g| g.settings);
    let disc_step = settings.is_some_and(|g| g.is_disc_step(t));
    let gan_active = settings.is_some_and(|g| g.disc_factor(t) > 0.0);
    let gan_step: Option<GanStep> = match gan {
        // The discriminator's step: the autoencoder only runs forward.
        Some(g) if disc_step => {
            let step = g.discriminator_step(be, acts, losses, adam, t, sync)?;
            if sync.exchanges() {
                sync.all_reduce_mean(be, &mut [losses.slot(Slot::Mse)])?;
            }
            Some(step)
        }
        gan => {
            let step = match gan {
                Some(g) if gan_active => Some(g.autoencoder_gradient(be, model, acts, losses, t)?),
                _ => {
                    model.mse_loss_grad_into(be, acts, losses.slot(Slot::Mse)).map_err(err)?;
                    None
                }
            };
            // With several ranks, each layer's gradients are averaged while the backward pass
            // goes on with the layers before it.
            let mut buckets = GradientBuckets::new(sync, bucket_mib);
            model.backward_announcing(be, acts, &mut buckets).map_err(err)?;
            buckets.finish(be, &mut model.params, &mut [losses.slot(Slot::Mse)])?;
            step
        }
    };
    if !disc_step {
        // Adam and the EMA count autoencoder steps only.
        let ae_step = ae_steps_through(settings.as_ref(), t);
        st.adam_step(be, model, adam, ae_step)?;
        st.ema_step(be, model, ae_step)?;
    }
    losses.read(be, gan_step.map_or(1, GanStep::slots))?;
    let loss = losses.get(Slot::Mse);
    if !loss.is_finite() {
        bail!("the loss became {loss} at step {t}; try a smaller --lr");
    }
    Ok((loss, gan_step.map(|g| g.log(losses))))
}

/// The batches of steps `first..=last`, made in step order on a background thread, at most 2 ahead.
struct Prefetch {
    rx: Receiver<Result<Batch>>,
    producer: JoinHandle<()>,
}

impl Prefetch {
    fn start(data: Arc<Dataset>, seed: u64, first: u64, last: u64, part: std::ops::Range<usize>) -> Prefetch {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(2);
        let producer = std::thread::spawn(move || {
            for t in first..=last {
                if tx.send(data.batch_part(seed, t, part.clone())).is_err() {
                    return;
                }
            }
        });
        Prefetch { rx, producer }
    }

    fn next(&self) -> Result<Batch> {
        self.rx.recv().context("the data thread stopped")?
    }

    /// Stops the thread (it ends at its next send) and waits for it.
    fn stop(self) {
        drop(self.rx);
        let _ = self.producer.join();
    }
}

/// The progress bar, or status lines on stderr with `--quiet`.
struct Progress {
    bar: indicatif::ProgressBar,
    silent: bool,
}

impl Progress {
    /// Ranks other than 0 (`leader` false) show and say nothing.
    fn new(o: &TrainOptions, start: u64, leader: bool) -> Progress {
        let bar = indicatif::ProgressBar::new(o.steps);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("train {bar:30} {pos}/{len} steps  {msg}  {per_sec}  eta {eta}")
        {
            bar.set_style(style);
        }
        bar.set_position(start);
        if o.quiet || !leader {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        Progress { bar, silent: !leader }
    }

    /// A line above the bar (or on stderr when the bar is hidden).
    fn say(&self, s: String) {
        if self.silent {
        } else if self.bar.is_hidden() {
            eprintln!("{s}");
        } else {
            self.bar.println(s);
        }
    }
}

/// Appends one line to the log and flushes it, so that a killed run's log is complete up to its
/// last step.
fn append_line(log: &mut std::fs::File, line: &str) -> Result<()> {
    writeln!(log, "{line}").and_then(|_| log.flush()).context("cannot write the training log")
}

/// `--batch` as the start line shows it: with several ranks, how it is split.
fn batch_text(batch: usize, rank: RankInfo) -> String {
    match rank.world {
        1 => batch.to_string(),
        w => format!("{batch} ({w} ranks x {})", batch / w),
    }
}

fn num(v: f64) -> String {
    crate::json::num(v)
}
