//! Conformance of [`GaussianOps`]: the refinement reparameterisation (spec 1) against f64,
//! gradients (offsets, features, initial Gaussians) against finite differences; the multi-patch
//! merge (spec 2.4) against f64 and its gradient against finite differences.

use super::common::dot;
use super::common::{assert_close, download, finite_difference, garbage, normal_vec, to_f64, upload};
use super::tensor::DenseTolerance;
use crate::TestRng;
use gpstoken_core::backend::{GaussianOps, MergeDesc, ReparamDesc};

/// The tokens in f64: `[sigmoid(logit(g) + δ) (2), 2 sigmoid(logit((v+1)/2) + δ) - 1 (3), f]`.
pub fn reparam_f64(d: &ReparamDesc, g: &[f64], delta: &[f64], f: &[f64]) -> Vec<f64> {
    let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
    let mut out = Vec::with_capacity(d.rows * (5 + d.channels));
    for r in 0..d.rows {
        for c in 0..5 {
            let (gv, dv) = (g[r * 5 + c], delta[r * 5 + c]);
            out.push(if c < 2 {
                sig(-(1.0 / gv - 1.0).ln() + dv)
            } else {
                2.0 * sig(-(2.0 / (1.0 + gv) - 1.0).ln() + dv) - 1.0
            });
        }
        out.extend_from_slice(&f[r * d.channels..(r + 1) * d.channels]);
    }
    out
}

/// Random valid initial Gaussians: σ in (0.05, 0.95), ρ, x, y in (-0.9, 0.9).
fn random_g_init(rng: &mut TestRng, rows: usize) -> Vec<f32> {
    (0..rows * 5).map(|i| if i % 5 < 2 { rng.uniform(0.05, 0.95) } else { rng.uniform(-0.9, 0.9) } as f32).collect()
}

const DESCS: [ReparamDesc; 3] = [
    ReparamDesc { rows: 7, channels: 3 },
    ReparamDesc { rows: 2, channels: 0 },
    ReparamDesc { rows: 2500, channels: 16 },
];

/// Forward against f64 (Gaussian columns and features separately).
pub fn reparam_forward_matches_reference<B: GaussianOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x9a55_0001);
    for d in DESCS {
        let g = random_g_init(&mut rng, d.rows);
        let delta = normal_vec(&mut rng, d.rows * 5, 0.5);
        let f = normal_vec(&mut rng, d.rows * d.channels, 1.0);
        let mut t = garbage(backend, d.rows * (5 + d.channels));
        backend
            .gaussian_reparam_forward(&d, &upload(backend, &g), &upload(backend, &delta), &upload(backend, &f), &mut t)
            .unwrap();
        let got = download(backend, &t);
        let want = reparam_f64(&d, &to_f64(&g), &to_f64(&delta), &to_f64(&f));
        let stride = 5 + d.channels;
        let pick = |v: &[f32], cols: std::ops::Range<usize>| -> Vec<f32> {
            v.chunks_exact(stride).flat_map(|r| r[cols.clone()].to_vec()).collect()
        };
        let pick64 = |v: &[f64], cols: std::ops::Range<usize>| -> Vec<f64> {
            v.chunks_exact(stride).flat_map(|r| r[cols.clone()].to_vec()).collect()
        };
        let name = backend.name();
        assert_close(&format!("{name} reparam sigmas {d:?}"), &pick(&got, 0..2), &pick64(&want, 0..2), tol.forward);
        assert_close(&format!("{name} reparam rho/x/y {d:?}"), &pick(&got, 2..5), &pick64(&want, 2..5), tol.forward);
        if d.channels > 0 {
            let (a, b) = (pick(&got, 5..stride), pick64(&want, 5..stride));
            assert!(a.iter().zip(&b).all(|(a, b)| f64::from(*a) == *b), "{name} reparam features are copies");
        }
        // δ = 0 gives back the initial Gaussians up to f32 round-off.
        let mut t0 = garbage(backend, d.rows * (5 + d.channels));
        let zeros = upload(backend, &vec![0.0; d.rows * 5]);
        backend.gaussian_reparam_forward(&d, &upload(backend, &g), &zeros, &upload(backend, &f), &mut t0).unwrap();
        let t0 = download(backend, &t0);
        let back: Vec<f32> = t0.chunks_exact(stride).flat_map(|r| r[..5].to_vec()).collect();
        let err = crate::max_abs_diff(&back, &g);
        assert!(err < 1e-6, "{name} reparam with zero offsets: max error {err}");
    }
}

/// `ddelta`, `dfeatures`, `dg_init` against finite differences of `L = Σ dt·tokens`.
pub fn reparam_gradients_match_finite_differences<B: GaussianOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x9a55_0002);
    for d in &DESCS[..2] {
        let g = random_g_init(&mut rng, d.rows);
        let delta = normal_vec(&mut rng, d.rows * 5, 0.5);
        let f = normal_vec(&mut rng, d.rows * d.channels, 1.0);
        let dt = normal_vec(&mut rng, d.rows * (5 + d.channels), 1.0);
        let (gb, db, dtb) = (upload(backend, &g), upload(backend, &delta), upload(backend, &dt));
        let mut ddelta = garbage(backend, d.rows * 5);
        let mut dfeat = garbage(backend, d.rows * d.channels);
        let mut dg = garbage(backend, d.rows * 5);
        backend.gaussian_reparam_backward(d, &gb, &db, &dtb, &mut ddelta, &mut dfeat, Some(&mut dg)).unwrap();
        let mut ddelta2 = garbage(backend, d.rows * 5);
        backend.gaussian_reparam_backward(d, &gb, &db, &dtb, &mut ddelta2, &mut dfeat, None).unwrap();
        assert_eq!(download(backend, &ddelta2), download(backend, &ddelta), "ddelta without dg_init");
        let (g64, d64, f64v, dt64) = (to_f64(&g), to_f64(&delta), to_f64(&f), to_f64(&dt));
        let loss = |g: &[f64], de: &[f64], f: &[f64]| dot(&dt64, &reparam_f64(d, g, de, f));
        let name = backend.name();
        let fd = finite_difference(&d64, |x| loss(&g64, x, &f64v));
        assert_close(&format!("{name} reparam ddelta {d:?}"), &download(backend, &ddelta), &fd, tol.gradient);
        let fd = finite_difference(&g64, |x| loss(x, &d64, &f64v));
        assert_close(&format!("{name} reparam dg_init {d:?}"), &download(backend, &dg), &fd, tol.gradient);
        if d.channels > 0 {
            let fd = finite_difference(&f64v, |x| loss(&g64, &d64, x));
            assert_close(&format!("{name} reparam dfeatures {d:?}"), &download(backend, &dfeat), &fd, tol.gradient);
        }
    }
}

/// Bad lengths are errors.
pub fn reparam_rejects_bad_shapes<B: GaussianOps>(backend: &B) {
    let d = ReparamDesc { rows: 2, channels: 3 };
    let (g, de, f) = (garbage(backend, 10), garbage(backend, 10), garbage(backend, 6));
    let mut t = garbage(backend, 16);
    assert!(backend.gaussian_reparam_forward(&d, &garbage(backend, 9), &de, &f, &mut t).is_err(), "g_init");
    assert!(backend.gaussian_reparam_forward(&d, &g, &garbage(backend, 11), &f, &mut t).is_err(), "delta");
    assert!(backend.gaussian_reparam_forward(&d, &g, &de, &garbage(backend, 5), &mut t).is_err(), "features");
    assert!(backend.gaussian_reparam_forward(&d, &g, &de, &f, &mut garbage(backend, 15)).is_err(), "tokens");
    let (mut dd, mut df) = (garbage(backend, 10), garbage(backend, 6));
    assert!(backend.gaussian_reparam_backward(&d, &g, &de, &garbage(backend, 15), &mut dd, &mut df, None).is_err());
    assert!(backend.gaussian_reparam_backward(&d, &g, &de, &t, &mut garbage(backend, 9), &mut df, None).is_err());
    assert!(backend.gaussian_reparam_backward(&d, &g, &de, &t, &mut dd, &mut garbage(backend, 7), None).is_err());
    assert!(backend
        .gaussian_reparam_backward(&d, &g, &de, &t, &mut dd, &mut df, Some(&mut garbage(backend, 11)))
        .is_err());
}

/// The merge in f64, written from spec 2.4: patch `k = i·np + j` of each image, σ/np, means
/// `-1 + (2j + x + 1)/np` (x) and `-1 + (2i + y + 1)/np` (y), ρ and features unchanged.
pub fn merge_f64(d: &MergeDesc, tokens: &[f64]) -> Vec<f64> {
    let (np, stride) = (d.patches, 5 + d.channels);
    let npf = np as f64;
    let mut out = tokens.to_vec();
    for (r, t) in out.chunks_exact_mut(stride).enumerate() {
        let k = (r / d.tokens_per_patch) % (np * np);
        let (i, j) = ((k / np) as f64, (k % np) as f64);
        t[0] /= npf;
        t[1] /= npf;
        t[3] = -1.0 + (2.0 * j + t[3] + 1.0) / npf;
        t[4] = -1.0 + (2.0 * i + t[4] + 1.0) / npf;
    }
    out
}

const MERGES: [MergeDesc; 3] = [
    MergeDesc { batch: 2, patches: 2, tokens_per_patch: 3, channels: 2 },
    MergeDesc { batch: 1, patches: 3, tokens_per_patch: 5, channels: 0 },
    MergeDesc { batch: 3, patches: 1, tokens_per_patch: 4, channels: 3 },
];

/// Forward against f64, and the corners: a token at `x = y = -1` in patch (i, j) lands on the
/// patch's top-left corner of the canvas, `-1 + 2j/np`, `-1 + 2i/np`.
pub fn merge_forward_matches_reference<B: GaussianOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x9a55_0003);
    let name = backend.name();
    for d in MERGES {
        let mut tokens = normal_vec(&mut rng, d.len(), 0.5);
        for t in tokens.chunks_exact_mut(5 + d.channels).step_by(2) {
            t[3] = -1.0;
            t[4] = -1.0;
        }
        let mut merged = garbage(backend, d.len());
        backend.merge_patches_forward(&d, &upload(backend, &tokens), &mut merged).unwrap();
        let got = download(backend, &merged);
        assert_close(&format!("{name} merge {d:?}"), &got, &merge_f64(&d, &to_f64(&tokens)), tol.forward);
        let np = d.patches;
        for (r, t) in got.chunks_exact(5 + d.channels).enumerate().step_by(2) {
            let k = (r / d.tokens_per_patch) % (np * np);
            let want = |c: usize| -1.0 + 2.0 * c as f32 / np as f32;
            assert!((t[3] - want(k % np)).abs() < 1e-6 && (t[4] - want(k / np)).abs() < 1e-6, "{name} corner {d:?}");
        }
    }
}

/// `dtokens` against finite differences of `L = Σ dm·merged`.
pub fn merge_gradients_match_finite_differences<B: GaussianOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x9a55_0004);
    for d in MERGES {
        let tokens = to_f64(&normal_vec(&mut rng, d.len(), 0.5));
        let dm = normal_vec(&mut rng, d.len(), 1.0);
        let mut dt = garbage(backend, d.len());
        backend.merge_patches_backward(&d, &upload(backend, &dm), &mut dt).unwrap();
        let dm64 = to_f64(&dm);
        let fd = finite_difference(&tokens, |x| dot(&dm64, &merge_f64(&d, x)));
        assert_close(&format!("{} merge dtokens {d:?}", backend.name()), &download(backend, &dt), &fd, tol.gradient);
    }
}

/// Bad lengths and zero patches are errors.
pub fn merge_rejects_bad_shapes<B: GaussianOps>(backend: &B) {
    let d = MERGES[0];
    let n = d.len();
    let ok = garbage(backend, n);
    assert!(backend.merge_patches_forward(&d, &garbage(backend, n - 1), &mut garbage(backend, n)).is_err());
    assert!(backend.merge_patches_forward(&d, &ok, &mut garbage(backend, n + 1)).is_err());
    assert!(backend.merge_patches_backward(&d, &garbage(backend, n - 1), &mut garbage(backend, n)).is_err());
    assert!(backend.merge_patches_backward(&d, &ok, &mut garbage(backend, n + 1)).is_err());
    let zero = MergeDesc { patches: 0, ..d };
    assert!(backend.merge_patches_forward(&zero, &garbage(backend, 0), &mut garbage(backend, 0)).is_err());
}
