//! LayerNorm: f64 reference, cases, checks.

use super::*;

/// LayerNorm of one row in f64.
fn layer_norm_row_f64(x: &[f64], eps: f64, affine: Option<(&[f64], &[f64])>) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let xhat = (v - mean) * rstd;
            match affine {
                Some((g, b)) => xhat * g[i] + b[i],
                None => xhat,
            }
        })
        .collect()
}

/// LayerNorm in f64 over `[rows, features]`.
pub fn layer_norm_reference(desc: &LayerNormDesc, x: &[f64], affine: Option<(&[f64], &[f64])>) -> Vec<f64> {
    x.chunks(desc.features).flat_map(|row| layer_norm_row_f64(row, f64::from(desc.eps), affine)).collect()
}

/// One random LayerNorm problem (`gamma`, `beta` used when `affine`).
#[derive(Clone, Debug)]
pub struct LayerNormCase {
    pub desc: LayerNormDesc,
    pub affine: bool,
    pub x: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub dy: Vec<f32>,
}

pub fn layer_norm_case(rng: &mut TestRng, desc: LayerNormDesc, affine: bool) -> LayerNormCase {
    let mut x = Vec::with_capacity(desc.rows * desc.features);
    for _ in 0..desc.rows {
        let (offset, scale) = (rng.uniform(-1.0, 1.0), rng.uniform(0.3, 2.0));
        x.extend(normals(rng, desc.features, scale, offset));
    }
    let gamma = normals(rng, desc.features, 0.3, 1.0);
    let beta = normals(rng, desc.features, 0.5, 0.0);
    let dy = normals(rng, desc.rows * desc.features, 1.0, 0.0);
    LayerNormCase { desc, affine, x, gamma, beta, dy }
}

/// The backend's `(y, dx, dgamma, dbeta)` (the last two empty without affine).
pub fn layer_norm_outputs<B: NormOps>(backend: &B, case: &LayerNormCase) -> [Vec<f32>; 4] {
    let desc = &case.desc;
    let len = desc.rows * desc.features;
    let (x, gamma, beta, dy) = (
        upload(backend, &case.x),
        upload(backend, &case.gamma),
        upload(backend, &case.beta),
        upload(backend, &case.dy),
    );
    let mut y = garbage(backend, len);
    let mut stats = garbage(backend, desc.stats_len());
    let affine = case.affine.then_some((&gamma, &beta));
    backend.layer_norm_forward(desc, &x, affine, &mut y, &mut stats).expect("layer_norm_forward");
    let mut dx = garbage(backend, len);
    if case.affine {
        let (mut dgamma, mut dbeta) = (garbage(backend, desc.features), garbage(backend, desc.features));
        backend
            .layer_norm_backward(desc, &x, Some(&gamma), &stats, &dy, &mut dx, Some((&mut dgamma, &mut dbeta)))
            .expect("layer_norm_backward");
        [download(backend, &y), download(backend, &dx), download(backend, &dgamma), download(backend, &dbeta)]
    } else {
        backend.layer_norm_backward(desc, &x, None, &stats, &dy, &mut dx, None).expect("layer_norm_backward");
        [download(backend, &y), download(backend, &dx), vec![], vec![]]
    }
}

/// LayerNorm with and without affine (eps 1e-5 as the encoder), feature counts that are not
/// multiples of 8 and span more than one 64-feature block.
pub fn layer_norm_matches_reference<B: NormOps>(backend: &B, tol: Tolerance) {
    let mut rng = TestRng::new(0x6e04_0003);
    for (desc, affine) in [
        (LayerNormDesc { rows: 7, features: 37, eps: 1e-5 }, true),
        (LayerNormDesc { rows: 7, features: 37, eps: 1e-5 }, false),
        (LayerNormDesc { rows: 5, features: 130, eps: 1e-5 }, true),
        (LayerNormDesc { rows: 3, features: 64, eps: 1e-6 }, false),
    ] {
        let case = layer_norm_case(&mut rng, desc, affine);
        let [y, dx, dgamma, dbeta] = layer_norm_outputs(backend, &case);
        let label = format!("{} layer_norm {}x{} affine={affine}", backend.name(), desc.rows, desc.features);
        let (x, gamma, beta, dy) = (to_f64(&case.x), to_f64(&case.gamma), to_f64(&case.beta), to_f64(&case.dy));
        let aff = affine.then_some((&gamma[..], &beta[..]));
        let eps = f64::from(desc.eps);
        assert_close(&format!("{label} forward"), &y, &layer_norm_reference(&desc, &x, aff), tol.forward);
        let f = desc.features;
        let mut fd_x = Vec::with_capacity(x.len());
        for (row, dyr) in x.chunks(f).zip(dy.chunks(f)) {
            let mut params = row.to_vec();
            fd_x.extend(finite_differences(&mut params, |p| {
                layer_norm_row_f64(p, eps, aff).iter().zip(dyr).map(|(a, b)| a * b).sum()
            }));
        }
        assert_close(&format!("{label} dx vs finite differences"), &dx, &fd_x, tol.finite_difference);
        if affine {
            let loss = |g: &[f64], b: &[f64]| -> f64 {
                layer_norm_reference(&desc, &x, Some((g, b))).iter().zip(&dy).map(|(a, b)| a * b).sum()
            };
            let fd_gamma = finite_differences(&mut gamma.clone(), |g| loss(g, &beta));
            assert_close(&format!("{label} dgamma vs finite differences"), &dgamma, &fd_gamma, tol.finite_difference);
            let fd_beta = finite_differences(&mut beta.clone(), |b| loss(&gamma, b));
            assert_close(&format!("{label} dbeta vs finite differences"), &dbeta, &fd_beta, tol.finite_difference);
        }
    }
}
