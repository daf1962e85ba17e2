//! The tokenizer's training step for benches: a synthetic batch, an estimate of its FLOPs, and
//! one step (forward, MSE, backward, Adam) generic over the backend.

use gpstoken_core::backend::{AdamConfig, Backend};
use gpstoken_core::model::{Activations, GpsToken, ModelConfig, ModelError};
use gpstoken_core::partition::{partition_patch, region_box, region_gaussian, PartitionParams, Region};

/// Multiply-adds of a conv: out_c * in_c * k² per output pixel.
fn conv(cin: usize, cout: usize, k: usize, h: usize, w: usize) -> f64 {
    (cin * cout * k * k * h * w) as f64
}

/// Estimated forward multiply-adds per image: the convolutions, linear layers and attention
/// products. Norms, activations, RoIAlign and the splat are not counted, so a rate derived from it
/// is a lower bound of the work actually done.
pub fn forward_macs(cfg: &ModelConfig) -> f64 {
    let (sh, sw) = cfg.image_hw;
    let g = &cfg.gps;
    let (n, e) = (g.gps_num as f64, g.gpsenc_c as f64);
    let r2 = (g.rois * g.rois) as f64;
    // encoder: preprocess conv + 2 ResnetBlocks (2 convs each) at 128 channels, full resolution
    let mut macs = conv(3, 128, 3, sh, sw) + 4.0 * conv(128, 128, 3, sh, sw);
    macs += n * r2 * 128.0 * e; // roialign_layer 1x1 conv on every RoI
    macs += n * (5.0 * e + e * e); // gps_embed_layer
    let block = n * e * r2 // roimlp
        + n * (3.0 * e * e + e * e) // in_proj + out_proj
        + 2.0 * n * n * e // q kᵀ and p v
        + n * 8.0 * e * e; // mlp
    macs += g.gpsenc_n as f64 * block;
    macs += n * e * (5 + g.gps_c) as f64; // to_gps

    // decoder
    let d = &cfg.decoder;
    let (mut h, mut w) = g.gps_rs;
    let mut ch = d.ch * d.ch_mult[d.ch_mult.len() - 1];
    macs += conv(d.z_channels, ch, 3, h, w);
    macs += 4.0 * conv(ch, ch, 3, h, w); // two mid ResnetBlocks
    macs += 4.0 * conv(ch, ch, 1, h, w) + 2.0 * (h * w * h * w * ch) as f64; // mid attention
    for level in (0..d.ch_mult.len()).rev() {
        let out = d.ch * d.ch_mult[level];
        for _ in 0..=d.num_res_blocks {
            macs += conv(ch, out, 3, h, w) + conv(out, out, 3, h, w);
            if ch != out {
                macs += conv(ch, out, 1, h, w);
            }
            ch = out;
        }
        if level > 0 {
            h *= 2;
            w *= 2;
            macs += conv(ch, ch, 3, h, w);
        }
    }
    macs + conv(ch, d.out_ch, 3, h, w)
}

/// Estimated FLOPs of forward + backward on `batch` images: 2 FLOPs per multiply-add, times 3
/// because the backward of a matmul is two matmuls of the same size.
pub fn step_flops(cfg: &ModelConfig, batch: usize) -> f64 {
    3.0 * 2.0 * forward_macs(cfg) * batch as f64
}

/// A training batch: smooth synthetic images with Algorithm 1's initial Gaussians and boxes.
pub struct TrainBatch {
    pub image: Vec<f32>,
    pub g_init: Vec<f32>,
    pub boxes: Vec<f32>,
}

impl TrainBatch {
    /// `batch` images of `cfg.image_hw`, partitioned into `cfg.gps.gps_num` regions each.
    pub fn synthetic(cfg: &ModelConfig, batch: usize) -> TrainBatch {
        let ((sh, sw), n) = (cfg.image_hw, cfg.gps.gps_num);
        let px = sh * sw;
        let mut image = vec![0.0f32; batch * 3 * px];
        let (mut g_init, mut boxes) = (Vec::new(), Vec::new());
        for (b, img) in image.chunks_exact_mut(3 * px).enumerate() {
            for (i, v) in img.iter_mut().enumerate() {
                let (c, y, x) = (i / px, (i / sw) % sh, i % sw);
                let t = (x * (c + 1) + y * (b + 2)) as f32 * 0.07;
                *v = (t.sin() * (y as f32 * 0.05).cos()).clamp(-1.0, 1.0);
            }
            let grey: Vec<f32> =
                (0..px).map(|i| 0.299 * img[i] + 0.587 * img[px + i] + 0.114 * img[2 * px + i]).collect();
            let mut regions = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; n];
            partition_patch(&grey, sw, sh, &PartitionParams::new(n), None, &mut regions).expect("partition");
            for r in &regions {
                g_init.extend_from_slice(&region_gaussian(r, sw, sh));
                boxes.extend_from_slice(&region_box(r, sw, sh));
            }
        }
        TrainBatch { image, g_init, boxes }
    }
}

/// A model, its activations and Adam moments on backend `B`, ready to take training steps.
pub struct Trainer<B: Backend> {
    pub model: GpsToken<B>,
    pub acts: Activations<B>,
    /// Adam moments per parameter id; `None` where the parameter gets no gradient.
    moments: Vec<Option<(B::Buffer, B::Buffer)>>,
    adam: AdamConfig,
    step: u32,
}

impl<B: Backend> Trainer<B> {
    /// A freshly initialised model of `cfg` for batches of `batch` images.
    pub fn new(be: &B, cfg: ModelConfig, batch: usize) -> Result<Trainer<B>, ModelError<B::Error>> {
        let mut model = GpsToken::new(be, cfg)?;
        model.init(be, 1).map_err(ModelError::Backend)?;
        let acts = model.activations(be, batch, 1).map_err(ModelError::Backend)?;
        let mut moments = Vec::with_capacity(model.params.len());
        for id in 0..model.params.len() {
            let n = model.params.spec(id).numel();
            moments.push(match model.params.grad(id) {
                Some(_) => Some((be.zeros(n).map_err(ModelError::Backend)?, be.zeros(n).map_err(ModelError::Backend)?)),
                None => None,
            });
        }
        Ok(Trainer { model, acts, moments, adam: AdamConfig::official(5e-5), step: 0 })
    }

    /// Forward and MSE backward only (no optimiser step); returns the loss.
    pub fn forward_backward(&mut self, be: &B, batch: &TrainBatch) -> Result<f64, B::Error> {
        self.model.forward(be, &mut self.acts, &batch.image, &batch.g_init, &batch.boxes)?;
        self.model.mse_backward(be, &mut self.acts)
    }

    /// One training step: forward, MSE, backward, then Adam on every parameter with a gradient.
    pub fn step(&mut self, be: &B, batch: &TrainBatch) -> Result<f64, B::Error> {
        let loss = self.forward_backward(be, batch)?;
        self.step += 1;
        let (adam, step, moments) = (&self.adam, self.step, &mut self.moments);
        let mut tensors = self.model.params.adam_tensors(moments.iter_mut().map(|mv| mv.as_mut().map(|(m, v)| (m, v))));
        let res = be.adam_step_many(adam, step, &mut tensors);
        res.map(|()| loss)
    }
}
