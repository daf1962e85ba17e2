//! Conformance of [`LossOps`]: MSE and L1 against f64 sums, gradients against finite
//! differences of the f64 loss, on lengths below and above typical reduction chunks.

use super::common::{assert_close, download, finite_difference, garbage, normal_vec, to_f64, upload};
use super::tensor::DenseTolerance;
use crate::TestRng;
use gpstoken_core::backend::LossOps;

/// `mean((p - t)²)` in f64.
pub fn mse_f64(p: &[f64], t: &[f64]) -> f64 {
    p.iter().zip(t).map(|(p, t)| (p - t) * (p - t)).sum::<f64>() / p.len() as f64
}

/// `mean(|p - t|)` in f64.
pub fn l1_f64(p: &[f64], t: &[f64]) -> f64 {
    p.iter().zip(t).map(|(p, t)| (p - t).abs()).sum::<f64>() / p.len() as f64
}

fn check_value(what: &str, got: f64, want: f64, tol: f64) {
    let err = (got - want).abs() / want.abs();
    eprintln!("{what}: relative error {err:.2e}");
    assert!(err <= tol, "{what}: {got} vs {want} (relative error {err:.3e} > {tol:.1e})");
}

/// Both losses: the value (with and without gradient) and the gradient.
pub fn losses_match_reference<B: LossOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x1055_0001);
    let name = backend.name();
    for n in [1, 57, 100_003] {
        let p = normal_vec(&mut rng, n, 1.0);
        let t = normal_vec(&mut rng, n, 1.0);
        let (pb, tb) = (upload(backend, &p), upload(backend, &t));
        let (p64, t64) = (to_f64(&p), to_f64(&t));
        for (label, reference) in [("mse", mse_f64 as fn(&[f64], &[f64]) -> f64), ("l1", l1_f64)] {
            let mut grad = garbage(backend, n);
            let run = |grad: Option<&mut B::Buffer>| match label {
                "mse" => backend.mse_loss(&pb, &tb, grad),
                _ => backend.l1_loss(&pb, &tb, grad),
            };
            let value = run(Some(&mut grad)).unwrap();
            let value_only = run(None).unwrap();
            let want = reference(&p64, &t64);
            check_value(&format!("{name} {label} loss n={n}"), value, want, tol.forward);
            assert_eq!(value.to_bits(), value_only.to_bits(), "{name} {label}: the gradient changes the loss");
            let grad = download(backend, &grad);
            if n <= 100 {
                let fd = finite_difference(&p64, |p| reference(p, &t64));
                assert_close(&format!("{name} {label} gradient n={n}"), &grad, &fd, tol.gradient);
            } else {
                // Analytic: 2 (p - t) / n and sign(p - t) / n.
                let want: Vec<f64> = p64
                    .iter()
                    .zip(&t64)
                    .map(|(p, t)| if label == "mse" { 2.0 * (p - t) / n as f64 } else { (p - t).signum() / n as f64 })
                    .collect();
                assert_close(&format!("{name} {label} gradient n={n}"), &grad, &want, tol.gradient);
            }
        }
    }
    // L1 where prediction equals target: gradient 0 there.
    let (p, t) = ([1.0f32, 2.0, 3.0, -1.0], [1.0f32, 0.0, 3.0, 1.0]);
    let mut grad = garbage(backend, 4);
    let value = backend.l1_loss(&upload(backend, &p), &upload(backend, &t), Some(&mut grad)).unwrap();
    assert_eq!(value, 1.0, "{name} l1 of equal entries");
    assert_eq!(download(backend, &grad), vec![0.0, 0.25, 0.0, -0.25], "{name} l1 gradient at equality");
}

/// Mismatched lengths are errors.
pub fn losses_reject_bad_shapes<B: LossOps>(backend: &B) {
    let (a, b) = (garbage(backend, 4), garbage(backend, 5));
    assert!(backend.mse_loss(&a, &b, None).is_err());
    assert!(backend.l1_loss(&a, &b, None).is_err());
    assert!(backend.mse_loss(&a, &a, Some(&mut garbage(backend, 3))).is_err());
    assert!(backend.l1_loss(&a, &a, Some(&mut garbage(backend, 3))).is_err());
}

/// Every check of this module.
pub fn run_all<B: LossOps>(backend: &B, tol: DenseTolerance) {
    losses_match_reference(backend, tol);
    losses_reject_bad_shapes(backend);
}
