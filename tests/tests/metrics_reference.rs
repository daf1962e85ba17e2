//! PSNR and SSIM against an independent NumPy implementation, plus analytic properties.
//!
//! The reference values below were produced by the script in `docs/METRICS.md`
//! ("Reference script"), run with Python 3 and NumPy 2.4 (`python3 ssim_reference.py`). Its
//! SSIM is written differently from ours on purpose: a literal 2-D 11x11 window over
//! `sliding_window_view` instead of our separable ring buffer. The test images are integer
//! formulas (`k` in 0..=1000, value `f32(k / 1000)`), so both languages build them
//! bit-identically and nothing is stored. scikit-image's `structural_similarity` with
//! `gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1` agrees with the
//! script to 7e-16 on every case (see docs/METRICS.md).

use gpstoken_core::metrics::{mse, psnr, ssim};
use gpstoken_tests::TestRng;

/// The script's `hash32`: a 32-bit integer hash with wrapping arithmetic.
fn hash32(seed: u32, c: u32, y: u32, x: u32) -> u32 {
    let mut v = seed
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(c.wrapping_mul(0x85EB_CA77))
        .wrapping_add(y.wrapping_mul(0xC2B2_AE3D))
        .wrapping_add(x.wrapping_mul(0x27D4_EB2F));
    v ^= v >> 15;
    v = v.wrapping_mul(0x2C1B_3C6D);
    v ^= v >> 12;
    v = v.wrapping_mul(0x297A_2D39);
    v ^ (v >> 15)
}

type Shape = (usize, usize, usize);

/// Builds the integer image `f(c, y, x)` in planar order.
fn build(shape: Shape, f: impl Fn(i64, i64, i64) -> i64) -> Vec<i64> {
    let (c, h, w) = shape;
    let mut out = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                out.push(f(ch as i64, y as i64, x as i64));
            }
        }
    }
    out
}

/// Two triangle waves; every intermediate is non-negative where the script uses floor division,
/// and `rem_euclid` matches Python's `%` for the possibly negative argument.
fn smooth_at(c: i64, y: i64, x: i64) -> i64 {
    let t1 = ((7 * x + 3 * y * (c + 1) + 11 * c) % 256 - 128).abs() * 125 / 16;
    let t2 = ((5 * y - 2 * x + 37 * c).rem_euclid(96) - 48).abs() * 1000 / 48;
    (2 * t1 + t2) / 3
}

fn smooth(shape: Shape) -> Vec<i64> {
    build(shape, smooth_at)
}

fn noisy(shape: Shape) -> Vec<i64> {
    build(shape, |c, y, x| {
        let n = i64::from(hash32(1, c as u32, y as u32, x as u32) % 201);
        (smooth_at(c, y, x) + n - 100).clamp(0, 1000)
    })
}

fn affine(shape: Shape) -> Vec<i64> {
    build(shape, |c, y, x| smooth_at(c, y, x) * 3 / 4 + 150)
}

fn noise(shape: Shape, seed: u32) -> Vec<i64> {
    build(shape, |c, y, x| i64::from(hash32(seed, c as u32, y as u32, x as u32) % 1001))
}

/// `f32(k / 1000)`: one rounding of the correctly rounded f64 quotient, as in NumPy.
fn to_image(k: &[i64]) -> Vec<f32> {
    k.iter().map(|&k| (k as f64 / 1000.0) as f32).collect()
}

struct Case {
    name: &'static str,
    shape: Shape,
    a: Vec<i64>,
    b: Vec<i64>,
    ssim: f64,
    psnr: f64,
}

/// The script's `CASES`, with its printed results (`repr`, 16-17 significant digits).
fn cases() -> Vec<Case> {
    let s1 = (3, 24, 31);
    let s2 = (1, 11, 11);
    let s3 = (2, 40, 13);
    let s4 = (3, 64, 64);
    let s5 = (3, 256, 256);
    vec![
        Case {
            name: "smooth_vs_noisy",
            shape: s1,
            a: smooth(s1),
            b: noisy(s1),
            ssim: 0.7996898652140634,
            psnr: 24.80234026760654,
        },
        Case {
            name: "smooth_vs_affine",
            shape: s1,
            a: smooth(s1),
            b: affine(s1),
            ssim: 0.9427521635161491,
            psnr: 24.566535436264537,
        },
        Case {
            name: "noise_vs_noise_min",
            shape: s2,
            a: noise(s2, 2),
            b: noise(s2, 3),
            ssim: -0.334240997962059,
            psnr: 7.681459458035368,
        },
        Case {
            name: "smooth_vs_noisy_tall",
            shape: s3,
            a: smooth(s3),
            b: noisy(s3),
            ssim: 0.7863757977081401,
            psnr: 24.76563079291168,
        },
        Case {
            name: "smooth_vs_noise",
            shape: s4,
            a: smooth(s4),
            b: noise(s4, 2),
            ssim: 0.010975302873908762,
            psnr: 8.86847183600596,
        },
        Case {
            name: "cli_size",
            shape: s5,
            a: noisy(s5),
            b: affine(s5),
            ssim: 0.7280458741495778,
            psnr: 21.682922173352477,
        },
    ]
}

fn rel(actual: f64, expected: f64) -> f64 {
    (actual - expected).abs() / expected.abs()
}

#[test]
fn image_generators_match_the_script() {
    // Spot values printed by the script's functions (e.g. `smooth((1, 1, 3)).ravel()`), so a
    // mismatch in the generators is reported as such rather than as a metric disagreement.
    assert_eq!(hash32(2, 1, 2, 3), 2_027_033_472);
    assert_eq!(smooth((1, 1, 3)), [1000, 949, 898]);
    assert_eq!(noise((1, 1, 3), 2), [632, 20, 803]);
    assert_eq!(noisy((2, 2, 3))[6..], [670, 716, 638, 632, 505, 618]);
}

#[test]
fn psnr_and_ssim_match_numpy() {
    let mut worst = (0.0f64, 0.0f64);
    for case in cases() {
        let (c, h, w) = case.shape;
        let (a, b) = (to_image(&case.a), to_image(&case.b));
        let s = ssim(&a, &b, c, h, w).unwrap();
        let p = psnr(&a, &b);
        let (es, ep) = (rel(s, case.ssim), rel(p, case.psnr));
        println!("{:22} ssim {s:.16} (rel err {es:.1e})  psnr {p:.14} (rel err {ep:.1e})", case.name);
        assert!(es < 1e-9, "{}: ssim {s} vs NumPy {}", case.name, case.ssim);
        assert!(ep < 1e-9, "{}: psnr {p} vs NumPy {}", case.name, case.psnr);
        worst = (worst.0.max(es), worst.1.max(ep));
    }
    println!("worst relative error: ssim {:.1e}, psnr {:.1e}", worst.0, worst.1);
}

fn random_image(rng: &mut TestRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(0.0, 1.0) as f32).collect()
}

#[test]
fn ssim_of_an_image_with_itself_is_one() {
    let mut rng = TestRng::new(7);
    for (c, h, w) in [(1, 11, 11), (3, 32, 45), (2, 50, 17)] {
        let a = random_image(&mut rng, c * h * w);
        // Identical inputs make both SSIM factors exactly (x + C)/(x + C).
        assert_eq!(ssim(&a, &a, c, h, w).unwrap(), 1.0);
    }
}

#[test]
fn metrics_are_symmetric() {
    let mut rng = TestRng::new(8);
    let (c, h, w) = (3, 30, 41);
    let a = random_image(&mut rng, c * h * w);
    let b: Vec<f32> = a.iter().map(|&v| (v + 0.2 * rng.normal() as f32).clamp(0.0, 1.0)).collect();
    let ab = ssim(&a, &b, c, h, w).unwrap();
    let ba = ssim(&b, &a, c, h, w).unwrap();
    // Only the rounding of w*a*b versus w*b*a differs.
    assert!((ab - ba).abs() < 1e-14, "{ab} vs {ba}");
    assert!(ab < 0.9 && ab > -1.0, "{ab}");
    assert_eq!(psnr(&a, &b), psnr(&b, &a));
}

#[test]
fn psnr_of_a_constant_offset_is_analytic() {
    let mut rng = TestRng::new(9);
    // Values on a 1/1024 grid in [0, 0.5] plus these offsets are exact in f32, so every
    // difference is exactly d, MSE = d^2 and PSNR = -20 log10 |d|.
    let a: Vec<f32> = (0..3 * 64 * 64).map(|_| (rng.uniform(0.0, 512.0).floor() / 1024.0) as f32).collect();
    for d in [0.375f32, 0.0625, 3.0 / 1024.0, -0.25] {
        let b: Vec<f32> = a.iter().map(|&v| v + d).collect();
        let expected = -20.0 * f64::from(d).abs().log10();
        let got = psnr(&b, &a);
        assert!((got - expected).abs() < 1e-12 * expected, "d = {d}: {got} vs {expected}");
        assert_eq!(mse(&a, &b), f64::from(d) * f64::from(d));
    }
    assert_eq!(psnr(&a, &a), f64::INFINITY);
}

#[test]
fn ssim_falls_as_noise_grows() {
    let mut rng = TestRng::new(10);
    let (c, h, w) = (3, 48, 48);
    let clean = to_image(&smooth((c, h, w)));
    let noise: Vec<f64> = (0..c * h * w).map(|_| rng.normal()).collect();
    let mut last = 1.0;
    for level in [0.01, 0.03, 0.1, 0.3] {
        let noisy: Vec<f32> =
            clean.iter().zip(&noise).map(|(&v, &n)| (f64::from(v) + level * n).clamp(0.0, 1.0) as f32).collect();
        let s = ssim(&clean, &noisy, c, h, w).unwrap();
        assert!(s < last, "noise {level}: ssim {s} not below {last}");
        last = s;
    }
}

#[test]
fn ssim_at_cli_size_is_fast() {
    let mut rng = TestRng::new(11);
    let n = 3 * 256 * 256;
    let a = random_image(&mut rng, n);
    let b = random_image(&mut rng, n);
    let start = std::time::Instant::now();
    let s = ssim(&a, &b, 3, 256, 256).unwrap();
    let elapsed = start.elapsed();
    println!("ssim on 3x256x256: {elapsed:?} (value {s})");
    // The budget is "well under 100 ms"; the bound is loose so a loaded machine does not fail it,
    // but a 121-tap or allocating implementation in a debug build would.
    assert!(elapsed.as_millis() < 1000, "{elapsed:?}");
    assert!(s.abs() < 0.05, "independent noise is uncorrelated: {s}");
}
