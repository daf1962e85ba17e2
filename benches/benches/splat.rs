//! Splatting benchmarks: the CPU backend (rayon pool and one thread) against the brute-force
//! port of `gs.cu` (single thread), forward and backward, on three shapes:
//!
//! | shape | canvas | C | Gaussians |
//! |---|---|---|---|
//! | `64x64x16_n128` | 64x64 | 16 | 128 (S64-like tokenizer render) |
//! | `256x256x3_n1024` | 256x256 | 3 | 1024 |
//! | `1024x1024x16_n4096` | 1024x1024 | 16 | 4096 |
//!
//! Gaussians are random but shaped like an adaptive partition's: `sigma ~ (2/sqrt(N))/3 * [0.5, 2]`
//! (boxes cover a few percent of the canvas at most), moderate anisotropy and correlation.
//!
//! The brute force costs `O(N*H*W)` per op: on the largest shape one call takes several seconds,
//! so it is measured there with the minimum of 10 samples of one call each. Set
//! `GPSTOKEN_BENCH_SKIP_LARGE_BRUTE=1` to leave it out (a quicker run).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::SplatOps;
use gpstoken_core::render::SplatDesc;
use gpstoken_tests::brute_force::{splat_backward_brute, splat_forward_brute};
use gpstoken_tests::conformance::splat::{random_case, GaussianRanges, SplatCase};
use gpstoken_tests::TestRng;
use std::hint::black_box;
use std::time::Duration;

struct Shape {
    name: &'static str,
    size: usize,
    channels: usize,
    gaussians: usize,
    /// Large: few samples, short warm-up.
    large: bool,
}

const SHAPES: [Shape; 3] = [
    Shape { name: "64x64x16_n128", size: 64, channels: 16, gaussians: 128, large: false },
    Shape { name: "256x256x3_n1024", size: 256, channels: 3, gaussians: 1024, large: false },
    Shape { name: "1024x1024x16_n4096", size: 1024, channels: 16, gaussians: 4096, large: true },
];

fn make_case(shape: &Shape) -> SplatCase {
    let desc = SplatDesc {
        batch: 1,
        gaussians: shape.gaussians,
        channels: shape.channels,
        height: shape.size,
        width: shape.size,
        kappa: 3.0,
    };
    // One Gaussian per cell of a sqrt(N) x sqrt(N) partition: side 2/sqrt(N), sigma a third of it.
    let sigma = 2.0 / (shape.gaussians as f64).sqrt() / 3.0;
    let ranges =
        GaussianRanges { sigma: (0.5 * sigma, 2.0 * sigma), anisotropy: 2.0, rho_abs: (0.0, 0.6), mean: (-1.0, 1.0) };
    random_case(&mut TestRng::new(0xbe7c), desc, &ranges, None)
}

fn bench_splat(c: &mut Criterion) {
    let pool = CpuBackend::new();
    let single = CpuBackend::with_threads(1).expect("one-thread pool");
    let skip_large_brute = std::env::var("GPSTOKEN_BENCH_SKIP_LARGE_BRUTE").is_ok_and(|v| v == "1");
    for shape in &SHAPES {
        let case = make_case(shape);
        let desc = case.desc;
        let mut group = c.benchmark_group(format!("splat/{}", shape.name));
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
        if shape.large {
            group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
        } else {
            group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        }

        let mut out = vec![0.0f32; desc.image_len()];
        let mut grad = vec![0.0f32; desc.tokens_len()];
        for (label, backend) in [("cpu", &pool), ("cpu_1thread", &single)] {
            group.bench_function(format!("forward/{label}"), |b| {
                b.iter(|| backend.splat_forward(&desc, black_box(&case.tokens), &mut out).unwrap())
            });
            group.bench_function(format!("backward/{label}"), |b| {
                b.iter(|| {
                    backend
                        .splat_backward(&desc, black_box(&case.tokens), black_box(&case.grad_out), &mut grad)
                        .unwrap()
                })
            });
        }
        if shape.large && skip_large_brute {
            group.finish();
            continue;
        }
        group.bench_function("forward/brute_force", |b| {
            b.iter(|| splat_forward_brute(&desc, black_box(&case.tokens), &mut out).unwrap())
        });
        group.bench_function("backward/brute_force", |b| {
            b.iter(|| {
                splat_backward_brute(&desc, black_box(&case.tokens), black_box(&case.grad_out), &mut grad).unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_splat);
criterion_main!(benches);
