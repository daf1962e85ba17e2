//! The CPU backend gives the same bits with one and two threads (and from call to call, with its
//! scratch buffers reused), on shapes large enough for both threads to get work. The suite's
//! cross-backend check compares a two-thread backend with the one-thread reference too
//! (`conformance_cpu.rs`); these shapes are larger and cover the reduction chunking.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{Buffers, Conv2dDesc, ConvOps, LinearDesc, LinearOps, LossOps};
use gpstoken_tests::conformance::{attention, norm, roi};
use gpstoken_tests::TestRng;

fn threads(n: usize) -> CpuBackend {
    CpuBackend::with_threads(n).expect("thread pool")
}

fn random(rng: &mut TestRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn assert_same_bits(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let differ = a.iter().zip(b).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{what}: {differ} values differ between 1 and 2 threads");
}

fn two_pools() -> (CpuBackend, CpuBackend) {
    let one = CpuBackend::with_threads(1).expect("pool");
    let two = CpuBackend::with_threads(2).expect("pool");
    assert_eq!((one.threads(), two.threads()), (1, 2));
    (one, two)
}

/// Runs `op` on both backends and returns the two results.
fn on_both<T>(op: impl Fn(&CpuBackend) -> T) -> (T, T) {
    let (one, two) = two_pools();
    (op(&one), op(&two))
}

#[test]
fn linear_is_bit_identical_for_one_and_two_threads() {
    let mut rng = TestRng::new(0xde7e_0001);
    for d in [
        LinearDesc { rows: 600, in_features: 300, out_features: 700 },
        LinearDesc { rows: 3000, in_features: 64, out_features: 5 },
    ] {
        let x = random(&mut rng, d.rows * d.in_features);
        let w = random(&mut rng, d.out_features * d.in_features);
        let b = random(&mut rng, d.out_features);
        let dy = random(&mut rng, d.rows * d.out_features);
        let (r1, r2) = on_both(|be| {
            let mut y = be.zeros(d.rows * d.out_features).unwrap();
            be.linear_forward(&d, &x, &w, Some(&b), &mut y).unwrap();
            let (mut dx, mut dw, mut db) =
                (be.zeros(x.len()).unwrap(), be.zeros(w.len()).unwrap(), be.zeros(b.len()).unwrap());
            be.linear_backward(&d, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).unwrap();
            [y, dx, dw, db]
        });
        for (name, (a, b)) in ["y", "dx", "dW", "db"].iter().zip(r1.iter().zip(&r2)) {
            assert_same_bits(&format!("linear {name} {d:?}"), a, b);
        }
    }
}

#[test]
fn conv_is_bit_identical_for_one_and_two_threads() {
    let mut rng = TestRng::new(0xde7e_0002);
    let descs = [
        Conv2dDesc::same(2, 48, 40, 40, 36, 3),
        Conv2dDesc {
            batch: 2,
            in_channels: 40,
            out_channels: 150,
            height: 34,
            width: 30,
            kernel: 4,
            stride: 2,
            padding: 1,
        },
        Conv2dDesc::same(1, 70, 30, 300, 20, 3),
        Conv2dDesc::same(2, 80, 24, 70, 66, 1),
    ];
    for d in descs {
        let x = random(&mut rng, d.input_len());
        let w = random(&mut rng, d.weight_len());
        let b = random(&mut rng, d.out_channels);
        let dy = random(&mut rng, d.output_len());
        let (r1, r2) = on_both(|be| {
            let mut y = be.zeros(d.output_len()).unwrap();
            be.conv2d_forward(&d, &x, &w, Some(&b), &mut y).unwrap();
            let (mut dx, mut dw, mut db) =
                (be.zeros(x.len()).unwrap(), be.zeros(w.len()).unwrap(), be.zeros(b.len()).unwrap());
            be.conv2d_backward(&d, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).unwrap();
            [y, dx, dw, db]
        });
        for (name, (a, b)) in ["y", "dx", "dW", "db"].iter().zip(r1.iter().zip(&r2)) {
            assert_same_bits(&format!("conv {name} {d:?}"), a, b);
        }
    }
}

#[test]
fn losses_are_bit_identical_for_one_and_two_threads() {
    let mut rng = TestRng::new(0xde7e_0003);
    let n = 3 * 256 * 256 * 2 + 17;
    let p = random(&mut rng, n);
    let t = random(&mut rng, n);
    let (r1, r2) = on_both(|be| {
        let (mut g1, mut g2) = (be.zeros(n).unwrap(), be.zeros(n).unwrap());
        let mse = be.mse_loss(&p, &t, Some(&mut g1)).unwrap();
        let l1 = be.l1_loss(&p, &t, Some(&mut g2)).unwrap();
        let (mut g3, mut g4, mut g5) = (be.zeros(n).unwrap(), be.zeros(n).unwrap(), be.zeros(n).unwrap());
        let mean = be.mean_loss(&p, Some(&mut g3)).unwrap();
        let real = be.hinge_loss(&p, true, Some(&mut g4)).unwrap();
        let fake = be.hinge_loss(&p, false, Some(&mut g5)).unwrap();
        ([mse, l1, mean, real, fake], [g1, g2, g3, g4, g5])
    });
    for (k, name) in ["mse", "l1", "mean", "hinge real", "hinge fake"].iter().enumerate() {
        assert_eq!(r1.0[k].to_bits(), r2.0[k].to_bits(), "{name} value");
        assert_same_bits(&format!("{name} gradient"), &r1.1[k], &r2.1[k]);
    }
}

#[test]
fn sum_rows_is_bit_identical_for_one_and_two_threads() {
    use gpstoken_core::backend::TensorOps;
    let mut rng = TestRng::new(0xde7e_0004);
    for (rows, cols) in [(5000, 300), (70_000, 3)] {
        let x = random(&mut rng, rows * cols);
        let (r1, r2) = on_both(|be| {
            let mut out = be.zeros(cols).unwrap();
            be.sum_rows(rows, cols, &x, &mut out).unwrap();
            out
        });
        assert_same_bits(&format!("sum_rows {rows}x{cols}"), &r1, &r2);
    }
}

#[test]
fn adaln_ops_are_bit_identical_for_one_and_two_threads() {
    use gpstoken_core::backend::{ModulateDesc, TensorOps};
    let mut rng = TestRng::new(0xde7e_0005);
    // Several reduction chunks per sample; many samples of few tokens and wide rows (SiT-XL).
    for d in [ModulateDesc { batch: 3, tokens: 1100, dim: 300 }, ModulateDesc { batch: 40, tokens: 16, dim: 1152 }] {
        let (x, f, out0, dy) = (
            random(&mut rng, d.len()),
            random(&mut rng, d.len()),
            random(&mut rng, d.len()),
            random(&mut rng, d.len()),
        );
        let (shift, scale, gate) =
            (random(&mut rng, d.vector_len()), random(&mut rng, d.vector_len()), random(&mut rng, d.vector_len()));
        let (r1, r2) = on_both(|be| {
            let mut y = be.zeros(d.len()).unwrap();
            be.modulate_forward(&d, &x, &shift, &scale, &mut y).unwrap();
            let (mut dx, mut dshift, mut dscale) =
                (be.zeros(d.len()).unwrap(), be.zeros(d.vector_len()).unwrap(), be.zeros(d.vector_len()).unwrap());
            be.modulate_backward(&d, &x, &scale, &dy, &mut dx, &mut dshift, &mut dscale).unwrap();
            let mut out = out0.clone();
            be.gated_add_forward(&d, &gate, &f, &mut out).unwrap();
            let (mut dgate, mut df) = (be.zeros(d.vector_len()).unwrap(), be.zeros(d.len()).unwrap());
            be.gated_add_backward(&d, &gate, &f, &dy, &mut dgate, &mut df).unwrap();
            [y, dx, dshift, dscale, out, dgate, df]
        });
        for (name, (a, b)) in ["y", "dx", "dshift", "dscale", "gated out", "dgate", "df"].iter().zip(r1.iter().zip(&r2))
        {
            assert_same_bits(&format!("adaLN {name} {d:?}"), a, b);
        }
    }
}

/// Asserts two output lists are identical bit for bit.
fn assert_same_output_bits(what: &str, a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) {
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
    assert_same_output_bits("norm", &one, &two);
    // Reusing a backend (scratch buffers from the first call) gives the same bits.
    let backend = threads(2);
    norm::norm_determinism_outputs(&backend);
    assert_same_output_bits("norm (second call)", &one, &norm::norm_determinism_outputs(&backend));
}

#[test]
fn attention_is_deterministic_across_thread_counts() {
    let one = attention::attention_determinism_outputs(&threads(1));
    let two = attention::attention_determinism_outputs(&threads(2));
    assert_same_output_bits("attention", &one, &two);
    let backend = threads(3);
    attention::attention_determinism_outputs(&backend);
    assert_same_output_bits(
        "attention (three threads, second call)",
        &one,
        &attention::attention_determinism_outputs(&backend),
    );
}

#[test]
fn roi_align_is_deterministic_across_thread_counts() {
    let one = roi::roi_determinism_outputs(&threads(1));
    let two = roi::roi_determinism_outputs(&threads(2));
    assert_same_output_bits("roi_align", &one, &two);
}
