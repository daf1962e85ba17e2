//! The backend trait: where tensors live and where every layer's forward and backward run.
//!
//! A backend owns device buffers of f32 ([`Buffers::Buffer`]); host code moves data in and out
//! only through [`Buffers::upload`], [`Buffers::write`] and [`Buffers::download`]. Every layer
//! is a pair of methods, `*_forward` and `*_backward`, that read and write buffers the caller
//! allocated once (llm.c style: a training step allocates nothing after the first step).
//!
//! The ops are grouped in one trait per family, one file per family (dfdx style), so that an op
//! is found in three places: its traits here, its kernel in each backend crate (a file of the
//! same name), and its conformance test (`tests/src/conformance/<family>.rs`). [`Backend`] is
//! every family together; model code is generic over `B: Backend`.
//!
//! Each family file holds two traits with the same methods: the front end `<Family>Ops`, which
//! callers use, and the kernel trait `<Family>Kernels` (re-exported in [`kernels`]), which a
//! backend implements. A blanket `impl<T: <Family>Kernels> <Family>Ops for T` runs every shape
//! check (the descriptor's `check` against [`Buffers::len`] of each buffer) and then calls the
//! kernel, so no backend repeats a check and kernels contain no shape logic. `Ops` does not
//! extend `Kernels`, so `B: Backend` sees each method name once.
//!
//! Conventions every op follows, on every backend:
//! * shapes travel in small `Copy` descriptors that the front end checks against the buffer
//!   lengths before any work: a mismatch is an `Err`, never a panic;
//! * data the front end cannot see without a device read-back (RoI boxes) is validated on the
//!   host where it is built ([`RoiAlignDesc::check_boxes`]); kernels stay in bounds whatever it
//!   holds;
//! * layouts are row-major, PyTorch's: images `[B, C, H, W]`, token rows `[B, N, F]`;
//! * backward ops **overwrite** their gradient outputs; where a tensor feeds several consumers
//!   the caller adds the parts with [`TensorOps::add_assign`]; optional gradients (`Option`)
//!   are skipped when `None`;
//! * the CPU backend is deterministic for any thread count (fixed summation order, no float
//!   atomics); GPU backends state their tolerance in the conformance suite, whose cross-backend
//!   check compares every op with the CPU backend.

mod attention;
mod conv;
mod gaussian;
mod linear;
mod loss;
mod norm;
mod optim;
mod roi;
mod splat;
mod tensor;

pub use attention::{AttentionDesc, AttentionOps};
pub use conv::{Conv2dDesc, ConvOps, UpsampleDesc};
pub use gaussian::{GaussianOps, MergeDesc, ReparamDesc};
pub use linear::{EmbeddingDesc, LinearDesc, LinearOps};
pub use loss::LossOps;
#[cfg(feature = "alloc")]
pub use norm::bicubic_matrix;
pub use norm::{bicubic_taps, cubic_weights, BatchNormDesc, GroupNormDesc, LayerNormDesc, NormKind, NormOps, CUBIC_A};
pub use optim::{ema_weight, AdamConfig, AdamStepScalars, AdamTensor, EmaTensor, OptimOps};
pub use roi::{RoiAlignDesc, RoiOps};
pub use splat::SplatOps;
pub use tensor::{Activation, ModulateDesc, PatchDesc, TensorOps, TransposeDesc};

/// What a backend crate implements: the kernel traits, one per family, each called by the
/// matching `*Ops` front end after every shape check. A backend implements [`Buffers`] and
/// every trait here; the blanket impls give it the `*Ops` traits and so [`Backend`]. Kept in
/// their own module so that model code, which sees only the `*Ops` traits, never has two
/// methods of the same name in scope.
pub mod kernels {
    pub use super::attention::AttentionKernels;
    pub use super::conv::ConvKernels;
    pub use super::gaussian::GaussianKernels;
    pub use super::linear::LinearKernels;
    pub use super::loss::LossKernels;
    pub use super::norm::NormKernels;
    pub use super::optim::OptimKernels;
    pub use super::roi::RoiKernels;
    pub use super::splat::SplatKernels;
    pub use super::tensor::TensorKernels;
}

pub use crate::shape::ShapeError;
use core::fmt::{Debug, Display};

/// Buffer management: the part of a backend every op family builds on.
pub trait Buffers {
    /// A device buffer of f32 values.
    type Buffer;
    /// What can go wrong on this device; shape errors convert into it.
    type Error: Debug + Display + From<ShapeError>;

    /// Short name: `cpu`, `vulkan`, `cuda`.
    fn name(&self) -> &'static str;

    /// A new buffer of `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::Buffer, Self::Error>;
    /// A new buffer holding a copy of `host`.
    fn upload(&self, host: &[f32]) -> Result<Self::Buffer, Self::Error>;
    /// Overwrites `buffer` with `host` (same length).
    fn write(&self, buffer: &mut Self::Buffer, host: &[f32]) -> Result<(), Self::Error>;
    /// Copies `buffer` into `host` (same length), waiting for pending work.
    fn download(&self, buffer: &Self::Buffer, host: &mut [f32]) -> Result<(), Self::Error>;
    /// Number of f32 values in `buffer`.
    fn len(&self, buffer: &Self::Buffer) -> usize;
}

/// Every op family: what the tokenizer (and later the generator) needs from a device.
pub trait Backend:
    Buffers
    + TensorOps
    + LinearOps
    + ConvOps
    + NormOps
    + AttentionOps
    + RoiOps
    + SplatOps
    + GaussianOps
    + LossOps
    + OptimOps
{
}

impl<T> Backend for T where
    T: Buffers
        + TensorOps
        + LinearOps
        + ConvOps
        + NormOps
        + AttentionOps
        + RoiOps
        + SplatOps
        + GaussianOps
        + LossOps
        + OptimOps
{
}
