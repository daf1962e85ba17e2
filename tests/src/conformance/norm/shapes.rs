//! Bad shapes are errors on every norm op; outputs for the cross-backend determinism check.

use super::*;

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
