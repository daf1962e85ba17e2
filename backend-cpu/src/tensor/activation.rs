//! The activations and their derivatives in f64 (rounded once to f32 by the caller), and the
//! sigmoid family (SiLU, sigmoid: the decoder's activation, most of the values a training step
//! activates) 16 values at a time.

use crate::simd::expf::{expf16, LANES};
use crate::simd::multiversion;
use gpstoken_core::backend::Activation;
use libm::erfc;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_TANH_C: f64 = 0.044715;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

#[inline]
fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `f(x)` in f64.
#[inline]
pub(super) fn act_forward(kind: Activation, x: f64) -> f64 {
    match kind {
        // x Φ(x), Φ(x) = erfc(-x/√2)/2 (no cancellation for negative x).
        Activation::GeluErf => x * 0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2),
        Activation::GeluTanh => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)).tanh()),
        Activation::Silu => x * sigmoid64(x),
        Activation::Sigmoid => sigmoid64(x),
        // The product of two f32 values is exact in f64: rounding it once gives PyTorch's f32 bits.
        Activation::LeakyRelu02 => {
            if x > 0.0 {
                x
            } else {
                f64::from(Activation::LEAKY_SLOPE) * x
            }
        }
    }
}

/// `f'(x)` in f64.
#[inline]
pub(super) fn act_derivative(kind: Activation, x: f64) -> f64 {
    match kind {
        Activation::GeluErf => {
            0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2) + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
        }
        Activation::GeluTanh => {
            let t = (SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x * x)
        }
        Activation::Silu => {
            let s = sigmoid64(x);
            s * (1.0 + x * (1.0 - s))
        }
        Activation::Sigmoid => {
            let s = sigmoid64(x);
            s * (1.0 - s)
        }
        Activation::LeakyRelu02 => {
            if x > 0.0 {
                1.0
            } else {
                f64::from(Activation::LEAKY_SLOPE)
            }
        }
    }
}

/// Whether [`sigmoid_family_forward`] / [`sigmoid_family_backward`] take `kind`.
pub(super) fn is_sigmoid_family(kind: Activation) -> bool {
    matches!(kind, Activation::Silu | Activation::Sigmoid)
}

/// `f(x)` (`backward == false`) or `f'(x) dy` of 16 values of the sigmoid family: `e^-x` by
/// [`expf16`] (`libm::expf`'s bits, within an ulp of f32), the rest in f64 like
/// [`act_forward`] / [`act_derivative`]. The scalar path's f64 `exp` took most of a training
/// step's activation time; this one vectorises (fixed-size arrays and index loops, which the
/// compiler turns into whole-vector operations), and every lane does the same operations
/// whatever the vector width (no FMA), so the bits do not depend on the CPU's SIMD level.
#[inline(always)]
fn sigmoid_family16(silu: bool, x: &[f32; LANES], dy: &[f32; LANES], backward: bool) -> [f32; LANES] {
    let mut neg = [0.0f32; LANES];
    for i in 0..LANES {
        neg[i] = -x[i];
    }
    let e = expf16(neg);
    let mut out = [0.0f32; LANES];
    for i in 0..LANES {
        let s = 1.0 / (1.0 + f64::from(e[i]));
        let xd = f64::from(x[i]);
        out[i] = match (backward, silu) {
            (false, true) => (xd * s) as f32,
            (false, false) => s as f32,
            (true, true) => (s * (1.0 + xd * (1.0 - s)) * f64::from(dy[i])) as f32,
            (true, false) => (s * (1.0 - s) * f64::from(dy[i])) as f32,
        };
    }
    out
}

/// [`sigmoid_family16`] over whole blocks of 16, then the tail padded with zeros. `dy` is only
/// read when `backward`; it is `x` again in the forward.
#[inline(always)]
fn sigmoid_family_impl(silu: bool, backward: bool, x: &[f32], dy: &[f32], out: &mut [f32]) {
    let whole = x.len() / LANES * LANES;
    for ((xs, dys), os) in
        x[..whole].chunks_exact(LANES).zip(dy[..whole].chunks_exact(LANES)).zip(out[..whole].chunks_exact_mut(LANES))
    {
        let (xs, dys): (&[f32; LANES], &[f32; LANES]) = (xs.try_into().unwrap(), dys.try_into().unwrap());
        os.copy_from_slice(&sigmoid_family16(silu, xs, dys, backward));
    }
    let tail = x.len() - whole;
    if tail > 0 {
        let (mut xs, mut dys) = ([0.0f32; LANES], [0.0f32; LANES]);
        xs[..tail].copy_from_slice(&x[whole..]);
        dys[..tail].copy_from_slice(&dy[whole..]);
        out[whole..].copy_from_slice(&sigmoid_family16(silu, &xs, &dys, backward)[..tail]);
    }
}

/// `y = f(x)` for SiLU or sigmoid (`silu` picks).
#[inline(always)]
fn sigmoid_family_forward_impl(silu: bool, x: &[f32], y: &mut [f32]) {
    sigmoid_family_impl(silu, false, x, x, y)
}

/// `dx = f'(x) dy` for SiLU or sigmoid.
#[inline(always)]
fn sigmoid_family_backward_impl(silu: bool, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    sigmoid_family_impl(silu, true, x, dy, dx)
}

multiversion! {
    /// SiLU (`silu`) or sigmoid of every value of `x` into `y` (same length).
    pub(super) fn sigmoid_family_forward(silu: bool, x: &[f32], y: &mut [f32]) => sigmoid_family_forward_impl
}

multiversion! {
    /// `dx = f'(x) dy` for SiLU (`silu`) or sigmoid (same lengths).
    pub(super) fn sigmoid_family_backward(silu: bool, x: &[f32], dy: &[f32], dx: &mut [f32]) => sigmoid_family_backward_impl
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values across the range: both signs, around 0, where `e^-x` leaves the fast path of
    /// `expf16` (|x| >= 80), overflows or underflows, infinities, NaN and an odd length (a tail).
    fn inputs() -> Vec<f32> {
        let mut x: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) * 0.013).collect();
        x.extend([0.0, -0.0, 1e-30, -1e-30, 79.9, 80.0, -80.0, -88.7, -89.0, 104.0, -104.0, 1e30, -1e30]);
        x.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, 3.5e-39]);
        x
    }

    /// The dispatched (AVX-512 / AVX2) build and the baseline build give the same bits.
    #[test]
    fn same_bits_at_every_simd_level() {
        let x = inputs();
        let dy: Vec<f32> = x.iter().enumerate().map(|(i, _)| (i % 7) as f32 - 3.1).collect();
        for silu in [true, false] {
            let (mut fast, mut plain) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            let same = |fast: &[f32], plain: &[f32], what: &str| {
                for i in 0..x.len() {
                    // NaN is NaN: its sign bit is not specified by the operations.
                    if fast[i].is_nan() && plain[i].is_nan() {
                        continue;
                    }
                    assert_eq!(
                        fast[i].to_bits(),
                        plain[i].to_bits(),
                        "{what} silu {silu} at x = {}: {} vs {}",
                        x[i],
                        fast[i],
                        plain[i]
                    );
                }
            };
            sigmoid_family_forward(silu, &x, &mut fast);
            sigmoid_family_forward_impl(silu, &x, &mut plain);
            same(&fast, &plain, "forward");
            sigmoid_family_backward(silu, &x, &dy, &mut fast);
            sigmoid_family_backward_impl(silu, &x, &dy, &mut plain);
            same(&fast, &plain, "backward");
        }
    }

    /// Within 2 ulp of the f64 path (`act_forward`, `act_derivative` with the f64 `exp`), or
    /// within 1e-37 where the result is that small; NaN where it gives NaN. The derivative may
    /// also be off by 4e-7 |dy|: near its zero (x = -1.28 for SiLU) `1 + x (1 - s)` cancels,
    /// and there the f32 `e^-x`'s relative error is no longer relative to the result.
    #[test]
    fn close_to_the_f64_evaluation() {
        let x = inputs();
        let dy: Vec<f32> = x.iter().enumerate().map(|(i, _)| 1.0 + (i % 5) as f32 * 0.25).collect();
        for kind in [Activation::Silu, Activation::Sigmoid] {
            let silu = kind == Activation::Silu;
            let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            sigmoid_family_forward(silu, &x, &mut y);
            sigmoid_family_backward(silu, &x, &dy, &mut dx);
            for i in 0..x.len() {
                let xd = f64::from(x[i]);
                let want_y = act_forward(kind, xd) as f32;
                let want_dx = (act_derivative(kind, xd) * f64::from(dy[i])) as f32;
                for (name, got, want, slack) in
                    [("forward", y[i], want_y, 0.0), ("backward", dx[i], want_dx, 4e-7 * dy[i].abs())]
                {
                    if want.is_nan() {
                        assert!(got.is_nan(), "{kind:?} {name} at {}: {got}, want NaN", x[i]);
                        continue;
                    }
                    let ulp = (want.abs().max(f32::MIN_POSITIVE) * f32::EPSILON).max(1e-37);
                    assert!(
                        (got - want).abs() <= 2.0 * ulp + slack || got == want,
                        "{kind:?} {name} at {}: {got} vs {want}",
                        x[i]
                    );
                }
            }
        }
    }
}
