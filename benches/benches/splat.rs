//! Splatting benchmarks: the CPU backend (rayon pool and one thread) against the brute-force
//! port of `gs.cu` (single thread), forward and backward, on three shapes:
//!
//! | shape | canvas | C | Gaussians |
//! |---|---|---|---|
//! | `64x64x16_n128` | 64x64 | 16 | 128 (S64-like tokenizer render) |
//! | `256x256x3_n1024` | 256x256 | 3 | 1024 |
//! | `1024x1024x16_n4096` | 1024x1024 | 16 | 4096 |
//!
//! Gaussians are random but shaped like an adaptive partition's (see
//! `gpstoken_benches::splat_cases`). The backends side by side are in the `backends` bench.
//!
//! The brute force costs `O(N*H*W)` per op: on the largest shape one call takes several seconds,
//! so it is measured there with the minimum of 10 samples of one call each. Set
//! `GPSTOKEN_BENCH_SKIP_LARGE_BRUTE=1` to leave it out (a quicker run).
//!
//! With `GPSTOKEN_SPLAT_COMPARE=SIZE,C,N` it instead times the one-thread CPU backend's forward
//! and backward on that case (`GPSTOKEN_SPLAT_REPS` calls, default 10, after one warm-up; the
//! thread's CPU time, so that preemption on a shared machine is not counted) and prints one JSON
//! line with the medians; `GPSTOKEN_SPLAT_DUMP=FILE` also writes the inputs for
//! the official kernels' harness. The Rust side of `scripts/compare/splat.sh`.

use criterion::{criterion_group, Criterion, SamplingMode};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_benches::splat_cases::{splat_case, SplatShape};
use gpstoken_core::backend::SplatOps;
use gpstoken_tests::brute_force::{splat_backward_brute, splat_forward_brute};
use std::hint::black_box;
use std::time::Duration;

/// A shape, its id in this bench, and whether it is large (few samples, short warm-up).
struct Shape {
    name: &'static str,
    dims: SplatShape,
    large: bool,
}

const SHAPES: [Shape; 3] = [
    Shape { name: "64x64x16_n128", dims: SplatShape { size: 64, channels: 16, gaussians: 128 }, large: false },
    Shape { name: "256x256x3_n1024", dims: SplatShape { size: 256, channels: 3, gaussians: 1024 }, large: false },
    Shape { name: "1024x1024x16_n4096", dims: SplatShape { size: 1024, channels: 16, gaussians: 4096 }, large: true },
];

fn bench_splat(c: &mut Criterion) {
    let pool = CpuBackend::new();
    let single = CpuBackend::with_threads(1).expect("one-thread pool");
    let skip_large_brute = std::env::var("GPSTOKEN_BENCH_SKIP_LARGE_BRUTE").is_ok_and(|v| v == "1");
    for shape in &SHAPES {
        let case = splat_case(&shape.dims);
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

/// The side-by-side mode of `scripts/compare/splat.sh` (see the module docs).
fn compare(spec: &str) {
    let dims: Vec<usize> = spec.split(',').map(|v| v.trim().parse().expect("SIZE,C,N")).collect();
    let [size, channels, gaussians] = dims[..] else { panic!("GPSTOKEN_SPLAT_COMPARE=SIZE,C,N, got {spec}") };
    let case = splat_case(&SplatShape { size, channels, gaussians });
    let desc = case.desc;
    if let Ok(path) = std::env::var("GPSTOKEN_SPLAT_DUMP") {
        // u32 [h, w, c, s], f32 tokens [s, 5 + c], f32 grad_out [c, h, w], little endian.
        let mut bytes: Vec<u8> = Vec::new();
        for v in [desc.height, desc.width, desc.channels, desc.gaussians] {
            bytes.extend((v as u32).to_le_bytes());
        }
        for v in case.tokens.iter().chain(&case.grad_out) {
            bytes.extend(v.to_le_bytes());
        }
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let reps: usize = std::env::var("GPSTOKEN_SPLAT_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(10).max(1);
    let backend = CpuBackend::with_threads(1).expect("one-thread pool");
    let mut out = vec![0.0f32; desc.image_len()];
    let mut grad = vec![0.0f32; desc.tokens_len()];
    let (mut fwd, mut bwd, mut tot) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps + 1 {
        let t0 = gpstoken_benches::thread_cpu_ms();
        backend.splat_forward(&desc, black_box(&case.tokens), &mut out).unwrap();
        let t1 = gpstoken_benches::thread_cpu_ms();
        backend.splat_backward(&desc, black_box(&case.tokens), black_box(&case.grad_out), &mut grad).unwrap();
        let t2 = gpstoken_benches::thread_cpu_ms();
        if rep > 0 {
            fwd.push(t1 - t0);
            bwd.push(t2 - t1);
            tot.push(t2 - t0);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{{\"forward_ms\": {:.4}, \"backward_ms\": {:.4}, \"total_ms\": {:.4}, \"reps\": {reps}}}",
        median(fwd),
        median(bwd),
        median(tot)
    );
}

criterion_group!(benches, bench_splat);

fn main() {
    if let Ok(spec) = std::env::var("GPSTOKEN_SPLAT_COMPARE") {
        compare(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
