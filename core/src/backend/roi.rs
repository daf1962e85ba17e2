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
}

pub trait RoiOps: Buffers {
    /// Bilinear RoI pooling. A box whose batch index is not an integer in `0..batch` is an error.
    fn roi_align_forward(
        &self,
        desc: &RoiAlignDesc,
        features: &Self::Buffer,
        boxes: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// Gradient w.r.t. the features, overwritten (boxes get none, as in torchvision).
    fn roi_align_backward(
        &self,
        desc: &RoiAlignDesc,
        boxes: &Self::Buffer,
        dout: &Self::Buffer,
        dfeatures: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}
