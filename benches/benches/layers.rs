//! Layer benchmarks on the CPU backend, forward and backward, with rayon's pool and with one
//! thread: conv2d 3x3, linear, attention, GroupNorm (NormalizeNP) and RoIAlign.
//!
//! For the GEMM-bound layers throughput is reported as `Throughput::Elements(flops)`:
//! criterion's "elements" ARE floating point operations here (a multiply-add counts 2), so
//! `Gelem/s` reads as GFLOP/s. Conv and linear forward: `2·M·N·K`; backward: `dx` and `dW`,
//! twice the forward (the bias gradient is not counted). Attention forward: `Q Kᵀ` and `P V`,
//! `4·B·H·Lq·Lk·D`; backward: `dP`, `dQ`, `dK`, `dV`, twice that (softmax terms not counted).
//! GroupNorm and RoIAlign are memory-bound gathers: only their times are reported.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{
    AttentionOps, Buffers, Conv2dDesc, ConvOps, GroupNormDesc, LinearDesc, LinearOps, NormKind, NormOps, RoiAlignDesc,
    RoiOps,
};
use gpstoken_tests::conformance::{attention, norm};
use gpstoken_tests::TestRng;
use std::hint::black_box;
use std::time::Duration;

fn random(rng: &mut TestRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn backends() -> [(&'static str, CpuBackend); 2] {
    [("pool", CpuBackend::new()), ("1thread", CpuBackend::with_threads(1).expect("one-thread pool"))]
}

/// A group with the short, flat sampling every layer benchmark uses.
fn layer_group<'a>(c: &'a mut Criterion, name: &str, measurement: Duration) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(300)).measurement_time(measurement);
    group
}

/// Benchmarks one pass (`forward` or `backward`) as `PASS_THREADS/LABEL`; `flops` sets the
/// GFLOP/s throughput for this and the following passes of the group.
fn bench_pass(
    group: &mut BenchmarkGroup<WallTime>,
    (pass, threads, label): (&str, &str, &str),
    flops: Option<usize>,
    mut run: impl FnMut(),
) {
    if let Some(f) = flops {
        group.throughput(Throughput::Elements(f as u64));
    }
    group.bench_function(BenchmarkId::new(format!("{pass}_{threads}"), label), |bench| bench.iter(&mut run));
}

fn bench_conv(c: &mut Criterion) {
    let mut group = layer_group(c, "conv3x3", Duration::from_secs(2));
    let mut rng = TestRng::new(0xbe4c);
    for (label, d) in [
        ("b1_128to128_64x64", Conv2dDesc::same(1, 128, 128, 64, 64, 3)),
        ("b1_512to512_32x32", Conv2dDesc::same(1, 512, 512, 32, 32, 3)),
    ] {
        let x = random(&mut rng, d.input_len());
        let w = random(&mut rng, d.weight_len());
        let b = random(&mut rng, d.out_channels);
        let dy = random(&mut rng, d.output_len());
        let flops = 2 * d.batch * d.out_channels * d.in_channels * d.kernel * d.kernel * d.out_height() * d.out_width();
        for (threads, backend) in backends() {
            let mut y = backend.zeros(d.output_len()).unwrap();
            bench_pass(&mut group, ("forward", threads, label), Some(flops), || {
                backend.conv2d_forward(&d, black_box(&x), &w, Some(&b), &mut y).unwrap();
            });
            let (mut dx, mut dw, mut db) =
                (backend.zeros(x.len()).unwrap(), backend.zeros(w.len()).unwrap(), backend.zeros(b.len()).unwrap());
            bench_pass(&mut group, ("backward", threads, label), Some(2 * flops), || {
                backend
                    .conv2d_backward(&d, black_box(&x), &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db))
                    .unwrap();
            });
        }
    }
    group.finish();
}

fn bench_linear(c: &mut Criterion) {
    let mut group = layer_group(c, "linear", Duration::from_secs(2));
    let mut rng = TestRng::new(0xbe11);
    let d = LinearDesc { rows: 2048, in_features: 512, out_features: 2048 };
    let label = "2048x512_to_2048";
    let x = random(&mut rng, d.rows * d.in_features);
    let w = random(&mut rng, d.out_features * d.in_features);
    let b = random(&mut rng, d.out_features);
    let dy = random(&mut rng, d.rows * d.out_features);
    let flops = 2 * d.rows * d.in_features * d.out_features;
    for (threads, backend) in backends() {
        let mut y = backend.zeros(d.rows * d.out_features).unwrap();
        bench_pass(&mut group, ("forward", threads, label), Some(flops), || {
            backend.linear_forward(&d, black_box(&x), &w, Some(&b), &mut y).unwrap();
        });
        let (mut dx, mut dw, mut db) =
            (backend.zeros(x.len()).unwrap(), backend.zeros(w.len()).unwrap(), backend.zeros(b.len()).unwrap());
        bench_pass(&mut group, ("backward", threads, label), Some(2 * flops), || {
            backend.linear_backward(&d, black_box(&x), &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).unwrap();
        });
    }
    group.finish();
}

fn bench_attention(c: &mut Criterion) {
    let mut group = layer_group(c, "attention", Duration::from_secs(2));
    let mut rng = TestRng::new(0xa77e);
    for (label, d) in [
        // The decoder's mid-block attention: one head over 32x32 positions of 512 channels.
        ("b1_h1_1024x512", attention::attention_desc(1, 1, 1024, 1024, 512)),
        // The encoder's transformer blocks: 8 heads of 64 over 256 tokens.
        ("b1_h8x64_256tok", attention::attention_desc(1, 8, 256, 256, 64)),
    ] {
        let case = attention::attention_case(&mut rng, d);
        let flops = 4 * d.batch * d.heads * d.seq_q * d.seq_k * d.head_dim;
        for (threads, backend) in backends() {
            let up = |h: &[f32]| backend.upload(h).unwrap();
            let (q, k, v, dout) = (up(&case.q), up(&case.k), up(&case.v), up(&case.dout));
            let (mut out, mut probs) = (backend.zeros(d.q_len()).unwrap(), backend.zeros(d.probs_len()).unwrap());
            bench_pass(&mut group, ("forward", threads, label), Some(flops), || {
                backend.attention_forward(&d, black_box(&q), &k, &v, &mut out, &mut probs).unwrap();
            });
            let (mut dq, mut dk, mut dv) = (
                backend.zeros(d.q_len()).unwrap(),
                backend.zeros(d.kv_len()).unwrap(),
                backend.zeros(d.kv_len()).unwrap(),
            );
            bench_pass(&mut group, ("backward", threads, label), Some(2 * flops), || {
                backend
                    .attention_backward(&d, black_box(&q), &k, &v, &probs, &dout, &mut dq, &mut dk, &mut dv)
                    .unwrap();
            });
        }
    }
    group.finish();
}

fn bench_group_norm(c: &mut Criterion) {
    let mut group = layer_group(c, "group_norm", Duration::from_secs(1));
    let mut rng = TestRng::new(0x6e04);
    // The decoder's NormalizeNP (std + eps) with one patch.
    let d = GroupNormDesc {
        batch: 1,
        channels: 128,
        height: 128,
        width: 128,
        groups: 32,
        eps: 1e-6,
        kind: NormKind::StdPlusEps,
        patches: 1,
    };
    let label = "normalize_np_128x128x128_np1";
    let case = norm::group_norm_case(&mut rng, d);
    for (threads, backend) in backends() {
        let up = |h: &[f32]| backend.upload(h).unwrap();
        let (x, gamma, beta, dy) = (up(&case.x), up(&case.gamma), up(&case.beta), up(&case.dy));
        let (mut y, mut stats) = (backend.zeros(d.len()).unwrap(), backend.zeros(d.stats_len()).unwrap());
        bench_pass(&mut group, ("forward", threads, label), None, || {
            backend.group_norm_forward(&d, black_box(&x), &gamma, &beta, &mut y, &mut stats).unwrap();
        });
        backend.group_norm_forward(&d, &x, &gamma, &beta, &mut y, &mut stats).unwrap();
        let (mut dx, mut dgamma, mut dbeta) =
            (backend.zeros(d.len()).unwrap(), backend.zeros(d.channels).unwrap(), backend.zeros(d.channels).unwrap());
        bench_pass(&mut group, ("backward", threads, label), None, || {
            backend
                .group_norm_backward(&d, black_box(&x), &gamma, &stats, &dy, &mut dx, &mut dgamma, &mut dbeta)
                .unwrap();
        });
    }
    group.finish();
}

fn bench_roi_align(c: &mut Criterion) {
    let mut group = layer_group(c, "roi_align", Duration::from_secs(1));
    let mut rng = TestRng::new(0x2011);
    let d = RoiAlignDesc {
        batch: 2,
        channels: 128,
        height: 64,
        width: 64,
        rois: 32,
        pooled: 8,
        spatial_scale: 1.0,
        sampling_ratio: -1,
        aligned: true,
    };
    let label = "b2_128x64x64_32boxes_p8";
    let features = random(&mut rng, d.features_len());
    // 16 boxes per image, sides from 4 to 48 pixels (adaptive sampling: 1 to 6 samples per bin side).
    let mut boxes = Vec::with_capacity(5 * d.rois);
    for n in 0..d.rois {
        let side = [4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 40.0, 48.0][n % 8];
        let (x0, y0) = (rng.uniform(0.0, 63.0 - side), rng.uniform(0.0, 63.0 - side));
        let aspect = rng.uniform(0.5, 1.0);
        boxes.extend_from_slice(&[
            (n / 16) as f32,
            x0 as f32,
            y0 as f32,
            (x0 + side) as f32,
            (y0 + side * aspect) as f32,
        ]);
    }
    let dout = random(&mut rng, d.out_len());
    for (threads, backend) in backends() {
        let (f, bx, dy) =
            (backend.upload(&features).unwrap(), backend.upload(&boxes).unwrap(), backend.upload(&dout).unwrap());
        let mut out = backend.zeros(d.out_len()).unwrap();
        bench_pass(&mut group, ("forward", threads, label), None, || {
            backend.roi_align_forward(&d, black_box(&f), &bx, &mut out).unwrap();
        });
        let mut df = backend.zeros(d.features_len()).unwrap();
        bench_pass(&mut group, ("backward", threads, label), None, || {
            backend.roi_align_backward(&d, &bx, black_box(&dy), &mut df).unwrap();
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv, bench_linear, bench_attention, bench_group_norm, bench_roi_align);
criterion_main!(benches);
