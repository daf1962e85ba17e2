//! Post-processing of generated latents (spec 9.7): tokens → latents → tokens round trips, the
//! clamps, the `+ g_init` of the texture model, and layout calibration (Algorithm 2).

use gpstoken_core::calibrate::CalibrateParams;
use gpstoken_core::model::sit::postprocess::{residual_rows, RHO_MAX, SIGMA_MAX, SIGMA_MIN};
use gpstoken_core::model::sit::{latents_to_layouts, latents_to_tokens, tokens_to_latents, LatentStats};
use gpstoken_core::rng::SplitMix64;

/// `b` samples of `n` tokens with `c` channels, geometry inside the clamp ranges.
fn rows(b: usize, n: usize, c: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..b * n * c)
        .map(|i| match i % c {
            0 | 1 => 0.01 + 0.5 * r.unit_f32(),
            2 => 1.8 * r.unit_f32() - 0.9,
            _ => 4.0 * r.unit_f32() - 2.0,
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    gpstoken_tests::max_abs_diff(a, b)
}

#[test]
fn tokens_to_latents_to_tokens_round_trips_with_and_without_g_init() {
    let (b, n, c) = (3, 8, 13);
    let tokens = rows(b, n, c, 1);
    let g_init = rows(b, n, 5, 2);
    for g in [None, Some(g_init.as_slice())] {
        let stats = LatentStats::from_token_rows(&residual_rows(&tokens, c, g), c).unwrap();
        let z = tokens_to_latents(&stats, &tokens, n, g).unwrap();
        // The latents are normalised: mean 0 per channel.
        let mean0: f32 = (0..b).map(|s| z[s * c * n..s * c * n + n].iter().sum::<f32>()).sum::<f32>() / (b * n) as f32;
        assert!(mean0.abs() < 1e-4, "channel 0 mean {mean0}");
        let back = latents_to_tokens(&stats, &z, n, g).unwrap();
        assert!(max_diff(&back, &tokens) < 1e-5, "round trip error {}", max_diff(&back, &tokens));
    }
}

#[test]
fn the_texture_geometry_is_a_residual_around_g_init_and_is_clamped() {
    let (n, c) = (4, 6);
    let stats = LatentStats { mean: vec![0.0; c], std: vec![1.0; c] };
    // Latents [1, C, N, 1]: channel-major.
    let mut z = vec![0.0f32; c * n];
    z[0] = -5.0; // σx of token 0 far below 0 → clamped to SIGMA_MIN after + g_init
    z[n] = 5.0; // σy of token 0 far above 1 → SIGMA_MAX
    z[2 * n] = 3.0; // ρ → RHO_MAX
    z[3 * n + 1] = 0.25; // x of token 1: residual added to g_init
    let g_init: Vec<f32> = (0..n).flat_map(|_| [0.1, 0.1, 0.0, 0.5, -0.5]).collect();
    let t = latents_to_tokens(&stats, &z, n, Some(&g_init)).unwrap();
    assert_eq!(&t[..3], &[SIGMA_MIN, SIGMA_MAX, RHO_MAX]);
    assert_eq!(t[c + 3], 0.75);
    assert_eq!(t[c + 4], -0.5);
    // Without g_init the same latents are absolute values.
    let t = latents_to_tokens(&stats, &z, n, None).unwrap();
    assert_eq!(t[c + 3], 0.25);
    // Shapes that do not fit are errors, not panics.
    assert!(latents_to_tokens(&stats, &z[..c * n - 1], n, None).is_err());
    assert!(latents_to_tokens(&stats, &z, n, Some(&g_init[..5])).is_err());
}

#[test]
fn generated_layouts_are_calibrated_to_layouts_algorithm_1_can_make() {
    let n = 4;
    let stats = LatentStats { mean: vec![0.0; 5], std: vec![1.0; 5] };
    // Slightly off valid Gaussians of a 64-pixel patch: σ = (side−1)/64·2/3 for sides 32, 16.
    let near = [
        [0.33, 0.32, 0.05, -0.5, -0.5],
        [0.16, 0.15, -0.1, 0.25, 0.27],
        [0.3, 0.33, 0.0, 0.5, 0.5],
        [0.15, 0.3, 0.2, -0.4, 0.6],
    ];
    let mut z = vec![0.0f32; 5 * n];
    for (k, g) in near.iter().enumerate() {
        for ch in 0..5 {
            z[ch * n + k] = g[ch];
        }
    }
    let params = CalibrateParams::new(64);
    let layout = latents_to_layouts(&stats, &z, n, &params, false).unwrap();
    for g in layout.chunks_exact(5) {
        assert_eq!(g[2], 0.0, "ρ is 0 after calibration");
        let side = g[0] * 64.0 * 1.5 + 1.0;
        assert!((side.log2() - side.log2().round()).abs() < 1e-3, "side {side} is not a power of two");
        let g5 = [g[0], g[1], g[2], g[3], g[4]];
        let mut again = [g5];
        gpstoken_core::calibrate::calibrate_gaussians(&mut again, &params).unwrap();
        assert_eq!(again[0], g5, "calibration is idempotent on its output");
    }
    // Two tokens snapping to one rectangle are moved apart by the repair, in each sample alone.
    let twice: Vec<f32> = (0..2).flat_map(|_| z.clone()).collect();
    let mut dup = twice.clone();
    for ch in 0..5 {
        dup[ch * n + 1] = dup[ch * n];
        dup[5 * n + ch * n + 1] = dup[5 * n + ch * n];
    }
    let plain = latents_to_layouts(&stats, &dup, n, &params, false).unwrap();
    assert_eq!(plain[..5], plain[5..10]);
    let repaired = latents_to_layouts(&stats, &dup, n, &params, true).unwrap();
    assert_ne!(repaired[..5], repaired[5..10]);
    assert_eq!(repaired[..5], plain[..5], "the first keeps its rectangle");
    assert_eq!(repaired[..4 * 5], repaired[4 * 5..], "samples are repaired independently, identically");
    // Stats of another channel count, and NaN latents, are errors.
    let wrong = LatentStats { mean: vec![0.0; 6], std: vec![1.0; 6] };
    assert!(latents_to_layouts(&wrong, &z, n, &params, false).is_err());
    z[0] = f32::NAN;
    assert!(latents_to_layouts(&stats, &z, n, &params, false).is_err());
}

#[test]
fn constant_channels_get_unit_std_only_when_asked() {
    let rows: Vec<f32> = (0..8).flat_map(|i| [i as f32, 0.0]).collect();
    assert!(LatentStats::from_token_rows(&rows, 2).is_err());
    let s = LatentStats::from_token_rows_unit_if_constant(&rows, 2).unwrap();
    assert_eq!(s.std[1], 1.0);
    assert_eq!(s.mean[1], 0.0);
    assert!(s.std[0] > 2.0);
}
