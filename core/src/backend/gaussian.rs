//! The encoder's refinement reparameterisation of the Gaussian parameters (spec 1).

use super::Buffers;
use crate::shape::{check_len, ShapeError};

/// `tokens [rows, 5 + C]` from `g_init [rows, 5]`, `delta [rows, 5]`, `features [rows, C]`:
/// ```text
/// a = -ln(1/g_init[0:2] - 1)      σ   = 1 / (1 + exp(-(a + δ[0:2])))
/// b = -ln(2/(1+g_init[2:5]) - 1)  ρxy = 2 / (1 + exp(-(b + δ[2:5]))) - 1
/// tokens = [σ, ρxy, features]
/// ```
/// all in f32 in that order (the official `to_gps` head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReparamDesc {
    pub rows: usize,
    pub channels: usize,
}

impl ReparamDesc {
    pub fn check(&self, g_init: usize, delta: usize, features: usize, tokens: usize) -> Result<(), ShapeError> {
        check_len("initial Gaussians", self.rows * 5, g_init)?;
        check_len("Gaussian offsets", self.rows * 5, delta)?;
        check_len("token features", self.rows * self.channels, features)?;
        check_len("tokens", self.rows * (5 + self.channels), tokens)
    }
}

pub trait GaussianOps: Buffers {
    /// Builds the tokens.
    fn gaussian_reparam_forward(
        &self,
        desc: &ReparamDesc,
        g_init: &Self::Buffer,
        delta: &Self::Buffer,
        features: &Self::Buffer,
        tokens: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `ddelta`, `dfeatures` and optionally `dg_init`, each overwritten.
    #[allow(clippy::too_many_arguments)]
    fn gaussian_reparam_backward(
        &self,
        desc: &ReparamDesc,
        g_init: &Self::Buffer,
        delta: &Self::Buffer,
        dtokens: &Self::Buffer,
        ddelta: &mut Self::Buffer,
        dfeatures: &mut Self::Buffer,
        dg_init: Option<&mut Self::Buffer>,
    ) -> Result<(), Self::Error>;
}
