//! Conformance of [`LinearOps`]: `y = x Wᵀ + b` and embeddings, forward against f64 loops,
//! gradients against finite differences of `L = Σ dy·y` (small shapes) and against the f64
//! reference backward (shapes larger than typical GEMM blocks and reduction chunks).

use super::common::dot;
use super::common::{assert_close, assert_exact, download, finite_difference, garbage, normal_vec, to_f64, upload};
use super::tensor::DenseTolerance;
use crate::TestRng;
use gpstoken_core::backend::{EmbeddingDesc, LinearDesc, LinearOps};

/// `y = x Wᵀ + b` in f64.
pub fn linear_f64(desc: &LinearDesc, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let (n, k, m) = (desc.rows, desc.in_features, desc.out_features);
    let mut y = vec![0.0; n * m];
    for r in 0..n {
        for o in 0..m {
            y[r * m + o] = dot(&x[r * k..(r + 1) * k], &w[o * k..(o + 1) * k]) + bias.map_or(0.0, |b| b[o]);
        }
    }
    y
}

/// The f64 reference backward: `(dx, dW, db)`.
pub fn linear_backward_f64(desc: &LinearDesc, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, k, m) = (desc.rows, desc.in_features, desc.out_features);
    let (mut dx, mut dw, mut db) = (vec![0.0; n * k], vec![0.0; m * k], vec![0.0; m]);
    for r in 0..n {
        for o in 0..m {
            let g = dy[r * m + o];
            db[o] += g;
            for i in 0..k {
                dx[r * k + i] += g * w[o * k + i];
                dw[o * k + i] += g * x[r * k + i];
            }
        }
    }
    (dx, dw, db)
}

/// One random problem.
struct Case {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

fn case(rng: &mut TestRng, d: &LinearDesc) -> Case {
    Case {
        x: normal_vec(rng, d.rows * d.in_features, 1.0),
        w: normal_vec(rng, d.out_features * d.in_features, 0.5),
        b: normal_vec(rng, d.out_features, 1.0),
        dy: normal_vec(rng, d.rows * d.out_features, 1.0),
    }
}

/// Runs the backend backward with every optional output; returns `(dx, dW, db)`.
fn backend_backward<B: LinearOps>(backend: &B, d: &LinearDesc, c: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (x, w, dy) = (upload(backend, &c.x), upload(backend, &c.w), upload(backend, &c.dy));
    let mut dx = garbage(backend, c.x.len());
    let mut dw = garbage(backend, c.w.len());
    let mut db = garbage(backend, d.out_features);
    backend.linear_backward(d, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).expect("linear_backward");
    // Without the optional outputs the weight gradient is the same.
    let mut dw2 = garbage(backend, c.w.len());
    backend.linear_backward(d, &x, &w, &dy, None, Some(&mut dw2), None).expect("linear_backward without dx/db");
    let (dx, dw, db) = (download(backend, &dx), download(backend, &dw), download(backend, &db));
    let name = backend.name();
    assert_exact(&format!("{name} linear dW without dx/db {d:?}"), &download(backend, &dw2), &dw);
    // A frozen layer (no weight gradient): the same dx and db, bit for bit.
    let (mut dx2, mut db2) = (garbage(backend, c.x.len()), garbage(backend, d.out_features));
    backend.linear_backward(d, &x, &w, &dy, Some(&mut dx2), None, Some(&mut db2)).expect("linear_backward without dW");
    assert_exact(&format!("{name} linear dx without dW {d:?}"), &download(backend, &dx2), &dx);
    assert_exact(&format!("{name} linear db without dW {d:?}"), &download(backend, &db2), &db);
    (dx, dw, db)
}

const SMALL: [LinearDesc; 3] = [
    LinearDesc { rows: 6, in_features: 5, out_features: 4 },
    LinearDesc { rows: 13, in_features: 9, out_features: 7 },
    LinearDesc { rows: 1, in_features: 3, out_features: 1 },
];

/// Larger than typical GEMM blocks (and than a row-reduction chunk).
const LARGE: [LinearDesc; 2] = [
    LinearDesc { rows: 300, in_features: 40, out_features: 530 },
    LinearDesc { rows: 1030, in_features: 6, out_features: 3 },
];

/// Forward, with and without bias.
pub fn linear_forward_matches_reference<B: LinearOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x11ea_0001);
    for d in SMALL.iter().chain(&LARGE) {
        let c = case(&mut rng, d);
        let (x, w, b) = (upload(backend, &c.x), upload(backend, &c.w), upload(backend, &c.b));
        let (x64, w64, b64) = (to_f64(&c.x), to_f64(&c.w), to_f64(&c.b));
        let mut y = garbage(backend, d.rows * d.out_features);
        backend.linear_forward(d, &x, &w, Some(&b), &mut y).unwrap();
        let want = linear_f64(d, &x64, &w64, Some(&b64));
        assert_close(&format!("{} linear forward {d:?}", backend.name()), &download(backend, &y), &want, tol.forward);
        let mut y = garbage(backend, d.rows * d.out_features);
        backend.linear_forward(d, &x, &w, None, &mut y).unwrap();
        let want = linear_f64(d, &x64, &w64, None);
        assert_close(
            &format!("{} linear forward no bias {d:?}", backend.name()),
            &download(backend, &y),
            &want,
            tol.forward,
        );
    }
}

/// dx, dW, db against finite differences of `L = Σ dy·(x Wᵀ + b)`.
pub fn linear_gradients_match_finite_differences<B: LinearOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x11ea_0002);
    for d in &SMALL {
        let c = case(&mut rng, d);
        let (dx, dw, db) = backend_backward(backend, d, &c);
        let (x64, w64, b64, dy64) = (to_f64(&c.x), to_f64(&c.w), to_f64(&c.b), to_f64(&c.dy));
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&dy64, &linear_f64(d, x, w, Some(b)));
        let name = backend.name();
        let fd = finite_difference(&x64, |x| loss(x, &w64, &b64));
        assert_close(&format!("{name} linear dx {d:?}"), &dx, &fd, tol.gradient);
        let fd = finite_difference(&w64, |w| loss(&x64, w, &b64));
        assert_close(&format!("{name} linear dW {d:?}"), &dw, &fd, tol.gradient);
        let fd = finite_difference(&b64, |b| loss(&x64, &w64, b));
        assert_close(&format!("{name} linear db {d:?}"), &db, &fd, tol.gradient);
    }
}

/// Large shapes: the backward against the f64 reference backward.
pub fn linear_large_gradients_match_reference<B: LinearOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x11ea_0003);
    for d in &LARGE {
        let c = case(&mut rng, d);
        let (dx, dw, db) = backend_backward(backend, d, &c);
        let (rx, rw, rb) = linear_backward_f64(d, &to_f64(&c.x), &to_f64(&c.w), &to_f64(&c.dy));
        let name = backend.name();
        assert_close(&format!("{name} linear dx {d:?}"), &dx, &rx, tol.gradient);
        assert_close(&format!("{name} linear dW {d:?}"), &dw, &rw, tol.gradient);
        assert_close(&format!("{name} linear db {d:?}"), &db, &rb, tol.gradient);
    }
}

/// Embedding lookups (exact copies) and their backward (finite differences), with repeated
/// and unused indices.
pub fn embedding_matches_reference<B: LinearOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x11ea_0004);
    for d in [EmbeddingDesc { rows: 9, vocab: 5, dim: 3 }, EmbeddingDesc { rows: 300, vocab: 1001, dim: 4 }] {
        let table = normal_vec(&mut rng, d.vocab * d.dim, 1.0);
        let mut indices: Vec<u32> = (0..d.rows).map(|_| (rng.next_u64() % d.vocab as u64) as u32).collect();
        indices[1] = indices[0]; // a repeat
        let mut out = garbage(backend, d.rows * d.dim);
        backend.embedding_forward(&d, &upload(backend, &table), &indices, &mut out).unwrap();
        let want: Vec<f32> =
            indices.iter().flat_map(|&i| table[i as usize * d.dim..(i as usize + 1) * d.dim].to_vec()).collect();
        assert_exact(&format!("{} embedding forward {d:?}", backend.name()), &download(backend, &out), &want);

        let dout = normal_vec(&mut rng, d.rows * d.dim, 1.0);
        let mut dtable = garbage(backend, d.vocab * d.dim);
        backend.embedding_backward(&d, &indices, &upload(backend, &dout), &mut dtable).unwrap();
        let dout64 = to_f64(&dout);
        let fd = finite_difference(&to_f64(&table), |t| {
            indices
                .iter()
                .enumerate()
                .map(|(r, &i)| {
                    let i = i as usize;
                    dot(&dout64[r * d.dim..(r + 1) * d.dim], &t[i * d.dim..(i + 1) * d.dim])
                })
                .sum()
        });
        assert_close(
            &format!("{} embedding backward {d:?}", backend.name()),
            &download(backend, &dtable),
            &fd,
            tol.gradient,
        );
    }
}

/// Bad lengths and out-of-range indices are errors.
pub fn linear_rejects_bad_shapes<B: LinearOps>(backend: &B) {
    let d = LinearDesc { rows: 2, in_features: 3, out_features: 4 };
    let (x, w, b) = (garbage(backend, 6), garbage(backend, 12), garbage(backend, 4));
    let mut y = garbage(backend, 8);
    assert!(backend.linear_forward(&d, &garbage(backend, 5), &w, Some(&b), &mut y).is_err(), "input");
    assert!(backend.linear_forward(&d, &x, &garbage(backend, 11), None, &mut y).is_err(), "weight");
    assert!(backend.linear_forward(&d, &x, &w, Some(&garbage(backend, 3)), &mut y).is_err(), "bias");
    assert!(backend.linear_forward(&d, &x, &w, None, &mut garbage(backend, 9)).is_err(), "output");
    let (mut dx, mut dw, mut db) = (garbage(backend, 6), garbage(backend, 12), garbage(backend, 4));
    let dy7 = garbage(backend, 7);
    assert!(backend.linear_backward(&d, &x, &w, &dy7, Some(&mut dx), Some(&mut dw), None).is_err(), "dy");
    assert!(backend.linear_backward(&d, &x, &w, &dy7, Some(&mut dx), None, None).is_err(), "dy, frozen");
    let mut dx5 = garbage(backend, 5);
    assert!(backend.linear_backward(&d, &x, &w, &y, Some(&mut dx5), Some(&mut dw), None).is_err(), "dx");
    assert!(backend.linear_backward(&d, &x, &w, &y, Some(&mut dx5), None, None).is_err(), "dx, frozen");
    assert!(backend.linear_backward(&d, &x, &w, &y, None, Some(&mut garbage(backend, 13)), None).is_err(), "dW");
    let mut db5 = garbage(backend, 5);
    assert!(backend.linear_backward(&d, &x, &w, &y, None, Some(&mut dw), Some(&mut db5)).is_err(), "db");
    assert!(backend.linear_backward(&d, &x, &w, &y, None, None, Some(&mut db5)).is_err(), "db, frozen");
    assert!(
        backend.linear_backward(&d, &x, &w, &y, Some(&mut dx), Some(&mut dw), Some(&mut db)).is_ok(),
        "good shapes"
    );
    assert!(backend.linear_backward(&d, &x, &w, &y, Some(&mut dx), None, Some(&mut db)).is_ok(), "frozen, good shapes");

    let e = EmbeddingDesc { rows: 2, vocab: 3, dim: 2 };
    let table = garbage(backend, 6);
    let mut out = garbage(backend, 4);
    assert!(backend.embedding_forward(&e, &table, &[0, 3], &mut out).is_err(), "index == vocab");
    assert!(backend.embedding_forward(&e, &table, &[0], &mut out).is_err(), "index count");
    assert!(backend.embedding_forward(&e, &garbage(backend, 5), &[0, 1], &mut out).is_err(), "table");
    assert!(backend.embedding_forward(&e, &table, &[0, 1], &mut garbage(backend, 5)).is_err(), "output");
    let mut dtable = garbage(backend, 6);
    assert!(backend.embedding_backward(&e, &[2, 7], &out, &mut dtable).is_err(), "backward index");
    assert!(backend.embedding_backward(&e, &[2, 1], &out, &mut garbage(backend, 7)).is_err(), "backward table");
    assert!(backend.embedding_backward(&e, &[2, 1], &garbage(backend, 3), &mut dtable).is_err(), "backward dout");
}
