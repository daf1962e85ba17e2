//! The norm, attention and RoIAlign conformance suites on the CPU backend (rayon's global pool
//! and one thread), bit-identical results for one and two threads, and RoIAlign against the
//! official model's golden RoI features (torchvision's numbers). Timings of these ops live in
//! the criterion benches (`cargo bench -p gpstoken-benches --bench layers`).

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{Buffers, RoiAlignDesc, RoiOps};
use gpstoken_tests::conformance::{attention, norm, roi};
use gpstoken_tests::{max_rel_error, read_safetensors, shared_dir};

fn backends() -> [CpuBackend; 2] {
    [CpuBackend::with_threads(1).expect("one-thread pool"), CpuBackend::new()]
}

fn threads(n: usize) -> CpuBackend {
    CpuBackend::with_threads(n).expect("thread pool")
}

#[test]
fn group_norm_matches_reference() {
    for backend in backends() {
        norm::group_norm_matches_reference(&backend, norm::Tolerance::CPU);
        norm::group_norm_handles_constant_groups(&backend);
    }
}

#[test]
fn layer_norm_matches_reference() {
    for backend in backends() {
        norm::layer_norm_matches_reference(&backend, norm::Tolerance::CPU);
    }
}

#[test]
fn batch_norm_matches_reference() {
    for backend in backends() {
        norm::batch_norm_matches_reference(&backend, norm::Tolerance::CPU);
        norm::batch_norm_handles_constant_channels(&backend);
    }
}

#[test]
fn norm_rejects_bad_shapes() {
    for backend in backends() {
        norm::norm_rejects_bad_shapes(&backend);
        norm::batch_norm_rejects_bad_shapes(&backend);
    }
}

#[test]
fn attention_matches_reference() {
    for backend in backends() {
        attention::attention_matches_reference(&backend, attention::Tolerance::CPU);
    }
}

#[test]
fn attention_rejects_bad_shapes() {
    for backend in backends() {
        attention::attention_rejects_bad_shapes(&backend);
    }
}

#[test]
fn roi_align_matches_reference() {
    for backend in backends() {
        roi::roi_align_matches_reference(&backend, roi::Tolerance::CPU);
    }
}

#[test]
fn roi_align_rejects_bad_input() {
    for backend in backends() {
        roi::roi_align_rejects_bad_input(&backend);
    }
}

/// Asserts two output lists are identical bit for bit.
fn assert_same_bits(what: &str, a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) {
    assert_eq!(a.len(), b.len());
    for ((name, x), (name_b, y)) in a.iter().zip(b) {
        assert_eq!(name, name_b);
        assert_eq!(x.len(), y.len(), "{what} {name}: length");
        assert!(x.iter().all(|v| v.is_finite()), "{what} {name}: non-finite output");
        if let Some(i) = (0..x.len()).find(|&i| x[i].to_bits() != y[i].to_bits()) {
            panic!("{what} {name}: value {i} is {} with one thread and {} with two", x[i], y[i]);
        }
    }
}

#[test]
fn norm_is_deterministic_across_thread_counts() {
    let one = norm::norm_determinism_outputs(&threads(1));
    let two = norm::norm_determinism_outputs(&threads(2));
    assert_same_bits("norm", &one, &two);
    // Reusing a backend (scratch buffers from the first call) gives the same bits.
    let backend = threads(2);
    norm::norm_determinism_outputs(&backend);
    assert_same_bits("norm (second call)", &one, &norm::norm_determinism_outputs(&backend));
}

#[test]
fn attention_is_deterministic_across_thread_counts() {
    let one = attention::attention_determinism_outputs(&threads(1));
    let two = attention::attention_determinism_outputs(&threads(2));
    assert_same_bits("attention", &one, &two);
    let backend = threads(3);
    attention::attention_determinism_outputs(&backend);
    assert_same_bits(
        "attention (three threads, second call)",
        &one,
        &attention::attention_determinism_outputs(&backend),
    );
}

#[test]
fn roi_align_is_deterministic_across_thread_counts() {
    let one = roi::roi_determinism_outputs(&threads(1));
    let two = roi::roi_determinism_outputs(&threads(2));
    assert_same_bits("roi_align", &one, &two);
}

/// RoIAlign on the golden `x_preprocess` and `roi`, then `roialign_layer` (a 1x1 conv) in f64,
/// against the official `roi_conds` (torchvision's RoIAlign, PyTorch's conv).
#[test]
fn roi_align_matches_golden_roi_conds() {
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
    for backend in backends() {
        let features = backend.upload(&x.f32()).unwrap();
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
}
