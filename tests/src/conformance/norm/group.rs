//! GroupNorm, standard and `NormalizeNP` (per-patch statistics resized bicubically, spec 6.2): f64 reference, cases, checks.

use super::*;

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
