//! The optional adversarial stage (spec 8, see the module documentation of [`super`]): taming's
//! PatchGAN discriminator, its Adam moments and its buffers, all on the device.

use super::checkpoint::{host, HostTensors, ReadTensor};
use super::losses::{Slot, StepLosses};
use super::parallel::GradientSync;
use super::GanSettings;
use crate::backends::device_error;
use crate::model_io::{DISC_ADAM_M_PREFIX, DISC_ADAM_V_PREFIX, DISC_PREFIX};
use anyhow::{bail, Context, Result};
use gpstoken_core::backend::{AdamConfig, AdamTensor, Backend};
use gpstoken_core::model::{Activations, DiscActs, DiscGradients, Discriminator, DiscriminatorConfig, GpsToken};

/// Every discriminator parameter has a gradient; this says so if a config ever breaks that.
const UNUSED: &str = "internal error: a discriminator parameter without a gradient";

/// The adversarial stage: the discriminator, its Adam moments, and its buffers for one batch.
pub(super) struct Gan<B: Backend> {
    pub settings: GanSettings,
    pub disc: Discriminator<B>,
    m: Vec<B::Buffer>,
    v: Vec<B::Buffer>,
    /// Activations of `D(x)` and `D(x̂)`: separate forwards, separate batch statistics.
    real: DiscActs<B>,
    fake: DiscActs<B>,
    /// dL/d logits of the real and the fake forward.
    d_real: B::Buffer,
    d_fake: B::Buffer,
    /// The real pass's parameter gradients, kept while the fake pass overwrites them.
    grad_real: Vec<B::Buffer>,
    /// dL/d(conv_out.weight) of the reconstruction term and of the adversarial term alone.
    w_nll: B::Buffer,
    w_g: B::Buffer,
    /// Host copies of `w_nll` and `w_g`, whose norms set the adaptive weight.
    w_host: (Vec<f32>, Vec<f32>),
}

/// What one step of the adversarial stage measured, for the log.
pub(super) enum GanLog {
    Autoencoder { g_loss: f64, d_weight: f32, logits_fake: f64 },
    Discriminator { d_loss: f64, logits_real: f64, logits_fake: f64 },
}

/// Which step of the stage ran; its losses are still on the device, in a [`StepLosses`].
#[derive(Clone, Copy)]
pub(super) enum GanStep {
    /// Slots `Mse`, `LogitsFake`; the adaptive weight was computed on the host.
    Autoencoder { d_weight: f32 },
    /// Slots `Mse` .. `LogitsReal`, with the step's `disc_factor`.
    Discriminator { factor: f32 },
}

impl GanStep {
    /// How many slots of [`StepLosses`] the step wrote.
    pub fn slots(self) -> usize {
        match self {
            GanStep::Autoencoder { .. } => Slot::LogitsFake as usize + 1,
            GanStep::Discriminator { .. } => Slot::LogitsReal as usize + 1,
        }
    }

    /// The log values, once the losses have been read.
    pub fn log(self, losses: &StepLosses<impl Backend>) -> GanLog {
        let logits_fake = losses.get(Slot::LogitsFake);
        match self {
            GanStep::Autoencoder { d_weight } => GanLog::Autoencoder { g_loss: -logits_fake, d_weight, logits_fake },
            GanStep::Discriminator { factor } => GanLog::Discriminator {
                // d_loss = disc_factor · 0.5 · (real + fake).
                d_loss: f64::from(factor) * 0.5 * (losses.get(Slot::HingeReal) + losses.get(Slot::HingeFake)),
                logits_real: losses.get(Slot::LogitsReal),
                logits_fake,
            },
        }
    }
}

impl<B: Backend> Gan<B> {
    pub fn new(be: &B, settings: GanSettings, seed: u64, batch: usize, size: usize, conv_out: usize) -> Result<Gan<B>> {
        let err = device_error(be);
        let mut disc = Discriminator::new(be, DiscriminatorConfig::OFFICIAL).map_err(err)?;
        disc.init(be, seed).map_err(err)?;
        let zeros = || disc.params.specs().iter().map(|s| be.zeros(s.numel())).collect::<Result<Vec<_>, _>>();
        let (m, v, grad_real) = (zeros().map_err(err)?, zeros().map_err(err)?, zeros().map_err(err)?);
        let real = disc.activations(be, batch, size, size).map_err(err)?;
        let fake = disc.activations(be, batch, size, size).map_err(err)?;
        let logits = be.len(real.logits());
        Ok(Gan {
            settings,
            m,
            v,
            grad_real,
            disc,
            real,
            fake,
            d_real: be.zeros(logits).map_err(err)?,
            d_fake: be.zeros(logits).map_err(err)?,
            w_nll: be.zeros(conv_out).map_err(err)?,
            w_g: be.zeros(conv_out).map_err(err)?,
            w_host: (vec![0.0; conv_out], vec![0.0; conv_out]),
        })
    }

    /// Checkpoint tensors: weights, BatchNorm buffers, Adam moments.
    pub fn tensors(&self, be: &B, out: &mut HostTensors) -> Result<()> {
        for (id, spec) in self.disc.params.specs().iter().enumerate() {
            out.push((
                format!("{DISC_PREFIX}{}", spec.name),
                spec.shape.clone(),
                host(be, self.disc.params.value(id))?,
            ));
            out.push((format!("{DISC_ADAM_M_PREFIX}{}", spec.name), spec.shape.clone(), host(be, &self.m[id])?));
            out.push((format!("{DISC_ADAM_V_PREFIX}{}", spec.name), spec.shape.clone(), host(be, &self.v[id])?));
        }
        for st in self.disc.norm_states() {
            let c = be.len(&st.running_mean);
            out.push((format!("{DISC_PREFIX}{}.running_mean", st.prefix), vec![c], host(be, &st.running_mean)?));
            out.push((format!("{DISC_PREFIX}{}.running_var", st.prefix), vec![c], host(be, &st.running_var)?));
            // An int64 scalar in PyTorch; f32 holds every count below 2^24 exactly.
            if st.num_batches_tracked >= 1 << 24 {
                bail!("num_batches_tracked {} no longer fits an f32 exactly", st.num_batches_tracked);
            }
            let tracked = vec![st.num_batches_tracked as f32];
            out.push((format!("{DISC_PREFIX}{}.num_batches_tracked", st.prefix), vec![], tracked));
        }
        Ok(())
    }

    /// Restores what [`Gan::tensors`] wrote.
    pub fn load(&mut self, be: &B, read: &ReadTensor) -> Result<()> {
        let err = device_error(be);
        let specs = self.disc.params.specs().to_vec();
        for (id, spec) in specs.iter().enumerate() {
            let n = spec.numel();
            let w = read(&format!("{DISC_PREFIX}{}", spec.name), n)?;
            be.write(self.disc.params.value_mut(id), &w).map_err(err)?;
            be.write(&mut self.m[id], &read(&format!("{DISC_ADAM_M_PREFIX}{}", spec.name), n)?).map_err(err)?;
            be.write(&mut self.v[id], &read(&format!("{DISC_ADAM_V_PREFIX}{}", spec.name), n)?).map_err(err)?;
        }
        for st in self.disc.norm_states_mut() {
            let c = be.len(&st.running_mean);
            let mean = read(&format!("{DISC_PREFIX}{}.running_mean", st.prefix), c)?;
            be.write(&mut st.running_mean, &mean).map_err(err)?;
            let var = read(&format!("{DISC_PREFIX}{}.running_var", st.prefix), c)?;
            be.write(&mut st.running_var, &var).map_err(err)?;
            let tracked = read(&format!("{DISC_PREFIX}{}.num_batches_tracked", st.prefix), 1)?[0];
            if !(tracked >= 0.0 && tracked.fract() == 0.0) {
                bail!("checkpoint: bad num_batches_tracked {tracked} for {}", st.prefix);
            }
            st.num_batches_tracked = tracked as u64;
        }
        Ok(())
    }

    /// The autoencoder's step with the adversarial term (`disc_factor` of step `t`): writes
    /// `acts.d_decoded` = d mse + d_weight·disc_factor·d g (the caller then runs the backward);
    /// the mse and `mean(D(x̂))` go to `losses`.
    pub fn autoencoder_gradient(
        &mut self,
        be: &B,
        model: &GpsToken<B>,
        acts: &mut Activations<B>,
        losses: &mut StepLosses<B>,
        t: u64,
    ) -> Result<GanStep> {
        let err = device_error(be);
        model.mse_loss_grad_into(be, acts, losses.slot(Slot::Mse)).map_err(err)?;
        self.disc.forward(be, acts.decoded(), &mut self.fake).map_err(err)?;
        // g = -mean(D(x̂)): dg/dlogits = -1/n; D's parameter gradients are not needed.
        be.mean_loss_into(self.fake.logits(), Some(&mut self.d_fake), losses.slot(Slot::LogitsFake)).map_err(err)?;
        be.scale(&mut self.d_fake, -1.0).map_err(err)?;
        let want = DiscGradients { params: false, input: true };
        self.disc.backward(be, acts.decoded(), &self.d_fake, &mut self.fake, want).map_err(err)?;
        // The two weight-gradient norms at decoder.conv_out.weight, each term alone.
        model.conv_out_weight_grad(be, acts, acts.d_decoded(), &mut self.w_nll).map_err(err)?;
        model.conv_out_weight_grad(be, acts, self.fake.d_input(), &mut self.w_g).map_err(err)?;
        // The norms on the host, in f64 (a small download: one conv kernel).
        let (w_nll, w_g) = &mut self.w_host;
        be.download(&self.w_nll, w_nll).map_err(err)?;
        be.download(&self.w_g, w_g).map_err(err)?;
        let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
        let (nll_norm, g_norm) = (norm(w_nll), norm(w_g));
        let d_weight = ((nll_norm / (g_norm + 1e-4)).clamp(0.0, 1e4) * f64::from(self.settings.disc_weight)) as f32;
        let factor = self.settings.disc_factor(t);
        be.axpy(d_weight * factor, self.fake.d_input(), acts.d_decoded_mut()).map_err(err)?;
        Ok(GanStep::Autoencoder { d_weight })
    }

    /// The discriminator's step `t`: hinge loss on `D(x)` and `D(x̂)` (x̂ detached), backward,
    /// its own Adam step number `disc_step`; the losses (and the reconstruction's mse) go to
    /// `losses`.
    pub fn discriminator_step(
        &mut self,
        be: &B,
        acts: &Activations<B>,
        losses: &mut StepLosses<B>,
        adam: &AdamConfig,
        t: u64,
        sync: &mut dyn GradientSync<B>,
    ) -> Result<GanStep> {
        let err = device_error(be);
        let (image, decoded) = (acts.image(), acts.decoded());
        be.mse_loss_into(decoded, image, None, losses.slot(Slot::Mse)).map_err(err)?;
        self.disc.forward(be, image, &mut self.real).map_err(err)?;
        self.disc.forward(be, decoded, &mut self.fake).map_err(err)?;
        be.hinge_loss_into(self.real.logits(), true, Some(&mut self.d_real), losses.slot(Slot::HingeReal))
            .map_err(err)?;
        be.hinge_loss_into(self.fake.logits(), false, Some(&mut self.d_fake), losses.slot(Slot::HingeFake))
            .map_err(err)?;
        let factor = self.settings.disc_factor(t);
        // d_loss = disc_factor · 0.5 · (real + fake).
        be.scale(&mut self.d_real, 0.5 * factor).map_err(err)?;
        be.scale(&mut self.d_fake, 0.5 * factor).map_err(err)?;
        be.mean_loss_into(self.real.logits(), None, losses.slot(Slot::LogitsReal)).map_err(err)?;
        be.mean_loss_into(self.fake.logits(), None, losses.slot(Slot::LogitsFake)).map_err(err)?;
        let want = DiscGradients { params: true, input: false };
        self.disc.backward(be, image, &self.d_real, &mut self.real, want).map_err(err)?;
        for (id, keep) in self.grad_real.iter_mut().enumerate() {
            be.copy(self.disc.params.grad(id).context(UNUSED)?, keep).map_err(err)?;
        }
        self.disc.backward(be, decoded, &self.d_fake, &mut self.fake, want).map_err(err)?;
        let step = u32::try_from(self.settings.disc_steps_through(t)).context("too many steps")?;
        for (id, real) in self.grad_real.iter().enumerate() {
            be.add_assign(self.disc.params.gradient_mut(id).context(UNUSED)?, real).map_err(err)?;
        }
        if sync.exchanges() {
            sync.all_reduce_mean(be, &mut self.disc.params.gradients_mut())?;
        }
        let mut tensors = Vec::with_capacity(self.m.len());
        for ((param, grad), (m, v)) in
            self.disc.params.values_and_grads_mut().zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            tensors.push(AdamTensor { param, grad: grad.context(UNUSED)?, m, v });
        }
        be.adam_step_many(adam, step, &mut tensors).map_err(err)?;
        Ok(GanStep::Discriminator { factor })
    }
}

impl GanLog {
    /// The step's extra `log.jsonl` fields (with a leading comma); remembers the values for the
    /// progress bar in `last`: (g_loss, d_weight) and d_loss.
    pub fn log_fields(&self, last: &mut (Option<(f64, f32)>, Option<f64>)) -> String {
        match *self {
            GanLog::Autoencoder { g_loss, d_weight, logits_fake } => {
                last.0 = Some((g_loss, d_weight));
                format!(
                    ",\"phase\":\"ae\",\"g_loss\":{},\"d_weight\":{},\"logits_fake\":{}",
                    crate::json::num(g_loss),
                    crate::json::num(f64::from(d_weight)),
                    crate::json::num(logits_fake)
                )
            }
            GanLog::Discriminator { d_loss, logits_real, logits_fake } => {
                last.1 = Some(d_loss);
                format!(
                    ",\"phase\":\"disc\",\"d_loss\":{},\"logits_real\":{},\"logits_fake\":{}",
                    crate::json::num(d_loss),
                    crate::json::num(logits_real),
                    crate::json::num(logits_fake)
                )
            }
        }
    }
}
