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

/// `y = x * (1 + scale) + shift` in f64 (per-sample vectors broadcast over the tokens).
pub fn modulate_f64(d: &ModulateDesc, x: &[f64], shift: &[f64], scale: &[f64]) -> Vec<f64> {
    let (n, dim) = (d.tokens, d.dim);
    (0..d.len())
        .map(|i| {
            let v = (i / (n * dim)) * dim + i % dim;
            x[i] * (1.0 + scale[v]) + shift[v]
        })
        .collect()
}

/// `out + gate * f` in f64.
pub fn gated_add_f64(d: &ModulateDesc, out: &[f64], gate: &[f64], f: &[f64]) -> Vec<f64> {
    let (n, dim) = (d.tokens, d.dim);
    (0..d.len()).map(|i| out[i] + gate[(i / (n * dim)) * dim + i % dim] * f[i]).collect()
}

/// The f64 reference backwards: `(dx, dshift, dscale)` of modulate and `(dgate, df)` of the
/// gated add.
#[allow(clippy::type_complexity)]
pub fn adaln_backward_f64(
    d: &ModulateDesc,
    x: &[f64],
    scale: &[f64],
    f: &[f64],
    gate: &[f64],
    dy: &[f64],
) -> ((Vec<f64>, Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>)) {
    let (n, dim) = (d.tokens, d.dim);
    let (mut dx, mut dshift, mut dscale) = (vec![0.0; d.len()], vec![0.0; d.vector_len()], vec![0.0; d.vector_len()]);
    let (mut dgate, mut df) = (vec![0.0; d.vector_len()], vec![0.0; d.len()]);
    for i in 0..d.len() {
        let v = (i / (n * dim)) * dim + i % dim;
        dx[i] = dy[i] * (1.0 + scale[v]);
        dshift[v] += dy[i];
        dscale[v] += dy[i] * x[i];
        df[i] = dy[i] * gate[v];
        dgate[v] += dy[i] * f[i];
    }
    ((dx, dshift, dscale), (dgate, df))
}

/// Small adaLN shapes (finite differences), one with more tokens than a reduction chunk.
const ADALN_SMALL: [ModulateDesc; 4] = [
    ModulateDesc { batch: 2, tokens: 3, dim: 5 },
    ModulateDesc { batch: 1, tokens: 1, dim: 4 },
    ModulateDesc { batch: 3, tokens: 7, dim: 1 },
    ModulateDesc { batch: 2, tokens: 300, dim: 6 },
];

/// Larger adaLN shapes (the f64 reference backward): several chunks per sample, wide rows.
const ADALN_LARGE: [ModulateDesc; 2] =
    [ModulateDesc { batch: 3, tokens: 1030, dim: 70 }, ModulateDesc { batch: 5, tokens: 16, dim: 1152 }];

/// One random adaLN problem: `x`, `shift`, `scale`, `gate`, `f` (the branch), `out0` (the residual
/// before the gated add), `dy`.
struct AdaLnCase {
    x: Vec<f32>,
    shift: Vec<f32>,
    scale: Vec<f32>,
    gate: Vec<f32>,
    f: Vec<f32>,
    out0: Vec<f32>,
    dy: Vec<f32>,
}

fn adaln_case(rng: &mut TestRng, d: &ModulateDesc) -> AdaLnCase {
    AdaLnCase {
        x: normal_vec(rng, d.len(), 1.0),
        shift: normal_vec(rng, d.vector_len(), 1.0),
        scale: normal_vec(rng, d.vector_len(), 0.5),
        gate: normal_vec(rng, d.vector_len(), 1.0),
        f: normal_vec(rng, d.len(), 1.0),
        out0: normal_vec(rng, d.len(), 1.0),
        dy: normal_vec(rng, d.len(), 1.0),
    }
}

/// The backend's adaLN outputs: `(y, out, (dx, dshift, dscale), (dgate, df))`.
#[allow(clippy::type_complexity)]
fn adaln_backend<B: TensorOps>(
    backend: &B,
    d: &ModulateDesc,
    c: &AdaLnCase,
) -> (Vec<f32>, Vec<f32>, (Vec<f32>, Vec<f32>, Vec<f32>), (Vec<f32>, Vec<f32>)) {
    let (x, scale, dy) = (upload(backend, &c.x), upload(backend, &c.scale), upload(backend, &c.dy));
    let (gate, f) = (upload(backend, &c.gate), upload(backend, &c.f));
    let mut y = garbage(backend, d.len());
    backend.modulate_forward(d, &x, &upload(backend, &c.shift), &scale, &mut y).expect("modulate_forward");
    let mut out = upload(backend, &c.out0);
    backend.gated_add_forward(d, &gate, &f, &mut out).expect("gated_add_forward");
    let (mut dx, mut dshift, mut dscale) =
        (garbage(backend, d.len()), garbage(backend, d.vector_len()), garbage(backend, d.vector_len()));
    backend.modulate_backward(d, &x, &scale, &dy, &mut dx, &mut dshift, &mut dscale).expect("modulate_backward");
    let (mut dgate, mut df) = (garbage(backend, d.vector_len()), garbage(backend, d.len()));
    backend.gated_add_backward(d, &gate, &f, &dy, &mut dgate, &mut df).expect("gated_add_backward");
    (
        download(backend, &y),
        download(backend, &out),
        (download(backend, &dx), download(backend, &dshift), download(backend, &dscale)),
        (download(backend, &dgate), download(backend, &df)),
    )
}

/// Modulate and gated add: forward against f64; every gradient against central finite
/// differences of `L = Σ dy·y` (small shapes) and against the f64 reference backward (large).
pub fn adaln_ops_match_reference<B: TensorOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x7e50_0005);
    let name = backend.name();
    for d in ADALN_SMALL.iter().chain(&ADALN_LARGE) {
        let c = adaln_case(&mut rng, d);
        let (y, out, (dx, dshift, dscale), (dgate, df)) = adaln_backend(backend, d, &c);
        let (x, shift, scale) = (to_f64(&c.x), to_f64(&c.shift), to_f64(&c.scale));
        let (gate, f, out0, dy) = (to_f64(&c.gate), to_f64(&c.f), to_f64(&c.out0), to_f64(&c.dy));
        assert_close(&format!("{name} modulate forward {d:?}"), &y, &modulate_f64(d, &x, &shift, &scale), tol.forward);
        assert_close(
            &format!("{name} gated_add forward {d:?}"),
            &out,
            &gated_add_f64(d, &out0, &gate, &f),
            tol.forward,
        );
        if ADALN_SMALL.contains(d) {
            let m_loss = |x: &[f64], sh: &[f64], sc: &[f64]| dot(&dy, &modulate_f64(d, x, sh, sc));
            let fd = finite_difference(&x, |v| m_loss(v, &shift, &scale));
            assert_close(&format!("{name} modulate dx {d:?}"), &dx, &fd, tol.gradient);
            let fd = finite_difference(&shift, |v| m_loss(&x, v, &scale));
            assert_close(&format!("{name} modulate dshift {d:?}"), &dshift, &fd, tol.gradient);
            let fd = finite_difference(&scale, |v| m_loss(&x, &shift, v));
            assert_close(&format!("{name} modulate dscale {d:?}"), &dscale, &fd, tol.gradient);
            let g_loss = |g: &[f64], f: &[f64]| dot(&dy, &gated_add_f64(d, &out0, g, f));
            let fd = finite_difference(&gate, |v| g_loss(v, &f));
            assert_close(&format!("{name} gated_add dgate {d:?}"), &dgate, &fd, tol.gradient);
            let fd = finite_difference(&f, |v| g_loss(&gate, v));
            assert_close(&format!("{name} gated_add df {d:?}"), &df, &fd, tol.gradient);
        } else {
            let ((rx, rshift, rscale), (rgate, rf)) = adaln_backward_f64(d, &x, &scale, &f, &gate, &dy);
            assert_close(&format!("{name} modulate dx {d:?}"), &dx, &rx, tol.gradient);
            assert_close(&format!("{name} modulate dshift {d:?}"), &dshift, &rshift, tol.gradient);
            assert_close(&format!("{name} modulate dscale {d:?}"), &dscale, &rscale, tol.gradient);
            assert_close(&format!("{name} gated_add dgate {d:?}"), &dgate, &rgate, tol.gradient);
            assert_close(&format!("{name} gated_add df {d:?}"), &df, &rf, tol.gradient);
        }
    }
    // No tokens: the per-sample gradients are zeros (overwritten, not left alone).
    let d = ModulateDesc { batch: 2, tokens: 0, dim: 3 };
    let (empty, v) = (upload(backend, &[]), upload(backend, &[0.5; 6]));
    let (mut dshift, mut dscale, mut dgate) = (garbage(backend, 6), garbage(backend, 6), garbage(backend, 6));
    let (mut e1, mut e2) = (upload(backend, &[]), upload(backend, &[]));
    backend.modulate_backward(&d, &empty, &v, &empty, &mut e1, &mut dshift, &mut dscale).unwrap();
    backend.gated_add_backward(&d, &v, &empty, &empty, &mut dgate, &mut e2).unwrap();
    for (what, g) in [("dshift", &dshift), ("dscale", &dscale), ("dgate", &dgate)] {
        assert_exact(&format!("{name} adaLN {what} with no tokens"), &download(backend, g), &[0.0; 6]);
    }
}

/// The adaLN ops reject buffers that do not fit their [`ModulateDesc`].
pub fn adaln_ops_reject_bad_shapes<B: TensorOps>(backend: &B) {
    let d = ModulateDesc { batch: 2, tokens: 3, dim: 2 };
    let (t, v) = (garbage(backend, 12), garbage(backend, 4));
    let (bad_t, bad_v) = (garbage(backend, 11), garbage(backend, 5));
    let mut y = garbage(backend, 12);
    assert!(backend.modulate_forward(&d, &t, &v, &v, &mut y).is_ok(), "modulate good shapes");
    assert!(backend.modulate_forward(&d, &bad_t, &v, &v, &mut y).is_err(), "modulate x");
    assert!(backend.modulate_forward(&d, &t, &bad_v, &v, &mut y).is_err(), "modulate shift");
    assert!(backend.modulate_forward(&d, &t, &v, &bad_v, &mut y).is_err(), "modulate scale");
    assert!(backend.modulate_forward(&d, &t, &v, &v, &mut garbage(backend, 13)).is_err(), "modulate y");
    let (mut dx, mut ds, mut dc) = (garbage(backend, 12), garbage(backend, 4), garbage(backend, 4));
    assert!(backend.modulate_backward(&d, &t, &v, &t, &mut dx, &mut ds, &mut dc).is_ok(), "modulate_backward good");
    assert!(backend.modulate_backward(&d, &bad_t, &v, &t, &mut dx, &mut ds, &mut dc).is_err(), "modulate_backward x");
    assert!(
        backend.modulate_backward(&d, &t, &bad_v, &t, &mut dx, &mut ds, &mut dc).is_err(),
        "modulate_backward scale"
    );
    assert!(backend.modulate_backward(&d, &t, &v, &bad_t, &mut dx, &mut ds, &mut dc).is_err(), "modulate_backward dy");
    assert!(
        backend.modulate_backward(&d, &t, &v, &t, &mut garbage(backend, 11), &mut ds, &mut dc).is_err(),
        "modulate_backward dx"
    );
    assert!(
        backend.modulate_backward(&d, &t, &v, &t, &mut dx, &mut garbage(backend, 3), &mut dc).is_err(),
        "modulate_backward dshift"
    );
    assert!(
        backend.modulate_backward(&d, &t, &v, &t, &mut dx, &mut ds, &mut garbage(backend, 6)).is_err(),
        "modulate_backward dscale"
    );
    let mut out = garbage(backend, 12);
    assert!(backend.gated_add_forward(&d, &v, &t, &mut out).is_ok(), "gated_add good shapes");
    assert!(backend.gated_add_forward(&d, &bad_v, &t, &mut out).is_err(), "gated_add gate");
    assert!(backend.gated_add_forward(&d, &v, &bad_t, &mut out).is_err(), "gated_add branch");
    assert!(backend.gated_add_forward(&d, &v, &t, &mut garbage(backend, 13)).is_err(), "gated_add output");
    let (mut dg, mut df) = (garbage(backend, 4), garbage(backend, 12));
    assert!(backend.gated_add_backward(&d, &v, &t, &t, &mut dg, &mut df).is_ok(), "gated_add_backward good");
    assert!(backend.gated_add_backward(&d, &bad_v, &t, &t, &mut dg, &mut df).is_err(), "gated_add_backward gate");
    assert!(backend.gated_add_backward(&d, &v, &bad_t, &t, &mut dg, &mut df).is_err(), "gated_add_backward branch");
    assert!(backend.gated_add_backward(&d, &v, &t, &bad_t, &mut dg, &mut df).is_err(), "gated_add_backward dout");
    assert!(
        backend.gated_add_backward(&d, &v, &t, &t, &mut garbage(backend, 2), &mut df).is_err(),
        "gated_add_backward dgate"
    );
    assert!(
        backend.gated_add_backward(&d, &v, &t, &t, &mut dg, &mut garbage(backend, 24)).is_err(),
        "gated_add_backward df"
    );
}

#[cfg(test)]
mod tests {
    use super::normal_cdf;

    #[test]
    #[allow(clippy::excessive_precision)]
    fn normal_cdf_matches_known_values() {
        // Φ at 0, ±1, ±2, 3, -5, -8 (mpmath, 17 digits).
        for (x, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (-1.0, 0.158_655_253_931_457_05),
            (2.0, 0.977_249_868_051_820_8),
            (-2.0, 0.022_750_131_948_179_207),
            (3.0, 0.998_650_101_968_369_9),
            (-5.0, 2.866_515_718_791_939_1e-7),
            (-8.0, 6.220_960_574_271_784e-16),
        ] {
            let got = normal_cdf(x);
            assert!(((got - want) / want).abs() < 1e-13, "Φ({x}) = {got:e}, want {want:e}");
        }
        // Continuity where the method changes (x/√2 = ±2).
        let edge = 2.0 * 2f64.sqrt();
        for x in [edge, -edge] {
            let (a, b) = (normal_cdf(x - 1e-12), normal_cdf(x + 1e-12));
            assert!((a - b).abs() < 1e-13, "Φ jumps at {x}: {a} vs {b}"); // slope·2e-12 is ~1.5e-14
        }
    }
}
