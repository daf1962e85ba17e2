//! `RoiKernels` on CUDA: torchvision's RoIAlign (spec 5.2) in its f32 operation order
//! (`kernels/roi.cu`, the CPU backend's arithmetic).
//!
//! * Forward: one thread per output value, summing its bin's samples in torchvision's order.
//! * Backward: one thread per feature plane `(b, c)`, adding every RoI's contributions in RoI
//!   order (torchvision's serial order for that plane): no atomics, one writer per value. The
//!   parallelism is `batch * channels` threads, plenty for the tokenizer's 256+ channels.

use crate::launch::{params, read, write, Kernel};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::RoiKernels;
use gpstoken_core::backend::RoiAlignDesc;

params! {
    /// `roi_impl::Params` in `kernels/roi.cu`.
    struct RoiParams {
        total: u32, batch: u32, channels: u32, height: u32, width: u32, rois: u32, pooled: u32,
        spatial_scale: f32, sampling_ratio: i32, aligned: u32,
    }
}

fn roi_params(desc: &RoiAlignDesc, total: usize) -> Result<RoiParams, CudaError> {
    dims([desc.features_len(), desc.out_len()])?;
    let [total, batch, channels, height, width, rois, pooled] =
        dims([total, desc.batch, desc.channels, desc.height, desc.width, desc.rois, desc.pooled])?;
    Ok(RoiParams {
        total,
        batch,
        channels,
        height,
        width,
        rois,
        pooled,
        spatial_scale: desc.spatial_scale,
        sampling_ratio: desc.sampling_ratio,
        aligned: u32::from(desc.aligned),
    })
}

impl RoiKernels for CudaBackend {
    fn roi_align_forward(
        &self,
        desc: &RoiAlignDesc,
        features: &CudaBuffer,
        boxes: &CudaBuffer,
        out: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        if out.len == 0 {
            return Ok(());
        }
        let params = roi_params(desc, out.len)?;
        self.run(Kernel::RoiAlignForward, &[read(features), read(boxes), write(out)], &params, params.total)
    }

    fn roi_align_backward(
        &self,
        desc: &RoiAlignDesc,
        boxes: &CudaBuffer,
        dout: &CudaBuffer,
        dfeatures: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        if dfeatures.len == 0 {
            return Ok(());
        }
        let params = roi_params(desc, desc.batch * desc.channels)?;
        self.run(Kernel::RoiAlignBackward, &[read(boxes), read(dout), write(dfeatures)], &params, params.total)
    }
}
