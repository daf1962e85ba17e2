//! A small image classifier trained here on the real labelled images, whose penultimate features
//! give the generator's distribution metrics ([`super::metrics`]) without downloaded weights.
//!
//! The network, generic over the backend and built only from existing ops (conv, GroupNorm,
//! SiLU, linear and their backward passes): four 3x3 convolutions, each followed by GroupNorm and
//! SiLU, the last three with stride 2 (`S -> S/8`), then a global average pool (a linear layer
//! with the fixed weight `1/(H W)` over each channel's pixels), which is the **feature** vector,
//! then one linear layer to the class logits. GroupNorm, not BatchNorm, so a sample's features
//! do not depend on the other samples of its batch. The softmax cross-entropy runs on the host
//! (a few logits per sample).

use crate::backends::device_error;
use anyhow::{anyhow, bail, Result};
use gpstoken_core::backend::{Activation, Backend, Conv2dDesc, GroupNormDesc, LinearDesc, NormKind};
use gpstoken_core::model::{Gradients, Init, ParamSpec, ParamStore};

/// Channels of the four convolutions; the last is the feature size.
pub const CHANNELS: [usize; 4] = [16, 32, 64, 64];
const GROUPS: usize = 8;

/// The classifier's shape: the image side (a multiple of 8) and the class count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassifierConfig {
    pub image: usize,
    pub classes: usize,
}

impl ClassifierConfig {
    pub fn features(&self) -> usize {
        CHANNELS[3]
    }

    /// Input channels, output channels, stride, input side of convolution `i`.
    fn conv(&self, i: usize) -> (usize, usize, usize, usize) {
        let cin = if i == 0 { 3 } else { CHANNELS[i - 1] };
        let stride = if i == 0 { 1 } else { 2 };
        let side = if i == 0 { self.image } else { self.image >> (i - 1) };
        (cin, CHANNELS[i], stride, side)
    }

    fn conv_desc(&self, i: usize, batch: usize) -> Conv2dDesc {
        let (cin, cout, stride, side) = self.conv(i);
        Conv2dDesc {
            batch,
            in_channels: cin,
            out_channels: cout,
            height: side,
            width: side,
            kernel: 3,
            stride,
            padding: 1,
        }
    }

    fn norm_desc(&self, i: usize, batch: usize) -> GroupNormDesc {
        let d = self.conv_desc(i, batch);
        GroupNormDesc {
            batch,
            channels: d.out_channels,
            height: d.out_height(),
            width: d.out_width(),
            groups: GROUPS.min(d.out_channels),
            eps: 1e-5,
            kind: NormKind::Standard,
            patches: 1,
        }
    }

    /// Pixels per channel after the last convolution.
    fn pooled(&self) -> usize {
        (self.image / 8) * (self.image / 8)
    }

    /// Parameter names, shapes and initialisation (PyTorch defaults), in file order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let spec = |name: String, shape: Vec<usize>, init| ParamSpec { name, shape, init, used: true };
        let mut specs = Vec::new();
        for i in 0..4 {
            let (cin, cout, _, _) = self.conv(i);
            let fan_in = cin * 9;
            specs.push(spec(format!("conv.{i}.weight"), vec![cout, cin, 3, 3], Init::KaimingUniform { fan_in }));
            specs.push(spec(format!("conv.{i}.bias"), vec![cout], Init::BiasUniform { fan_in }));
            specs.push(spec(format!("norm.{i}.weight"), vec![cout], Init::Ones));
            specs.push(spec(format!("norm.{i}.bias"), vec![cout], Init::Zeros));
        }
        let f = self.features();
        specs.push(spec("head.weight".into(), vec![self.classes, f], Init::KaimingUniform { fan_in: f }));
        specs.push(spec("head.bias".into(), vec![self.classes], Init::BiasUniform { fan_in: f }));
        specs
    }

    pub fn check(&self) -> Result<()> {
        if self.image < 8 || !self.image.is_multiple_of(8) || self.classes < 2 {
            bail!("classifier: the image side must be a positive multiple of 8 and there must be at least 2 classes");
        }
        Ok(())
    }
}

/// The classifier's weights on a backend.
pub struct Classifier<B: Backend> {
    pub config: ClassifierConfig,
    /// Values (the store keeps no gradients: they are in `grads`, so that a layer's weight and
    /// its two gradients can be borrowed together through the store's public API).
    pub params: ParamStore<B>,
    pub grads: Vec<B::Buffer>,
}

/// The buffers of one batch size: per convolution its output, the normalised output, the
/// GroupNorm statistics and the activation (the next layer's input); then features and logits.
pub struct ClassifierActs<B: Backend> {
    batch: usize,
    input: B::Buffer,
    conv: Vec<B::Buffer>,
    norm: Vec<B::Buffer>,
    stats: Vec<B::Buffer>,
    act: Vec<B::Buffer>,
    pool_weight: B::Buffer,
    features: B::Buffer,
    logits: B::Buffer,
    // backward scratch: gradients w.r.t. act (per layer), conv output, and the features
    d_act: Vec<B::Buffer>,
    d_norm: Vec<B::Buffer>,
    d_conv: Vec<B::Buffer>,
    d_features: B::Buffer,
    d_logits: B::Buffer,
}

impl<B: Backend> Classifier<B> {
    pub fn new(be: &B, config: ClassifierConfig) -> Result<Self> {
        config.check()?;
        let err = device_error(be);
        let specs = config.param_specs();
        let grads = specs.iter().map(|s| be.zeros(s.numel())).collect::<Result<Vec<_>, _>>().map_err(err)?;
        let params = ParamStore::zeros_with(be, specs, Gradients::No).map_err(err)?;
        Ok(Classifier { config, params, grads })
    }

    /// PyTorch's default initialisation, each tensor from its own stream of `seed`; gradients zeroed.
    pub fn init(&mut self, be: &B, seed: u64) -> Result<()> {
        let err = device_error(be);
        for id in 0..self.params.len() {
            let spec = self.params.spec(id).clone();
            let mut rng =
                gpstoken_core::rng::SplitMix64::new(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let host = gpstoken_core::model::init::init_values(spec.init, spec.numel(), &mut rng);
            be.write(self.params.value_mut(id), &host).map_err(err)?;
            be.write(&mut self.grads[id], &vec![0.0; spec.numel()]).map_err(err)?;
        }
        Ok(())
    }

    pub fn activations(&self, be: &B, batch: usize) -> Result<ClassifierActs<B>> {
        let err = device_error(be);
        let c = &self.config;
        let (mut conv, mut norm, mut stats, mut act) = (vec![], vec![], vec![], vec![]);
        let (mut d_act, mut d_norm, mut d_conv) = (vec![], vec![], vec![]);
        for i in 0..4 {
            let (cd, nd) = (c.conv_desc(i, batch), c.norm_desc(i, batch));
            let n = cd.output_len();
            d_norm.push(be.zeros(n).map_err(err)?);
            d_conv.push(be.zeros(n).map_err(err)?);
            conv.push(be.zeros(n).map_err(err)?);
            norm.push(be.zeros(n).map_err(err)?);
            stats.push(be.zeros(nd.stats_len()).map_err(err)?);
            act.push(be.zeros(n).map_err(err)?);
            d_act.push(be.zeros(n).map_err(err)?);
        }
        let f = c.features();
        Ok(ClassifierActs {
            batch,
            input: be.zeros(batch * 3 * c.image * c.image).map_err(err)?,
            conv,
            norm,
            stats,
            act,
            pool_weight: be.upload(&vec![1.0 / c.pooled() as f32; c.pooled()]).map_err(err)?,
            features: be.zeros(batch * f).map_err(err)?,
            logits: be.zeros(batch * c.classes).map_err(err)?,
            d_act,
            d_norm,
            d_conv,
            d_features: be.zeros(batch * f).map_err(err)?,
            d_logits: be.zeros(batch * c.classes).map_err(err)?,
        })
    }

    fn pool_desc(&self, batch: usize) -> LinearDesc {
        LinearDesc { rows: batch * self.config.features(), in_features: self.config.pooled(), out_features: 1 }
    }

    fn head_desc(&self, batch: usize) -> LinearDesc {
        LinearDesc { rows: batch, in_features: self.config.features(), out_features: self.config.classes }
    }

    /// Forward pass of `images` (`[batch, 3, S, S]`, values in [-1, 1]); returns the features
    /// `[batch, F]` and the logits `[batch, classes]`.
    pub fn forward(&self, be: &B, a: &mut ClassifierActs<B>, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let err = device_error(be);
        let (c, p, batch) = (&self.config, &self.params, a.batch);
        be.write(&mut a.input, images).map_err(err)?;
        for i in 0..4 {
            let (w, b, g, beta) = (4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3);
            let x = if i == 0 { &a.input } else { &a.act[i - 1] };
            be.conv2d_forward(&c.conv_desc(i, batch), x, p.value(w), Some(p.value(b)), &mut a.conv[i]).map_err(err)?;
            be.group_norm_forward(
                &c.norm_desc(i, batch),
                &a.conv[i],
                p.value(g),
                p.value(beta),
                &mut a.norm[i],
                &mut a.stats[i],
            )
            .map_err(err)?;
            be.activation_forward(Activation::Silu, &a.norm[i], &mut a.act[i]).map_err(err)?;
        }
        be.linear_forward(&self.pool_desc(batch), &a.act[3], &a.pool_weight, None, &mut a.features).map_err(err)?;
        be.linear_forward(&self.head_desc(batch), &a.features, p.value(16), Some(p.value(17)), &mut a.logits)
            .map_err(err)?;
        let mut features = vec![0.0; batch * c.features()];
        let mut logits = vec![0.0; batch * c.classes];
        be.download(&a.features, &mut features).map_err(err)?;
        be.download(&a.logits, &mut logits).map_err(err)?;
        Ok((features, logits))
    }

    /// Backward pass after [`Classifier::forward`] of the same activations, from the logits'
    /// gradient; overwrites every parameter gradient.
    pub fn backward(&mut self, be: &B, a: &mut ClassifierActs<B>, d_logits: &[f32]) -> Result<()> {
        let err = device_error(be);
        let (c, batch) = (self.config, a.batch);
        let (head, pool) = (self.head_desc(batch), self.pool_desc(batch));
        let (p, g) = (&self.params, &mut self.grads);
        be.write(&mut a.d_logits, d_logits).map_err(err)?;
        let (g_head_w, g_head_b) = pair(g, 16);
        be.linear_backward(
            &head,
            &a.features,
            p.value(16),
            &a.d_logits,
            Some(&mut a.d_features),
            Some(g_head_w),
            Some(g_head_b),
        )
        .map_err(err)?;
        be.linear_backward(&pool, &a.act[3], &a.pool_weight, &a.d_features, Some(&mut a.d_act[3]), None, None)
            .map_err(err)?;
        for i in (0..4).rev() {
            let (cd, nd) = (c.conv_desc(i, batch), c.norm_desc(i, batch));
            be.activation_backward(Activation::Silu, &a.norm[i], &a.d_act[i], &mut a.d_norm[i]).map_err(err)?;
            let (dg, db) = pair(g, 4 * i + 2);
            be.group_norm_backward(
                &nd,
                &a.conv[i],
                p.value(4 * i + 2),
                &a.stats[i],
                &a.d_norm[i],
                &mut a.d_conv[i],
                dg,
                db,
            )
            .map_err(err)?;
            let (dw, db) = pair(g, 4 * i);
            let (x, dx) = match i {
                0 => (&a.input, None),
                _ => {
                    let (below, _) = a.d_act.split_at_mut(i);
                    (&a.act[i - 1], Some(&mut below[i - 1]))
                }
            };
            be.conv2d_backward(&cd, x, p.value(4 * i), &a.d_conv[i], dx, Some(dw), Some(db)).map_err(err)?;
        }
        Ok(())
    }
}

/// The gradients of parameters `id` and `id + 1` (a weight and its bias), borrowed together.
fn pair<T>(grads: &mut [T], id: usize) -> (&mut T, &mut T) {
    let (a, b) = grads[id..].split_at_mut(1);
    (&mut a[0], &mut b[0])
}

/// Softmax cross-entropy of `logits [batch, classes]` against `labels`: the mean loss, the
/// number of correct arg-max predictions and the gradient of the mean loss w.r.t. the logits.
pub fn cross_entropy(logits: &[f32], labels: &[u32], classes: usize) -> (f64, usize, Vec<f32>) {
    let batch = labels.len();
    let (mut loss, mut correct) = (0.0f64, 0usize);
    let mut grad = vec![0.0f32; logits.len()];
    for (b, &y) in labels.iter().enumerate() {
        let row = &logits[b * classes..(b + 1) * classes];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        loss += sum.ln() + max - row[y as usize] as f64;
        if argmax(row) == y as usize {
            correct += 1;
        }
        for k in 0..classes {
            let p = (row[k] as f64 - max).exp() / sum;
            grad[b * classes + k] = ((p - f64::from(u8::from(k == y as usize))) / batch as f64) as f32;
        }
    }
    (loss / batch.max(1) as f64, correct, grad)
}

/// Index of the largest value (the first of equals).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (k, &v)| if v > row[best] { k } else { best })
}

/// An image as `[3, S, S]` values in [-1, 1].
pub fn to_chw(img: &crate::imageio::Rgb8) -> Vec<f32> {
    let pixels = img.width * img.height;
    let mut out = vec![0.0; 3 * pixels];
    for p in 0..pixels {
        for c in 0..3 {
            out[c * pixels + p] = img.data[p * 3 + c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// Reads the classifier's config from its file metadata.
pub fn config_from_metadata(meta: &std::collections::HashMap<String, String>) -> Result<ClassifierConfig> {
    let get = |k: &str| -> Result<usize> {
        meta.get(k).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("not a gpstoken classifier (no '{k}' metadata)"))
    };
    let config = ClassifierConfig { image: get("image")?, classes: get("classes_count")? };
    config.check()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpstoken_backend_cpu::CpuBackend;
    use gpstoken_core::backend::Buffers;

    /// Mean cross-entropy of a batch.
    fn loss(
        c: &Classifier<CpuBackend>,
        be: &CpuBackend,
        a: &mut ClassifierActs<CpuBackend>,
        x: &[f32],
        y: &[u32],
    ) -> f64 {
        let (_, logits) = c.forward(be, a, x).unwrap();
        cross_entropy(&logits, y, c.config.classes).0
    }

    #[test]
    fn backward_matches_finite_differences() {
        let be = CpuBackend::new();
        let config = ClassifierConfig { image: 8, classes: 3 };
        let mut c = Classifier::new(&be, config).unwrap();
        c.init(&be, 5).unwrap();
        let mut a = c.activations(&be, 2).unwrap();
        let mut rng = gpstoken_core::rng::SplitMix64::new(9);
        let x: Vec<f32> = (0..2 * 3 * 64).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
        let y = [2u32, 0];
        let (_, logits) = c.forward(&be, &mut a, &x).unwrap();
        let (_, _, grad) = cross_entropy(&logits, &y, 3);
        c.backward(&be, &mut a, &grad).unwrap();
        for id in 0..c.params.len() {
            let n = c.params.spec(id).numel();
            let mut analytic = vec![0.0f32; n];
            be.download(&c.grads[id], &mut analytic).unwrap();
            let scale = analytic.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let mut values = vec![0.0; n];
            be.download(c.params.value(id), &mut values).unwrap();
            for k in [0, n / 2, n - 1] {
                let h = 1e-2f32;
                let mut probe = |delta: f32| {
                    let mut v = values.clone();
                    v[k] += delta;
                    be.write(c.params.value_mut(id), &v).unwrap();
                    loss(&c, &be, &mut a, &x, &y)
                };
                let numeric = ((probe(h) - probe(-h)) / (2.0 * h as f64)) as f32;
                be.write(c.params.value_mut(id), &values).unwrap();
                let name = &c.params.spec(id).name;
                assert!(
                    (numeric - analytic[k]).abs() <= 2e-2 * scale,
                    "{name}[{k}]: finite difference {numeric}, backward {}",
                    analytic[k]
                );
            }
        }
    }

    #[test]
    fn cross_entropy_gradient_is_softmax_minus_one_hot() {
        let (loss, correct, grad) = cross_entropy(&[0.0, 0.0, 2.0_f32.ln()], &[2], 3);
        // softmax = (1/4, 1/4, 1/2): loss ln 2, gradient (1/4, 1/4, -1/2)
        assert!((loss - 2.0_f64.ln()).abs() < 1e-7);
        assert_eq!(correct, 1);
        for (g, e) in grad.iter().zip([0.25, 0.25, -0.5]) {
            assert!((g - e).abs() < 1e-6, "{grad:?}");
        }
    }

    #[test]
    fn features_do_not_depend_on_the_rest_of_the_batch() {
        let be = CpuBackend::new();
        let config = ClassifierConfig { image: 16, classes: 4 };
        let mut c = Classifier::new(&be, config).unwrap();
        c.init(&be, 1).unwrap();
        let per = 3 * 16 * 16;
        let x: Vec<f32> = (0..3 * per).map(|k| ((k * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let (f3, _) = c.forward(&be, &mut c.activations(&be, 3).unwrap(), &x).unwrap();
        let (f1, _) = c.forward(&be, &mut c.activations(&be, 1).unwrap(), &x[per..2 * per]).unwrap();
        assert_eq!(&f3[64..128], &f1[..]);
    }
}
