//! Conformance suite of [`NormOps`]: GroupNorm (standard, and `NormalizeNP` with per-patch
//! statistics resized bicubically, spec 6.2), LayerNorm and training-mode BatchNorm2d (the
//! discriminator's, spec 8), written once for every backend.
//!
//! Each check draws fresh random inputs from [`TestRng`] and compares the backend with a plain f64
//! reference written here (the bicubic resize as the textbook cubic-convolution kernel, so it is
//! independent of the backends' formulation), and every gradient with central finite differences
//! of the f64 loss `L = Σ dy · y`. Errors are [`max_rel_error`] per tensor.

use super::common::{assert_close, download, garbage, to_f64, upload};
use crate::TestRng;
use gpstoken_core::backend::{BatchNormDesc, GroupNormDesc, LayerNormDesc, NormKind, NormOps};

/// How close a backend must be to the f64 references.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Forward vs the f64 reference, `max_rel_error` per case.
    pub forward: f64,
    /// Gradients vs central finite differences of the f64 reference, per tensor.
    pub finite_difference: f64,
}

/// Central finite-difference step (the references are f64).
const STEP: f64 = 1e-5;

fn normals(rng: &mut TestRng, len: usize, scale: f64, offset: f64) -> Vec<f32> {
    (0..len).map(|_| (offset + scale * rng.normal()) as f32).collect()
}

/// Central finite differences of `loss` w.r.t. every entry of `params`.
fn finite_differences(params: &mut [f64], mut loss: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    (0..params.len())
        .map(|i| {
            let base = params[i];
            params[i] = base + STEP;
            let plus = loss(params);
            params[i] = base - STEP;
            let minus = loss(params);
            params[i] = base;
            (plus - minus) / (2.0 * STEP)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// GroupNorm

/// The cubic-convolution kernel (Keys, `A = -0.75`) at distance `d`.
fn cubic_kernel(d: f64) -> f64 {
    const A: f64 = -0.75;
    let d = d.abs();
    if d <= 1.0 {
        ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0
    } else if d < 2.0 {
        ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A
    } else {
        0.0
    }
}

/// PyTorch `F.interpolate(mode='bicubic', align_corners=False)` of one axis: the (input index,
/// weight) taps of output index `o`, clamped to the border.
fn bicubic_taps(input: usize, output: usize, o: usize) -> [(usize, f64); 4] {
    let src = (o as f64 + 0.5) * input as f64 / output as f64 - 0.5;
    let floor = src.floor();
    let t = src - floor;
    let mut taps = [(0, 0.0); 4];
    for (k, tap) in taps.iter_mut().enumerate() {
        let offset = k as f64 - 1.0;
        let index = (floor + offset).clamp(0.0, (input - 1) as f64) as usize;
        *tap = (index, cubic_kernel(t - offset));
    }
    taps
}

/// One (image, group) of GroupNorm in f64: `xg` is the group's `[C/G, H, W]` slice, `gamma`,
/// `beta` its channels' affine parameters.
fn group_norm_group_f64(desc: &GroupNormDesc, xg: &[f64], gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    let (h, w, np) = (desc.height, desc.width, desc.patches);
    let cpg = desc.channels / desc.groups;
    let (th, tw) = (h / np, w / np);
    let eps = f64::from(desc.eps);
    // Per-tile mean and biased std.
    let mut mean = vec![0.0; np * np];
    let mut std = vec![0.0; np * np];
    for ty in 0..np {
        for tx in 0..np {
            let values: Vec<f64> = (0..cpg)
                .flat_map(|c| {
                    (ty * th..(ty + 1) * th).flat_map(move |r| (tx * tw..(tx + 1) * tw).map(move |s| (c, r, s)))
                })
                .map(|(c, r, s)| xg[(c * h + r) * w + s])
                .collect();
            let n = values.len() as f64;
            let m = values.iter().sum::<f64>() / n;
            mean[ty * np + tx] = m;
            std[ty * np + tx] = (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n).sqrt();
        }
    }
    // Per-pixel maps: the statistic itself for np = 1, else bicubic (x first, then y).
    let resize = |map: &[f64], r: usize, s: usize| -> f64 {
        if np == 1 {
            return map[0];
        }
        bicubic_taps(np, h, r)
            .iter()
            .map(|&(ty, wy)| wy * bicubic_taps(np, w, s).iter().map(|&(tx, wx)| wx * map[ty * np + tx]).sum::<f64>())
            .sum()
    };
    let mut y = vec![0.0; xg.len()];
    for r in 0..h {
        for s in 0..w {
            let (m, sd) = (resize(&mean, r, s), resize(&std, r, s));
            let divisor = match desc.kind {
                NormKind::Standard => (sd * sd + eps).sqrt(),
                NormKind::StdPlusEps => sd + eps,
            };
            for c in 0..cpg {
                let i = (c * h + r) * w + s;
                y[i] = (xg[i] - m) / divisor * gamma[c] + beta[c];
            }
        }
    }
    y
}

/// GroupNorm in f64 over the whole `[B, C, H, W]` input.
pub fn group_norm_reference(desc: &GroupNormDesc, x: &[f64], gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    let cpg = desc.channels / desc.groups;
    let group_len = cpg * desc.height * desc.width;
    let mut y = Vec::with_capacity(x.len());
    for (bg, xg) in x.chunks(group_len).enumerate() {
        let c0 = (bg % desc.groups) * cpg;
        y.extend(group_norm_group_f64(desc, xg, &gamma[c0..c0 + cpg], &beta[c0..c0 + cpg]));
    }
    y
}

/// One random GroupNorm problem.
#[derive(Clone, Debug)]
pub struct GroupNormCase {
    pub desc: GroupNormDesc,
    pub x: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub dy: Vec<f32>,
}

/// Random inputs: per-channel offsets and scales (so the mean matters), affine near identity.
pub fn group_norm_case(rng: &mut TestRng, desc: GroupNormDesc) -> GroupNormCase {
    let hw = desc.height * desc.width;
    let mut x = Vec::with_capacity(desc.len());
    for _ in 0..desc.batch * desc.channels {
        let (offset, scale) = (rng.uniform(-1.0, 1.0), rng.uniform(0.3, 2.0));
        x.extend(normals(rng, hw, scale, offset));
    }
    let gamma = normals(rng, desc.channels, 0.3, 1.0);
    let beta = normals(rng, desc.channels, 0.5, 0.0);
    let dy = normals(rng, desc.len(), 1.0, 0.0);
    GroupNormCase { desc, x, gamma, beta, dy }
}

/// The backend's `(y, dx, dgamma, dbeta)` for a case (outputs start as NaN garbage).
pub fn group_norm_outputs<B: NormOps>(backend: &B, case: &GroupNormCase) -> [Vec<f32>; 4] {
    let desc = &case.desc;
    let (x, gamma, beta, dy) = (
        upload(backend, &case.x),
        upload(backend, &case.gamma),
        upload(backend, &case.beta),
        upload(backend, &case.dy),
    );
    let mut y = garbage(backend, desc.len());
    let mut stats = garbage(backend, desc.stats_len());
    backend.group_norm_forward(desc, &x, &gamma, &beta, &mut y, &mut stats).expect("group_norm_forward");
    let (mut dx, mut dgamma, mut dbeta) =
        (garbage(backend, desc.len()), garbage(backend, desc.channels), garbage(backend, desc.channels));
    backend
        .group_norm_backward(desc, &x, &gamma, &stats, &dy, &mut dx, &mut dgamma, &mut dbeta)
        .expect("group_norm_backward");
    [download(backend, &y), download(backend, &dx), download(backend, &dgamma), download(backend, &dbeta)]
}

/// The shapes of the suite: 32 groups of 1 and of 4 channels, eps 1e-6, both kinds with one
/// patch, `NormalizeNP` with 2 and 3 patches (non-square tiles).
pub fn group_norm_descs() -> Vec<GroupNormDesc> {
    let base = GroupNormDesc {
        batch: 2,
        channels: 32,
        height: 5,
        width: 6,
        groups: 32,
        eps: 1e-6,
        kind: NormKind::Standard,
        patches: 1,
    };
    let mut descs = Vec::new();
    for kind in [NormKind::Standard, NormKind::StdPlusEps] {
        descs.push(GroupNormDesc { kind, ..base });
        descs.push(GroupNormDesc { kind, channels: 128, height: 4, width: 3, ..base });
    }
    let np = GroupNormDesc { kind: NormKind::StdPlusEps, ..base };
    descs.push(GroupNormDesc { height: 6, width: 8, patches: 2, ..np });
    descs.push(GroupNormDesc { channels: 128, height: 4, width: 6, patches: 2, ..np });
    descs.push(GroupNormDesc { batch: 1, channels: 64, height: 6, width: 9, patches: 3, ..np });
    descs
}

/// GroupNorm forward and every gradient (x, gamma, beta) vs the f64 reference and its finite
/// differences.
pub fn group_norm_matches_reference<B: NormOps>(backend: &B, tol: Tolerance) {
    let mut rng = TestRng::new(0x6e04_0001);
    for desc in group_norm_descs() {
        let case = group_norm_case(&mut rng, desc);
        let [y, dx, dgamma, dbeta] = group_norm_outputs(backend, &case);
        let label = format!(
            "{} group_norm {:?} C={} G={} {}x{} np={}",
            backend.name(),
            desc.kind,
            desc.channels,
            desc.groups,
            desc.height,
            desc.width,
            desc.patches
        );
        let (x, gamma, beta, dy) = (to_f64(&case.x), to_f64(&case.gamma), to_f64(&case.beta), to_f64(&case.dy));
        assert_close(&format!("{label} forward"), &y, &group_norm_reference(&desc, &x, &gamma, &beta), tol.forward);

        // dx: the loss splits over (image, group), so perturb each group alone.
        let cpg = desc.channels / desc.groups;
        let group_len = cpg * desc.height * desc.width;
        let mut fd_x = Vec::with_capacity(x.len());
        for (bg, (xg, dyg)) in x.chunks(group_len).zip(dy.chunks(group_len)).enumerate() {
            let c0 = (bg % desc.groups) * cpg;
            let (gg, bb) = (&gamma[c0..c0 + cpg], &beta[c0..c0 + cpg]);
            let mut params = xg.to_vec();
            fd_x.extend(finite_differences(&mut params, |p| {
                group_norm_group_f64(&desc, p, gg, bb).iter().zip(dyg).map(|(a, b)| a * b).sum()
            }));
        }
        assert_close(&format!("{label} dx vs finite differences"), &dx, &fd_x, tol.finite_difference);
        let loss = |g: &[f64], b: &[f64]| -> f64 {
            group_norm_reference(&desc, &x, g, b).iter().zip(&dy).map(|(a, b)| a * b).sum()
        };
        let fd_gamma = finite_differences(&mut gamma.clone(), |g| loss(g, &beta));
        assert_close(&format!("{label} dgamma vs finite differences"), &dgamma, &fd_gamma, tol.finite_difference);
        let fd_beta = finite_differences(&mut beta.clone(), |b| loss(&gamma, b));
        assert_close(&format!("{label} dbeta vs finite differences"), &dbeta, &fd_beta, tol.finite_difference);
    }
}

/// Statistics over exactly constant groups (zero variance): finite outputs and gradients.
pub fn group_norm_handles_constant_groups<B: NormOps>(backend: &B) {
    for (kind, patches) in [(NormKind::Standard, 1), (NormKind::StdPlusEps, 1), (NormKind::StdPlusEps, 2)] {
        let desc = GroupNormDesc { batch: 1, channels: 4, height: 4, width: 4, groups: 2, eps: 1e-6, kind, patches };
        let mut rng = TestRng::new(0x6e04_0002);
        let mut case = group_norm_case(&mut rng, desc);
        case.x.iter_mut().for_each(|v| *v = 0.75);
        let [y, dx, dgamma, dbeta] = group_norm_outputs(backend, &case);
        for (name, v) in [("y", &y), ("dx", &dx), ("dgamma", &dgamma), ("dbeta", &dbeta)] {
            assert!(v.iter().all(|v| v.is_finite()), "{kind:?} np={patches}: non-finite {name}");
        }
        // Every pixel equals the mean: y = beta.
        for (i, &v) in y.iter().enumerate() {
            let beta = case.beta[i / 16];
            assert!((v - beta).abs() <= 1e-6, "{kind:?} np={patches}: y[{i}] = {v}, want beta {beta}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

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

// ---------------------------------------------------------------------------------------------
// BatchNorm2d (training mode)

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

// ---------------------------------------------------------------------------------------------
// Shapes and determinism

/// Every norm op returns an error (never panics) for descriptors or buffers that do not fit.
pub fn norm_rejects_bad_shapes<B: NormOps>(backend: &B) {
    let z = |len: usize| backend.zeros(len).expect("zeros");
    let desc = GroupNormDesc {
        batch: 2,
        channels: 8,
        height: 4,
        width: 6,
        groups: 4,
        eps: 1e-6,
        kind: NormKind::Standard,
        patches: 1,
    };
    let fwd = |d: &GroupNormDesc, x: usize, g: usize, b: usize, y: usize, s: usize| {
        backend.group_norm_forward(d, &z(x), &z(g), &z(b), &mut z(y), &mut z(s)).is_err()
    };
    let (n, c, s) = (desc.len(), desc.channels, desc.stats_len());
    assert!(!fwd(&desc, n, c, c, n, s), "well-shaped group_norm_forward");
    assert!(fwd(&desc, n - 1, c, c, n, s), "short x");
    assert!(fwd(&desc, n, c + 1, c, n, s), "long gamma");
    assert!(fwd(&desc, n, c, c - 1, n, s), "short beta");
    assert!(fwd(&desc, n, c, c, n + 1, s), "long y");
    assert!(fwd(&desc, n, c, c, n, s - 1), "short stats");
    assert!(fwd(&GroupNormDesc { groups: 3, ..desc }, n, c, c, n, s), "channels not a multiple of groups");
    assert!(fwd(&GroupNormDesc { groups: 0, ..desc }, n, c, c, n, 0), "zero groups");
    let std_np = GroupNormDesc { patches: 2, ..desc };
    assert!(fwd(&std_np, n, c, c, n, std_np.stats_len()), "patches > 1 with the standard kind");
    let np3 = GroupNormDesc { patches: 3, kind: NormKind::StdPlusEps, ..desc };
    assert!(fwd(&np3, n, c, c, n, np3.stats_len()), "height not a multiple of patches");
    let np2 = GroupNormDesc { patches: 2, kind: NormKind::StdPlusEps, ..desc };
    assert!(!fwd(&np2, n, c, c, n, np2.stats_len()), "well-shaped per-patch forward");
    assert!(fwd(&GroupNormDesc { patches: 0, ..desc }, n, c, c, n, 0), "zero patches");

    let bwd = |x: usize, g: usize, s: usize, dy: usize, dx: usize, dg: usize, db: usize| {
        backend.group_norm_backward(&desc, &z(x), &z(g), &z(s), &z(dy), &mut z(dx), &mut z(dg), &mut z(db)).is_err()
    };
    assert!(!bwd(n, c, s, n, n, c, c), "well-shaped group_norm_backward");
    assert!(bwd(n + 1, c, s, n, n, c, c), "long x");
    assert!(bwd(n, c - 1, s, n, n, c, c), "short gamma");
    assert!(bwd(n, c, s + 2, n, n, c, c), "long stats");
    assert!(bwd(n, c, s, n - 1, n, c, c), "short dy");
    assert!(bwd(n, c, s, n, n - 1, c, c), "short dx");
    assert!(bwd(n, c, s, n, n, c + 1, c), "long dgamma");
    assert!(bwd(n, c, s, n, n, c, c - 1), "short dbeta");

    let ln = LayerNormDesc { rows: 3, features: 5, eps: 1e-5 };
    let (m, f, st) = (15, 5, ln.stats_len());
    let lfwd = |x: usize, a: Option<(usize, usize)>, y: usize, s: usize| {
        let (g, b) = a.map_or((z(0), z(0)), |(g, b)| (z(g), z(b)));
        let affine = a.map(|_| (&g, &b));
        backend.layer_norm_forward(&ln, &z(x), affine, &mut z(y), &mut z(s)).is_err()
    };
    assert!(!lfwd(m, None, m, st) && !lfwd(m, Some((f, f)), m, st), "well-shaped layer_norm_forward");
    assert!(lfwd(m - 1, None, m, st), "short x");
    assert!(lfwd(m, Some((f + 1, f)), m, st), "long gamma");
    assert!(lfwd(m, Some((f, f - 1)), m, st), "short beta");
    assert!(lfwd(m, None, m + 1, st), "long y");
    assert!(lfwd(m, None, m, st + 1), "long stats");
    let lbwd = |x: usize, g: Option<usize>, s: usize, dy: usize, dx: usize, da: Option<(usize, usize)>| {
        let gamma = g.map(z);
        let (mut dg, mut db) = da.map_or((z(0), z(0)), |(g, b)| (z(g), z(b)));
        let daffine = da.map(|_| (&mut dg, &mut db));
        backend.layer_norm_backward(&ln, &z(x), gamma.as_ref(), &z(s), &z(dy), &mut z(dx), daffine).is_err()
    };
    assert!(!lbwd(m, Some(f), st, m, m, Some((f, f))) && !lbwd(m, None, st, m, m, None), "well-shaped backward");
    assert!(lbwd(m + 1, None, st, m, m, None), "long x");
    assert!(lbwd(m, Some(f - 1), st, m, m, None), "short gamma");
    assert!(lbwd(m, None, st - 1, m, m, None), "short stats");
    assert!(lbwd(m, None, st, m - 1, m, None), "short dy");
    assert!(lbwd(m, None, st, m, m + 1, None), "long dx");
    assert!(lbwd(m, Some(f), st, m, m, Some((f - 1, f))), "short dgamma");
    assert!(lbwd(m, Some(f), st, m, m, Some((f, f + 1))), "long dbeta");
}

/// Every output of the norm ops on shapes large enough to spread over several threads, for
/// comparing two backends (or thread counts) bit for bit.
pub fn norm_determinism_outputs<B: NormOps>(backend: &B) -> Vec<(String, Vec<f32>)> {
    let mut rng = TestRng::new(0x6e04_0004);
    let mut outputs = Vec::new();
    let base = GroupNormDesc {
        batch: 2,
        channels: 64,
        height: 32,
        width: 24,
        groups: 32,
        eps: 1e-6,
        kind: NormKind::Standard,
        patches: 1,
    };
    for desc in [
        base,
        GroupNormDesc { kind: NormKind::StdPlusEps, ..base },
        GroupNormDesc { kind: NormKind::StdPlusEps, patches: 2, ..base },
        GroupNormDesc { kind: NormKind::StdPlusEps, patches: 4, channels: 32, ..base },
    ] {
        let case = group_norm_case(&mut rng, desc);
        for (name, v) in ["y", "dx", "dgamma", "dbeta"].iter().zip(group_norm_outputs(backend, &case)) {
            outputs.push((format!("group_norm {:?} np={} {name}", desc.kind, desc.patches), v));
        }
    }
    for affine in [true, false] {
        let case = layer_norm_case(&mut rng, LayerNormDesc { rows: 300, features: 200, eps: 1e-5 }, affine);
        for (name, v) in ["y", "dx", "dgamma", "dbeta"].iter().zip(layer_norm_outputs(backend, &case)) {
            outputs.push((format!("layer_norm affine={affine} {name}"), v));
        }
    }
    // The discriminator's third BatchNorm at 64x64 inputs, batch 4: many channels over few pixels.
    for desc in [BatchNormDesc::new(4, 256, 64), BatchNormDesc::new(2, 64, 1024)] {
        let case = batch_norm_case(&mut rng, desc);
        let names = ["y", "dx", "dgamma", "dbeta", "running_mean", "running_var"];
        for (name, v) in names.iter().zip(batch_norm_outputs(backend, &case)) {
            outputs.push((format!("batch_norm C={} {name}", desc.channels), v));
        }
    }
    outputs
}
