//! The splatting renderer (spec 2): tokens to a feature map and back.

use super::Buffers;
use crate::render::SplatDesc;
use crate::shape::check_len;

pub trait SplatOps: Buffers {
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

/// The kernels behind [`SplatOps`], one per op, same signature. Called only after the front end
/// (the blanket `impl<T: SplatKernels> SplatOps for T` below) has checked every buffer length
/// against the descriptor: implementations contain no shape logic.
pub trait SplatKernels: Buffers {
    /// [`SplatOps::splat_forward`].
    fn splat_forward(&self, desc: &SplatDesc, tokens: &Self::Buffer, out: &mut Self::Buffer)
        -> Result<(), Self::Error>;
    /// [`SplatOps::splat_backward`].
    fn splat_backward(
        &self,
        desc: &SplatDesc,
        tokens: &Self::Buffer,
        grad_out: &Self::Buffer,
        grad_tokens: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

impl<T: SplatKernels> SplatOps for T {
    fn splat_forward(&self, desc: &SplatDesc, tokens: &T::Buffer, out: &mut T::Buffer) -> Result<(), T::Error> {
        desc.check(self.len(tokens), self.len(out))?;
        SplatKernels::splat_forward(self, desc, tokens, out)
    }

    fn splat_backward(
        &self,
        desc: &SplatDesc,
        tokens: &T::Buffer,
        grad_out: &T::Buffer,
        grad_tokens: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(tokens), self.len(grad_out))?;
        check_len("token gradients", desc.tokens_len(), self.len(grad_tokens))?;
        SplatKernels::splat_backward(self, desc, tokens, grad_out, grad_tokens)
    }
}
