//! The activations and their derivatives in f64 (rounded once to f32 by the caller).

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
