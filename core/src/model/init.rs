//! Initialisation for training from scratch: PyTorch's default initialisers (spec 5.3) drawn
//! from a small seeded generator, so that a seed gives the same model on every platform and
//! backend.
//!
//! The generator is SplitMix64 (Steele, Lea & Flood 2014: a Weyl sequence with increment
//! `0x9E3779B97F4A7C15` passed through a 64-bit finaliser). Uniform f32 values use the top 24
//! bits (`u = (x >> 40) / 2^24`, exact in f32); normal values use Box-Muller in f64 on two
//! 53-bit uniforms. Parameters are drawn in state-dict order, each from its own stream seeded
//! with `seed ^ fnv1a(name)`, so adding a layer does not change the others. The numbers differ
//! from PyTorch's (a different generator); the distributions are PyTorch's.

use alloc::vec::Vec;

use super::params::{Init, ParamStore};
use crate::backend::Buffers;

pub use crate::rng::SplitMix64;

impl SplitMix64 {
    /// Uniform in `[-bound, bound)`.
    pub fn symmetric(&mut self, bound: f32) -> f32 {
        (2.0 * self.unit_f32() - 1.0) * bound
    }

    /// Standard normal (Box-Muller, f64, rounded to f32).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.unit_f64(); // (0, 1]
        let u2 = self.unit_f64();
        (libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(2.0 * core::f64::consts::PI * u2)) as f32
    }
}

/// 64-bit FNV-1a of a name (per-parameter stream seeds).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}

/// Values of one parameter under `init`.
pub fn init_values(init: Init, n: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let uniform = |rng: &mut SplitMix64, bound: f32| (0..n).map(|_| rng.symmetric(bound)).collect();
    match init {
        // kaiming_uniform_(a=√5): gain √(2/(1+5)), bound = gain·√(3/fan_in) = 1/√fan_in.
        Init::KaimingUniform { fan_in } | Init::BiasUniform { fan_in } => {
            let bound = if fan_in > 0 { 1.0 / libm::sqrt(fan_in as f64) as f32 } else { 0.0 };
            uniform(rng, bound)
        }
        Init::XavierUniform { fan_in, fan_out } => {
            let bound = libm::sqrt(6.0 / (fan_in + fan_out) as f64) as f32;
            uniform(rng, bound)
        }
        Init::Normal => (0..n).map(|_| rng.normal()).collect(),
        Init::NormalScaled { mean, std } => {
            (0..n).map(|_| (f64::from(mean) + f64::from(std) * f64::from(rng.normal())) as f32).collect()
        }
        Init::Ones => alloc::vec![1.0; n],
        Init::Zeros => alloc::vec![0.0; n],
    }
}

/// Initialises every parameter of `params` from `seed` and zeroes the gradients.
pub fn init_params<B: Buffers>(be: &B, params: &mut ParamStore<B>, seed: u64) -> Result<(), B::Error> {
    let mut result = Ok(());
    params.for_each_mut(|_, spec, value, grad| {
        if result.is_err() {
            return;
        }
        let mut rng = SplitMix64::new(seed ^ fnv1a(&spec.name));
        let host = init_values(spec.init, spec.numel(), &mut rng);
        result = be.write(value, &host);
        if let (Ok(()), Some(g)) = (&result, grad) {
            result = be.write(g, &alloc::vec![0.0; spec.numel()]);
        }
    });
    result
}
