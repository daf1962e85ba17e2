//! Algorithm 1 (spec 3) on one 256x256 image for N = 64, 128, 256: the CPU cost of the
//! initial Gaussians of one image. Uses the golden `astronaut` input when `shared/` is present,
//! otherwise a synthetic textured image.
//!
//! With `GPSTOKEN_PARTITION_COMPARE=grey.f32` it instead times Algorithm 1 on that raw
//! 256x256 little-endian f32 grey image (`GPSTOKEN_PARTITION_N`, default 128;
//! `GPSTOKEN_PARTITION_REPS`, default 30) and prints one JSON line with the median and the
//! regions: the Rust side of `scripts/compare/partition.sh`. It uses the `log2`/`pow` that
//! `gpstoken` itself uses (`gpstoken_cli::partition_math`: glibc's on Linux, like NumPy), or the
//! core's portable ones with `GPSTOKEN_PARTITION_MATH=portable`.

use criterion::{criterion_group, BenchmarkId, Criterion};
use gpstoken_core::partition::{
    complexity, partition_patch, partition_patch_with, resize_region64, sobel_histogram, MathFns, PartitionParams,
    Region, RS,
};
use gpstoken_core::preprocess::{grey, u8_slice_to_unit};
use std::hint::black_box;

const SIZE: usize = 256;

/// The grey image of the benchmark input and a label saying where it came from.
fn input() -> (Vec<f32>, &'static str) {
    let rgb = gpstoken_tests::shared_dir("partition bench")
        .map(|d| d.join("golden/partition/astronaut/input.png"))
        .filter(|p| p.is_file())
        .and_then(|p| image::open(p).ok())
        .map(|img| img.to_rgb8())
        .filter(|img| img.dimensions() == (SIZE as u32, SIZE as u32))
        .map(|img| img.into_raw());
    let (rgb, label) = match rgb {
        Some(rgb) => (rgb, "astronaut"),
        None => {
            // Synthetic: smooth gradients plus a hashed texture that varies in strength.
            let mut v = Vec::with_capacity(SIZE * SIZE * 3);
            for y in 0..SIZE {
                for x in 0..SIZE {
                    let hash = ((x * 7919 + y * 104_729) ^ (x * y)) % 97;
                    let tex = if (x / 64 + y / 32) % 3 == 0 { hash } else { hash / 8 };
                    for c in 0..3 {
                        v.push(((x + 2 * y + 40 * c + tex) % 256) as u8);
                    }
                }
            }
            (v, "synthetic")
        }
    };
    let mut unit = vec![0.0f32; rgb.len()];
    u8_slice_to_unit(&rgb, &mut unit);
    let mut g = vec![0.0f32; SIZE * SIZE];
    grey(&unit, &mut g);
    (g, label)
}

fn bench(c: &mut Criterion) {
    let (g, label) = input();
    let mut group = c.benchmark_group(format!("partition_256/{label}"));
    group.sample_size(20);
    group.bench_function("complexity_root", |b| {
        b.iter(|| complexity(black_box(&g), SIZE, (0, SIZE - 1, 0, SIZE - 1), 2.5))
    });
    let mut img = [0.0f32; RS * RS];
    resize_region64(&g, SIZE, (0, SIZE - 1, 0, SIZE - 1), &mut img);
    group.bench_function("sobel_histogram", |b| b.iter(|| sobel_histogram(black_box(&img))));
    group.bench_function("resize_16x16", |b| {
        b.iter(|| resize_region64(black_box(&g), SIZE, (64, 79, 32, 47), &mut img))
    });
    group
        .bench_function("resize_32x64", |b| b.iter(|| resize_region64(black_box(&g), SIZE, (64, 95, 0, 63), &mut img)));
    group.bench_function("complexity_16x16", |b| b.iter(|| complexity(black_box(&g), SIZE, (64, 79, 32, 47), 2.5)));
    for n in [64usize, 128, 256] {
        let params = PartitionParams::new(n);
        let mut out = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; n];
        group.bench_with_input(BenchmarkId::new("algorithm1", n), &n, |b, _| {
            b.iter(|| partition_patch(black_box(&g), SIZE, SIZE, &params, None, &mut out).unwrap())
        });
    }
    group.finish();
}

/// The side-by-side mode of `scripts/compare/partition.sh` (see the module docs).
fn compare(path: &str) {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, reps) = (env("GPSTOKEN_PARTITION_N", 128), env("GPSTOKEN_PARTITION_REPS", 30).max(1));
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(bytes.len(), SIZE * SIZE * 4, "{path}: expected a 256x256 f32 image");
    let g: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let params = PartitionParams::new(n);
    let math = match std::env::var("GPSTOKEN_PARTITION_MATH").as_deref() {
        Ok("portable") => MathFns::PORTABLE,
        Ok(other) => panic!("GPSTOKEN_PARTITION_MATH={other}: expected portable (or unset)"),
        Err(_) => gpstoken_cli::partition_math(),
    };
    let mut out = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; n];
    let mut times = Vec::with_capacity(reps);
    for rep in 0..reps + 2 {
        let t = std::time::Instant::now();
        partition_patch_with(black_box(&g), SIZE, SIZE, &params, None, &math, &mut out).unwrap();
        if rep >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let ranges: Vec<String> = out.iter().map(|r| format!("[{},{},{},{}]", r.y0, r.y1, r.x0, r.x1)).collect();
    println!(
        "{{\"median_ms\": {}, \"min_ms\": {}, \"reps\": {reps}, \"ranges\": [{}]}}",
        times[times.len() / 2],
        times[0],
        ranges.join(",")
    );
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(path) = std::env::var("GPSTOKEN_PARTITION_COMPARE") {
        compare(&path);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
