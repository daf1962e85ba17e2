//! `NormOps` on the CPU: GroupNorm (standard, and the decoder's `NormalizeNP` with per-patch
//! statistics resized bicubically, spec 6.2) and LayerNorm.
//!
//! * GroupNorm: one task per (image, group), the group's channels being contiguous in `[B, C, H, W]`.
//!   Statistics are summed in f64 (two passes: mean, then squared deviations) with a fixed number
//!   of lanes, so the order never depends on the thread count. The per-channel `dgamma`/`dbeta`
//!   are reduced over the batch afterwards, per channel, in image order.
//! * LayerNorm: one task per row (forward, `dx`), and one per block of [`FEATURE_BLOCK`] features
//!   for `dgamma`/`dbeta`, looping over the rows in order.
//!
//! * BatchNorm2d (training mode): one task per channel computes its statistics in f64 (the
//!   images in order, each image's `H·W` values with [`lane_sum`]), then one task per
//!   (image, channel) slice writes `y` or `dx`. The running statistics are updated on the host
//!   side of the call, per channel, in f64, rounded once.
//!
//! Saved statistics: GroupNorm `[B, G, np, np, (mean, rstd)]` for [`NormKind::Standard`] and
//! `(mean, std)` for [`NormKind::StdPlusEps`]; LayerNorm `[rows, (mean, rstd)]`.

use crate::scratch::Scratch;
use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::NormKernels;
use gpstoken_core::backend::{bicubic_taps, BatchNormDesc, GroupNormDesc, LayerNormDesc, NormKind};
use rayon::prelude::*;

mod stats;

use stats::*;

/// Features per task of the LayerNorm `dgamma`/`dbeta` reduction.
const FEATURE_BLOCK: usize = 64;
/// LayerNorm rows per rayon task at least.
const MIN_ROWS_PER_TASK: usize = 8;

impl NormKernels for CpuBackend {
    fn group_norm_forward(
        &self,
        desc: &GroupNormDesc,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        y: &mut Vec<f32>,
        stats: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        if x.is_empty() {
            empty_group_stats(desc, stats);
            return Ok(());
        }
        let (groups, cpg, hw) = (desc.groups, desc.channels / desc.groups, desc.height * desc.width);
        let group_len = cpg * hw;
        let eps = f64::from(desc.eps);
        if desc.patches == 1 {
            self.install(|| {
                let tasks = y.par_chunks_mut(group_len).zip(x.par_chunks(group_len)).zip(stats.par_chunks_mut(2));
                tasks.enumerate().for_each(|(bg, ((y, x), st))| {
                    let n = group_len as f64;
                    let mean = lane_sum(x, |v| v) / n;
                    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
                    let m = mean as f32;
                    let (a, second) = match desc.kind {
                        NormKind::Standard => {
                            let r = (1.0 / (var + eps).sqrt()) as f32;
                            (r, r)
                        }
                        NormKind::StdPlusEps => {
                            let s = var.sqrt() as f32;
                            ((1.0 / (f64::from(s) + eps)) as f32, s)
                        }
                    };
                    st[0] = m;
                    st[1] = second;
                    for (cl, (yc, xc)) in y.chunks_mut(hw).zip(x.chunks(hw)).enumerate() {
                        let c = (bg % groups) * cpg + cl;
                        let (scale, shift) = (a * gamma[c], beta[c]);
                        for (yv, &xv) in yc.iter_mut().zip(xc) {
                            *yv = (xv - m) * scale + shift;
                        }
                    }
                });
            });
            return Ok(());
        }
        // Per-patch statistics (NormalizeNP).
        let (np, h, w) = (desc.patches, desc.height, desc.width);
        let (th, tw) = (h / np, w / np);
        let mut tables = self.scratch64.take(8 * (h + w));
        let (ytab, xtab) = patch_tables(desc, &mut tables);
        let geom = PatchGeom { np, width: w, cpg, eps, ytab, xtab };
        let pool = &self.scratch64;
        self.install(|| {
            let tasks = y.par_chunks_mut(group_len).zip(x.par_chunks(group_len)).zip(stats.par_chunks_mut(2 * np * np));
            tasks.enumerate().for_each(|(bg, ((y, x), st))| {
                let n = (cpg * th * tw) as f64;
                for ty in 0..np {
                    for tx in 0..np {
                        let rows = || {
                            (0..cpg).flat_map(move |c| {
                                (ty * th..(ty + 1) * th).map(move |r| &x[c * hw + r * w + tx * tw..][..tw])
                            })
                        };
                        let mean = rows().map(|row| lane_sum(row, |v| v)).sum::<f64>() / n;
                        let var = rows().map(|row| lane_sum(row, |v| (v - mean) * (v - mean))).sum::<f64>() / n;
                        st[(ty * np + tx) * 2] = mean as f32;
                        st[(ty * np + tx) * 2 + 1] = var.sqrt() as f32;
                    }
                }
                let mut work = pool.take(2 * np + 2 * w);
                let (rm, rest) = work.split_at_mut(np);
                let (rs, rest) = rest.split_at_mut(np);
                let (mrow, drow) = rest.split_at_mut(w);
                for py in 0..h {
                    geom.row_maps(st, py, rm, rs, mrow, drow);
                    for cl in 0..geom.cpg {
                        let c = (bg % groups) * cpg + cl;
                        let (gc, bc) = (f64::from(gamma[c]), f64::from(beta[c]));
                        let off = cl * hw + py * w;
                        let (yr, xr) = (&mut y[off..off + w], &x[off..off + w]);
                        for px in 0..w {
                            yr[px] = ((f64::from(xr[px]) - mrow[px]) * drow[px] * gc + bc) as f32;
                        }
                    }
                }
            });
        });
        Ok(())
    }

    fn group_norm_backward(
        &self,
        desc: &GroupNormDesc,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        stats: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        if x.is_empty() {
            dgamma.fill(0.0);
            dbeta.fill(0.0);
            return Ok(());
        }
        let (batch, channels, groups) = (desc.batch, desc.channels, desc.groups);
        let (cpg, hw) = (channels / groups, desc.height * desc.width);
        let group_len = cpg * hw;
        let eps = f64::from(desc.eps);
        // Per (image, channel): (dgamma, dbeta) partial sums, reduced over the images at the end.
        let mut parts = self.scratch64.take(batch * channels * 2);
        if desc.patches == 1 {
            self.install(|| {
                let tasks = dx
                    .par_chunks_mut(group_len)
                    .zip(x.par_chunks(group_len))
                    .zip(dy.par_chunks(group_len))
                    .zip(parts.par_chunks_mut(2 * cpg));
                tasks.enumerate().for_each(|(bg, (((dx, x), dy), part))| {
                    let (m, second) = (stats[2 * bg], f64::from(stats[2 * bg + 1]));
                    // y = (x - m) a gamma + beta, a = a(var): dx = a (g - mean(g)) - (x - m) k mean(g (x - m)).
                    let (a, k) = match desc.kind {
                        NormKind::Standard => (second, second * second * second),
                        NormKind::StdPlusEps => {
                            let a = 1.0 / (second + eps);
                            (a, if second > 0.0 { a * a / second } else { 0.0 })
                        }
                    };
                    let (mut sum_g, mut sum_gx) = (0.0, 0.0);
                    for (cl, (dyc, xc)) in dy.chunks(hw).zip(x.chunks(hw)).enumerate() {
                        let c = (bg % groups) * cpg + cl;
                        let (s, sx) = lane_sums_dy(dyc, xc, f64::from(m));
                        part[2 * cl] = a * sx;
                        part[2 * cl + 1] = s;
                        sum_g += f64::from(gamma[c]) * s;
                        sum_gx += f64::from(gamma[c]) * sx;
                    }
                    let n = group_len as f64;
                    let q = (a * sum_g / n) as f32;
                    let c2 = (k * sum_gx / n) as f32;
                    for (cl, ((dxc, dyc), xc)) in dx.chunks_mut(hw).zip(dy.chunks(hw)).zip(x.chunks(hw)).enumerate() {
                        let c = (bg % groups) * cpg + cl;
                        let p = (a * f64::from(gamma[c])) as f32;
                        for ((d, &g), &xv) in dxc.iter_mut().zip(dyc).zip(xc) {
                            *d = p * g - q - (xv - m) * c2;
                        }
                    }
                });
            });
        } else {
            let (np, h, w) = (desc.patches, desc.height, desc.width);
            let (th, tw) = (h / np, w / np);
            let mut tables = self.scratch64.take(8 * (h + w));
            let (ytab, xtab) = patch_tables(desc, &mut tables);
            let geom = PatchGeom { np, width: w, cpg, eps, ytab, xtab };
            let pool = &self.scratch64;
            self.install(|| {
                let tasks = dx
                    .par_chunks_mut(group_len)
                    .zip(x.par_chunks(group_len))
                    .zip(dy.par_chunks(group_len))
                    .zip(parts.par_chunks_mut(2 * cpg));
                tasks.enumerate().for_each(|(bg, (((dx, x), dy), part))| {
                    let st = &stats[bg * 2 * np * np..(bg + 1) * 2 * np * np];
                    let g0 = (bg % groups) * cpg;
                    let len = 4 * np + 2 * w + 2 * np * np;
                    let mut work = pool.take(len);
                    let (rm, rest) = work.split_at_mut(np);
                    let (rs, rest) = rest.split_at_mut(np);
                    let (acc_m, rest) = rest.split_at_mut(np);
                    let (acc_s, rest) = rest.split_at_mut(np);
                    let (mrow, rest) = rest.split_at_mut(w);
                    let (drow, gtile) = rest.split_at_mut(w);
                    // Pass 1: gradients of the interpolated maps, pulled back to the tile stats
                    // (through the x weights per row, then the y weights), and dgamma/dbeta.
                    for py in 0..h {
                        geom.row_maps(st, py, rm, rs, mrow, drow);
                        acc_m.fill(0.0);
                        acc_s.fill(0.0);
                        for px in 0..w {
                            let (mp, dp) = (mrow[px], drow[px]);
                            let (mut gm, mut gs) = (0.0, 0.0);
                            for cl in 0..cpg {
                                let i = cl * hw + py * w + px;
                                let (g, xm) = (f64::from(dy[i]), f64::from(x[i]) - mp);
                                let gg = g * f64::from(gamma[g0 + cl]);
                                gm += gg;
                                gs += gg * xm;
                                part[2 * cl] += g * xm * dp;
                                part[2 * cl + 1] += g;
                            }
                            // dL/dM = -D Σ g, dL/dS = -D² Σ g (x - M).
                            let (gm, gs) = (-dp * gm, -dp * dp * gs);
                            let xt = &geom.xtab[8 * px..8 * px + 8];
                            for l in 0..4 {
                                acc_m[xt[l] as usize] += xt[4 + l] * gm;
                                acc_s[xt[l] as usize] += xt[4 + l] * gs;
                            }
                        }
                        let yt = &geom.ytab[8 * py..8 * py + 8];
                        for k in 0..4 {
                            let ty = yt[k] as usize;
                            for tx in 0..np {
                                gtile[(ty * np + tx) * 2] += yt[4 + k] * acc_m[tx];
                                gtile[(ty * np + tx) * 2 + 1] += yt[4 + k] * acc_s[tx];
                            }
                        }
                    }
                    // Pass 2: dx = g D + dL/dmean_t / n + dL/dstd_t (x - mean_t) / (n std_t).
                    let n = (cpg * th * tw) as f64;
                    for py in 0..h {
                        geom.row_maps(st, py, rm, rs, mrow, drow);
                        let ty = py / th;
                        for cl in 0..cpg {
                            let gc = f64::from(gamma[g0 + cl]);
                            let off = cl * hw + py * w;
                            let (dxr, (xr, dyr)) = (&mut dx[off..off + w], (&x[off..off + w], &dy[off..off + w]));
                            for (px, ((d, &xv), &g)) in dxr.iter_mut().zip(xr).zip(dyr).enumerate() {
                                let t = (ty * np + px / tw) * 2;
                                let (mean_t, std_t) = (f64::from(st[t]), f64::from(st[t + 1]));
                                let via_std = if std_t > 0.0 { gtile[t + 1] / (n * std_t) } else { 0.0 };
                                let xv = f64::from(xv);
                                *d = (f64::from(g) * gc * drow[px] + gtile[t] / n + via_std * (xv - mean_t)) as f32;
                            }
                        }
                    }
                });
            });
        }
        for c in 0..channels {
            let (mut dg, mut db) = (0.0, 0.0);
            for b in 0..batch {
                dg += parts[(b * channels + c) * 2];
                db += parts[(b * channels + c) * 2 + 1];
            }
            dgamma[c] = dg as f32;
            dbeta[c] = db as f32;
        }
        Ok(())
    }

    fn layer_norm_forward(
        &self,
        desc: &LayerNormDesc,
        x: &Vec<f32>,
        affine: Option<(&Vec<f32>, &Vec<f32>)>,
        y: &mut Vec<f32>,
        stats: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let (f, eps) = (desc.features, f64::from(desc.eps));
        if f == 0 {
            let rstd = (1.0 / eps.sqrt()) as f32;
            for st in stats.chunks_exact_mut(2) {
                st[0] = 0.0;
                st[1] = rstd;
            }
            return Ok(());
        }
        self.install(|| {
            let tasks = y.par_chunks_mut(f).zip(x.par_chunks(f)).zip(stats.par_chunks_mut(2));
            tasks.with_min_len(MIN_ROWS_PER_TASK).for_each(|((y, x), st)| {
                let mean = lane_sum(x, |v| v) / f as f64;
                let var = lane_sum(x, |v| (v - mean) * (v - mean)) / f as f64;
                let (m, r) = (mean as f32, (1.0 / (var + eps).sqrt()) as f32);
                st[0] = m;
                st[1] = r;
                match affine {
                    Some((g, b)) => {
                        for (((yv, &xv), &gv), &bv) in y.iter_mut().zip(x).zip(g.iter()).zip(b.iter()) {
                            *yv = (xv - m) * r * gv + bv;
                        }
                    }
                    None => {
                        for (yv, &xv) in y.iter_mut().zip(x) {
                            *yv = (xv - m) * r;
                        }
                    }
                }
            });
        });
        Ok(())
    }

    fn layer_norm_backward(
        &self,
        desc: &LayerNormDesc,
        x: &Vec<f32>,
        gamma: Option<&Vec<f32>>,
        stats: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        daffine: Option<(&mut Vec<f32>, &mut Vec<f32>)>,
    ) -> Result<(), CpuError> {
        let f = desc.features;
        if f == 0 {
            return Ok(());
        }
        self.install(|| {
            let tasks = dx.par_chunks_mut(f).zip(x.par_chunks(f)).zip(dy.par_chunks(f)).zip(stats.par_chunks(2));
            tasks.with_min_len(MIN_ROWS_PER_TASK).for_each(|(((dx, x), dy), st)| {
                let (m, r) = (f64::from(st[0]), f64::from(st[1]));
                let grad = |i: usize| f64::from(dy[i]) * gamma.map_or(1.0, |g| f64::from(g[i]));
                let (mut sum_g, mut sum_gx) = (0.0, 0.0);
                for (i, &xv) in x.iter().enumerate() {
                    let g = grad(i);
                    sum_g += g;
                    sum_gx += g * (f64::from(xv) - m) * r;
                }
                let (mean_g, mean_gx) = (sum_g / f as f64, sum_gx / f as f64);
                for (i, (d, &xv)) in dx.iter_mut().zip(x).enumerate() {
                    let xhat = (f64::from(xv) - m) * r;
                    *d = (r * (grad(i) - mean_g - xhat * mean_gx)) as f32;
                }
            });
            if let Some((dgamma, dbeta)) = daffine {
                let tasks = dgamma.par_chunks_mut(FEATURE_BLOCK).zip(dbeta.par_chunks_mut(FEATURE_BLOCK));
                tasks.enumerate().for_each(|(block, (dg, db))| {
                    let f0 = block * FEATURE_BLOCK;
                    let mut acc_g = [0.0f64; FEATURE_BLOCK];
                    let mut acc_b = [0.0f64; FEATURE_BLOCK];
                    for row in 0..desc.rows {
                        let (m, r) = (f64::from(stats[2 * row]), f64::from(stats[2 * row + 1]));
                        let xs = &x[row * f + f0..row * f + f0 + dg.len()];
                        let dys = &dy[row * f + f0..row * f + f0 + dg.len()];
                        for (i, (&xv, &g)) in xs.iter().zip(dys).enumerate() {
                            acc_g[i] += f64::from(g) * (f64::from(xv) - m) * r;
                            acc_b[i] += f64::from(g);
                        }
                    }
                    for (i, (g, b)) in dg.iter_mut().zip(db.iter_mut()).enumerate() {
                        *g = acc_g[i] as f32;
                        *b = acc_b[i] as f32;
                    }
                });
            }
        });
        Ok(())
    }

    fn batch_norm_train_forward(
        &self,
        desc: &BatchNormDesc,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        y: &mut Vec<f32>,
        stats: &mut Vec<f32>,
        running: Option<(&mut Vec<f32>, &mut Vec<f32>)>,
    ) -> Result<(), CpuError> {
        if desc.channels == 0 {
            return Ok(());
        }
        let (batch, channels, hw) = (desc.batch, desc.channels, desc.spatial);
        let n = (batch * hw) as f64;
        let eps = f64::from(desc.eps);
        // The biased variance of each channel in f64, kept for the running update.
        let mut variances = self.scratch64.take(channels);
        self.install(|| {
            stats.par_chunks_mut(2).zip(variances.par_iter_mut()).enumerate().for_each(|(c, (st, var))| {
                let slice = |b: usize| &x[(b * channels + c) * hw..(b * channels + c + 1) * hw];
                let mean = (0..batch).map(|b| lane_sum(slice(b), |v| v)).sum::<f64>() / n;
                let v = (0..batch).map(|b| lane_sum(slice(b), |v| (v - mean) * (v - mean))).sum::<f64>() / n;
                st[0] = mean as f32;
                st[1] = (1.0 / (v + eps).sqrt()) as f32;
                *var = v;
            });
            let stats = &*stats;
            y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(bc, (y, x))| {
                let c = bc % channels;
                let (m, scale, shift) = (stats[2 * c], stats[2 * c + 1] * gamma[c], beta[c]);
                for (yv, &xv) in y.iter_mut().zip(x) {
                    *yv = (xv - m) * scale + shift;
                }
            });
        });
        if let Some((rm, rv)) = running {
            let mom = f64::from(desc.momentum);
            for c in 0..channels {
                let unbiased = variances[c] * n / (n - 1.0);
                rm[c] = ((1.0 - mom) * f64::from(rm[c]) + mom * f64::from(stats[2 * c])) as f32;
                rv[c] = ((1.0 - mom) * f64::from(rv[c]) + mom * unbiased) as f32;
            }
        }
        Ok(())
    }

    fn batch_norm_train_backward(
        &self,
        desc: &BatchNormDesc,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        stats: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        daffine: Option<(&mut Vec<f32>, &mut Vec<f32>)>,
    ) -> Result<(), CpuError> {
        if desc.channels == 0 {
            return Ok(());
        }
        let (batch, channels, hw) = (desc.batch, desc.channels, desc.spatial);
        let n = (batch * hw) as f64;
        // Per channel: (Σ dy, Σ dy (x - mean)) in f64, the images in order.
        let mut sums = self.scratch64.take(2 * channels);
        self.install(|| {
            sums.par_chunks_mut(2).enumerate().for_each(|(c, s)| {
                let (mut sum_g, mut sum_gx) = (0.0, 0.0);
                for b in 0..batch {
                    let range = (b * channels + c) * hw..(b * channels + c + 1) * hw;
                    let (g, gx) = lane_sums_dy(&dy[range.clone()], &x[range], f64::from(stats[2 * c]));
                    sum_g += g;
                    sum_gx += gx;
                }
                s[0] = sum_g;
                s[1] = sum_gx;
            });
            let sums = &*sums;
            // dx = r γ dy - r γ Σdy/n - (x - m) r³ γ Σdy(x - m)/n.
            dx.par_chunks_mut(hw).zip(dy.par_chunks(hw)).zip(x.par_chunks(hw)).enumerate().for_each(
                |(bc, ((dx, dy), x))| {
                    let c = bc % channels;
                    let (m, r, g) = (stats[2 * c], f64::from(stats[2 * c + 1]), f64::from(gamma[c]));
                    let p = (r * g) as f32;
                    let q = (r * g * sums[2 * c] / n) as f32;
                    let c2 = (r * r * r * g * sums[2 * c + 1] / n) as f32;
                    for ((d, &gv), &xv) in dx.iter_mut().zip(dy).zip(x) {
                        *d = p * gv - q - (xv - m) * c2;
                    }
                },
            );
        });
        if let Some((dgamma, dbeta)) = daffine {
            for c in 0..channels {
                dgamma[c] = (f64::from(stats[2 * c + 1]) * sums[2 * c + 1]) as f32;
                dbeta[c] = sums[2 * c] as f32;
            }
        }
        Ok(())
    }
}
