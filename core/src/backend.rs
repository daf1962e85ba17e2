//! The backend trait: where tensors live and where every layer's forward and backward run.
//!
//! A backend owns device buffers of f32 ([`Backend::Buffer`]); host code moves data in and
//! out only through [`Backend::upload`], [`Backend::write`] and [`Backend::download`]. Every
//! op is a pair of methods, `*_forward` and `*_backward`, that read and write buffers the
//! caller allocated once (llm.c style: a training step allocates nothing).
//!
//! Conventions every op follows, on every backend:
//! * shapes travel in small `Copy` descriptors (e.g. [`SplatDesc`]) that are checked against
//!   the buffer lengths before any work: a mismatch is an error, never a panic;
//! * backward ops **overwrite** their gradient outputs (the caller adds when a tensor feeds
//!   several consumers);
//! * the CPU backend is deterministic for any thread count (fixed summation order, no float
//!   atomics); GPU backends state their tolerance against the CPU in the conformance suite.
//!
//! The next layers (conv2d, norms, attention, RoIAlign, ...) are added here as further
//! forward/backward pairs, implemented by each backend and checked by the conformance suite in
//! `tests/src/conformance.rs`.

use crate::render::SplatDesc;
use core::fmt::{Debug, Display};

pub trait Backend {
    /// A device buffer of f32 values.
    type Buffer;
    /// What can go wrong on this device (shape errors included).
    type Error: Debug + Display;

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

    /// Splat forward: tokens `[B, N, 5+C]` to the feature map `[B, C, H, W]` (spec 2.1).
    fn splat_forward(&self, desc: &SplatDesc, tokens: &Self::Buffer, out: &mut Self::Buffer)
        -> Result<(), Self::Error>;

    /// Splat backward: from `grad_out = dL/d(feature map)` `[B, C, H, W]` to
    /// `grad_tokens = dL/d(tokens)` `[B, N, 5+C]` (spec 2.2), overwritten.
    fn splat_backward(
        &self,
        desc: &SplatDesc,
        tokens: &Self::Buffer,
        grad_out: &Self::Buffer,
        grad_tokens: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}
