//! `RoiOps` on Vulkan: torchvision's RoIAlign (spec 5.2), forward and backward, without atomics.
//!
//! * Forward (`shaders/roi/roi_align_forward.comp`): one invocation per output value, the
//!   CPU backend's f32 operation order (`precise`), so it gives torchvision's bits wherever the
//!   device rounds f32 arithmetic correctly.
//! * Backward, a gather: `roi_axis_weights.comp` tabulates, per box, bin and row (or column),
//!   the summed bilinear weight of the bin's samples on that row (column) and the range of bins
//!   touching it; `roi_image_boxes.comp` lists each image's boxes in order; then
//!   `roi_align_backward.comp` gives every feature value to one invocation that adds the bins
//!   touching it, its image's boxes in order. A sample's weight on a pixel is
//!   the product of its row and column weights, so the sum over a bin's samples factors into
//!   the two tables. One writer per value and a fixed order: the same bits run to run.
//!
//! The shaders skip a box whose batch index is not an integer in `0..batch` (zeros in the
//! forward, nothing in the backward), so an invalid box never reads out of bounds; boxes are
//! validated on the host where they are built (`RoiAlignDesc::check_boxes`), never read back.

use crate::pipeline::{push_constants, Shader};
use crate::recorder::{read, write};
use crate::{dims, PoolKind, VulkanBackend, VulkanBuffer, VulkanError};
use gpstoken_core::backend::kernels::RoiKernels;
use gpstoken_core::backend::RoiAlignDesc;

push_constants! {
    /// `shaders/roi/params.glsl`, shared by every RoIAlign shader.
    struct RoiParams {
        batch: u32,
        channels: u32,
        height: u32,
        width: u32,
        rois: u32,
        pooled: u32,
        spatial_scale: f32,
        sampling_ratio: i32,
        aligned: u32,
    }
}

impl RoiParams {
    fn new(desc: &RoiAlignDesc) -> Result<RoiParams, VulkanError> {
        let [batch, channels, height, width, rois, pooled] =
            dims([desc.batch, desc.channels, desc.height, desc.width, desc.rois, desc.pooled])?;
        Ok(RoiParams {
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
}

impl RoiKernels for VulkanBackend {
    fn roi_align_forward(
        &self,
        desc: &RoiAlignDesc,
        features: &VulkanBuffer,
        boxes: &VulkanBuffer,
        out: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let [total] = dims([desc.out_len()])?;
        let params = RoiParams::new(desc)?;
        self.run(Shader::RoiAlignForward, &[read(features), read(boxes), write(out)], &params, total)
    }

    fn roi_align_backward(
        &self,
        desc: &RoiAlignDesc,
        boxes: &VulkanBuffer,
        dout: &VulkanBuffer,
        dfeatures: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let entries = desc.height + desc.width;
        let list_len = desc.batch + desc.batch * desc.rois;
        let [jobs, total, images, _] = dims([desc.rois * entries, desc.features_len(), desc.batch, list_len])?;
        let params = RoiParams::new(desc)?;
        let weights = self.allocate(PoolKind::Device, desc.rois * desc.pooled * entries)?;
        // Two u32 per (box, row or column): the range of bins touching it.
        let ranges = self.allocate(PoolKind::Device, 2 * desc.rois * entries)?;
        // u32: each image's box count, then its boxes in order.
        let image_boxes = self.allocate(PoolKind::Device, list_len)?;
        self.run(Shader::RoiAxisWeights, &[read(boxes), write(&weights), write(&ranges)], &params, jobs)?;
        self.run(Shader::RoiImageBoxes, &[read(boxes), write(&image_boxes)], &params, images)?;
        let bindings = [read(boxes), read(&weights), read(&ranges), read(&image_boxes), read(dout), write(dfeatures)];
        self.run(Shader::RoiAlignBackward, &bindings, &params, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpstoken_core::backend::{Buffers, RoiOps};

    fn download(vk: &VulkanBackend, buffer: &VulkanBuffer) -> Vec<f32> {
        let mut host = vec![0.0f32; buffer.len];
        vk.download(buffer, &mut host).expect("download");
        host
    }

    /// The kernels skip a box with an invalid batch index (or NaN coordinates) without reading
    /// out of bounds: its forward output is zero, and the backward equals the backward without
    /// it (through the front end, which checks lengths only: boxes are the host's to validate).
    #[test]
    fn kernels_skip_invalid_boxes() {
        let Ok(vk) = VulkanBackend::new(0) else {
            assert!(std::env::var("GPSTOKEN_REQUIRE_VULKAN").map_or(true, |v| v != "1"), "no Vulkan device");
            println!("SKIPPED: no Vulkan device");
            return;
        };
        let nan = f32::NAN;
        let valid = [[1.0, 0.5, 1.0, 4.0, 3.5], [0.0, -2.0, -1.0, 9.0, 7.0]];
        let invalid = [
            [2.0, 0.5, 0.5, 3.0, 3.0],
            [-1.0, 0.5, 0.5, 3.0, 3.0],
            [0.5, 0.5, 0.5, 3.0, 3.0],
            [nan, 0.5, 0.5, 3.0, 3.0],
        ];
        let invalid_inf = [[f32::INFINITY, 0.5, 0.5, 3.0, 3.0], [1.0, nan, nan, nan, nan]];
        let desc = |rois: usize| RoiAlignDesc {
            batch: 2,
            channels: 3,
            height: 6,
            width: 7,
            rois,
            pooled: 2,
            spatial_scale: 1.0,
            sampling_ratio: -1,
            aligned: true,
        };
        let (all, only_valid) = (desc(8), desc(2));
        let mut boxes: Vec<f32> = valid.iter().flatten().copied().collect();
        boxes.extend(invalid.iter().chain(&invalid_inf).flatten());
        let features: Vec<f32> = (0..all.features_len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let dout: Vec<f32> = (0..all.out_len()).map(|i| (i as f32 * 0.11).cos()).collect();
        let up = |host: &[f32]| vk.upload(host).expect("upload");
        let features = up(&features);
        let run = |d: &RoiAlignDesc, boxes: &[f32]| {
            let (boxes, mut out, mut dfeatures) =
                (up(boxes), up(&vec![nan; d.out_len()]), up(&vec![nan; d.features_len()]));
            RoiOps::roi_align_forward(&vk, d, &features, &boxes, &mut out).expect("forward");
            // The valid boxes' output gradients come first in `dout`.
            let dout = up(&dout[..d.out_len()]);
            RoiOps::roi_align_backward(&vk, d, &boxes, &dout, &mut dfeatures).expect("backward");
            (download(&vk, &out), download(&vk, &dfeatures))
        };
        let (out_all, grad_all) = run(&all, &boxes);
        let (out_valid, grad_valid) = run(&only_valid, &boxes[..10]);
        assert_eq!(out_all[..out_valid.len()], out_valid[..]);
        assert!(out_valid.iter().all(|v| v.is_finite()) && out_valid.iter().any(|&v| v != 0.0));
        assert!(out_all[out_valid.len()..].iter().all(|&v| v == 0.0), "invalid boxes give zeros");
        assert_eq!(grad_all, grad_valid, "invalid boxes add nothing to the gradient");
    }
}
