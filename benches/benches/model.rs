//! A whole training step of the small CPU config (`tiny64`): encoder + splat + DecoderNP forward,
//! MSE, and the full backward, on the CPU backend with 1 and 2 threads.
//!
//! Throughput is reported as FLOPs per second (criterion "elements" = FLOPs). The count is an
//! estimate made here from the config: the convolutions, linear layers and attention products
//! (2 FLOPs per multiply-add) of the forward, times 3 for forward + backward (the backward of a
//! matmul is two matmuls of the same size). Norms, activations, RoIAlign and the splat are not
//! counted, so the reported rate is a lower bound of the work actually done.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::model::{GpsToken, ModelConfig};
use gpstoken_core::partition::{partition_patch, region_box, region_gaussian, PartitionParams, Region};
use std::time::Duration;

const BATCH: usize = 4;

/// Multiply-adds of a conv: out_c * in_c * k² per output pixel.
fn conv(cin: usize, cout: usize, k: usize, h: usize, w: usize) -> f64 {
    (cin * cout * k * k * h * w) as f64
}

/// Estimated forward multiply-adds per image (see the module doc).
fn forward_macs(cfg: &ModelConfig) -> f64 {
    let s = cfg.image_size;
    let g = &cfg.gps;
    let (n, e) = (g.gps_num as f64, g.gpsenc_c as f64);
    let r2 = (g.rois * g.rois) as f64;
    // encoder: preprocess conv + 2 ResnetBlocks (2 convs each) at 128 channels, full resolution
    let mut macs = conv(3, 128, 3, s, s) + 4.0 * conv(128, 128, 3, s, s);
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

/// Smooth synthetic images with Algorithm 1's initial Gaussians and boxes.
fn inputs(cfg: &ModelConfig) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (s, n) = (cfg.image_size, cfg.gps.gps_num);
    let mut image = vec![0.0f32; BATCH * 3 * s * s];
    let (mut g_init, mut boxes) = (Vec::new(), Vec::new());
    for (b, img) in image.chunks_exact_mut(3 * s * s).enumerate() {
        for (i, v) in img.iter_mut().enumerate() {
            let (c, y, x) = (i / (s * s), (i / s) % s, i % s);
            let t = (x * (c + 1) + y * (b + 2)) as f32 * 0.07;
            *v = (t.sin() * (y as f32 * 0.05).cos()).clamp(-1.0, 1.0);
        }
        let grey: Vec<f32> =
            (0..s * s).map(|i| 0.299 * img[i] + 0.587 * img[s * s + i] + 0.114 * img[2 * s * s + i]).collect();
        let mut regions = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; n];
        partition_patch(&grey, s, s, &PartitionParams::new(n), None, &mut regions).expect("partition");
        for r in &regions {
            g_init.extend_from_slice(&region_gaussian(r, s, s));
            boxes.extend_from_slice(&region_box(r, s, s));
        }
    }
    (image, g_init, boxes)
}

fn training_step(c: &mut Criterion) {
    let cfg = ModelConfig::tiny64();
    let flops = 3.0 * 2.0 * forward_macs(&cfg) * BATCH as f64;
    let (image, g_init, boxes) = inputs(&cfg);
    let mut group = c.benchmark_group("model_tiny64_step_batch4");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(flops as u64));
    for threads in [1, 2] {
        let be = CpuBackend::with_threads(threads).expect("thread pool");
        let mut model = GpsToken::new(&be, cfg.clone()).expect("model");
        model.init(&be, 1).expect("init");
        let mut acts = model.activations(&be, BATCH, 1).expect("activations");
        group.bench_function(format!("{threads}_threads"), |bench| {
            bench.iter(|| {
                model.forward(&be, &mut acts, &image, &g_init, &boxes).expect("forward");
                model.mse_backward(&be, &mut acts).expect("backward")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, training_step);
criterion_main!(benches);
