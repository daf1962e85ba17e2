//! The samplers on velocity fields with known solutions, PyTorch's `linspace`, and their errors.

use gpstoken_core::model::sit::{
    linspace_f32, sample_ode, sample_sde, LastStep, OdeMethod, SdeConfig, SdeMethod, SeededNoise, StoredNoise,
};
use gpstoken_core::rng::SplitMix64;
use gpstoken_core::shape::ShapeError;

type Res = Result<(), ShapeError>;

#[test]
fn linspace_is_pytorchs() {
    // spec 9.4: the official 250-step grid and its step
    let ts = linspace_f32(0.001, 0.96, 250);
    assert_eq!((ts[0], ts[249]), (0.001, 0.96));
    assert_eq!(ts[1] - ts[0], 0.003_851_405_3);
    // the second half is counted back from the end: torch.linspace(0, 1, 5)
    assert_eq!(linspace_f32(0.0, 1.0, 5), [0.0, 0.25, 0.5, 0.75, 1.0]);
    let t = linspace_f32(0.0, 1.0, 7);
    assert_eq!(t[6], 1.0);
    assert_eq!(t[4], 1.0 - (1.0f32 / 6.0) * 2.0);
}

/// `v = 2t·c`: x(1) = x(0) + c.
fn ramp(c: f32) -> impl FnMut(&[f32], f32, &mut [f32]) -> Res {
    move |_, t, v| {
        v.iter_mut().for_each(|vi| *vi = 2.0 * t * c);
        Ok(())
    }
}

#[test]
fn ode_methods_solve_known_flows() {
    // Heun (trapezoid) is exact for a velocity linear in t; Euler converges at first order
    let mut x = vec![1.0f32, -2.0];
    sample_ode(OdeMethod::Heun, 5, &mut x, ramp(3.0), |_, _| {}).unwrap();
    assert!((x[0] - 4.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6, "{x:?}");
    let euler_err = |steps| {
        let mut x = vec![0.0f32];
        sample_ode(OdeMethod::Euler, steps, &mut x, ramp(1.0), |_, _| {}).unwrap();
        (1.0 - x[0]).abs()
    };
    let (e1, e2) = (euler_err(11), euler_err(21));
    assert!(e1 > 0.05 && (e1 / e2 - 2.0).abs() < 0.1, "Euler errors {e1} {e2}");
    // dopri5 on dx/dt = x: e within the tolerance, outputs at every requested time
    let mut x = vec![1.0f32, 0.5];
    let mut outputs = Vec::new();
    let grow = |x: &[f32], _: f32, v: &mut [f32]| -> Res {
        v.copy_from_slice(x);
        Ok(())
    };
    sample_ode(OdeMethod::Dopri5 { rtol: 1e-6, atol: 1e-8 }, 5, &mut x, grow, |k, x| outputs.push((k, x[0]))).unwrap();
    assert_eq!(outputs.len(), 5);
    for (k, v) in outputs {
        let want = (k as f64 / 4.0).exp();
        assert!((f64::from(v) - want).abs() < 1e-5 * want, "t = {}: {v} vs {want}", k as f64 / 4.0);
    }
    assert!((f64::from(x[1]) - 0.5 * std::f64::consts::E).abs() < 1e-5);
}

#[test]
fn sde_without_noise_follows_the_drift() {
    // with zero draws an Euler-Maruyama step is x + (v + D·score)·dt; for v = 0 the Linear path
    // gives D = (1−t)/t, score = −x/(1−t), so one step from t0 = 0.001 is x·(1 − dt/t0)
    let cfg = SdeConfig { steps: 2, last_step: LastStep::Identity, ..SdeConfig::official(2) };
    let zeros = vec![0.0f32; 2];
    let mut x = vec![1.0f32, -1.0];
    let still = |_: &[f32], _: f32, v: &mut [f32]| -> Res {
        v.fill(0.0);
        Ok(())
    };
    sample_sde(&cfg, &mut x, &mut StoredNoise::new(&zeros), still, |_, _| {}).unwrap();
    let (t, dt) = (0.001f64, 1.0 - 0.001);
    assert!((f64::from(x[0]) - (1.0 - dt / t)).abs() < 1e-3 * (dt / t), "{x:?}");
    assert_eq!(x[0], -x[1]);
}

#[test]
fn sde_methods_and_last_steps_are_seeded_and_finite() {
    let v = |x: &[f32], _: f32, v: &mut [f32]| -> Res {
        v.iter_mut().zip(x).for_each(|(vi, &xi)| *vi = 0.5 - 0.1 * xi);
        Ok(())
    };
    for method in [SdeMethod::Euler, SdeMethod::Heun] {
        for last_step in [LastStep::Mean, LastStep::Euler, LastStep::Identity] {
            if method == SdeMethod::Heun && last_step == LastStep::Identity {
                continue; // an error (below)
            }
            let cfg = SdeConfig { method, last_step, ..SdeConfig::official(20) };
            let run = |seed| {
                let mut x = vec![0.3f32; 6];
                let mut states = 0;
                sample_sde(&cfg, &mut x, &mut SeededNoise(SplitMix64::new(seed)), v, |_, _| states += 1).unwrap();
                assert_eq!(states, 20, "one state per grid point");
                x
            };
            let (a, b, c) = (run(1), run(1), run(2));
            assert!(a.iter().all(|v| v.is_finite()), "{method:?} {last_step:?}: {a:?}");
            assert_eq!(a, b);
            assert_ne!(a, c);
        }
    }
}

#[test]
fn sampler_misuse_is_an_error() {
    let v = |_: &[f32], _: f32, v: &mut [f32]| -> Res {
        v.fill(0.0);
        Ok(())
    };
    let mut x = vec![0.0f32; 4];
    // the stored noise holds one step for a two-step grid
    let short = vec![0.0f32; 4];
    assert!(sample_sde(&SdeConfig::official(3), &mut x, &mut StoredNoise::new(&short), v, |_, _| {}).is_err());
    assert!(sample_sde(&SdeConfig::official(1), &mut x, &mut StoredNoise::new(&short), v, |_, _| {}).is_err());
    assert!(sample_ode(OdeMethod::Euler, 1, &mut x, v, |_, _| {}).is_err());
    let heun_to_one = SdeConfig { method: SdeMethod::Heun, last_step: LastStep::Identity, ..SdeConfig::official(4) };
    let noise = vec![0.0f32; 64];
    assert!(sample_sde(&heun_to_one, &mut x, &mut StoredNoise::new(&noise), v, |_, _| {}).is_err());
    let nan = |_: &[f32], _: f32, v: &mut [f32]| -> Res {
        v.fill(f32::NAN);
        Ok(())
    };
    assert!(sample_sde(&SdeConfig::official(4), &mut x, &mut StoredNoise::new(&noise), nan, |_, _| {}).is_err());
    // a velocity that blows up makes dopri5 stop with an error, not loop or panic
    let blow = |x: &[f32], _: f32, v: &mut [f32]| -> Res {
        v.iter_mut().zip(x).for_each(|(vi, &xi)| *vi = 1e30 * (xi + 1.0));
        Ok(())
    };
    let dopri = OdeMethod::Dopri5 { rtol: 1e-3, atol: 1e-6 };
    assert!(sample_ode(dopri, 3, &mut x, blow, |_, _| {}).is_err());
}
