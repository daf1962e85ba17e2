//! Conformance of [`TensorOps`]: elementwise ops, activations, row broadcasts and reductions,
//! layout changes, the adaLN ops of SiT (modulate, gated add). Also the helpers the other dense suites (linear, conv, loss, optim, gaussian)
//! share: [`DenseTolerance`], uploads into garbage-filled buffers, f64 finite differences.
//!
//! References are plain f64 loops written here. Gradients are checked against central finite
//! differences of `L = Σ dy·f(x)` (random `dy`) computed on the f64 reference.

use super::common::*;
use crate::TestRng;
use gpstoken_core::backend::{Activation, ModulateDesc, PatchDesc, TensorOps, TransposeDesc};

/// How close a backend must be to the f64 references (`max_rel_error`, i.e. relative to the
/// largest reference magnitude).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenseTolerance {
    /// Forward outputs vs the f64 reference.
    pub forward: f64,
    /// Gradients vs f64 central finite differences (or the f64 reference backward).
    pub gradient: f64,
}

/// `erf` in f64 by its Maclaurin series, for `|x| < 2` (terms below 7, absolute error ~1e-15).
fn erf_series(x: f64) -> f64 {
    let (mut term, mut sum, x2) = (x, x, x * x);
    for n in 1..200 {
        term *= -x2 / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-18 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// `erfc` in f64 by its continued fraction `e^{-x²}/√π / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`,
/// for `x >= 2` (evaluated backwards from depth 300).
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut t = x;
    for n in (1..=300).rev() {
        t = x + f64::from(n) / 2.0 / t;
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / t
}

/// The standard normal CDF `Φ(x) = (1 + erf(x/√2))/2` in f64, an implementation independent of
/// any backend's (series near 0, continued fraction in the tails, no cancellation).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x / 2f64.sqrt();
    if z <= -2.0 {
        0.5 * erfc_continued_fraction(-z)
    } else if z >= 2.0 {
        1.0 - 0.5 * erfc_continued_fraction(z)
    } else {
        0.5 * (1.0 + erf_series(z))
    }
}

/// The activation in f64.
pub fn activation_f64(kind: Activation, x: f64) -> f64 {
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    match kind {
        Activation::GeluErf => x * normal_cdf(x),
        Activation::GeluTanh => {
            0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Silu => x * sig(x),
        Activation::Sigmoid => sig(x),
        // The slope is PyTorch's f32 0.2.
        Activation::LeakyRelu02 => {
            if x > 0.0 {
                x
            } else {
                f64::from(0.2f32) * x
            }
        }
    }
}

/// Every activation.
pub const ACTIVATIONS: [Activation; 5] =
    [Activation::GeluErf, Activation::GeluTanh, Activation::Silu, Activation::Sigmoid, Activation::LeakyRelu02];

/// Whether `f` has a kink at `x` (no finite difference there): LeakyReLU at 0.
fn at_kink(kind: Activation, x: f64) -> bool {
    kind == Activation::LeakyRelu02 && x.abs() < 2.0 * FD_STEP
}

/// copy, fill, scale, add, add_assign, axpy against f64 (lengths across chunk boundaries).
pub fn elementwise_ops_match_reference<B: TensorOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x7e50_0001);
    let name = backend.name();
    for n in [1, 37, 40_000] {
        let a = normal_vec(&mut rng, n, 1.0);
        let b = normal_vec(&mut rng, n, 1.0);
        let (ab, bb) = (upload(backend, &a), upload(backend, &b));
        let (a64, b64) = (to_f64(&a), to_f64(&b));

        let mut out = garbage(backend, n);
        backend.copy(&ab, &mut out).unwrap();
        assert_exact(&format!("{name} copy n={n}"), &download(backend, &out), &a);

        backend.fill(&mut out, 1.25).unwrap();
        assert_exact(&format!("{name} fill n={n}"), &download(backend, &out), &vec![1.25; n]);

        backend.add(&ab, &bb, &mut out).unwrap();
        let want: Vec<f64> = a64.iter().zip(&b64).map(|(a, b)| a + b).collect();
        assert_close(&format!("{name} add n={n}"), &download(backend, &out), &want, tol.forward);

        let mut acc = upload(backend, &a);
        backend.add_assign(&mut acc, &bb).unwrap();
        assert_close(&format!("{name} add_assign n={n}"), &download(backend, &acc), &want, tol.forward);

        let mut s = upload(backend, &a);
        backend.scale(&mut s, -0.75).unwrap();
        let want: Vec<f64> = a64.iter().map(|a| -0.75 * a).collect();
        assert_close(&format!("{name} scale n={n}"), &download(backend, &s), &want, tol.forward);

        let mut y = upload(backend, &b);
        backend.axpy(0.3, &ab, &mut y).unwrap();
        let want: Vec<f64> = a64.iter().zip(&b64).map(|(a, b)| b + f64::from(0.3f32) * a).collect();
        assert_close(&format!("{name} axpy n={n}"), &download(backend, &y), &want, tol.forward);
    }
}

/// `add_row_broadcast` forward, and its row gradient [`TensorOps::sum_rows`] against finite
/// differences, on few rows and on more rows than a reduction chunk.
pub fn broadcast_and_sum_rows_match_reference<B: TensorOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x7e50_0002);
    let name = backend.name();
    for (rows, cols) in [(3, 5), (1, 300), (700, 7), (1030, 260)] {
        let x = normal_vec(&mut rng, rows * cols, 1.0);
        let row = normal_vec(&mut rng, cols, 1.0);
        let mut xb = upload(backend, &x);
        backend.add_row_broadcast(rows, cols, &mut xb, &upload(backend, &row)).unwrap();
        let want: Vec<f64> = (0..rows * cols).map(|i| f64::from(x[i]) + f64::from(row[i % cols])).collect();
        assert_close(&format!("{name} add_row_broadcast {rows}x{cols}"), &download(backend, &xb), &want, tol.forward);

        // d/d(row) of L = Σ dy·(x + row) is sum_rows(dy).
        let dy = normal_vec(&mut rng, rows * cols, 1.0);
        let mut out = garbage(backend, cols);
        backend.sum_rows(rows, cols, &upload(backend, &dy), &mut out).unwrap();
        let dy64 = to_f64(&dy);
        let fd = finite_difference(&to_f64(&row), |r| {
            (0..rows * cols).map(|i| dy64[i] * (f64::from(x[i]) + r[i % cols])).sum()
        });
        assert_close(
            &format!("{name} sum_rows {rows}x{cols} vs finite differences"),
            &download(backend, &out),
            &fd,
            tol.gradient,
        );
    }
}

/// Every activation: forward against f64, backward against finite differences.
pub fn activations_match_reference<B: TensorOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x7e50_0003);
    let name = backend.name();
    let n = 300;
    for kind in ACTIVATIONS {
        // Normal(0, 2) clamped to [-6, 6], plus a few fixed points.
        let mut x: Vec<f32> = (0..n).map(|_| (rng.normal() * 2.0).clamp(-6.0, 6.0) as f32).collect();
        x[..5].copy_from_slice(&[0.0, -6.0, 6.0, 1e-3, -0.5]);
        let mut y = garbage(backend, n);
        let xb = upload(backend, &x);
        backend.activation_forward(kind, &xb, &mut y).unwrap();
        let want: Vec<f64> = x.iter().map(|&v| activation_f64(kind, f64::from(v))).collect();
        assert_close(&format!("{name} {kind:?} forward"), &download(backend, &y), &want, tol.forward);

        let dy = normal_vec(&mut rng, n, 1.0);
        let mut dx = garbage(backend, n);
        backend.activation_backward(kind, &xb, &upload(backend, &dy), &mut dx).unwrap();
        // L = Σ dy f(x) is separable: the finite difference of each term alone is the same.
        // At a kink the derivative is a convention (PyTorch's LeakyReLU uses the slope at 0):
        // checked exactly below, left out of the finite differences.
        let fd: Vec<f64> = (0..n)
            .map(|i| {
                let v = f64::from(x[i]);
                if at_kink(kind, v) {
                    return 0.0;
                }
                f64::from(dy[i]) * (activation_f64(kind, v + FD_STEP) - activation_f64(kind, v - FD_STEP))
                    / (2.0 * FD_STEP)
            })
            .collect();
        let mut dx_host = download(backend, &dx);
        for i in (0..n).filter(|&i| at_kink(kind, f64::from(x[i]))) {
            if x[i] == 0.0 {
                assert_eq!(dx_host[i], 0.2f32 * dy[i], "{name} {kind:?} derivative at 0 is the slope");
            }
            dx_host[i] = 0.0;
        }
        assert_close(&format!("{name} {kind:?} backward vs finite differences"), &dx_host, &fd, tol.gradient);
    }
}

/// Transpose, concat/split and patchify/unpatchify: exact copies, each the other's backward
/// (the backward is checked against finite differences of `L = Σ dy·op(x)`).
pub fn layout_ops_match_reference<B: TensorOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x7e50_0004);
    let name = backend.name();

    for desc in [
        TransposeDesc { batch: 2, rows: 3, cols: 5 },
        TransposeDesc { batch: 3, rows: 37, cols: 70 },
        TransposeDesc { batch: 1, rows: 1, cols: 9 },
    ] {
        let (b, r, c) = (desc.batch, desc.rows, desc.cols);
        let x = normal_vec(&mut rng, desc.len(), 1.0);
        let mut y = garbage(backend, desc.len());
        backend.transpose(&desc, &upload(backend, &x), &mut y).unwrap();
        let mut want = vec![0.0; desc.len()];
        for bi in 0..b {
            for i in 0..r {
                for j in 0..c {
                    want[(bi * c + j) * r + i] = x[(bi * r + i) * c + j];
                }
            }
        }
        let y = download(backend, &y);
        assert_exact(&format!("{name} transpose {desc:?}"), &y, &want);
        let back_desc = TransposeDesc { batch: b, rows: c, cols: r };
        let mut back = garbage(backend, desc.len());
        backend.transpose(&back_desc, &upload(backend, &y), &mut back).unwrap();
        assert_exact(&format!("{name} transpose back {desc:?}"), &download(backend, &back), &x);
    }

    for (rows, a_cols, b_cols) in [(4, 3, 2), (300, 1, 70), (5, 0, 4)] {
        let a = normal_vec(&mut rng, rows * a_cols, 1.0);
        let bv = normal_vec(&mut rng, rows * b_cols, 1.0);
        let width = a_cols + b_cols;
        let mut out = garbage(backend, rows * width);
        backend.concat_cols(rows, a_cols, b_cols, &upload(backend, &a), &upload(backend, &bv), &mut out).unwrap();
        let mut want = Vec::with_capacity(rows * width);
        for r in 0..rows {
            want.extend_from_slice(&a[r * a_cols..(r + 1) * a_cols]);
            want.extend_from_slice(&bv[r * b_cols..(r + 1) * b_cols]);
        }
        let out = download(backend, &out);
        assert_exact(&format!("{name} concat_cols {rows}x({a_cols}+{b_cols})"), &out, &want);
        // split_cols is the backward of concat_cols: check it against finite differences.
        let dy = normal_vec(&mut rng, rows * width, 1.0);
        let (mut da, mut db) = (garbage(backend, rows * a_cols), garbage(backend, rows * b_cols));
        backend.split_cols(rows, a_cols, b_cols, &upload(backend, &dy), &mut da, &mut db).unwrap();
        let dy64 = to_f64(&dy);
        let concat_loss = |a: &[f64], b: &[f64]| -> f64 {
            (0..rows)
                .map(|r| {
                    dot(&dy64[r * width..r * width + a_cols], &a[r * a_cols..(r + 1) * a_cols])
                        + dot(&dy64[r * width + a_cols..(r + 1) * width], &b[r * b_cols..(r + 1) * b_cols])
                })
                .sum()
        };
        let (a64, b64) = (to_f64(&a), to_f64(&bv));
        if a_cols > 0 {
            let fd = finite_difference(&a64, |a| concat_loss(a, &b64));
            assert_close(
                &format!("{name} split_cols (first) {rows}x{a_cols}"),
                &download(backend, &da),
                &fd,
                tol.gradient,
            );
        }
        let fd = finite_difference(&b64, |b| concat_loss(&a64, b));
        assert_close(
            &format!("{name} split_cols (second) {rows}x{b_cols}"),
            &download(backend, &db),
            &fd,
            tol.gradient,
        );
    }

    for desc in [
        PatchDesc { batch: 2, channels: 3, patches: 2, tile_height: 3, tile_width: 4 },
        PatchDesc { batch: 1, channels: 2, patches: 3, tile_height: 5, tile_width: 2 },
        PatchDesc { batch: 2, channels: 1, patches: 1, tile_height: 4, tile_width: 3 },
    ] {
        let (b, c, np, th, tw) = (desc.batch, desc.channels, desc.patches, desc.tile_height, desc.tile_width);
        let (h, w) = (np * th, np * tw);
        let x = normal_vec(&mut rng, desc.len(), 1.0);
        let mut y = garbage(backend, desc.len());
        backend.patchify(&desc, &upload(backend, &x), &mut y).unwrap();
        // dst_of[src]: where patchify moves x[src].
        let mut dst_of = vec![0usize; desc.len()];
        for bi in 0..b {
            for i in 0..np {
                for j in 0..np {
                    let t = bi * np * np + i * np + j;
                    for ch in 0..c {
                        for r in 0..th {
                            for s in 0..tw {
                                dst_of[((bi * c + ch) * h + i * th + r) * w + j * tw + s] =
                                    ((t * c + ch) * th + r) * tw + s;
                            }
                        }
                    }
                }
            }
        }
        let mut want = vec![0.0; desc.len()];
        for (src, &dst) in dst_of.iter().enumerate() {
            want[dst] = x[src];
        }
        assert_exact(&format!("{name} patchify {desc:?}"), &download(backend, &y), &want);
        // unpatchify is patchify's backward (and inverse).
        let dy = normal_vec(&mut rng, desc.len(), 1.0);
        let mut dx = garbage(backend, desc.len());
        backend.unpatchify(&desc, &upload(backend, &dy), &mut dx).unwrap();
        let dx = download(backend, &dx);
        let dy64 = to_f64(&dy);
        // L = Σ dy·patchify(x) = Σ_src dy[dst_of[src]]·x[src].
        let fd = finite_difference(&to_f64(&x), |x| (0..x.len()).map(|s| dy64[dst_of[s]] * x[s]).sum());
        assert_close(&format!("{name} unpatchify (patchify backward) {desc:?}"), &dx, &fd, tol.gradient);
        let mut round = garbage(backend, desc.len());
        backend.unpatchify(&desc, &upload(backend, &want), &mut round).unwrap();
        assert_exact(&format!("{name} unpatchify inverse {desc:?}"), &download(backend, &round), &x);
    }
}

/// Every op rejects buffers that do not fit.
pub fn tensor_ops_reject_bad_shapes<B: TensorOps>(backend: &B) {
    let (a, b3, b4) = (upload(backend, &[1.0; 4]), upload(backend, &[1.0; 3]), upload(backend, &[1.0; 4]));
    let mut out3 = upload(backend, &[0.0; 3]);
    let mut out4 = upload(backend, &[0.0; 4]);
    assert!(backend.copy(&a, &mut out3).is_err(), "copy");
    assert!(backend.add(&a, &b3, &mut out4).is_err(), "add operand");
    assert!(backend.add(&a, &b4, &mut out3).is_err(), "add output");
    assert!(backend.add_assign(&mut out3, &a).is_err(), "add_assign");
    assert!(backend.axpy(1.0, &a, &mut out3).is_err(), "axpy");
    assert!(backend.add_row_broadcast(2, 2, &mut out4, &b3).is_err(), "add_row_broadcast row");
    assert!(backend.add_row_broadcast(3, 2, &mut out4, &upload(backend, &[0.0; 2])).is_err(), "broadcast target");
    assert!(backend.sum_rows(2, 2, &a, &mut out3).is_err(), "sum_rows output");
    assert!(backend.sum_rows(3, 2, &a, &mut upload(backend, &[0.0; 2])).is_err(), "sum_rows input");
    for kind in ACTIVATIONS {
        assert!(backend.activation_forward(kind, &a, &mut out3).is_err(), "activation forward");
        assert!(backend.activation_backward(kind, &a, &b3, &mut out4).is_err(), "activation dy");
        assert!(backend.activation_backward(kind, &a, &b4, &mut out3).is_err(), "activation dx");
    }
    assert!(backend.transpose(&TransposeDesc { batch: 1, rows: 2, cols: 2 }, &a, &mut out3).is_err(), "transpose");
    assert!(backend.transpose(&TransposeDesc { batch: 1, rows: 1, cols: 3 }, &a, &mut out3).is_err(), "transpose in");
    let mut out5 = upload(backend, &[0.0; 5]);
    assert!(backend.concat_cols(1, 4, 1, &a, &b3, &mut out5).is_err(), "concat second input");
    assert!(backend.concat_cols(1, 4, 3, &a, &b3, &mut out5).is_err(), "concat output");
    let (mut sa, mut sb) = (upload(backend, &[0.0; 2]), upload(backend, &[0.0; 3]));
    assert!(backend.split_cols(1, 2, 2, &a, &mut sa, &mut sb).is_err(), "split second output");
    assert!(backend.split_cols(1, 2, 3, &a, &mut sa, &mut sb).is_err(), "split input");
    let desc = PatchDesc { batch: 1, channels: 1, patches: 2, tile_height: 1, tile_width: 1 };
    assert!(backend.patchify(&desc, &a, &mut out3).is_err(), "patchify output");
    assert!(backend.unpatchify(&desc, &b3, &mut out4).is_err(), "unpatchify input");
    let zero = PatchDesc { patches: 0, ..desc };
    assert!(backend.patchify(&zero, &upload(backend, &[]), &mut upload(backend, &[])).is_err(), "zero patches");
}

mod adaln;

pub use adaln::*;
