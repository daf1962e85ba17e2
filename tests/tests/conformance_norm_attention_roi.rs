//! The norm, attention and RoIAlign conformance suites on the CPU backend (rayon's global pool
//! and one thread), bit-identical results for one and two threads, and RoIAlign against the
//! official model's golden RoI features (torchvision's numbers).

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{AttentionOps, Buffers, RoiAlignDesc, RoiOps};
use gpstoken_tests::conformance::{attention, norm, roi};
use gpstoken_tests::{max_rel_error, read_safetensors, shared_dir, TestRng};
use std::time::Instant;

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
fn norm_rejects_bad_shapes() {
    for backend in backends() {
        norm::norm_rejects_bad_shapes(&backend);
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

/// Rough timings of the decoder-size single-head attention (4096 x 4096 x 512) on one and two
/// threads, with bit-identical results. `cargo test --release -- --ignored --nocapture`.
#[test]
#[ignore = "timing: about a minute"]
fn attention_decoder_size_timing() {
    let desc = attention::attention_desc(1, 1, 4096, 4096, 512);
    let case = attention::attention_case(&mut TestRng::new(7), desc);
    let mut results = Vec::new();
    for n in [1, 2] {
        let backend = threads(n);
        let up = |h: &[f32]| backend.upload(h).unwrap();
        let (q, k, v, dout) = (up(&case.q), up(&case.k), up(&case.v), up(&case.dout));
        let (mut out, mut probs) = (backend.zeros(desc.q_len()).unwrap(), backend.zeros(desc.probs_len()).unwrap());
        let (mut dq, mut dk, mut dv) = (
            backend.zeros(desc.q_len()).unwrap(),
            backend.zeros(desc.kv_len()).unwrap(),
            backend.zeros(desc.kv_len()).unwrap(),
        );
        for _ in 0..2 {
            let t = Instant::now();
            backend.attention_forward(&desc, &q, &k, &v, &mut out, &mut probs).unwrap();
            let fwd = t.elapsed();
            let t = Instant::now();
            backend.attention_backward(&desc, &q, &k, &v, &probs, &dout, &mut dq, &mut dk, &mut dv).unwrap();
            println!("{n} thread(s): attention 4096x4096x512 forward {fwd:.2?}, backward {:.2?}", t.elapsed());
        }
        results.push([out, dq, dk, dv]);
    }
    assert!(results[0] == results[1], "one and two threads differ");
}

/// Rough timings of the decoder-size GroupNorms and the encoder-size RoIAlign on one and two
/// threads, with bit-identical results. `cargo test --release -- --ignored --nocapture`.
#[test]
#[ignore = "timing"]
fn norm_and_roi_timing() {
    use gpstoken_core::backend::{GroupNormDesc, NormKind, NormOps};
    let mut rng = TestRng::new(8);
    let base = GroupNormDesc {
        batch: 1,
        channels: 128,
        height: 256,
        width: 256,
        groups: 32,
        eps: 1e-6,
        kind: NormKind::StdPlusEps,
        patches: 1,
    };
    for desc in
        [base, GroupNormDesc { patches: 4, ..base }, GroupNormDesc { channels: 512, height: 64, width: 64, ..base }]
    {
        let case = norm::group_norm_case(&mut rng, desc);
        let mut results = Vec::new();
        for n in [1, 2] {
            let backend = threads(n);
            norm::group_norm_outputs(&backend, &case); // warm the scratch pool
            let (x, g, b, dy) = (
                backend.upload(&case.x).unwrap(),
                backend.upload(&case.gamma).unwrap(),
                backend.upload(&case.beta).unwrap(),
                backend.upload(&case.dy).unwrap(),
            );
            let (mut y, mut st) = (backend.zeros(desc.len()).unwrap(), backend.zeros(desc.stats_len()).unwrap());
            let (mut dx, mut dg, mut db) = (
                backend.zeros(desc.len()).unwrap(),
                backend.zeros(desc.channels).unwrap(),
                backend.zeros(desc.channels).unwrap(),
            );
            let t = Instant::now();
            backend.group_norm_forward(&desc, &x, &g, &b, &mut y, &mut st).unwrap();
            let fwd = t.elapsed();
            let t = Instant::now();
            backend.group_norm_backward(&desc, &x, &g, &st, &dy, &mut dx, &mut dg, &mut db).unwrap();
            println!(
                "{n} thread(s): group_norm C={} {}x{} np={} forward {fwd:.2?}, backward {:.2?}",
                desc.channels,
                desc.height,
                desc.width,
                desc.patches,
                t.elapsed()
            );
            results.push([y, dx, dg, db]);
        }
        assert!(results[0] == results[1], "one and two threads differ");
    }
    let desc = RoiAlignDesc {
        batch: 2,
        channels: 128,
        height: 256,
        width: 256,
        rois: 512,
        pooled: 8,
        spatial_scale: 1.0,
        sampling_ratio: -1,
        aligned: true,
    };
    let features: Vec<f32> = (0..desc.features_len()).map(|_| rng.normal() as f32).collect();
    let mut boxes = Vec::new();
    for n in 0..desc.rois {
        let side = [8.0, 16.0, 32.0, 64.0][n % 4];
        let (x0, y0) = (rng.uniform(0.0, 255.0 - side), rng.uniform(0.0, 255.0 - side));
        boxes.extend_from_slice(&[
            (n / 256) as f32,
            x0 as f32,
            y0 as f32,
            (x0 + side - 1.0) as f32,
            (y0 + side - 1.0) as f32,
        ]);
    }
    let dout: Vec<f32> = (0..desc.out_len()).map(|_| rng.normal() as f32).collect();
    let mut results = Vec::new();
    for n in [1, 2] {
        let backend = threads(n);
        let (f, bx, d) =
            (backend.upload(&features).unwrap(), backend.upload(&boxes).unwrap(), backend.upload(&dout).unwrap());
        let (mut out, mut df) = (backend.zeros(desc.out_len()).unwrap(), backend.zeros(desc.features_len()).unwrap());
        let t = Instant::now();
        backend.roi_align_forward(&desc, &f, &bx, &mut out).unwrap();
        let fwd = t.elapsed();
        let t = Instant::now();
        backend.roi_align_backward(&desc, &bx, &d, &mut df).unwrap();
        println!("{n} thread(s): roi_align 2x128x256x256, 512 boxes: forward {fwd:.2?}, backward {:.2?}", t.elapsed());
        results.push([out, df]);
    }
    assert!(results[0] == results[1], "one and two threads differ");
}
