//! Conformance of [`ConvOps`]: 2D convolution (any kernel, stride, padding; non-square images,
//! batch >= 2) and nearest ×2 upsampling. Forward against f64 loops; gradients against finite
//! differences of `L = Σ dy·y` on small shapes, and against the f64 reference backward on
//! shapes larger than typical blocks (many channels, tall images, many positions).

use super::common::dot;
use super::common::{assert_close, assert_exact, download, finite_difference, garbage, normal_vec, to_f64, upload};
use super::tensor::DenseTolerance;
use crate::TestRng;
use gpstoken_core::backend::{Conv2dDesc, ConvOps, UpsampleDesc};

/// `(ih, iw)` read by output `(oh, ow)` through tap `(kh, kw)`, if inside the image.
fn tap(d: &Conv2dDesc, oh: usize, ow: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
    let ih = (oh * d.stride + kh) as isize - d.padding as isize;
    let iw = (ow * d.stride + kw) as isize - d.padding as isize;
    if ih < 0 || iw < 0 || ih >= d.height as isize || iw >= d.width as isize {
        None
    } else {
        Some((ih as usize, iw as usize))
    }
}

/// The convolution in f64 (PyTorch `conv2d`, zero padding).
pub fn conv2d_f64(d: &Conv2dDesc, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let (ho, wo, k) = (d.out_height(), d.out_width(), d.kernel);
    let mut y = vec![0.0; d.output_len()];
    for b in 0..d.batch {
        for co in 0..d.out_channels {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut s = bias.map_or(0.0, |b| b[co]);
                    for ci in 0..d.in_channels {
                        for kh in 0..k {
                            for kw in 0..k {
                                if let Some((ih, iw)) = tap(d, oh, ow, kh, kw) {
                                    s += w[((co * d.in_channels + ci) * k + kh) * k + kw]
                                        * x[((b * d.in_channels + ci) * d.height + ih) * d.width + iw];
                                }
                            }
                        }
                    }
                    y[((b * d.out_channels + co) * ho + oh) * wo + ow] = s;
                }
            }
        }
    }
    y
}

/// The f64 reference backward `(dx, dW, db)`.
pub fn conv2d_backward_f64(d: &Conv2dDesc, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (ho, wo, k) = (d.out_height(), d.out_width(), d.kernel);
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; d.out_channels]);
    for b in 0..d.batch {
        for co in 0..d.out_channels {
            for oh in 0..ho {
                for ow in 0..wo {
                    let g = dy[((b * d.out_channels + co) * ho + oh) * wo + ow];
                    db[co] += g;
                    for ci in 0..d.in_channels {
                        for kh in 0..k {
                            for kw in 0..k {
                                if let Some((ih, iw)) = tap(d, oh, ow, kh, kw) {
                                    let wi = ((co * d.in_channels + ci) * k + kh) * k + kw;
                                    let xi = ((b * d.in_channels + ci) * d.height + ih) * d.width + iw;
                                    dx[xi] += g * w[wi];
                                    dw[wi] += g * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

#[allow(clippy::too_many_arguments)]
const fn conv(
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Conv2dDesc {
    Conv2dDesc { batch, in_channels, out_channels, height, width, kernel, stride, padding }
}

/// Small shapes: 3x3 same, the PatchGAN k4 s2 p1, 1x1, stride 2 unpadded, k4 s1 p1, 1x1 s2.
const SMALL: [Conv2dDesc; 6] = [
    conv(2, 3, 4, 7, 9, 3, 1, 1),
    conv(2, 3, 5, 8, 6, 4, 2, 1),
    conv(2, 4, 3, 5, 7, 1, 1, 0),
    conv(3, 2, 3, 7, 8, 3, 2, 0),
    conv(2, 2, 3, 6, 5, 4, 1, 1),
    conv(2, 3, 2, 6, 5, 1, 2, 0),
];

/// Shapes beyond typical blocks: many input/output channels, many positions, tall images
/// (row blocks), a large pointwise convolution.
const LARGE: [Conv2dDesc; 6] = [
    conv(2, 70, 130, 12, 11, 3, 1, 1),
    conv(2, 5, 3, 40, 35, 3, 1, 1),
    conv(1, 3, 4, 1030, 4, 3, 1, 1),
    conv(2, 3, 4, 1030, 4, 4, 2, 1),
    conv(1, 2, 3, 1031, 5, 3, 2, 0),
    conv(2, 70, 9, 70, 65, 1, 1, 0),
];

struct Case {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

fn case(rng: &mut TestRng, d: &Conv2dDesc) -> Case {
    let fan_in = (d.in_channels * d.kernel * d.kernel) as f64;
    Case {
        x: normal_vec(rng, d.input_len(), 1.0),
        w: normal_vec(rng, d.weight_len(), 1.0 / fan_in.sqrt()),
        b: normal_vec(rng, d.out_channels, 1.0),
        dy: normal_vec(rng, d.output_len(), 1.0),
    }
}

fn backend_forward<B: ConvOps>(backend: &B, d: &Conv2dDesc, c: &Case, bias: bool) -> Vec<f32> {
    let mut y = garbage(backend, d.output_len());
    let b = upload(backend, &c.b);
    backend
        .conv2d_forward(d, &upload(backend, &c.x), &upload(backend, &c.w), bias.then_some(&b), &mut y)
        .expect("conv2d_forward");
    download(backend, &y)
}

/// `(dx, dW, db)`, also checking that dW does not change without the optional outputs, and
/// that dx and db do not change without dW (a frozen layer).
fn backend_backward<B: ConvOps>(backend: &B, d: &Conv2dDesc, c: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (x, w, dy) = (upload(backend, &c.x), upload(backend, &c.w), upload(backend, &c.dy));
    let (mut dx, mut dw, mut db) =
        (garbage(backend, c.x.len()), garbage(backend, c.w.len()), garbage(backend, c.b.len()));
    backend.conv2d_backward(d, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).expect("conv2d_backward");
    let mut dw2 = garbage(backend, c.w.len());
    backend.conv2d_backward(d, &x, &w, &dy, None, Some(&mut dw2), None).expect("conv2d_backward without dx/db");
    let (dx, dw, db) = (download(backend, &dx), download(backend, &dw), download(backend, &db));
    let name = backend.name();
    assert_exact(&format!("{name} conv dW without dx/db {d:?}"), &download(backend, &dw2), &dw);
    // A frozen layer (no weight gradient): the same dx and db, bit for bit.
    let (mut dx2, mut db2) = (garbage(backend, c.x.len()), garbage(backend, c.b.len()));
    backend.conv2d_backward(d, &x, &w, &dy, Some(&mut dx2), None, Some(&mut db2)).expect("conv2d_backward without dW");
    assert_exact(&format!("{name} conv dx without dW {d:?}"), &download(backend, &dx2), &dx);
    assert_exact(&format!("{name} conv db without dW {d:?}"), &download(backend, &db2), &db);
    (dx, dw, db)
}

/// Forward against the f64 loops, with and without bias, small and large shapes.
pub fn conv2d_forward_matches_reference<B: ConvOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0xc0_0001);
    for d in SMALL.iter().chain(&LARGE) {
        let c = case(&mut rng, d);
        let (x, w, b) = (to_f64(&c.x), to_f64(&c.w), to_f64(&c.b));
        let name = backend.name();
        let want = conv2d_f64(d, &x, &w, Some(&b));
        assert_close(&format!("{name} conv forward {d:?}"), &backend_forward(backend, d, &c, true), &want, tol.forward);
        let want = conv2d_f64(d, &x, &w, None);
        assert_close(
            &format!("{name} conv forward no bias {d:?}"),
            &backend_forward(backend, d, &c, false),
            &want,
            tol.forward,
        );
    }
}

/// dx, dW, db against finite differences of `L = Σ dy·conv(x, W, b)` (small shapes).
pub fn conv2d_gradients_match_finite_differences<B: ConvOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0xc0_0002);
    for d in &SMALL {
        let c = case(&mut rng, d);
        let (dx, dw, db) = backend_backward(backend, d, &c);
        let (x64, w64, b64, dy64) = (to_f64(&c.x), to_f64(&c.w), to_f64(&c.b), to_f64(&c.dy));
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&dy64, &conv2d_f64(d, x, w, Some(b)));
        let name = backend.name();
        let fd = finite_difference(&x64, |x| loss(x, &w64, &b64));
        assert_close(&format!("{name} conv dx {d:?}"), &dx, &fd, tol.gradient);
        let fd = finite_difference(&w64, |w| loss(&x64, w, &b64));
        assert_close(&format!("{name} conv dW {d:?}"), &dw, &fd, tol.gradient);
        let fd = finite_difference(&b64, |b| loss(&x64, &w64, b));
        assert_close(&format!("{name} conv db {d:?}"), &db, &fd, tol.gradient);
    }
}

/// Large shapes: the backward against the f64 reference backward.
pub fn conv2d_large_gradients_match_reference<B: ConvOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0xc0_0003);
    for d in &LARGE {
        let c = case(&mut rng, d);
        let (dx, dw, db) = backend_backward(backend, d, &c);
        let (rx, rw, rb) = conv2d_backward_f64(d, &to_f64(&c.x), &to_f64(&c.w), &to_f64(&c.dy));
        let name = backend.name();
        assert_close(&format!("{name} conv dx {d:?}"), &dx, &rx, tol.gradient);
        assert_close(&format!("{name} conv dW {d:?}"), &dw, &rw, tol.gradient);
        assert_close(&format!("{name} conv db {d:?}"), &db, &rb, tol.gradient);
    }
}

/// Nearest ×2 upsampling: exact forward, backward against finite differences.
pub fn upsample_matches_reference<B: ConvOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0xc0_0004);
    for d in [
        UpsampleDesc { batch: 2, channels: 3, height: 4, width: 5 },
        UpsampleDesc { batch: 2, channels: 1, height: 1, width: 1 },
        UpsampleDesc { batch: 1, channels: 5, height: 70, width: 33 },
    ] {
        let n = d.batch * d.channels * d.height * d.width;
        let (h, w) = (d.height, d.width);
        let x = normal_vec(&mut rng, n, 1.0);
        let mut y = garbage(backend, 4 * n);
        backend.upsample_nearest2x_forward(&d, &upload(backend, &x), &mut y).unwrap();
        // src_of[i]: the input value output i copies.
        let src_of: Vec<usize> = (0..4 * n)
            .map(|i| {
                let (plane, r, c) = (i / (4 * h * w), (i / (2 * w)) % (2 * h), i % (2 * w));
                (plane * h + r / 2) * w + c / 2
            })
            .collect();
        let want: Vec<f32> = src_of.iter().map(|&s| x[s]).collect();
        assert_exact(&format!("{} upsample forward {d:?}", backend.name()), &download(backend, &y), &want);
        let dy = normal_vec(&mut rng, 4 * n, 1.0);
        let mut dx = garbage(backend, n);
        backend.upsample_nearest2x_backward(&d, &upload(backend, &dy), &mut dx).unwrap();
        let dy64 = to_f64(&dy);
        let fd = finite_difference(&to_f64(&x), |x| src_of.iter().zip(&dy64).map(|(&s, g)| g * x[s]).sum());
        assert_close(
            &format!("{} upsample backward {d:?}", backend.name()),
            &download(backend, &dx),
            &fd,
            tol.gradient,
        );
    }
}

/// Bad lengths and impossible descriptors are errors.
pub fn conv_rejects_bad_shapes<B: ConvOps>(backend: &B) {
    let d = conv(2, 3, 4, 5, 6, 3, 1, 1);
    let (x, w, b, y) = (garbage(backend, 180), garbage(backend, 108), garbage(backend, 4), garbage(backend, 240));
    let mut out = garbage(backend, 240);
    assert!(backend.conv2d_forward(&d, &x, &w, Some(&b), &mut out).is_ok(), "good shapes");
    assert!(backend.conv2d_forward(&d, &garbage(backend, 179), &w, None, &mut out).is_err(), "input");
    assert!(backend.conv2d_forward(&d, &x, &garbage(backend, 107), None, &mut out).is_err(), "weight");
    assert!(backend.conv2d_forward(&d, &x, &w, Some(&garbage(backend, 5)), &mut out).is_err(), "bias");
    assert!(backend.conv2d_forward(&d, &x, &w, None, &mut garbage(backend, 241)).is_err(), "output");
    let too_big = conv(1, 1, 1, 2, 2, 5, 1, 1);
    assert!(backend
        .conv2d_forward(&too_big, &garbage(backend, 4), &garbage(backend, 25), None, &mut garbage(backend, 1))
        .is_err());
    let zero_stride = Conv2dDesc { stride: 0, ..d };
    assert!(backend.conv2d_forward(&zero_stride, &x, &w, None, &mut out).is_err(), "stride 0");
    let (mut dx, mut dw, mut db) = (garbage(backend, 180), garbage(backend, 108), garbage(backend, 4));
    assert!(backend.conv2d_backward(&d, &x, &w, &y, Some(&mut dx), Some(&mut dw), Some(&mut db)).is_ok(), "good");
    assert!(backend.conv2d_backward(&d, &x, &w, &y, Some(&mut dx), None, Some(&mut db)).is_ok(), "frozen, good");
    let dy239 = garbage(backend, 239);
    assert!(backend.conv2d_backward(&d, &x, &w, &dy239, None, Some(&mut dw), None).is_err(), "dy");
    assert!(backend.conv2d_backward(&d, &x, &w, &dy239, Some(&mut dx), None, None).is_err(), "dy, frozen");
    let mut dx1 = garbage(backend, 1);
    assert!(backend.conv2d_backward(&d, &x, &w, &y, Some(&mut dx1), Some(&mut dw), None).is_err(), "dx");
    assert!(backend.conv2d_backward(&d, &x, &w, &y, Some(&mut dx1), None, None).is_err(), "dx, frozen");
    assert!(backend.conv2d_backward(&d, &x, &w, &y, None, Some(&mut garbage(backend, 1)), None).is_err(), "dW");
    let mut db3 = garbage(backend, 3);
    assert!(backend.conv2d_backward(&d, &x, &w, &y, None, Some(&mut dw), Some(&mut db3)).is_err(), "db");
    assert!(backend.conv2d_backward(&d, &x, &w, &y, None, None, Some(&mut db3)).is_err(), "db, frozen");
    let u = UpsampleDesc { batch: 1, channels: 2, height: 2, width: 3 };
    assert!(backend.upsample_nearest2x_forward(&u, &garbage(backend, 12), &mut garbage(backend, 47)).is_err());
    assert!(backend.upsample_nearest2x_forward(&u, &garbage(backend, 11), &mut garbage(backend, 48)).is_err());
    assert!(backend.upsample_nearest2x_backward(&u, &garbage(backend, 47), &mut garbage(backend, 12)).is_err());
    assert!(backend.upsample_nearest2x_backward(&u, &garbage(backend, 48), &mut garbage(backend, 13)).is_err());
}
