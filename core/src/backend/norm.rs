//! GroupNorm (two variants), LayerNorm and training-mode BatchNorm2d.

use super::Buffers;
use crate::shape::{check_len, check_optional, ensure, ShapeError};

/// PyTorch's bicubic constant `A`, of NormalizeNP's resize of the per-patch statistics.
pub const CUBIC_A: f64 = -0.75;

/// PyTorch's cubic convolution weights for the taps at `-1, 0, 1, 2` around `floor(src)`, `t` the
/// fractional part of `src`: the one definition every backend's NormalizeNP resize uses.
pub fn cubic_weights(t: f64) -> [f64; 4] {
    let a = CUBIC_A;
    let w0 = ((a * (t + 1.0) - 5.0 * a) * (t + 1.0) + 8.0 * a) * (t + 1.0) - 4.0 * a;
    let w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
    let u = 1.0 - t;
    let w2 = ((a + 2.0) * u - (a + 3.0)) * u * u + 1.0;
    let w3 = ((a * (2.0 - t) - 5.0 * a) * (2.0 - t) + 8.0 * a) * (2.0 - t) - 4.0 * a;
    [w0, w1, w2, w3]
}

/// The four taps `(input index, weight)` of output index `o` of an axis resized bicubically from
/// `input` (>= 1) to `output` values (PyTorch, align_corners = False, taps clamped to the border;
/// two taps may name the same index).
pub fn bicubic_taps(input: usize, output: usize, o: usize) -> [(usize, f64); 4] {
    let scale = input as f64 / output as f64;
    let src = (o as f64 + 0.5) * scale - 0.5;
    let floor = libm::floor(src);
    let w = cubic_weights(src - floor);
    core::array::from_fn(|k| ((floor + k as f64 - 1.0).clamp(0.0, (input - 1) as f64) as usize, w[k]))
}

/// The bicubic resize of one axis ([`bicubic_taps`]) as a dense `[output, input]` matrix, the
/// weights of taps that clamp to one index added in f64 and rounded once, appended to `matrix`:
/// what GPU backends upload to apply the resize as small matrix products.
#[cfg(feature = "alloc")]
pub fn bicubic_matrix(input: usize, output: usize, matrix: &mut alloc::vec::Vec<f32>) {
    let mut row = alloc::vec![0.0f64; input];
    for o in 0..output {
        row.fill(0.0);
        for (index, w) in bicubic_taps(input, output, o) {
            row[index] += w;
        }
        matrix.extend(row.iter().map(|&w| w as f32));
    }
}

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
        ensure(self.groups >= 1 && self.channels.is_multiple_of(self.groups), "channels must be a multiple of groups")?;
        ensure(self.patches >= 1, "patches must be at least 1")?;
        ensure(
            self.patches == 1 || self.kind == NormKind::StdPlusEps,
            "per-patch statistics exist only for the StdPlusEps (NormalizeNP) variant",
        )?;
        ensure(
            self.height.is_multiple_of(self.patches) && self.width.is_multiple_of(self.patches),
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

/// BatchNorm2d in training mode (PyTorch `nn.BatchNorm2d`, `track_running_stats`) over
/// `x [batch, channels, spatial]` (`spatial = H·W`): each channel is normalised with the mean and
/// the **biased** variance of its `batch·spatial` values, `y = (x - mean) / sqrt(var + eps) ·
/// gamma + beta`. The running statistics are updated as PyTorch does,
/// `running_mean = (1 - momentum) running_mean + momentum mean`, `running_var = (1 - momentum)
/// running_var + momentum var·n/(n-1)` (the **unbiased** variance); the training-mode output
/// never reads them. PyTorch refuses `n = batch·spatial = 1` (the unbiased variance divides by
/// zero), so this is a shape error here too.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormDesc {
    pub batch: usize,
    pub channels: usize,
    /// `H·W`.
    pub spatial: usize,
    pub eps: f32,
    pub momentum: f32,
}

impl BatchNormDesc {
    /// PyTorch's defaults: eps 1e-5, momentum 0.1.
    pub fn new(batch: usize, channels: usize, spatial: usize) -> Self {
        BatchNormDesc { batch, channels, spatial, eps: 1e-5, momentum: 0.1 }
    }
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Saved statistics: `[channels, 2]` (batch mean, `1/sqrt(var + eps)`).
    pub fn stats_len(&self) -> usize {
        self.channels * 2
    }
    /// Checks the descriptor and the x, gamma/beta, y (or dy) and stats lengths.
    pub fn check(&self, x: usize, affine: usize, y: usize, stats: usize) -> Result<(), ShapeError> {
        ensure(self.batch * self.spatial >= 2, "batch norm needs more than one value per channel")?;
        check_len("batch norm input", self.len(), x)?;
        check_len("batch norm gamma/beta", self.channels, affine)?;
        check_len("batch norm output", self.len(), y)?;
        check_len("batch norm statistics", self.stats_len(), stats)
    }
    /// Checks the backward's buffers: x, gamma, stats, dy, dx and the optional dgamma/dbeta.
    pub fn check_backward(
        &self,
        x: usize,
        gamma: usize,
        stats: usize,
        dy: usize,
        dx: usize,
        daffine: Option<(usize, usize)>,
    ) -> Result<(), ShapeError> {
        self.check(x, gamma, dy, stats)?;
        check_len("batch norm dx", self.len(), dx)?;
        check_optional("batch norm dgamma", self.channels, daffine.map(|d| d.0))?;
        check_optional("batch norm dbeta", self.channels, daffine.map(|d| d.1))
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

    /// Training-mode BatchNorm ([`BatchNormDesc`]): `y`, the saved `stats` and, when given,
    /// `(running_mean, running_var)` updated in place (the caller counts `num_batches_tracked`).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train_forward(
        &self,
        desc: &BatchNormDesc,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        y: &mut Self::Buffer,
        stats: &mut Self::Buffer,
        running: Option<(&mut Self::Buffer, &mut Self::Buffer)>,
    ) -> Result<(), Self::Error>;

    /// `dx` and, when asked, `(dgamma, dbeta)`, each overwritten; the batch statistics are
    /// functions of `x`, so `dx = rstd·gamma·(dy - mean(dy) - x̂·mean(dy·x̂))` per channel.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train_backward(
        &self,
        desc: &BatchNormDesc,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        stats: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
        daffine: Option<(&mut Self::Buffer, &mut Self::Buffer)>,
    ) -> Result<(), Self::Error>;
}

/// The kernels behind [`NormOps`], one per op, same signature. Called only after the front end
/// (the blanket `impl<T: NormKernels> NormOps for T` below) has checked every buffer length
/// against the descriptor: implementations contain no shape logic.
pub trait NormKernels: Buffers {
    /// [`NormOps::group_norm_forward`].
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
    /// [`NormOps::group_norm_backward`].
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
    /// [`NormOps::layer_norm_forward`].
    fn layer_norm_forward(
        &self,
        desc: &LayerNormDesc,
        x: &Self::Buffer,
        affine: Option<(&Self::Buffer, &Self::Buffer)>,
        y: &mut Self::Buffer,
        stats: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`NormOps::layer_norm_backward`].
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
    /// [`NormOps::batch_norm_train_forward`].
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train_forward(
        &self,
        desc: &BatchNormDesc,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        y: &mut Self::Buffer,
        stats: &mut Self::Buffer,
        running: Option<(&mut Self::Buffer, &mut Self::Buffer)>,
    ) -> Result<(), Self::Error>;
    /// [`NormOps::batch_norm_train_backward`].
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train_backward(
        &self,
        desc: &BatchNormDesc,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        stats: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
        daffine: Option<(&mut Self::Buffer, &mut Self::Buffer)>,
    ) -> Result<(), Self::Error>;
}

impl<T: NormKernels> NormOps for T {
    #[allow(clippy::too_many_arguments)]
    fn group_norm_forward(
        &self,
        desc: &GroupNormDesc,
        x: &T::Buffer,
        gamma: &T::Buffer,
        beta: &T::Buffer,
        y: &mut T::Buffer,
        stats: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(x), self.len(gamma), self.len(y), self.len(stats))?;
        check_len("group norm beta", desc.channels, self.len(beta))?;
        NormKernels::group_norm_forward(self, desc, x, gamma, beta, y, stats)
    }

    #[allow(clippy::too_many_arguments)]
    fn group_norm_backward(
        &self,
        desc: &GroupNormDesc,
        x: &T::Buffer,
        gamma: &T::Buffer,
        stats: &T::Buffer,
        dy: &T::Buffer,
        dx: &mut T::Buffer,
        dgamma: &mut T::Buffer,
        dbeta: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(x), self.len(gamma), self.len(dy), self.len(stats))?;
        check_len("group norm dx", desc.len(), self.len(dx))?;
        check_len("group norm dgamma", desc.channels, self.len(dgamma))?;
        check_len("group norm dbeta", desc.channels, self.len(dbeta))?;
        NormKernels::group_norm_backward(self, desc, x, gamma, stats, dy, dx, dgamma, dbeta)
    }

    fn layer_norm_forward(
        &self,
        desc: &LayerNormDesc,
        x: &T::Buffer,
        affine: Option<(&T::Buffer, &T::Buffer)>,
        y: &mut T::Buffer,
        stats: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(x), affine.map(|(g, _)| self.len(g)), self.len(y), self.len(stats))?;
        check_optional("layer norm beta", desc.features, affine.map(|(_, b)| self.len(b)))?;
        NormKernels::layer_norm_forward(self, desc, x, affine, y, stats)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        &self,
        desc: &LayerNormDesc,
        x: &T::Buffer,
        gamma: Option<&T::Buffer>,
        stats: &T::Buffer,
        dy: &T::Buffer,
        dx: &mut T::Buffer,
        daffine: Option<(&mut T::Buffer, &mut T::Buffer)>,
    ) -> Result<(), T::Error> {
        desc.check(self.len(x), gamma.map(|g| self.len(g)), self.len(dy), self.len(stats))?;
        check_len("layer norm dx", desc.rows * desc.features, self.len(dx))?;
        check_optional("layer norm dgamma", desc.features, daffine.as_ref().map(|(g, _)| self.len(g)))?;
        check_optional("layer norm dbeta", desc.features, daffine.as_ref().map(|(_, b)| self.len(b)))?;
        NormKernels::layer_norm_backward(self, desc, x, gamma, stats, dy, dx, daffine)
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train_forward(
        &self,
        desc: &BatchNormDesc,
        x: &T::Buffer,
        gamma: &T::Buffer,
        beta: &T::Buffer,
        y: &mut T::Buffer,
        stats: &mut T::Buffer,
        running: Option<(&mut T::Buffer, &mut T::Buffer)>,
    ) -> Result<(), T::Error> {
        desc.check(self.len(x), self.len(gamma), self.len(y), self.len(stats))?;
        check_len("batch norm beta", desc.channels, self.len(beta))?;
        check_optional("batch norm running_mean", desc.channels, running.as_ref().map(|(m, _)| self.len(m)))?;
        check_optional("batch norm running_var", desc.channels, running.as_ref().map(|(_, v)| self.len(v)))?;
        NormKernels::batch_norm_train_forward(self, desc, x, gamma, beta, y, stats, running)
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train_backward(
        &self,
        desc: &BatchNormDesc,
        x: &T::Buffer,
        gamma: &T::Buffer,
        stats: &T::Buffer,
        dy: &T::Buffer,
        dx: &mut T::Buffer,
        daffine: Option<(&mut T::Buffer, &mut T::Buffer)>,
    ) -> Result<(), T::Error> {
        desc.check_backward(
            self.len(x),
            self.len(gamma),
            self.len(stats),
            self.len(dy),
            self.len(dx),
            daffine.as_ref().map(|(g, b)| (self.len(g), self.len(b))),
        )?;
        NormKernels::batch_norm_train_backward(self, desc, x, gamma, stats, dy, dx, daffine)
    }
}

#[cfg(all(test, feature = "alloc"))]
mod bicubic_tests {
    use super::bicubic_matrix;

    #[test]
    fn bicubic_rows_sum_to_one_and_upsampling_by_one_is_the_identity() {
        let mut m = alloc::vec::Vec::new();
        bicubic_matrix(3, 9, &mut m);
        for row in m.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{row:?}");
        }
        let mut id = alloc::vec::Vec::new();
        bicubic_matrix(4, 4, &mut id);
        assert_eq!(id, [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    }
}
