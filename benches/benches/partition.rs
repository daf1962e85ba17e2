//! Algorithm 1 (spec 3) on one 256x256 image for N = 64, 128, 256: the CPU cost of the
//! initial Gaussians of one image. Uses the golden `astronaut` input when `shared/` is present,
//! otherwise a synthetic textured image.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gpstoken_core::partition::{complexity, partition_patch, PartitionParams, Region};
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

criterion_group!(benches, bench);
criterion_main!(benches);
