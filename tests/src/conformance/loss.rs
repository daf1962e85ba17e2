//! Conformance of [`LossOps`]: MSE, L1, the mean and the hinge terms of the discriminator loss
//! against f64 sums, gradients against finite differences of the f64 loss, on lengths below and
//! above typical reduction chunks.

use super::common::{assert_close, assert_exact, download, finite_difference, garbage, normal_vec, to_f64, upload};
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

/// `mean(x)` in f64.
pub fn mean_f64(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// `mean(relu(1 - x))` (real) or `mean(relu(1 + x))` (reconstructions) in f64.
pub fn hinge_f64(x: &[f64], real: bool) -> f64 {
    let sign = if real { 1.0 } else { -1.0 };
    x.iter().map(|v| (1.0 - sign * v).max(0.0)).sum::<f64>() / x.len() as f64
}

fn check_value(what: &str, got: f64, want: f64, tol: f64) {
    // A zero reference (a hinge with every logit on its flat side) must be met exactly.
    let err = if want == 0.0 { got.abs() } else { (got - want).abs() / want.abs() };
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

/// The mean and both hinge terms: values (with and without gradient), gradients against finite
/// differences (inputs kept away from the hinge's kinks at ±1) or the analytic gradient on long
/// inputs, and the convention at the kink (gradient 0, as PyTorch's relu).
pub fn adversarial_losses_match_reference<B: LossOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x1055_0002);
    let name = backend.name();
    for n in [1, 36, 100_003] {
        // Logits of scale 1.5 so that both sides of each hinge occur; none within 1e-3 of a kink.
        let x: Vec<f32> = normal_vec(&mut rng, n, 1.5)
            .into_iter()
            .map(|v| if (v.abs() - 1.0).abs() < 1e-3 { v * 1.01 } else { v })
            .collect();
        let xb = upload(backend, &x);
        let x64 = to_f64(&x);
        type Reference = Box<dyn Fn(&[f64]) -> f64>;
        let cases: [(&str, Option<bool>, Reference); 3] = [
            ("mean", None, Box::new(mean_f64)),
            ("hinge real", Some(true), Box::new(|x: &[f64]| hinge_f64(x, true))),
            ("hinge fake", Some(false), Box::new(|x: &[f64]| hinge_f64(x, false))),
        ];
        for (label, real, reference) in cases {
            let run = |grad: Option<&mut B::Buffer>| match real {
                None => backend.mean_loss(&xb, grad),
                Some(r) => backend.hinge_loss(&xb, r, grad),
            };
            let mut grad = garbage(backend, n);
            let value = run(Some(&mut grad)).unwrap();
            let value_only = run(None).unwrap();
            check_value(&format!("{name} {label} n={n}"), value, reference(&x64), tol.forward);
            assert_eq!(value.to_bits(), value_only.to_bits(), "{name} {label}: the gradient changes the loss");
            let grad = download(backend, &grad);
            let want = if n <= 100 {
                finite_difference(&x64, |x| reference(x))
            } else {
                x64.iter()
                    .map(|&v| match real {
                        None => 1.0 / n as f64,
                        Some(true) if v < 1.0 => -1.0 / n as f64,
                        Some(false) if v > -1.0 => 1.0 / n as f64,
                        Some(_) => 0.0,
                    })
                    .collect()
            };
            if want.iter().all(|&w| w == 0.0) {
                // One logit on the flat side of the hinge: the gradient must be exactly zero.
                assert!(grad.iter().all(|&g| g == 0.0), "{name} {label} n={n}: {grad:?}");
            } else {
                assert_close(&format!("{name} {label} gradient n={n}"), &grad, &want, tol.gradient);
            }
        }
    }
    // At the kinks (x = 1 for real, x = -1 for reconstructions) the hinge is 0 and so is its
    // gradient; on the active side the gradient is ∓1/n.
    let x = upload(backend, &[1.0f32, -1.0, 0.0, 3.0]);
    let mut grad = garbage(backend, 4);
    assert_eq!(backend.hinge_loss(&x, true, Some(&mut grad)).unwrap(), (0.0 + 2.0 + 1.0 + 0.0) / 4.0);
    assert_eq!(download(backend, &grad), vec![0.0, -0.25, -0.25, 0.0], "{name} real hinge at the kink");
    assert_eq!(backend.hinge_loss(&x, false, Some(&mut grad)).unwrap(), (2.0 + 0.0 + 1.0 + 4.0) / 4.0);
    assert_eq!(download(backend, &grad), vec![0.25, 0.0, 0.25, 0.25], "{name} fake hinge at the kink");
}

/// Mismatched lengths are errors.
pub fn losses_reject_bad_shapes<B: LossOps>(backend: &B) {
    let (a, b) = (garbage(backend, 4), garbage(backend, 5));
    assert!(backend.mse_loss(&a, &b, None).is_err());
    assert!(backend.l1_loss(&a, &b, None).is_err());
    assert!(backend.mse_loss(&a, &a, Some(&mut garbage(backend, 3))).is_err());
    assert!(backend.l1_loss(&a, &a, Some(&mut garbage(backend, 3))).is_err());
    assert!(backend.mean_loss(&a, Some(&mut garbage(backend, 3))).is_err());
    assert!(backend.hinge_loss(&a, true, Some(&mut garbage(backend, 5))).is_err());
    assert!(backend.hinge_loss(&a, false, Some(&mut garbage(backend, 3))).is_err());
    // The `*_into` forms: the same checks, and the loss buffer holds exactly one value.
    for bad in [0, 2] {
        let mut loss = garbage(backend, bad);
        assert!(backend.mse_loss_into(&a, &a, None, &mut loss).is_err(), "mse loss buffer of {bad}");
        assert!(backend.l1_loss_into(&a, &a, None, &mut loss).is_err(), "l1 loss buffer of {bad}");
        assert!(backend.mean_loss_into(&a, None, &mut loss).is_err(), "mean loss buffer of {bad}");
        assert!(backend.hinge_loss_into(&a, true, None, &mut loss).is_err(), "hinge loss buffer of {bad}");
    }
    let mut loss = garbage(backend, 1);
    assert!(backend.mse_loss_into(&a, &b, None, &mut loss).is_err());
    assert!(backend.mean_loss_into(&a, Some(&mut garbage(backend, 3)), &mut loss).is_err());
}

/// The `*_into` forms write into the one-value buffer the loss their host forms return (up to
/// the f32 rounding, within `tol.forward`) and the same gradient bits; on empty input the loss
/// is NaN.
pub fn loss_buffers_hold_the_host_value<B: LossOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x1055_0011);
    let n = 10_000;
    let (p, t) = (upload(backend, &normal_vec(&mut rng, n, 1.0)), upload(backend, &normal_vec(&mut rng, n, 1.0)));
    let (mut g_host, mut g_into, mut loss) = (garbage(backend, n), garbage(backend, n), garbage(backend, 1));
    for name in ["mse", "l1", "mean", "hinge real", "hinge fake"] {
        let (gh, gi, l) = (Some(&mut g_host), Some(&mut g_into), &mut loss);
        let value = match name {
            "mse" => backend.mse_loss_into(&p, &t, gi, l).and_then(|_| backend.mse_loss(&p, &t, gh)),
            "l1" => backend.l1_loss_into(&p, &t, gi, l).and_then(|_| backend.l1_loss(&p, &t, gh)),
            "mean" => backend.mean_loss_into(&p, gi, l).and_then(|_| backend.mean_loss(&p, gh)),
            _ => {
                let real = name == "hinge real";
                backend.hinge_loss_into(&p, real, gi, l).and_then(|_| backend.hinge_loss(&p, real, gh))
            }
        }
        .unwrap();
        let stored = f64::from(download(backend, &loss)[0]);
        let err = (stored - value).abs() / value.abs();
        assert!(value != 0.0 && err <= tol.forward, "{name}: buffer holds {stored}, the host form returned {value}");
        assert_exact(&format!("{name} gradient"), &download(backend, &g_into), &download(backend, &g_host));
    }
    let empty = garbage(backend, 0);
    backend.mse_loss_into(&empty, &empty, None, &mut loss).unwrap();
    assert!(download(backend, &loss)[0].is_nan(), "the mean of nothing is NaN");
}
