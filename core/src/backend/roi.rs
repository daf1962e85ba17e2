//! RoIAlign (torchvision, spec 5.2).

use super::Buffers;
use crate::shape::{check_len, ensure, ShapeError};

/// `out [K, C, P, P]` from `features [B, C, H, W]` and `boxes [K, 5]` rows
/// `(batch_index, x1, y1, x2, y2)` in input pixels (times `spatial_scale`). torchvision's
/// `roi_align` with `aligned` (boxes shifted by -0.5, no minimum size) and `sampling_ratio`
/// (`<= 0`: adaptive, `ceil(roi_size / P)` samples per bin and axis); the f32 operation order of
/// spec 5.2 (bit-exact with torchvision's CPU kernel).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoiAlignDesc {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub rois: usize,
    /// Output bins per side (8 in every config).
    pub pooled: usize,
    pub spatial_scale: f32,
    pub sampling_ratio: i32,
    pub aligned: bool,
}

impl RoiAlignDesc {
    pub fn features_len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }
    pub fn out_len(&self) -> usize {
        self.rois * self.channels * self.pooled * self.pooled
    }
    pub fn check(&self, features: usize, boxes: usize, out: usize) -> Result<(), ShapeError> {
        ensure(self.pooled >= 1, "pooled size must be at least 1")?;
        check_len("roi features", self.features_len(), features)?;
        check_len("roi boxes", self.rois * 5, boxes)?;
        check_len("roi output", self.out_len(), out)
    }

    /// Checks the backward's buffers: boxes, the output gradient and the feature gradient.
    pub fn check_backward(&self, boxes: usize, dout: usize, dfeatures: usize) -> Result<(), ShapeError> {
        ensure(self.pooled >= 1, "pooled size must be at least 1")?;
        check_len("roi boxes", self.rois * 5, boxes)?;
        check_len("roi output gradient", self.out_len(), dout)?;
        check_len("roi feature gradient", self.features_len(), dfeatures)
    }

    /// The image a box `(batch_index, x1, y1, x2, y2)` reads, from its first value: the batch
    /// index when that is an integer in `0..batch`, else `None`. Kernels use it to stay in bounds
    /// on an invalid box.
    pub fn batch_index(&self, b: f32) -> Option<usize> {
        // `b as usize` saturates (NaN gives 0), so the round trip through usize tests integrality.
        (b.is_finite() && b >= 0.0 && (b as usize) as f32 == b && (b as usize) < self.batch).then_some(b as usize)
    }

    /// Host-side validation of the boxes (`[rois, 5]`) before they are uploaded: every batch
    /// index an integer in `0..batch`. The kernels do not check boxes (a device backend could
    /// only do so by reading them back), so whoever builds boxes calls this.
    pub fn check_boxes(&self, boxes: &[f32]) -> Result<(), ShapeError> {
        check_len("roi boxes", self.rois * 5, boxes.len())?;
        ensure(
            boxes.chunks_exact(5).all(|roi| self.batch_index(roi[0]).is_some()),
            "roi batch index must be an integer in 0..batch",
        )
    }
}

pub trait RoiOps: Buffers {
    /// Bilinear RoI pooling. The boxes must be valid ([`RoiAlignDesc::check_boxes`], on the
    /// host where they are built): the op does not read them back to check. A box with an
    /// invalid batch index gives unspecified values for its own output (zeros on the CPU), never
    /// an out-of-bounds access.
    fn roi_align_forward(
        &self,
        desc: &RoiAlignDesc,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// Gradient w.r.t. the features, overwritten (boxes get none, as in torchvision). A box with
    /// an invalid batch index contributes nothing.
    fn roi_align_backward(
        &self,
        desc: &RoiAlignDesc,
        boxes: &Self::Buffer,
        dout: &Self::Buffer,
        dfeatures: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

/// The kernels behind [`RoiOps`], one per op, same signature. Called only after the front end
/// (the blanket `impl<T: RoiKernels> RoiOps for T` below) has checked every buffer length
/// against the descriptor: implementations contain no shape logic.
pub trait RoiKernels: Buffers {
    /// [`RoiOps::roi_align_forward`].
    fn roi_align_forward(
        &self,
        desc: &RoiAlignDesc,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`RoiOps::roi_align_backward`].
    fn roi_align_backward(
        &self,
        desc: &RoiAlignDesc,
        boxes: &Self::Buffer,
        dout: &Self::Buffer,
        dfeatures: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

impl<T: RoiKernels> RoiOps for T {
    fn roi_align_forward(
        &self,
        desc: &RoiAlignDesc,
        features: &T::Buffer,
        boxes: &T::Buffer,
        out: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(features), self.len(boxes), self.len(out))?;
        RoiKernels::roi_align_forward(self, desc, features, boxes, out)
    }

    fn roi_align_backward(
        &self,
        desc: &RoiAlignDesc,
        boxes: &T::Buffer,
        dout: &T::Buffer,
        dfeatures: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check_backward(self.len(boxes), self.len(dout), self.len(dfeatures))?;
        RoiKernels::roi_align_backward(self, desc, boxes, dout, dfeatures)
    }
}
