//! The encoder's refinement reparameterisation of the Gaussian parameters (spec 1) and the
//! multi-patch merge of token sets onto one canvas (spec 2.4).

use super::Buffers;
use crate::shape::{check_len, check_optional, ShapeError};

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

/// The multi-patch merge (spec 2.4, `adjust_gpstoken`): `tokens [batch, np², N, 5+C]` with
/// coordinates local to their patch (patch `k = i·np + j`, row-major) to `merged` of the same
/// shape on the whole `np x np` canvas, per value (f32, left to right as torch):
/// ```text
/// σx' = σx/np   σy' = σy/np   ρ' = ρ   x' = -1 + (2j + x + 1)/np   y' = -1 + (2i + y + 1)/np
/// ```
/// features copied. [`crate::render::merge_patches`] is the same map for one image on slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeDesc {
    pub batch: usize,
    /// Patches per side (np).
    pub patches: usize,
    pub tokens_per_patch: usize,
    pub channels: usize,
}

impl MergeDesc {
    pub fn len(&self) -> usize {
        self.batch * self.patches * self.patches * self.tokens_per_patch * (5 + self.channels)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn check(&self, tokens: usize, merged: usize) -> Result<(), ShapeError> {
        crate::shape::ensure(self.patches >= 1, "patches must be at least 1")?;
        check_len("patch tokens", self.len(), tokens)?;
        check_len("merged tokens", self.len(), merged)
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

    /// `merged` from per-patch `tokens` ([`MergeDesc`]).
    fn merge_patches_forward(
        &self,
        desc: &MergeDesc,
        tokens: &Self::Buffer,
        merged: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `dtokens` from `dmerged` (overwritten): the map is affine per value, so the gradient of
    /// σx, σy, x and y is divided by np and the others pass through.
    fn merge_patches_backward(
        &self,
        desc: &MergeDesc,
        dmerged: &Self::Buffer,
        dtokens: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

/// The kernels behind [`GaussianOps`], one per op, same signature. Called only after the front end
/// (the blanket `impl<T: GaussianKernels> GaussianOps for T` below) has checked every buffer length
/// against the descriptor: implementations contain no shape logic.
pub trait GaussianKernels: Buffers {
    /// [`GaussianOps::gaussian_reparam_forward`].
    fn gaussian_reparam_forward(
        &self,
        desc: &ReparamDesc,
        g_init: &Self::Buffer,
        delta: &Self::Buffer,
        features: &Self::Buffer,
        tokens: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`GaussianOps::gaussian_reparam_backward`].
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
    /// [`GaussianOps::merge_patches_forward`].
    fn merge_patches_forward(
        &self,
        desc: &MergeDesc,
        tokens: &Self::Buffer,
        merged: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`GaussianOps::merge_patches_backward`].
    fn merge_patches_backward(
        &self,
        desc: &MergeDesc,
        dmerged: &Self::Buffer,
        dtokens: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

impl<T: GaussianKernels> GaussianOps for T {
    fn gaussian_reparam_forward(
        &self,
        desc: &ReparamDesc,
        g_init: &T::Buffer,
        delta: &T::Buffer,
        features: &T::Buffer,
        tokens: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(g_init), self.len(delta), self.len(features), self.len(tokens))?;
        GaussianKernels::gaussian_reparam_forward(self, desc, g_init, delta, features, tokens)
    }

    #[allow(clippy::too_many_arguments)]
    fn gaussian_reparam_backward(
        &self,
        desc: &ReparamDesc,
        g_init: &T::Buffer,
        delta: &T::Buffer,
        dtokens: &T::Buffer,
        ddelta: &mut T::Buffer,
        dfeatures: &mut T::Buffer,
        dg_init: Option<&mut T::Buffer>,
    ) -> Result<(), T::Error> {
        desc.check(self.len(g_init), self.len(delta), self.len(dfeatures), self.len(dtokens))?;
        check_len("Gaussian offset gradients", desc.rows * 5, self.len(ddelta))?;
        check_optional("initial Gaussian gradients", desc.rows * 5, dg_init.as_deref().map(|d| self.len(d)))?;
        GaussianKernels::gaussian_reparam_backward(self, desc, g_init, delta, dtokens, ddelta, dfeatures, dg_init)
    }

    fn merge_patches_forward(
        &self,
        desc: &MergeDesc,
        tokens: &T::Buffer,
        merged: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(tokens), self.len(merged))?;
        GaussianKernels::merge_patches_forward(self, desc, tokens, merged)
    }

    fn merge_patches_backward(
        &self,
        desc: &MergeDesc,
        dmerged: &T::Buffer,
        dtokens: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(dtokens), self.len(dmerged))?;
        GaussianKernels::merge_patches_backward(self, desc, dmerged, dtokens)
    }
}
