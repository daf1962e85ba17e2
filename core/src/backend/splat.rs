//! The splatting renderer (spec 2): tokens to a feature map and back.

use super::Buffers;
use crate::render::SplatDesc;

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
