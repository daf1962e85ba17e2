//! RoIAlign against the official model's golden RoI features (torchvision's numbers).

use crate::{max_rel_error, read_safetensors, shared_dir};
use gpstoken_core::backend::{RoiAlignDesc, RoiOps};

/// RoIAlign on the golden `x_preprocess` and `roi`, then `roialign_layer` (a 1x1 conv) in f64,
/// against the official `roi_conds` (torchvision's RoIAlign, PyTorch's conv).
pub fn roi_align_matches_golden_roi_conds<B: RoiOps>(backend: &B) {
    let Some(shared) = shared_dir("roi_align_matches_golden_roi_conds") else { return };
    let io = read_safetensors(&shared.join("golden/model/io.safetensors"));
    let weights = read_safetensors(&shared.join("golden/model/weights.safetensors"));
    let (x, rois, want) = (&io["x_preprocess"], &io["roi"], &io["roi_conds"]);
    let (conv_w, conv_b) = (&weights["roialign_layer.weight"], &weights["roialign_layer.bias"]);
    let [batch, channels, height, width] = x.shape[..] else { panic!("x_preprocess shape {:?}", x.shape) };
    let (k, e, p) = (rois.shape[0], want.shape[1], want.shape[2]);
    assert_eq!(conv_w.shape, [e, channels, 1, 1]);
    let desc = RoiAlignDesc {
        batch,
        channels,
        height,
        width,
        rois: k,
        pooled: p,
        spatial_scale: 1.0,
        sampling_ratio: -1,
        aligned: true,
    };
    let features = backend.upload(&x.f32()).unwrap();
    desc.check_boxes(&rois.f32()).expect("the golden boxes are valid");
    let boxes = backend.upload(&rois.f32()).unwrap();
    let mut out = backend.zeros(desc.out_len()).unwrap();
    backend.roi_align_forward(&desc, &features, &boxes, &mut out).unwrap();
    let mut rf = vec![0.0; desc.out_len()];
    backend.download(&out, &mut rf).unwrap();
    let mut conds = vec![0.0f64; k * e * p * p];
    for n in 0..k {
        for o in 0..e {
            for s in 0..p * p {
                conds[(n * e + o) * p * p + s] = conv_b.data[o]
                    + (0..channels)
                        .map(|c| conv_w.data[o * channels + c] * f64::from(rf[(n * channels + c) * p * p + s]))
                        .sum::<f64>();
            }
        }
    }
    let err = max_rel_error(&conds, &want.data);
    println!("roi_align + roialign_layer vs golden roi_conds: max_rel_error {err:.2e}");
    assert!(err <= 1e-5, "roi_conds max_rel_error {err:.3e} > 1e-5");
}
