//! Training-mode BatchNorm2d (the discriminator's, spec 8): f64 reference, cases, checks.

use super::*;

/// Training-mode BatchNorm in f64 over `x [B, C, HW]`: `(y, batch mean [C], unbiased var [C])`.
pub fn batch_norm_reference(
    desc: &BatchNormDesc,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (b, c, hw) = (desc.batch, desc.channels, desc.spatial);
    let n = (b * hw) as f64;
    let index = |i: usize, ch: usize, s: usize| (i * c + ch) * hw + s;
    let mut y = vec![0.0; x.len()];
    let (mut means, mut unbiased) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let values = || (0..b).flat_map(move |i| (0..hw).map(move |s| index(i, ch, s)));
        let mean = values().map(|k| x[k]).sum::<f64>() / n;
        let ss = values().map(|k| (x[k] - mean) * (x[k] - mean)).sum::<f64>();
        let rstd = 1.0 / (ss / n + f64::from(desc.eps)).sqrt();
        for k in values() {
            y[k] = (x[k] - mean) * rstd * gamma[ch] + beta[ch];
        }
        means[ch] = mean;
        unbiased[ch] = ss / (n - 1.0);
    }
    (y, means, unbiased)
}

/// One random BatchNorm problem, with running statistics to update.
#[derive(Clone, Debug)]
pub struct BatchNormCase {
    pub desc: BatchNormDesc,
    pub x: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub dy: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}

pub fn batch_norm_case(rng: &mut TestRng, desc: BatchNormDesc) -> BatchNormCase {
    // Per-channel offsets and scales shared by the images (what a channel looks like).
    let offsets: Vec<(f64, f64)> =
        (0..desc.channels).map(|_| (rng.uniform(-1.0, 1.0), rng.uniform(0.3, 2.0))).collect();
    let mut x = Vec::with_capacity(desc.len());
    for _ in 0..desc.batch {
        for &(offset, scale) in &offsets {
            x.extend(normals(rng, desc.spatial, scale, offset));
        }
    }
    let gamma = normals(rng, desc.channels, 0.3, 1.0);
    let beta = normals(rng, desc.channels, 0.5, 0.0);
    let dy = normals(rng, desc.len(), 1.0, 0.0);
    let running_mean = normals(rng, desc.channels, 0.5, 0.0);
    let running_var = (0..desc.channels).map(|_| rng.uniform(0.5, 2.0) as f32).collect();
    BatchNormCase { desc, x, gamma, beta, dy, running_mean, running_var }
}

/// The backend's `(y, dx, dgamma, dbeta, running_mean, running_var)` for a case.
pub fn batch_norm_outputs<B: NormOps>(backend: &B, case: &BatchNormCase) -> [Vec<f32>; 6] {
    let desc = &case.desc;
    let (x, gamma, beta, dy) = (
        upload(backend, &case.x),
        upload(backend, &case.gamma),
        upload(backend, &case.beta),
        upload(backend, &case.dy),
    );
    let (mut rm, mut rv) = (upload(backend, &case.running_mean), upload(backend, &case.running_var));
    let mut y = garbage(backend, desc.len());
    let mut stats = garbage(backend, desc.stats_len());
    backend
        .batch_norm_train_forward(desc, &x, &gamma, &beta, &mut y, &mut stats, Some((&mut rm, &mut rv)))
        .expect("batch_norm_train_forward");
    // Without running statistics: the same output and statistics.
    let (mut y2, mut stats2) = (garbage(backend, desc.len()), garbage(backend, desc.stats_len()));
    backend
        .batch_norm_train_forward(desc, &x, &gamma, &beta, &mut y2, &mut stats2, None)
        .expect("batch_norm_train_forward without running statistics");
    assert_eq!(download(backend, &y), download(backend, &y2), "running statistics change y");
    let (mut dx, mut dgamma, mut dbeta) =
        (garbage(backend, desc.len()), garbage(backend, desc.channels), garbage(backend, desc.channels));
    backend
        .batch_norm_train_backward(desc, &x, &gamma, &stats, &dy, &mut dx, Some((&mut dgamma, &mut dbeta)))
        .expect("batch_norm_train_backward");
    // Without dgamma/dbeta: the same dx.
    let mut dx2 = garbage(backend, desc.len());
    backend.batch_norm_train_backward(desc, &x, &gamma, &stats, &dy, &mut dx2, None).expect("backward, dx only");
    assert_eq!(download(backend, &dx), download(backend, &dx2), "asking for dgamma/dbeta changes dx");
    [
        download(backend, &y),
        download(backend, &dx),
        download(backend, &dgamma),
        download(backend, &dbeta),
        download(backend, &rm),
        download(backend, &rv),
    ]
}

/// The discriminator's shapes (small), one with a single pixel per image (the statistics are then
/// over the batch only), one with a single image.
pub fn batch_norm_descs() -> Vec<BatchNormDesc> {
    vec![
        BatchNormDesc::new(2, 5, 12),
        BatchNormDesc::new(3, 4, 1),
        BatchNormDesc::new(1, 3, 37),
        BatchNormDesc { eps: 1e-3, momentum: 0.25, ..BatchNormDesc::new(2, 2, 9) },
    ]
}

/// BatchNorm forward, running statistics, and every gradient (x, gamma, beta) vs the f64
/// reference and its finite differences (the loss does not split: every x of a channel moves
/// its statistics, so the whole input is perturbed).
pub fn batch_norm_matches_reference<B: NormOps>(backend: &B, tol: Tolerance) {
    let mut rng = TestRng::new(0x6e04_0005);
    for desc in batch_norm_descs() {
        let case = batch_norm_case(&mut rng, desc);
        let [y, dx, dgamma, dbeta, rm, rv] = batch_norm_outputs(backend, &case);
        let label = format!("{} batch_norm B={} C={} HW={}", backend.name(), desc.batch, desc.channels, desc.spatial);
        let (x, gamma, beta, dy) = (to_f64(&case.x), to_f64(&case.gamma), to_f64(&case.beta), to_f64(&case.dy));
        let (want_y, means, unbiased) = batch_norm_reference(&desc, &x, &gamma, &beta);
        assert_close(&format!("{label} forward"), &y, &want_y, tol.forward);
        let mom = f64::from(desc.momentum);
        let want_rm: Vec<f64> =
            case.running_mean.iter().zip(&means).map(|(&r, m)| (1.0 - mom) * f64::from(r) + mom * m).collect();
        let want_rv: Vec<f64> =
            case.running_var.iter().zip(&unbiased).map(|(&r, v)| (1.0 - mom) * f64::from(r) + mom * v).collect();
        assert_close(&format!("{label} running_mean"), &rm, &want_rm, tol.forward);
        assert_close(&format!("{label} running_var"), &rv, &want_rv, tol.forward);

        let loss = |x: &[f64], g: &[f64], b: &[f64]| -> f64 {
            batch_norm_reference(&desc, x, g, b).0.iter().zip(&dy).map(|(a, b)| a * b).sum()
        };
        let fd_x = finite_differences(&mut x.clone(), |p| loss(p, &gamma, &beta));
        assert_close(&format!("{label} dx vs finite differences"), &dx, &fd_x, tol.finite_difference);
        let fd_gamma = finite_differences(&mut gamma.clone(), |g| loss(&x, g, &beta));
        assert_close(&format!("{label} dgamma vs finite differences"), &dgamma, &fd_gamma, tol.finite_difference);
        let fd_beta = finite_differences(&mut beta.clone(), |b| loss(&x, &gamma, b));
        assert_close(&format!("{label} dbeta vs finite differences"), &dbeta, &fd_beta, tol.finite_difference);
    }
}

/// A constant channel (zero variance): finite outputs, `y = beta`, finite gradients.
pub fn batch_norm_handles_constant_channels<B: NormOps>(backend: &B) {
    let mut rng = TestRng::new(0x6e04_0006);
    let mut case = batch_norm_case(&mut rng, BatchNormDesc::new(2, 3, 4));
    case.x.iter_mut().for_each(|v| *v = -0.5);
    let [y, dx, dgamma, dbeta, rm, rv] = batch_norm_outputs(backend, &case);
    for (name, v) in [("y", &y), ("dx", &dx), ("dgamma", &dgamma), ("dbeta", &dbeta), ("rm", &rm), ("rv", &rv)] {
        assert!(v.iter().all(|v| v.is_finite()), "batch norm on a constant input: non-finite {name}");
    }
    for (i, &v) in y.iter().enumerate() {
        let beta = case.beta[(i / 4) % 3];
        assert!((v - beta).abs() <= 1e-6, "batch norm on a constant input: y[{i}] = {v}, want beta {beta}");
    }
}

/// Bad BatchNorm shapes are errors, never panics.
pub fn batch_norm_rejects_bad_shapes<B: NormOps>(backend: &B) {
    let z = |len: usize| backend.zeros(len).expect("zeros");
    let desc = BatchNormDesc::new(2, 3, 5);
    let (n, c, s) = (desc.len(), desc.channels, desc.stats_len());
    let fwd = |d: &BatchNormDesc, x: usize, g: usize, b: usize, y: usize, st: usize, run: Option<(usize, usize)>| {
        let (mut rm, mut rv) = run.map_or((z(0), z(0)), |(m, v)| (z(m), z(v)));
        let running = run.map(|_| (&mut rm, &mut rv));
        backend.batch_norm_train_forward(d, &z(x), &z(g), &z(b), &mut z(y), &mut z(st), running).is_err()
    };
    assert!(!fwd(&desc, n, c, c, n, s, Some((c, c))) && !fwd(&desc, n, c, c, n, s, None), "well-shaped forward");
    assert!(fwd(&desc, n - 1, c, c, n, s, None), "short x");
    assert!(fwd(&desc, n, c + 1, c, n, s, None), "long gamma");
    assert!(fwd(&desc, n, c, c - 1, n, s, None), "short beta");
    assert!(fwd(&desc, n, c, c, n + 1, s, None), "long y");
    assert!(fwd(&desc, n, c, c, n, s - 1, None), "short stats");
    assert!(fwd(&desc, n, c, c, n, s, Some((c - 1, c))), "short running_mean");
    assert!(fwd(&desc, n, c, c, n, s, Some((c, c + 1))), "long running_var");
    let single = BatchNormDesc::new(1, 3, 1);
    assert!(fwd(&single, 3, 3, 3, 3, 6, None), "one value per channel");
    let bwd = |x: usize, g: usize, st: usize, dy: usize, dx: usize, da: Option<(usize, usize)>| {
        let (mut dg, mut db) = da.map_or((z(0), z(0)), |(g, b)| (z(g), z(b)));
        let daffine = da.map(|_| (&mut dg, &mut db));
        backend.batch_norm_train_backward(&desc, &z(x), &z(g), &z(st), &z(dy), &mut z(dx), daffine).is_err()
    };
    assert!(!bwd(n, c, s, n, n, Some((c, c))) && !bwd(n, c, s, n, n, None), "well-shaped backward");
    assert!(bwd(n + 1, c, s, n, n, None), "long x");
    assert!(bwd(n, c - 1, s, n, n, None), "short gamma");
    assert!(bwd(n, c, s + 1, n, n, None), "long stats");
    assert!(bwd(n, c, s, n - 1, n, None), "short dy");
    assert!(bwd(n, c, s, n, n + 1, None), "long dx");
    assert!(bwd(n, c, s, n, n, Some((c - 1, c))), "short dgamma");
    assert!(bwd(n, c, s, n, n, Some((c, c + 1))), "long dbeta");
}
