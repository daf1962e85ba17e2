//! The adaLN ops of SiT (`modulate`, `gated_add` and their backward): f64 references, cases, checks.

use super::*;

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
