//! GroupNorm (two variants) and LayerNorm.

use super::Buffers;
use crate::shape::{check_len, ensure, ShapeError};

/// How a normalisation divides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps)`: `torch.nn.GroupNorm`, `LayerNorm`.
    Standard,
    /// `(x - mean) / (std + eps)`, `std = sqrt(var)`: the official decoder's `NormalizeNP` (spec 6.2).
    StdPlusEps,
}

/// GroupNorm over `x [B, C, H, W]` with `groups` groups of `C / groups` channels, biased variance,
/// per-channel affine `gamma`, `beta`.
///
/// `patches` (np, spec 6.2/6.3) > 1 computes the statistics per tile of an `np x np` grid and,
/// as the official `NormalizeNP`, resizes the `[B, groups, np, np]` mean and std maps to every
/// pixel bicubically (PyTorch, align_corners = False, A = -0.75, border-clamped taps); only
/// [`NormKind::StdPlusEps`] supports `patches > 1`. With `patches = 1` the per-group statistic is
/// used directly (the official bicubic resize of a 1x1 map reproduces it up to 2.4e-7 relative).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormDesc {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub groups: usize,
    pub eps: f32,
    pub kind: NormKind,
    pub patches: usize,
}

impl GroupNormDesc {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Saved statistics: `[B, groups, np, np, 2]` (mean, then the divisor's input: std or rstd as
    /// the backend chooses; only the same backend reads them back).
    pub fn stats_len(&self) -> usize {
        self.batch * self.groups * self.patches * self.patches * 2
    }
    /// Checks the descriptor and the x, gamma/beta, y and stats lengths.
    pub fn check(&self, x: usize, affine: usize, y: usize, stats: usize) -> Result<(), ShapeError> {
        ensure(self.groups >= 1 && self.channels % self.groups == 0, "channels must be a multiple of groups")?;
        ensure(self.patches >= 1, "patches must be at least 1")?;
        ensure(
            self.patches == 1 || self.kind == NormKind::StdPlusEps,
            "per-patch statistics exist only for the StdPlusEps (NormalizeNP) variant",
        )?;
        ensure(
            self.height % self.patches == 0 && self.width % self.patches == 0,
            "height and width must be multiples of patches",
        )?;
        check_len("group norm input", self.len(), x)?;
        check_len("group norm gamma/beta", self.channels, affine)?;
        check_len("group norm output", self.len(), y)?;
        check_len("group norm statistics", self.stats_len(), stats)
    }
}

/// LayerNorm over the last dimension of `x [rows, features]`, biased variance,
/// `(x - mean) / sqrt(var + eps)`, optional affine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormDesc {
    pub rows: usize,
    pub features: usize,
    pub eps: f32,
}

impl LayerNormDesc {
    /// Saved statistics: `[rows, 2]` (mean, rstd).
    pub fn stats_len(&self) -> usize {
        self.rows * 2
    }
    pub fn check(&self, x: usize, affine: Option<usize>, y: usize, stats: usize) -> Result<(), ShapeError> {
        check_len("layer norm input", self.rows * self.features, x)?;
        if let Some(a) = affine {
            check_len("layer norm gamma/beta", self.features, a)?;
        }
        check_len("layer norm output", self.rows * self.features, y)?;
        check_len("layer norm statistics", self.stats_len(), stats)
    }
}

pub trait NormOps: Buffers {
    /// `y = norm(x) * gamma + beta`; saves what the backward needs in `stats`.
    #[allow(clippy::too_many_arguments)]
    fn group_norm_forward(
        &self,
        desc: &GroupNormDesc,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        y: &mut Self::Buffer,
        stats: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `dx`, `dgamma`, `dbeta`, each overwritten.
    #[allow(clippy::too_many_arguments)]
    fn group_norm_backward(
        &self,
        desc: &GroupNormDesc,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        stats: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
        dgamma: &mut Self::Buffer,
        dbeta: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `y = (x - mean) / sqrt(var + eps) [* gamma + beta]`; `gamma`/`beta` both or neither.
    fn layer_norm_forward(
        &self,
        desc: &LayerNormDesc,
        x: &Self::Buffer,
        affine: Option<(&Self::Buffer, &Self::Buffer)>,
        y: &mut Self::Buffer,
        stats: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `dx` and, with affine, `(dgamma, dbeta)`, each overwritten.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        &self,
        desc: &LayerNormDesc,
        x: &Self::Buffer,
        gamma: Option<&Self::Buffer>,
        stats: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
        daffine: Option<(&mut Self::Buffer, &mut Self::Buffer)>,
    ) -> Result<(), Self::Error>;
}
