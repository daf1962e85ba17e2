//! Algorithm 2 (layout calibration, spec 4.2) checked by its properties:
//! * every output of many random inputs, in and out of the normal ranges, is a valid region and
//!   its Gaussian is exactly Algorithm 1's Gaussian of that region;
//! * calibrating a real Algorithm 1 layout returns it bit for bit: the official layouts of
//!   `golden/partition` and our partitions of random images of several patch sizes;
//! * the result is the nearest valid region, checked against a brute-force search over every
//!   valid region of the patch.

use gpstoken_core::calibrate::{calibrate, calibrate_gaussians, repair_duplicates, snap, CalibrateParams};
use gpstoken_core::partition::{partition_image, region_gaussian, PartitionParams, Region};
use gpstoken_core::rng::SplitMix64;
use gpstoken_tests::{read_safetensors, shared_dir};

fn bits(g: &[[f32; 5]]) -> Vec<u32> {
    g.iter().flatten().map(|v| v.to_bits()).collect()
}

fn rect(r: &Region) -> (u16, u16, u16, u16) {
    (r.y0, r.y1, r.x0, r.x1)
}

/// A generated-looking Gaussian: mostly in the normal ranges, sometimes far outside.
fn random_gaussian(rng: &mut SplitMix64) -> [f32; 5] {
    let wide = rng.unit_f32() < 0.2;
    let mut u = |lo: f32, hi: f32| lo + (hi - lo) * rng.unit_f32();
    if wide {
        [u(-2.0, 3.0), u(-2.0, 3.0), u(-3.0, 3.0), u(-4.0, 4.0), u(-4.0, 4.0)]
    } else {
        [u(0.0, 0.7), u(0.0, 0.7), u(-1.0, 1.0), u(-1.0, 1.0), u(-1.0, 1.0)]
    }
}

#[test]
fn every_output_is_a_valid_region_with_algorithm_1s_gaussian() {
    let mut rng = SplitMix64::new(41);
    for (patch, min_size) in [(256, 8), (64, 8), (128, 4), (16, 8), (8, 8)] {
        let params = CalibrateParams { patch, min_size };
        let gs: Vec<[f32; 5]> = (0..4000).map(|_| random_gaussian(&mut rng)).collect();
        let mut regions = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; gs.len()];
        calibrate(&gs, &params, &mut regions).unwrap();
        let mut out = gs.clone();
        calibrate_gaussians(&mut out, &params).unwrap();
        for (k, (r, g)) in regions.iter().zip(&out).enumerate() {
            assert!(params.is_valid(r), "patch {patch}: Gaussian {k} {:?} -> invalid {r:?}", gs[k]);
            assert_eq!(*g, region_gaussian(r, patch, patch), "patch {patch}: Gaussian {k}");
            assert_eq!(g[2], 0.0);
        }
    }
}

#[test]
fn official_layouts_come_back_bit_for_bit() {
    let Some(shared) = shared_dir("official_layouts_come_back_bit_for_bit") else { return };
    let root = shared.join("golden/partition");
    let mut layouts = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let t = read_safetensors(&dir.join("data.safetensors"));
        for n in [16usize, 32, 64, 128, 256, 512, 1024] {
            let Some(codes) = t.get(&format!("gpscodes_{n}")) else { continue };
            let official: Vec<[f32; 5]> = codes.f32().chunks_exact(5).map(|c| [c[0], c[1], c[2], c[3], c[4]]).collect();
            let mut ours = official.clone();
            calibrate_gaussians(&mut ours, &CalibrateParams::new(256)).unwrap();
            assert_eq!(bits(&ours), bits(&official), "{} N={n}", dir.display());
            layouts += 1;
        }
    }
    assert!(layouts >= 20, "only {layouts} official layouts found under {}", root.display());
}

/// A grey image with blocks of noise at random places and scales, so that Algorithm 1 makes
/// uneven layouts with every region size.
fn textured_grey(rng: &mut SplitMix64, side: usize) -> Vec<f32> {
    let mut grey = vec![0.0f32; side * side];
    for _ in 0..6 {
        let s = 1 + (rng.next_u64() as usize % side);
        let (y0, x0) = (rng.next_u64() as usize % side, rng.next_u64() as usize % side);
        let amp = rng.unit_f32();
        for y in y0..(y0 + s).min(side) {
            for x in x0..(x0 + s).min(side) {
                grey[y * side + x] = (amp * (2.0 * rng.unit_f32() - 1.0)).clamp(-1.0, 1.0);
            }
        }
    }
    grey
}

#[test]
fn our_partitions_come_back_bit_for_bit() {
    let mut rng = SplitMix64::new(7);
    for (side, ns) in [(256usize, &[1usize, 7, 64, 300, 1024][..]), (64, &[1, 13, 64]), (32, &[5, 16])] {
        for _ in 0..3 {
            let grey = textured_grey(&mut rng, side);
            for &n in ns {
                let p = partition_image(&grey, side, side, side, &PartitionParams::new(n), None).unwrap();
                let params = CalibrateParams::new(side);
                let mut g = p.gaussians.clone();
                calibrate_gaussians(&mut g, &params).unwrap();
                assert_eq!(bits(&g), bits(&p.gaussians), "{side}x{side} N={n}");
                for (k, (r, g)) in p.regions.iter().zip(&p.gaussians).enumerate() {
                    assert!(params.is_valid(r), "Algorithm 1 made a region calibration calls invalid: {r:?}");
                    assert_eq!(rect(&snap(g, &params, k).unwrap()), rect(r), "{side}x{side} N={n} region {k}");
                }
                // A real layout is a tiling: the repair finds nothing to move.
                let mut regions = p.regions.clone();
                assert_eq!(repair_duplicates(&mut regions, &params).unwrap(), 0);
            }
        }
    }
}

/// The ranking key of [`brute_force_nearest`]: size distance, width and height exponents, x
/// distance and origin parity, y distance and origin parity.
type NearestKey = (f64, u32, u32, f64, usize, f64, usize);

/// The nearest valid region by brute force: every valid region of the patch, ranked by the size
/// distance in log2 space (ties: smaller width, then smaller height exponent), then by the centre
/// distance on x, then on y (ties: the even origin index).
fn brute_force_nearest(g: &[f32; 5], params: &CalibrateParams) -> (u16, u16, u16, u16) {
    let p = params.patch as f64;
    let lw = (1.5 * p * g[0] as f64 + 1.0).max(1.0).log2();
    let lh = (1.5 * p * g[1] as f64 + 1.0).max(1.0).log2();
    let cx = (g[3] as f64 + 1.0) * (p - 1.0) / 2.0;
    let cy = (g[4] as f64 + 1.0) * (p - 1.0) / 2.0;
    let mut best: Option<(NearestKey, (u16, u16, u16, u16))> = None;
    for a in 0..=params.patch.trailing_zeros() {
        for b in 0..=params.patch.trailing_zeros() {
            let (w, h) = (1usize << a, 1usize << b);
            for y0 in (0..params.patch).step_by(h) {
                for x0 in (0..params.patch).step_by(w) {
                    let r = Region {
                        y0: y0 as u16,
                        y1: (y0 + h - 1) as u16,
                        x0: x0 as u16,
                        x1: (x0 + w - 1) as u16,
                        score: 0.0,
                    };
                    if !params.is_valid(&r) {
                        continue;
                    }
                    let ds = (lw - a as f64).powi(2) + (lh - b as f64).powi(2);
                    let dx = (x0 as f64 + (w as f64 - 1.0) / 2.0 - cx).abs();
                    let dy = (y0 as f64 + (h as f64 - 1.0) / 2.0 - cy).abs();
                    // Odd origin indices lose ties to even ones.
                    let key = (ds, a, b, dx, (x0 / w) % 2, dy, (y0 / h) % 2);
                    if best.as_ref().is_none_or(|(k, _)| key.partial_cmp(k) == Some(std::cmp::Ordering::Less)) {
                        best = Some((key, rect(&r)));
                    }
                }
            }
        }
    }
    best.expect("a patch has at least one valid region").1
}

#[test]
fn the_result_is_the_nearest_valid_region() {
    let mut rng = SplitMix64::new(2026);
    let mut checked = 0;
    for (patch, min_size, count) in [(64, 8, 1500), (32, 2, 1500), (256, 8, 300)] {
        let params = CalibrateParams { patch, min_size };
        for k in 0..count {
            let mut g = random_gaussian(&mut rng);
            if k % 5 == 0 {
                // Centres exactly between two aligned origins and sizes exactly between two
                // powers of two: the tie rules decide.
                let w = 1u32 << (1 + rng.next_u64() % 4);
                g[0] = ((w as f64 - 1.0) / patch as f64 * 2.0 / 3.0) as f32;
                g[1] = g[0];
                g[3] = (((w as f64 * (1 + rng.next_u64() % 3) as f64) - 0.5) / (patch as f64 - 1.0) * 2.0 - 1.0) as f32;
            }
            let ours = rect(&snap(&g, &params, k).unwrap());
            assert_eq!(ours, brute_force_nearest(&g, &params), "patch {patch} min_size {min_size}: {g:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 3300);
}
