//! Conformance of [`OptimOps`]: Adam over several steps (with and without weight decay) and the
//! EMA update, against the documented formulas in f64. The parameter is compared through its
//! change (`p_new - p_old`), which is what the update computes.

use super::common::{assert_close, download, normal_vec, to_f64, upload};
use super::tensor::DenseTolerance;
use crate::TestRng;
use gpstoken_core::backend::{AdamConfig, OptimOps};

/// The change of an f32 value carries the rounding of the new value (half an ulp, at most
/// `2^-24 |new|`): that bound relative to the largest reference change, added to the tolerance.
fn rounding_allowance(new_values: &[f32], reference_change: &[f64]) -> f64 {
    let largest = new_values.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    let scale = reference_change.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    largest * 2f64.powi(-24) / scale
}

/// One Adam step in f64 (`torch.optim.Adam`, L2 weight decay): updates `p`, `m`, `v`.
pub fn adam_f64(c: &AdamConfig, step: u32, p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]) {
    let (b1, b2) = (f64::from(c.beta1), f64::from(c.beta2));
    let (lr, eps, wd) = (f64::from(c.lr), f64::from(c.eps), f64::from(c.weight_decay));
    let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
    for i in 0..p.len() {
        let g = g[i] + wd * p[i];
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        p[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + eps);
    }
}

/// Three Adam steps with fresh gradients, from a nonzero state.
pub fn adam_matches_reference<B: OptimOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x0a11_0001);
    let name = backend.name();
    let n = 40_000;
    for config in
        [AdamConfig::official(0.05), AdamConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 }]
    {
        let p0 = normal_vec(&mut rng, n, 1.0);
        let mut p = upload(backend, &p0);
        let mut m = upload(backend, &vec![0.0; n]);
        let mut v = upload(backend, &vec![0.0; n]);
        let (mut p64, mut m64, mut v64) = (to_f64(&p0), vec![0.0; n], vec![0.0; n]);
        for step in 1..=3 {
            let g = normal_vec(&mut rng, n, 1.0);
            let before = download(backend, &p);
            backend.adam_step(&config, step, &mut p, &upload(backend, &g), &mut m, &mut v).unwrap();
            // The reference starts each step from the backend's state (errors do not compound).
            let mut p_ref = to_f64(&before);
            let (mut m_ref, mut v_ref) = (m64.clone(), v64.clone());
            adam_f64(&config, step, &mut p_ref, &to_f64(&g), &mut m_ref, &mut v_ref);
            let after = download(backend, &p);
            let delta: Vec<f32> =
                after.iter().zip(&before).map(|(a, b)| (f64::from(*a) - f64::from(*b)) as f32).collect();
            let want: Vec<f64> = p_ref.iter().zip(&before).map(|(a, b)| a - f64::from(*b)).collect();
            let what = format!("{name} adam {config:?} step {step}");
            assert_close(&format!("{what} update"), &delta, &want, tol.forward + rounding_allowance(&after, &want));
            assert_close(&format!("{what} m"), &download(backend, &m), &m_ref, tol.forward);
            assert_close(&format!("{what} v"), &download(backend, &v), &v_ref, tol.forward);
            m64 = to_f64(&download(backend, &m));
            v64 = to_f64(&download(backend, &v));
            p64 = to_f64(&after);
        }
        assert!(p64.iter().all(|v| v.is_finite()));
    }
}

/// `ema += (1 - decay)(param - ema)`.
pub fn ema_matches_reference<B: OptimOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x0a11_0002);
    let n = 30_001;
    for decay in [0.9f32, 0.3, 0.9999] {
        let e = normal_vec(&mut rng, n, 1.0);
        let p = normal_vec(&mut rng, n, 1.0);
        let mut eb = upload(backend, &e);
        backend.ema_update(decay, &mut eb, &upload(backend, &p)).unwrap();
        let got: Vec<f32> = download(backend, &eb).iter().zip(&e).map(|(a, b)| a - b).collect();
        let want: Vec<f64> =
            e.iter().zip(&p).map(|(&e, &p)| (1.0 - f64::from(decay)) * (f64::from(p) - f64::from(e))).collect();
        let tol = tol.forward + rounding_allowance(&download(backend, &eb), &want);
        assert_close(&format!("{} ema decay {decay} change", backend.name()), &got, &want, tol);
    }
}

/// Mismatched lengths and step 0 are errors.
pub fn optim_rejects_bad_shapes<B: OptimOps>(backend: &B) {
    let c = AdamConfig::official(1e-3);
    let (mut p, g, mut m, mut v) = (
        upload(backend, &[0.0; 4]),
        upload(backend, &[0.0; 4]),
        upload(backend, &[0.0; 4]),
        upload(backend, &[0.0; 4]),
    );
    assert!(backend.adam_step(&c, 1, &mut p, &g, &mut m, &mut v).is_ok());
    assert!(backend.adam_step(&c, 0, &mut p, &g, &mut m, &mut v).is_err(), "step 0");
    assert!(backend.adam_step(&c, 1, &mut p, &upload(backend, &[0.0; 3]), &mut m, &mut v).is_err(), "grad");
    assert!(backend.adam_step(&c, 1, &mut p, &g, &mut upload(backend, &[0.0; 5]), &mut v).is_err(), "m");
    assert!(backend.adam_step(&c, 1, &mut p, &g, &mut m, &mut upload(backend, &[0.0; 3])).is_err(), "v");
    assert!(backend.ema_update(0.9, &mut p, &upload(backend, &[0.0; 3])).is_err(), "ema");
}
