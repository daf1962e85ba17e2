//! Adaptive Dormand-Prince 5(4) as torchdiffeq's `dopri5` runs it (the official ODE sampler,
//! spec 9.5): mixed precision (state and Runge-Kutta sums in f32, times, tolerances and error
//! norms in f64), Hairer's initial step, the RMS error norm, safety 0.9, growth at most 10,
//! shrink at least 0.2 (only after a rejection), stages at `t1` evaluated just below `t1`
//! (`Perturb.PREV`), and outputs from the 4th-order interpolant of the step that covers them.
//! Step decisions depend on the model's outputs, so an independent implementation agrees with
//! the official one to about the solver tolerance, not bit for bit.

use alloc::vec;
use alloc::vec::Vec;

use crate::shape::ShapeError;

/// Butcher tableau (`_DORMAND_PRINCE_SHAMPINE_TABLEAU`): nodes of stages 2-7.
const ALPHA: [f64; 6] = [1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
/// Row `i` weights the first `i + 1` stages for stage `i + 2`; the last row is the solution.
const BETA: [&[f64]; 6] = [
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0],
    &[9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0],
    &[35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0],
];
/// 5th minus 4th order weights: the error estimate.
const C_ERROR: [f64; 7] = [
    35.0 / 384.0 - 1951.0 / 21600.0,
    0.0,
    500.0 / 1113.0 - 22642.0 / 50085.0,
    125.0 / 192.0 - 451.0 / 720.0,
    -2187.0 / 6784.0 - -12231.0 / 42400.0,
    11.0 / 84.0 - 649.0 / 6300.0,
    -1.0 / 60.0,
];
/// Weights of the mid-point value used by the interpolant (`DPS_C_MID`).
const C_MID: [f64; 7] = [
    6025192743.0 / 30085553152.0 / 2.0,
    0.0,
    51252292925.0 / 65400821598.0 / 2.0,
    -2691868925.0 / 45128329728.0 / 2.0,
    187940372067.0 / 1594534317056.0 / 2.0,
    -1776094331.0 / 19743644256.0 / 2.0,
    11237099.0 / 235043384.0 / 2.0,
];
const ORDER: i32 = 5;
const SAFETY: f64 = 0.9;
const IFACTOR: f64 = 10.0;
const DFACTOR: f64 = 0.2;
/// A guard against a model that makes the step size collapse (torchdiffeq's is 2³¹ − 1).
const MAX_STEPS: usize = 1 << 20;

fn rms(values: impl Iterator<Item = f64>, n: usize) -> f64 {
    libm::sqrt(values.map(|v| v * v).sum::<f64>() / n as f64)
}

/// `y0 + Σ_j k_j·(w_j·dt)` in f32, summed in stage order.
fn combine(y0: &[f32], k: &[Vec<f32>], w: &[f64], dt: f32, out: &mut [f32]) {
    let wdt: Vec<f32> = w.iter().map(|&c| c as f32 * dt).collect();
    for (i, o) in out.iter_mut().enumerate() {
        let sum = k.iter().zip(&wdt).fold(0.0f32, |acc, (kj, &c)| acc + kj[i] * c);
        *o = y0[i] + sum;
    }
}

/// The interpolant of one accepted step: coefficients `[e, d, c, b, a]` of
/// `e + d·x + c·x² + b·x³ + a·x⁴`, `x ∈ [0, 1]` across the step.
fn interp_fit(y0: &[f32], y1: &[f32], y_mid: &[f32], f0: &[f32], f1: &[f32], dt: f32, coef: &mut [Vec<f32>; 5]) {
    for i in 0..y0.len() {
        let (y0, y1, ym, f0, f1) = (y0[i], y1[i], y_mid[i], f0[i], f1[i]);
        coef[4][i] = 2.0 * dt * (f1 - f0) - 8.0 * (y1 + y0) + 16.0 * ym;
        coef[3][i] = dt * (5.0 * f0 - 3.0 * f1) + 18.0 * y0 + 14.0 * y1 - 32.0 * ym;
        coef[2][i] = dt * (f1 - 4.0 * f0) - 11.0 * y0 - 5.0 * y1 + 16.0 * ym;
        coef[1][i] = dt * f0;
        coef[0][i] = y0;
    }
}

fn interp_eval(coef: &[Vec<f32>; 5], t0: f64, t1: f64, t: f64, out: &mut [f32]) {
    let x = ((t - t0) / (t1 - t0)) as f32;
    for (i, o) in out.iter_mut().enumerate() {
        let mut total = coef[0][i] + x * coef[1][i];
        let mut xp = x;
        for c in &coef[2..] {
            xp *= x;
            total += xp * c[i];
        }
        *o = total;
    }
}

/// The f32 just below `t` (`torch.nextafter(t, t - 1)`).
fn just_below(t: f32) -> f32 {
    if t == 0.0 {
        -f32::from_bits(1)
    } else if t > 0.0 {
        f32::from_bits(t.to_bits() - 1)
    } else {
        f32::from_bits(t.to_bits() + 1)
    }
}

/// Integrates `dx/dt = v(x, t)` through the increasing times `t_out` (`t_out[0]` is the start),
/// replacing `x` by the value at the last one and calling `on_output(k, x_k)` at each.
pub(crate) fn dopri5<E: From<ShapeError>>(
    x: &mut [f32],
    t_out: &[f32],
    rtol: f64,
    atol: f64,
    mut f: impl FnMut(&[f32], f32, &mut [f32]) -> Result<(), E>,
    mut on_output: impl FnMut(usize, &[f32]),
) -> Result<(), E> {
    let bad = |what| -> Result<(), E> { Err(ShapeError::Invalid { what }.into()) };
    if t_out.windows(2).any(|w| w[1] <= w[0]) {
        return bad("dopri5 output times must increase");
    }
    let n = x.len();
    let mut y0 = x.to_vec();
    let mut f0 = vec![0.0f32; n];
    let t_start = f64::from(t_out[0]);
    f(&y0, t_start as f32, &mut f0)?;
    on_output(0, &y0);

    // Hairer, Norsett & Wanner, II.4: the initial step
    let scale: Vec<f64> = y0.iter().map(|&v| atol + f64::from(v.abs()) * rtol).collect();
    let d0 = rms(y0.iter().zip(&scale).map(|(&v, s)| f64::from(v) / s), n);
    let d1 = rms(f0.iter().zip(&scale).map(|(&v, s)| f64::from(v) / s), n);
    let h0 = if d0 < 1e-5 || d1 < 1e-5 { f64::from(1e-6f32) } else { 0.01 * d0 / d1 };
    let y1: Vec<f32> = y0.iter().zip(&f0).map(|(&y, &g)| y + h0 as f32 * g).collect();
    let mut f1 = vec![0.0f32; n];
    f(&y1, (t_start + h0) as f32, &mut f1)?;
    let d2 = (rms(f1.iter().zip(&f0).zip(&scale).map(|((&a, &b), s)| f64::from(a - b) / s), n) / h0).abs();
    let h1 = if d1 <= 1e-15 && d2 <= 1e-15 {
        f64::max(f64::from(1e-6f32), h0 * 1e-3)
    } else {
        libm::pow(0.01 / f64::max(d1, d2), 1.0 / f64::from(ORDER))
    };
    let mut dt = f64::min(100.0 * h0, h1);

    let mut coef: [Vec<f32>; 5] = core::array::from_fn(|_| y0.clone());
    let (mut t_prev, mut t_cur) = (t_start, t_start);
    let mut k: Vec<Vec<f32>> = vec![vec![0.0f32; n]; 7];
    let (mut yi, mut y_mid) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut steps = 0usize;
    for (j, &t_next) in t_out.iter().enumerate().skip(1) {
        let t_next = f64::from(t_next);
        while t_next > t_cur {
            steps += 1;
            if steps > MAX_STEPS {
                return bad("dopri5 took too many steps");
            }
            if !dt.is_finite() {
                dt = 0.0;
            }
            let t1 = t_cur + dt;
            if t1 <= t_cur {
                return bad("dopri5 step size underflow");
            }
            if y0.iter().any(|v| !v.is_finite()) {
                return bad("dopri5 state is not finite");
            }
            let (t0f, dtf, t1f) = (t_cur as f32, dt as f32, t1 as f32);
            k[0].copy_from_slice(&f0);
            for (i, (&alpha, beta)) in ALPHA.iter().zip(BETA).enumerate() {
                let ti = if alpha == 1.0 { just_below(t1f) } else { t0f + alpha as f32 * dtf };
                let (done, rest) = k.split_at_mut(i + 1);
                combine(&y0, done, beta, dtf, &mut yi);
                f(&yi, ti, &mut rest[0])?;
            }
            // the last stage is evaluated at the solution (c_sol = last beta row, FSAL)
            let err: Vec<f32> = {
                let cdt: Vec<f32> = C_ERROR.iter().map(|&c| dtf * c as f32).collect();
                (0..n).map(|i| k.iter().zip(&cdt).fold(0.0f32, |acc, (kj, &c)| acc + kj[i] * c)).collect()
            };
            let ratio = rms(
                err.iter()
                    .zip(y0.iter().zip(&yi))
                    .map(|(&e, (&a, &b))| f64::from(e) / (atol + rtol * f64::from(f32::max(a.abs(), b.abs())))),
                n,
            );
            if ratio <= 1.0 || dt <= 0.0 {
                combine(&y0, &k, &C_MID, dtf, &mut y_mid);
                interp_fit(&y0, &yi, &y_mid, &k[0], &k[6], dtf, &mut coef);
                y0.copy_from_slice(&yi);
                f0.copy_from_slice(&k[6]);
                t_prev = t_cur;
                t_cur = t1;
            } else {
                t_prev = t_cur;
            }
            dt *= if ratio == 0.0 {
                IFACTOR
            } else {
                let shrink = if ratio < 1.0 { 1.0 } else { DFACTOR };
                f64::min(IFACTOR, f64::max(SAFETY / libm::pow(ratio, 1.0 / f64::from(ORDER)), shrink))
            };
        }
        interp_eval(&coef, t_prev, t_cur, t_next, x);
        on_output(j, x);
    }
    Ok(())
}
