//! Conformance suite of [`RoiOps`]: torchvision's RoIAlign (spec 5.2), written once for every
//! backend.
//!
//! The forward is compared with a plain f64 reference written here (sample positions and
//! bilinear weights in f64; only the discrete choices, the samples per bin, are taken from the
//! f32 box arithmetic of spec 5.2), and the feature gradient with central finite differences of
//! the f64 loss `L = Σ dout · out`. Boxes of several sizes: inside the map, touching and
//! crossing its border, zero-size and inverted, with adaptive and fixed sampling ratios. Random
//! boxes are redrawn when a sample falls within [`MARGIN`] of the `-1` / `size` cut-offs, where
//! the f32 and f64 coordinates could fall on different sides of a jump.

use super::common::{assert_close, assert_exact, download, to_f64};
use crate::TestRng;
use gpstoken_core::backend::{RoiAlignDesc, RoiOps};

/// How close a backend must be to the f64 references.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Output vs the f64 reference, `max_rel_error`.
    pub forward: f64,
    /// Feature gradient vs central finite differences.
    pub finite_difference: f64,
}

/// Smallest distance from a sample to the `-1` and `size` cut-offs in random cases.
pub const MARGIN: f64 = 1e-3;

const STEP: f64 = 1e-3;

/// The sample coordinates of one box along each axis in f64: `(ys, xs, count)` with
/// `ys[ph * grid_h + iy]`, `xs[pw * grid_w + ix]`, and the averaging count.
pub fn sample_coords(desc: &RoiAlignDesc, roi: &[f32]) -> (Vec<f64>, Vec<f64>, f64) {
    let pooled = desc.pooled;
    // Samples per bin: the f32 arithmetic of spec 5.2 (a discrete choice).
    let offset32 = if desc.aligned { 0.5f32 } else { 0.0 };
    let s32 = desc.spatial_scale;
    let mut size32 =
        [(roi[4] * s32 - offset32) - (roi[2] * s32 - offset32), (roi[3] * s32 - offset32) - (roi[1] * s32 - offset32)];
    if !desc.aligned {
        size32 = size32.map(|v| v.max(1.0));
    }
    let grid =
        size32.map(|v| if desc.sampling_ratio > 0 { desc.sampling_ratio } else { (v / pooled as f32).ceil() as i32 });
    let count = (i64::from(grid[0]) * i64::from(grid[1])).max(1) as f64;
    // Positions: f64.
    let offset = if desc.aligned { 0.5 } else { 0.0 };
    let scale = f64::from(desc.spatial_scale);
    let axis = |lo: f32, hi: f32, grid: i32| -> Vec<f64> {
        let start = f64::from(lo) * scale - offset;
        let mut size = f64::from(hi) * scale - offset - start;
        if !desc.aligned {
            size = size.max(1.0);
        }
        let bin = size / pooled as f64;
        let n = grid.max(0) as usize;
        (0..pooled * n).map(|k| start + (k / n) as f64 * bin + ((k % n) as f64 + 0.5) * bin / f64::from(grid)).collect()
    };
    (axis(roi[2], roi[4], grid[0]), axis(roi[1], roi[3], grid[1]), count)
}

/// torchvision's bilinear interpolation rules in f64: the (index, weight) taps of one axis, or
/// `None` beyond the `[-1, size]` cut-offs.
fn bilinear_axis(c: f64, size: usize) -> Option<[(usize, f64); 2]> {
    if c < -1.0 || c > size as f64 {
        return None;
    }
    let c = c.max(0.0);
    let low = c.floor() as usize;
    if low >= size - 1 {
        return Some([(size - 1, 1.0), (size - 1, 0.0)]);
    }
    let l = c - low as f64;
    Some([(low, 1.0 - l), (low + 1, l)])
}

/// RoIAlign in f64: `out [K, C, P, P]`.
pub fn roi_align_reference(desc: &RoiAlignDesc, features: &[f64], boxes: &[f32]) -> Vec<f64> {
    let (c_n, p, h, w) = (desc.channels, desc.pooled, desc.height, desc.width);
    let mut out = vec![0.0; desc.out_len()];
    for (n, roi) in boxes.chunks_exact(5).enumerate() {
        let b = roi[0] as usize;
        let (ys, xs, count) = sample_coords(desc, roi);
        let (gh, gw) = (ys.len() / p, xs.len() / p);
        for c in 0..c_n {
            let plane = &features[(b * c_n + c) * h * w..(b * c_n + c + 1) * h * w];
            for ph in 0..p {
                for pw in 0..p {
                    let mut acc = 0.0;
                    for &y in &ys[ph * gh..(ph + 1) * gh] {
                        for &x in &xs[pw * gw..(pw + 1) * gw] {
                            if let (Some(ty), Some(tx)) = (bilinear_axis(y, h), bilinear_axis(x, w)) {
                                for (yi, wy) in ty {
                                    for (xi, wx) in tx {
                                        acc += wy * wx * plane[yi * w + xi];
                                    }
                                }
                            }
                        }
                    }
                    out[((n * c_n + c) * p + ph) * p + pw] = acc / count;
                }
            }
        }
    }
    out
}

/// One random RoIAlign problem.
#[derive(Clone, Debug)]
pub struct RoiCase {
    pub desc: RoiAlignDesc,
    pub features: Vec<f32>,
    pub boxes: Vec<f32>,
    pub dout: Vec<f32>,
}

/// The kinds of random boxes, in feature pixels (before `spatial_scale`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BoxKind {
    /// Smaller than a bin: one sample per bin.
    Small,
    /// A few bins' worth of samples, inside the map.
    Medium,
    /// From the first pixel centre to the last (as the encoder's whole-image region).
    Whole,
    /// Starting at the top-left border.
    TouchingBorder,
    /// Crossing the map's border on every side (samples beyond `-1` and `size` are zero).
    CrossingBorder,
    /// `x1 == x2`, `y1 == y2`.
    ZeroSize,
    /// `x2 < x1`, `y2 < y1`.
    Inverted,
}

impl BoxKind {
    pub const ALL: [BoxKind; 7] = [
        BoxKind::Small,
        BoxKind::Medium,
        BoxKind::Whole,
        BoxKind::TouchingBorder,
        BoxKind::CrossingBorder,
        BoxKind::ZeroSize,
        BoxKind::Inverted,
    ];
}

/// A random box `(x1, y1, x2, y2)` of `kind` on an `h x w` map (feature pixels).
fn random_box(rng: &mut TestRng, kind: BoxKind, pooled: usize, h: usize, w: usize) -> [f64; 4] {
    let (hf, wf, p) = (h as f64, w as f64, pooled as f64);
    let inside = |rng: &mut TestRng, (lo, hi): (f64, f64), extent: f64| {
        let size = rng.uniform(lo, hi) * p;
        let start = rng.uniform(0.0, (extent - 1.0 - size).max(0.0));
        (start, start + size)
    };
    match kind {
        BoxKind::Small => {
            let (x1, x2) = inside(rng, (0.3, 0.9), wf);
            let (y1, y2) = inside(rng, (0.3, 0.9), hf);
            [x1, y1, x2, y2]
        }
        BoxKind::Medium => {
            let (x1, x2) = inside(rng, (1.2, 2.6), wf);
            let (y1, y2) = inside(rng, (1.2, 2.6), hf);
            [x1, y1, x2, y2]
        }
        BoxKind::Whole => [0.0, 0.0, wf - 1.0, hf - 1.0],
        BoxKind::TouchingBorder => [0.0, 0.0, rng.uniform(0.4, 0.9) * wf, rng.uniform(0.4, 0.9) * hf],
        BoxKind::CrossingBorder => {
            [rng.uniform(-4.0, -0.2), rng.uniform(-4.0, -0.2), wf + rng.uniform(0.2, 4.0), hf + rng.uniform(0.2, 4.0)]
        }
        BoxKind::ZeroSize => {
            let (x, y) = (rng.uniform(0.0, wf - 1.0), rng.uniform(0.0, hf - 1.0));
            [x, y, x, y]
        }
        BoxKind::Inverted => {
            let (x1, x2) = inside(rng, (0.5, 2.0), wf);
            let (y1, y2) = inside(rng, (0.5, 2.0), hf);
            [x2, y2, x1, y1]
        }
    }
}

/// A random case: `per_kind` boxes of every [`BoxKind`], random batch indices, redrawn while a
/// sample lies within [`MARGIN`] of a cut-off.
pub fn roi_case(rng: &mut TestRng, desc: RoiAlignDesc) -> RoiCase {
    assert_eq!(desc.rois % BoxKind::ALL.len(), 0, "rois must be a multiple of the number of box kinds");
    let per_kind = desc.rois / BoxKind::ALL.len();
    let scale = f64::from(desc.spatial_scale);
    let mut boxes = Vec::with_capacity(desc.rois * 5);
    for _ in 0..per_kind {
        for kind in BoxKind::ALL {
            let roi = loop {
                let b = (rng.next_u64() % desc.batch as u64) as f32;
                let c = random_box(rng, kind, desc.pooled, desc.height, desc.width);
                let roi =
                    [b, (c[0] / scale) as f32, (c[1] / scale) as f32, (c[2] / scale) as f32, (c[3] / scale) as f32];
                let (ys, xs, _) = sample_coords(&desc, &roi);
                let far = |v: &[f64], size: usize| {
                    v.iter().all(|&c| (c + 1.0).abs() >= MARGIN && (c - size as f64).abs() >= MARGIN)
                };
                if far(&ys, desc.height) && far(&xs, desc.width) {
                    break roi;
                }
            };
            boxes.extend_from_slice(&roi);
        }
    }
    let features = (0..desc.features_len()).map(|_| rng.normal() as f32).collect();
    let dout = (0..desc.out_len()).map(|_| rng.normal() as f32).collect();
    RoiCase { desc, features, boxes, dout }
}

/// The backend's `(out, dfeatures)` (outputs start as NaN garbage).
pub fn roi_outputs<B: RoiOps>(backend: &B, case: &RoiCase) -> [Vec<f32>; 2] {
    let d = &case.desc;
    let up = |h: &[f32]| backend.upload(h).expect("upload");
    let garbage = |len: usize| backend.upload(&vec![f32::NAN; len]).expect("upload");
    let (features, boxes, dout) = (up(&case.features), up(&case.boxes), up(&case.dout));
    let mut out = garbage(d.out_len());
    backend.roi_align_forward(d, &features, &boxes, &mut out).expect("roi_align_forward");
    let mut dfeatures = garbage(d.features_len());
    backend.roi_align_backward(d, &boxes, &dout, &mut dfeatures).expect("roi_align_backward");
    [download(backend, &out), download(backend, &dfeatures)]
}

/// The shapes of the suite: adaptive (`-1` and `0`) and fixed sampling ratios, `spatial_scale`
/// 1 and 0.5, aligned (the model) and not.
pub fn roi_descs() -> Vec<RoiAlignDesc> {
    let base = RoiAlignDesc {
        batch: 2,
        channels: 3,
        height: 10,
        width: 12,
        rois: 14,
        pooled: 4,
        spatial_scale: 1.0,
        sampling_ratio: -1,
        aligned: true,
    };
    vec![
        base,
        RoiAlignDesc { sampling_ratio: 2, ..base },
        RoiAlignDesc { sampling_ratio: 0, spatial_scale: 0.5, ..base },
        RoiAlignDesc { sampling_ratio: 3, aligned: false, ..base },
        RoiAlignDesc { aligned: false, ..base },
        RoiAlignDesc { batch: 1, channels: 2, height: 17, width: 19, rois: 7, pooled: 8, ..base },
    ]
}

/// Forward vs the f64 reference and the feature gradient vs finite differences.
pub fn roi_align_matches_reference<B: RoiOps>(backend: &B, tol: Tolerance) {
    let mut rng = TestRng::new(0x2011_0001);
    for desc in roi_descs() {
        let case = roi_case(&mut rng, desc);
        let [out, dfeatures] = roi_outputs(backend, &case);
        let label = format!(
            "{} roi_align {}x{} P={} scale={} sampling={} aligned={}",
            backend.name(),
            desc.height,
            desc.width,
            desc.pooled,
            desc.spatial_scale,
            desc.sampling_ratio,
            desc.aligned
        );
        let mut features = to_f64(&case.features);
        assert_close(
            &format!("{label} forward"),
            &out,
            &roi_align_reference(&desc, &features, &case.boxes),
            tol.forward,
        );
        // Zero-size boxes with adaptive sampling have no sample: their output is exactly zero.
        for (n, roi) in case.boxes.chunks_exact(5).enumerate() {
            if desc.aligned && desc.sampling_ratio <= 0 && roi[1] == roi[3] && roi[2] == roi[4] {
                let len = desc.channels * desc.pooled * desc.pooled;
                assert!(out[n * len..(n + 1) * len].iter().all(|&v| v == 0.0), "{label}: zero-size box {n} not zero");
            }
        }
        let dout = to_f64(&case.dout);
        let fd: Vec<f64> = (0..features.len())
            .map(|i| {
                let base = features[i];
                let mut loss = |v: f64| {
                    features[i] = v;
                    roi_align_reference(&desc, &features, &case.boxes)
                        .iter()
                        .zip(&dout)
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                };
                let d = (loss(base + STEP) - loss(base - STEP)) / (2.0 * STEP);
                features[i] = base;
                d
            })
            .collect();
        assert_close(&format!("{label} dfeatures vs finite differences"), &dfeatures, &fd, tol.finite_difference);
    }
}

/// Shape errors are errors (never panics); bad batch indices fail the host validation
/// ([`RoiAlignDesc::check_boxes`]) and do not disturb the other boxes in the kernels.
pub fn roi_align_rejects_bad_input<B: RoiOps>(backend: &B) {
    let z = |len: usize| backend.zeros(len).expect("zeros");
    let d = RoiAlignDesc {
        batch: 2,
        channels: 3,
        height: 5,
        width: 6,
        rois: 2,
        pooled: 2,
        spatial_scale: 1.0,
        sampling_ratio: -1,
        aligned: true,
    };
    let good_boxes = [0.0, 0.5, 0.5, 3.0, 3.0, 1.0, 1.0, 1.0, 4.0, 4.0];
    let boxes = backend.upload(&good_boxes).expect("upload");
    let (fl, ol) = (d.features_len(), d.out_len());
    let fwd = |d: &RoiAlignDesc, f: usize, b: &B::Buffer, o: usize| {
        backend.roi_align_forward(d, &z(f), b, &mut z(o)).is_err()
    };
    let bwd = |d: &RoiAlignDesc, b: &B::Buffer, o: usize, f: usize| {
        backend.roi_align_backward(d, b, &z(o), &mut z(f)).is_err()
    };
    assert!(!fwd(&d, fl, &boxes, ol) && !bwd(&d, &boxes, ol, fl), "well-shaped roi_align");
    assert!(fwd(&d, fl - 1, &boxes, ol), "short features");
    assert!(fwd(&d, fl, &z(9), ol), "short boxes");
    assert!(fwd(&d, fl, &boxes, ol + 1), "long output");
    assert!(fwd(&RoiAlignDesc { pooled: 0, ..d }, fl, &boxes, 0), "pooled 0");
    assert!(bwd(&d, &z(11), ol, fl), "long boxes");
    assert!(bwd(&d, &boxes, ol - 1, fl), "short dout");
    assert!(bwd(&d, &boxes, ol, fl + 1), "long dfeatures");
    assert!(bwd(&RoiAlignDesc { pooled: 0, ..d }, &boxes, 0, fl), "pooled 0");
    // Boxes are validated on the host where they are built; the kernels trust them but must
    // stay in bounds on a bad one, leaving the valid boxes' outputs and gradients alone.
    assert!(d.check_boxes(&good_boxes).is_ok(), "valid boxes");
    assert!(d.check_boxes(&good_boxes[..9]).is_err(), "short host boxes");
    let features: Vec<f32> = (0..fl).map(|i| (i % 7) as f32 - 3.0).collect();
    let dout: Vec<f32> = (0..ol).map(|i| (i % 5) as f32 - 2.0).collect();
    let run = |host: &[f32]| {
        let boxes = backend.upload(host).expect("upload");
        let mut out = z(ol);
        backend.roi_align_forward(&d, &backend.upload(&features).expect("upload"), &boxes, &mut out).expect("forward");
        let mut grad = z(fl);
        let one_box = backend.upload(&[&dout[..ol / 2], &vec![0.0; ol / 2][..]].concat()).expect("upload");
        backend.roi_align_backward(&d, &boxes, &one_box, &mut grad).expect("backward");
        (download(backend, &out), download(backend, &grad))
    };
    let (good_out, good_grad) = run(&good_boxes);
    for bad in [2.0, -1.0, 0.5, f32::NAN, f32::INFINITY] {
        let mut host = good_boxes;
        host[5] = bad;
        assert!(d.check_boxes(&host).is_err(), "batch index {bad} passes the host validation");
        let (out, grad) = run(&host);
        assert_exact(
            &format!("first box's output beside a box with batch index {bad}"),
            &out[..ol / 2],
            &good_out[..ol / 2],
        );
        assert_exact(&format!("gradient of the first box beside a box with batch index {bad}"), &grad, &good_grad);
    }
}

/// Every output on a shape large enough to spread over several threads, for comparing
/// backends or thread counts bit for bit.
pub fn roi_determinism_outputs<B: RoiOps>(backend: &B) -> Vec<(String, Vec<f32>)> {
    let mut rng = TestRng::new(0x2011_0002);
    let desc = RoiAlignDesc {
        batch: 2,
        channels: 16,
        height: 32,
        width: 32,
        rois: 42,
        pooled: 8,
        spatial_scale: 1.0,
        sampling_ratio: -1,
        aligned: true,
    };
    let case = roi_case(&mut rng, desc);
    let [out, dfeatures] = roi_outputs(backend, &case);
    vec![("roi_align out".into(), out), ("roi_align dfeatures".into(), dfeatures)]
}
