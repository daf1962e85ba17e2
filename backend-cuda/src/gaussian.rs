//! `GaussianOps` on CUDA: the encoder's reparameterisation of the Gaussian parameters (spec 1)
//! and the multi-patch merge (spec 2.4).
//!
//! Every op is elementwise, one thread per output value, in the CPU backend's f32 order
//! (`kernels/gaussian.cu`): no reduction, so results are the same bits run to run.

use crate::launch::{params, Kernel};
use crate::launch::{read, write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::GaussianKernels;
use gpstoken_core::backend::{MergeDesc, ReparamDesc};
use gpstoken_core::token::GAUSSIAN_PARAMS;

params! {
    /// `kernels/gaussian.cu` `reparam_{forward,backward}` (the forward ignores `write_dg_init`).
    struct ReparamParams { total: u32, channels: u32, write_dg_init: u32 }
}
params! {
    /// `kernels/gaussian.cu` `merge_patches`.
    struct MergeParams { total: u32, stride: u32, tokens_per_patch: u32, patches: u32, backward: u32 }
}

impl CudaBackend {
    /// The merge (`backward = false`) or its gradient, `src` to `dst`, both `desc.len()` values.
    fn merge(&self, desc: &MergeDesc, src: &CudaBuffer, dst: &CudaBuffer, backward: bool) -> Result<(), CudaError> {
        let [total, stride, tokens_per_patch, patches] =
            dims([desc.len(), GAUSSIAN_PARAMS + desc.channels, desc.tokens_per_patch, desc.patches])?;
        let params = MergeParams { total, stride, tokens_per_patch, patches, backward: u32::from(backward) };
        self.run(Kernel::MergePatches, &[read(src), write(dst)], &params, total)
    }
}

impl GaussianKernels for CudaBackend {
    fn gaussian_reparam_forward(
        &self,
        desc: &ReparamDesc,
        g_init: &CudaBuffer,
        delta: &CudaBuffer,
        features: &CudaBuffer,
        tokens: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let [total, channels] = dims([tokens.len, desc.channels])?;
        let params = ReparamParams { total, channels, write_dg_init: 0 };
        let bindings = [read(g_init), read(delta), read(features), write(tokens)];
        self.run(Kernel::ReparamForward, &bindings, &params, total)
    }

    fn gaussian_reparam_backward(
        &self,
        desc: &ReparamDesc,
        g_init: &CudaBuffer,
        delta: &CudaBuffer,
        dtokens: &CudaBuffer,
        ddelta: &mut CudaBuffer,
        dfeatures: &mut CudaBuffer,
        dg_init: Option<&mut CudaBuffer>,
    ) -> Result<(), CudaError> {
        let [total, channels] = dims([dtokens.len, desc.channels])?;
        let params = ReparamParams { total, channels, write_dg_init: u32::from(dg_init.is_some()) };
        // Without dg_init, `ddelta` stands in for its binding (never written through it).
        let dg_binding = dg_init.as_deref().unwrap_or(ddelta);
        let bindings = [read(g_init), read(delta), read(dtokens), write(ddelta), write(dfeatures), write(dg_binding)];
        self.run(Kernel::ReparamBackward, &bindings, &params, total)
    }

    fn merge_patches_forward(
        &self,
        desc: &MergeDesc,
        tokens: &CudaBuffer,
        merged: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        self.merge(desc, tokens, merged, false)
    }

    fn merge_patches_backward(
        &self,
        desc: &MergeDesc,
        dmerged: &CudaBuffer,
        dtokens: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        self.merge(desc, dmerged, dtokens, true)
    }
}
