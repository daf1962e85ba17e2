//! Finite-difference check of the splat backward (CPU backend) on fresh random inputs: all five
//! Gaussian parameters and the features, including strongly correlated (rho near +-0.9) and
//! strongly anisotropic Gaussians, where the cross terms of spec 2.2 dominate.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::render::SplatDesc;
use gpstoken_tests::conformance::splat::{
    assert_gradients_match, finite_difference_errors, random_case, GaussianRanges,
};
use gpstoken_tests::TestRng;

/// f64 accumulation on the CPU: only the final f32 rounding and the finite-difference error remain.
const TOLERANCE: f64 = 1e-6;

fn check(label: &str, seed: u64, desc: SplatDesc, ranges: GaussianRanges) {
    let backend = CpuBackend::new();
    let case = random_case(&mut TestRng::new(seed), desc, &ranges, Some(1e-4));
    let errors = finite_difference_errors(&backend, &case);
    assert_gradients_match(label, &errors, TOLERANCE);
}

const DESC: SplatDesc = SplatDesc { batch: 2, gaussians: 6, channels: 3, height: 16, width: 13, kappa: 3.0 };

#[test]
fn moderate_gaussians() {
    check("moderate", 1, DESC, GaussianRanges::DEFAULT);
}

#[test]
fn rho_near_plus_minus_0_9() {
    let ranges = GaussianRanges { rho_abs: (0.88, 0.92), anisotropy: 1.5, ..GaussianRanges::DEFAULT };
    check("rho +-0.9", 2, DESC, ranges);
}

#[test]
fn strongly_anisotropic() {
    let ranges = GaussianRanges { sigma: (0.06, 0.25), anisotropy: 8.0, rho_abs: (0.0, 0.5), mean: (-0.9, 0.9) };
    check("anisotropic", 3, DESC, ranges);
}

#[test]
fn anisotropic_and_correlated_with_kappa_5() {
    let ranges = GaussianRanges { sigma: (0.05, 0.2), anisotropy: 6.0, rho_abs: (0.85, 0.93), mean: (-1.0, 1.0) };
    check("anisotropic rho 0.9 kappa 5", 4, SplatDesc { kappa: 5.0, channels: 2, ..DESC }, ranges);
}

#[test]
fn small_gaussians_few_pixels() {
    // A handful of pixels per Gaussian: each pixel's term matters.
    let ranges = GaussianRanges { sigma: (0.03, 0.06), anisotropy: 2.0, rho_abs: (0.0, 0.9), mean: (-0.95, 0.95) };
    check("small", 5, SplatDesc { gaussians: 10, ..DESC }, ranges);
}
