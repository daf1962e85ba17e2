//! Dense layer benchmarks on the CPU backend: conv2d 3x3 (forward, backward) and linear
//! (forward, backward), with rayon's pool and with one thread.
//!
//! Throughput is reported as `Throughput::Elements(flops)`: criterion's "elements" ARE floating
//! point operations here (a multiply-add counts 2), so `Gelem/s` reads as GFLOP/s. Forward:
//! `2·M·N·K`; backward: `dx` and `dW`, twice the forward (the bias gradient is not counted).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{Buffers, Conv2dDesc, ConvOps, LinearDesc, LinearOps};
use gpstoken_tests::TestRng;
use std::hint::black_box;
use std::time::Duration;

fn random(rng: &mut TestRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn backends() -> [(&'static str, CpuBackend); 2] {
    [("pool", CpuBackend::new()), ("1thread", CpuBackend::with_threads(1).expect("one-thread pool"))]
}

fn bench_conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv3x3");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
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
            group.throughput(Throughput::Elements(flops as u64));
            group.bench_function(BenchmarkId::new(format!("forward_{threads}"), label), |bench| {
                bench.iter(|| backend.conv2d_forward(&d, black_box(&x), &w, Some(&b), &mut y).unwrap())
            });
            let (mut dx, mut dw, mut db) =
                (backend.zeros(x.len()).unwrap(), backend.zeros(w.len()).unwrap(), backend.zeros(b.len()).unwrap());
            group.throughput(Throughput::Elements(2 * flops as u64));
            group.bench_function(BenchmarkId::new(format!("backward_{threads}"), label), |bench| {
                bench.iter(|| {
                    backend.conv2d_backward(&d, black_box(&x), &w, &dy, Some(&mut dx), &mut dw, Some(&mut db)).unwrap()
                })
            });
        }
    }
    group.finish();
}

fn bench_linear(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
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
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(BenchmarkId::new(format!("forward_{threads}"), label), |bench| {
            bench.iter(|| backend.linear_forward(&d, black_box(&x), &w, Some(&b), &mut y).unwrap())
        });
        let (mut dx, mut dw, mut db) =
            (backend.zeros(x.len()).unwrap(), backend.zeros(w.len()).unwrap(), backend.zeros(b.len()).unwrap());
        group.throughput(Throughput::Elements(2 * flops as u64));
        group.bench_function(BenchmarkId::new(format!("backward_{threads}"), label), |bench| {
            bench.iter(|| {
                backend.linear_backward(&d, black_box(&x), &w, &dy, Some(&mut dx), &mut dw, Some(&mut db)).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv, bench_linear);
criterion_main!(benches);
