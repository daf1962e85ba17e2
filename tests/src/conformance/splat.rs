//! The backend conformance suite, written once for every [`Backend`].
//!
//! Each `pub fn` taking a backend is one check; [`crate::conformance_suite!`] makes each one a
//! `#[test]` for every backend (the CPU's: `tests/tests/conformance_cpu.rs`). They draw fresh random inputs from [`TestRng`] with small
//! shapes and `batch >= 2`, and compare against the core reference (`gpstoken_core::render`, one
//! image at a time) with a [`Tolerance`]: the CPU backend must give the very same bits, GPU
//! backends get relative tolerances. The gradients are also checked against central finite
//! differences of an independent f64 forward written here.
//!
//! Error measure: [`max_rel_error`] (`max|a-ref| / max|ref|`), the golden README's.

use crate::{max_rel_error, TestRng};
use gpstoken_core::backend::SplatOps;
use gpstoken_core::render::{self, pixel_coord, SplatDesc};

/// How close a backend must be to the references.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Forward vs the core reference, `max_rel_error` per image; `0.0` demands identical bits.
    pub forward: f64,
    /// Backward vs the core reference, `max_rel_error` per image and tensor; `0.0` demands
    /// identical bits.
    pub backward: f64,
    /// Gradients vs central finite differences, `max_rel_error` per parameter group.
    pub finite_difference: f64,
}

/// Ranges of random Gaussians.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussianRanges {
    /// Geometric-mean sigma, uniform in this range.
    pub sigma: (f64, f64),
    /// Largest `sigma_x / sigma_y` (or its inverse), log-uniform up to it; 1 for isotropic.
    pub anisotropy: f64,
    /// `|rho|` uniform in this range, with a random sign.
    pub rho_abs: (f64, f64),
    /// Both mean coordinates uniform in this range (beyond +-1: centred off the canvas).
    pub mean: (f64, f64),
}

impl GaussianRanges {
    /// Moderate Gaussians, some of them partly off the canvas.
    pub const DEFAULT: GaussianRanges =
        GaussianRanges { sigma: (0.04, 0.35), anisotropy: 3.0, rho_abs: (0.0, 0.8), mean: (-1.15, 1.15) };
}

/// One random splat problem: tokens `[B, N, 5+C]` and an upstream gradient `[B, C, H, W]`.
#[derive(Clone, Debug)]
pub struct SplatCase {
    pub desc: SplatDesc,
    pub tokens: Vec<f32>,
    pub grad_out: Vec<f32>,
}

/// Distance from `edge` to the nearest pixel centre of an axis of `size` pixels.
fn distance_to_grid(edge: f64, size: usize) -> f64 {
    (0..size).map(|i| (f64::from(pixel_coord(i, size)) - edge).abs()).fold(f64::INFINITY, f64::min)
}

/// A random case. With `box_margin = Some(m)`, every Gaussian's box edges (`mean +- kappa*sigma`)
/// stay at least `m` away from every pixel centre, so the box test selects the same pixels in
/// f32 and f64 and under small perturbations (needed for finite differences: the box edge is a
/// step that the analytic gradient ignores).
pub fn random_case(rng: &mut TestRng, desc: SplatDesc, ranges: &GaussianRanges, box_margin: Option<f64>) -> SplatCase {
    let mut tokens = Vec::with_capacity(desc.tokens_len());
    for _ in 0..desc.batch * desc.gaussians {
        let params = loop {
            let sigma = rng.uniform(ranges.sigma.0, ranges.sigma.1);
            let ratio = rng.uniform(-ranges.anisotropy.ln(), ranges.anisotropy.ln()).exp().sqrt();
            let rho_sign = if rng.uniform(0.0, 1.0) < 0.5 { -1.0 } else { 1.0 };
            let p = [
                (sigma * ratio) as f32,
                (sigma / ratio) as f32,
                (rho_sign * rng.uniform(ranges.rho_abs.0, ranges.rho_abs.1)) as f32,
                rng.uniform(ranges.mean.0, ranges.mean.1) as f32,
                rng.uniform(ranges.mean.0, ranges.mean.1) as f32,
            ];
            let Some(margin) = box_margin else { break p };
            let kappa = f64::from(desc.kappa);
            let edges = [
                (f64::from(p[3]) - kappa * f64::from(p[0]), desc.width),
                (f64::from(p[3]) + kappa * f64::from(p[0]), desc.width),
                (f64::from(p[4]) - kappa * f64::from(p[1]), desc.height),
                (f64::from(p[4]) + kappa * f64::from(p[1]), desc.height),
            ];
            if edges.iter().all(|&(e, size)| distance_to_grid(e, size) >= margin) {
                break p;
            }
        };
        tokens.extend_from_slice(&params);
        tokens.extend((0..desc.channels).map(|_| rng.normal() as f32));
    }
    let grad_out = (0..desc.image_len()).map(|_| rng.normal() as f32).collect();
    SplatCase { desc, tokens, grad_out }
}

/// `max_rel_error` on f32 slices.
fn rel_error(actual: &[f32], reference: &[f32]) -> f64 {
    let a: Vec<f64> = actual.iter().map(|&v| f64::from(v)).collect();
    let r: Vec<f64> = reference.iter().map(|&v| f64::from(v)).collect();
    max_rel_error(&a, &r)
}

/// Asserts `actual` is within `tol` of `reference` (identical bits when `tol == 0`).
fn assert_close(what: &str, actual: &[f32], reference: &[f32], tol: f64) {
    assert_eq!(actual.len(), reference.len(), "{what}: length");
    if tol == 0.0 {
        if let Some(i) = (0..actual.len()).find(|&i| actual[i].to_bits() != reference[i].to_bits()) {
            panic!("{what}: value {i} is {} but the reference is {} (bit-exact required)", actual[i], reference[i]);
        }
    } else {
        let err = rel_error(actual, reference);
        assert!(err <= tol, "{what}: max_rel_error {err:.3e} > {tol:.1e}");
    }
}

/// The shapes every suite runs on: small, batch >= 2, odd sizes, C = 1 and C > 1.
fn suite_descs() -> [SplatDesc; 3] {
    [
        SplatDesc { batch: 2, gaussians: 5, channels: 1, height: 7, width: 9, kappa: 3.0 },
        SplatDesc { batch: 3, gaussians: 24, channels: 4, height: 19, width: 26, kappa: 3.0 },
        SplatDesc { batch: 2, gaussians: 40, channels: 9, height: 33, width: 20, kappa: 5.0 },
    ]
}

/// Uploads the case, runs the backend forward (into a buffer full of garbage, which it must
/// overwrite) and downloads the result.
pub fn backend_forward<B: SplatOps>(backend: &B, case: &SplatCase) -> Vec<f32> {
    let tokens = backend.upload(&case.tokens).expect("upload tokens");
    let mut out = backend.upload(&vec![f32::NAN; case.desc.image_len()]).expect("upload output");
    backend.splat_forward(&case.desc, &tokens, &mut out).expect("splat_forward");
    let mut host = vec![0.0; case.desc.image_len()];
    backend.download(&out, &mut host).expect("download");
    host
}

/// Backend backward (into a garbage-filled gradient buffer), downloaded.
pub fn backend_backward<B: SplatOps>(backend: &B, case: &SplatCase) -> Vec<f32> {
    let tokens = backend.upload(&case.tokens).expect("upload tokens");
    let grad_out = backend.upload(&case.grad_out).expect("upload grad_out");
    let mut grad = backend.upload(&vec![f32::NAN; case.desc.tokens_len()]).expect("upload grad");
    backend.splat_backward(&case.desc, &tokens, &grad_out, &mut grad).expect("splat_backward");
    let mut host = vec![0.0; case.desc.tokens_len()];
    backend.download(&grad, &mut host).expect("download");
    host
}

/// Splat forward: the backend's `[B, C, H, W]` equals the core reference image by image.
pub fn splat_forward_matches_reference<B: SplatOps>(backend: &B, tol: Tolerance) {
    let mut rng = TestRng::new(0x5eed_00f0);
    for desc in suite_descs() {
        let case = random_case(&mut rng, desc, &GaussianRanges::DEFAULT, None);
        let ours = backend_forward(backend, &case);
        let (tok, img) = (desc.gaussians * desc.token_stride(), desc.channels * desc.height * desc.width);
        for b in 0..desc.batch {
            let mut want = vec![0.0; img];
            render::splat_forward(&desc, &case.tokens[b * tok..(b + 1) * tok], &mut want).unwrap();
            assert!(want.iter().any(|&v| v != 0.0), "degenerate test input");
            assert_close(
                &format!("{} splat_forward {desc:?} image {b}", backend.name()),
                &ours[b * img..(b + 1) * img],
                &want,
                tol.forward,
            );
        }
    }
}

/// Splat backward: the backend's `[B, N, 5+C]` gradients equal the core reference, tensor by
/// tensor (sigmas+rho, means, features) and image by image.
pub fn splat_backward_matches_reference<B: SplatOps>(backend: &B, tol: Tolerance) {
    let mut rng = TestRng::new(0x5eed_00ba);
    for desc in suite_descs() {
        let case = random_case(&mut rng, desc, &GaussianRanges::DEFAULT, None);
        let ours = backend_backward(backend, &case);
        let stride = desc.token_stride();
        let (tok, img) = (desc.gaussians * stride, desc.channels * desc.height * desc.width);
        for b in 0..desc.batch {
            let mut want = vec![0.0; tok];
            let grad_out = &case.grad_out[b * img..(b + 1) * img];
            render::splat_backward(&desc, &case.tokens[b * tok..(b + 1) * tok], grad_out, &mut want).unwrap();
            let got = &ours[b * tok..(b + 1) * tok];
            for (name, cols) in [("sigmas/rho", 0..3), ("means", 3..5), ("features", 5..stride)] {
                let pick = |v: &[f32]| -> Vec<f32> {
                    v.chunks_exact(stride).flat_map(|t| t[cols.clone()].iter().copied()).collect()
                };
                assert_close(
                    &format!("{} splat_backward {name} {desc:?} image {b}", backend.name()),
                    &pick(got),
                    &pick(&want),
                    tol.backward,
                );
            }
        }
    }
}

/// `L_s = sum over pixels and channels of G * v_s * col_s` for ONE Gaussian, in f64: the part
/// of `L = sum(G * F)` that depends on the Gaussian's parameters (`F` is a sum over Gaussians).
/// An independent f64 transcription of spec 2.1 on the f32 pixel grid.
fn gaussian_loss_f64(desc: &SplatDesc, params: &[f64], grad_out: &[f32]) -> f64 {
    let (h, w) = (desc.height, desc.width);
    let (sx, sy, rho, x, y) = (params[0], params[1], params[2], params[3], params[4]);
    let kappa = f64::from(desc.kappa);
    let mut loss = 0.0;
    for i in 0..h {
        let dy = f64::from(pixel_coord(i, h)) - y;
        for j in 0..w {
            let dx = f64::from(pixel_coord(j, w)) - x;
            if dx.abs() > kappa * sx || dy.abs() > kappa * sy {
                continue;
            }
            let q = dx * dx / (sx * sx) - 2.0 * rho * dx * dy / (sx * sy) + dy * dy / (sy * sy);
            let v = (-q / (2.0 * (1.0 - rho * rho))).exp();
            for (c, &col) in params[5..].iter().enumerate() {
                loss += f64::from(grad_out[(c * h + i) * w + j]) * v * col;
            }
        }
    }
    loss
}

/// Errors of a finite-difference check, per parameter group (`max_rel_error` over all images
/// and Gaussians).
#[derive(Clone, Copy, Debug)]
pub struct GradientErrors {
    /// `[sigma_x, sigma_y, rho, x, y, features]`.
    pub groups: [f64; 6],
    /// Largest finite-difference magnitude per group (shows the check is not vacuous).
    pub scale: [f64; 6],
}

impl GradientErrors {
    pub const NAMES: [&'static str; 6] = ["sigma_x", "sigma_y", "rho", "x", "y", "features"];
    pub fn max(&self) -> f64 {
        crate::nan_max(self.groups)
    }
}

/// Central finite differences (step `1e-6`, f64) of `L = sum(grad_out * F)` vs the backend's
/// gradients, for every parameter of every token of `case`. Use a case made with a box margin
/// (see [`random_case`]).
pub fn finite_difference_errors<B: SplatOps>(backend: &B, case: &SplatCase) -> GradientErrors {
    const STEP: f64 = 1e-6;
    let desc = case.desc;
    let stride = desc.token_stride();
    let img = desc.channels * desc.height * desc.width;
    let analytic = backend_backward(backend, case);
    let mut ours: [Vec<f64>; 6] = Default::default();
    let mut fd: [Vec<f64>; 6] = Default::default();
    for (index, token) in case.tokens.chunks_exact(stride).enumerate() {
        let b = index / desc.gaussians;
        let grad_out = &case.grad_out[b * img..(b + 1) * img];
        let mut params: Vec<f64> = token.iter().map(|&v| f64::from(v)).collect();
        for p in 0..stride {
            let base = params[p];
            params[p] = base + STEP;
            let plus = gaussian_loss_f64(&desc, &params, grad_out);
            params[p] = base - STEP;
            let minus = gaussian_loss_f64(&desc, &params, grad_out);
            params[p] = base;
            let group = p.min(5);
            fd[group].push((plus - minus) / (2.0 * STEP));
            ours[group].push(f64::from(analytic[index * stride + p]));
        }
    }
    let mut errors = GradientErrors { groups: [0.0; 6], scale: [0.0; 6] };
    for g in 0..6 {
        errors.groups[g] = max_rel_error(&ours[g], &fd[g]);
        errors.scale[g] = crate::nan_max(fd[g].iter().map(|v| v.abs()));
    }
    errors
}

/// Asserts a finite-difference check within `tol` and not vacuous; prints the errors.
pub fn assert_gradients_match(label: &str, errors: &GradientErrors, tol: f64) {
    for (g, name) in GradientErrors::NAMES.iter().enumerate() {
        println!("{label}: d/d{name} max_rel_error {:.2e} (max |grad| {:.3e})", errors.groups[g], errors.scale[g]);
        assert!(errors.scale[g] > 0.0, "{label}: every {name} gradient is zero, the check is vacuous");
        assert!(errors.groups[g] <= tol, "{label}: d/d{name} max_rel_error {:.3e} > {tol:.1e}", errors.groups[g]);
    }
}

/// Splat backward vs central finite differences on fresh random inputs (moderate Gaussians, box
/// edges kept away from pixel centres).
pub fn splat_gradients_match_finite_differences<B: SplatOps>(backend: &B, tol: Tolerance) {
    let mut rng = TestRng::new(0x5eed_00fd);
    let desc = SplatDesc { batch: 2, gaussians: 6, channels: 3, height: 15, width: 12, kappa: 3.0 };
    let case = random_case(&mut rng, desc, &GaussianRanges::DEFAULT, Some(1e-4));
    let errors = finite_difference_errors(backend, &case);
    assert_gradients_match(&format!("{} finite differences", backend.name()), &errors, tol.finite_difference);
}

/// Every splat op returns an error (never panics) for buffers that do not fit the descriptor,
/// and buffer copies check their lengths.
pub fn splat_rejects_bad_shapes<B: SplatOps>(backend: &B) {
    let desc = SplatDesc { batch: 2, gaussians: 3, channels: 2, height: 5, width: 4, kappa: 3.0 };
    let zeros = |len: usize| backend.zeros(len).expect("zeros");
    let tokens = backend.upload(&[0.2f32; 2 * 3 * 7]).expect("upload");
    let image = desc.image_len();
    let mut out = zeros(image);
    backend.splat_forward(&desc, &tokens, &mut out).expect("well-shaped forward");
    let mut grad = zeros(desc.tokens_len());
    backend.splat_backward(&desc, &tokens, &out, &mut grad).expect("well-shaped backward");

    let short_tokens = zeros(desc.tokens_len() - 1);
    assert!(backend.splat_forward(&desc, &short_tokens, &mut out).is_err(), "short tokens");
    assert!(backend.splat_forward(&desc, &tokens, &mut zeros(image + 1)).is_err(), "long output");
    let one_image = SplatDesc { batch: 1, ..desc };
    assert!(backend.splat_forward(&one_image, &tokens, &mut out).is_err(), "batch mismatch");
    for (height, width) in [(1, 4), (5, 1), (0, 0)] {
        let tiny = SplatDesc { height, width, ..desc };
        let mut tiny_out = zeros(tiny.image_len());
        assert!(backend.splat_forward(&tiny, &tokens, &mut tiny_out).is_err(), "canvas {height}x{width}");
        let mut g = zeros(desc.tokens_len());
        assert!(backend.splat_backward(&tiny, &tokens, &tiny_out, &mut g).is_err(), "canvas {height}x{width}");
    }
    assert!(backend.splat_backward(&desc, &short_tokens, &out, &mut grad).is_err(), "short tokens");
    assert!(backend.splat_backward(&desc, &tokens, &zeros(image - 1), &mut grad).is_err(), "short grad_out");
    assert!(backend.splat_backward(&desc, &tokens, &out, &mut zeros(desc.tokens_len() + 1)).is_err(), "long grad");

    let mut buf = zeros(4);
    assert!(backend.write(&mut buf, &[1.0; 3]).is_err(), "write of the wrong length");
    assert!(backend.download(&buf, &mut [0.0; 5]).is_err(), "download of the wrong length");
    assert_eq!(backend.len(&buf), 4);
}

/// The shape of the hard finite-difference cases ([`splat_gradients_on_hard_gaussians`]).
const HARD_DESC: SplatDesc = SplatDesc { batch: 2, gaussians: 6, channels: 3, height: 16, width: 13, kappa: 3.0 };

/// Finite differences of all five Gaussian parameters and the features on fresh random inputs
/// where the cross terms of spec 2.2 dominate: moderate, strongly correlated (rho near +-0.9),
/// strongly anisotropic, both at kappa 5, and small Gaussians covering a handful of pixels.
pub fn splat_gradients_on_hard_gaussians<B: SplatOps>(backend: &B, tol: Tolerance) {
    let d = GaussianRanges::DEFAULT;
    let cases = [
        ("moderate", HARD_DESC, d),
        ("rho +-0.9", HARD_DESC, GaussianRanges { rho_abs: (0.88, 0.92), anisotropy: 1.5, ..d }),
        (
            "anisotropic",
            HARD_DESC,
            GaussianRanges { sigma: (0.06, 0.25), anisotropy: 8.0, rho_abs: (0.0, 0.5), mean: (-0.9, 0.9) },
        ),
        (
            "anisotropic rho 0.9 kappa 5",
            SplatDesc { kappa: 5.0, channels: 2, ..HARD_DESC },
            GaussianRanges { sigma: (0.05, 0.2), anisotropy: 6.0, rho_abs: (0.85, 0.93), mean: (-1.0, 1.0) },
        ),
        (
            "small",
            SplatDesc { gaussians: 10, ..HARD_DESC },
            GaussianRanges { sigma: (0.03, 0.06), anisotropy: 2.0, rho_abs: (0.0, 0.9), mean: (-0.95, 0.95) },
        ),
    ];
    for (seed, (label, desc, ranges)) in (1..).zip(cases) {
        let case = random_case(&mut TestRng::new(seed), desc, &ranges, Some(1e-4));
        assert_gradients_match(label, &finite_difference_errors(backend, &case), tol.finite_difference);
    }
}
