//! Fixed-order f64 statistic sums and the per-patch geometry of `NormalizeNP` (bicubic tables).

use super::*;

/// Independent f64 accumulators of the statistic sums (summed in lane order at the end).
pub(super) const LANES: usize = 8;
/// `Σ f(x_i)` in f64 with [`LANES`] accumulators.
pub(super) fn lane_sum(xs: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(f64::from(v));
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(f64::from(v));
    }
    acc.iter().sum()
}

/// `(Σ dy_i, Σ dy_i (x_i - mean))` in f64 with [`LANES`] accumulators.
pub(super) fn lane_sums_dy(dy: &[f32], x: &[f32], mean: f64) -> (f64, f64) {
    let mut s = [0.0f64; LANES];
    let mut sx = [0.0f64; LANES];
    let mut dyc = dy.chunks_exact(LANES);
    let mut xc = x.chunks_exact(LANES);
    for (d, xv) in (&mut dyc).zip(&mut xc) {
        for l in 0..LANES {
            let g = f64::from(d[l]);
            s[l] += g;
            sx[l] += g * (f64::from(xv[l]) - mean);
        }
    }
    for (l, (&d, &xv)) in dyc.remainder().iter().zip(xc.remainder()).enumerate() {
        let g = f64::from(d);
        s[l] += g;
        sx[l] += g * (f64::from(xv) - mean);
    }
    (s.iter().sum(), sx.iter().sum())
}

/// Bicubic taps of every output index of an axis resized from `input` to `output` values
/// (align_corners = False, taps clamped to the border): `table[8 o .. 8 o + 8]` holds the four
/// input indices (as f64), then their four weights.
pub(super) fn bicubic_table(input: usize, output: usize, table: &mut [f64]) {
    for (o, entry) in table.chunks_exact_mut(8).enumerate() {
        for (k, (index, w)) in bicubic_taps(input, output, o).into_iter().enumerate() {
            entry[k] = index as f64;
            entry[4 + k] = w;
        }
    }
}

/// Read-only geometry of a per-patch GroupNorm.
pub(super) struct PatchGeom<'a> {
    pub(super) np: usize,
    pub(super) width: usize,
    pub(super) cpg: usize,
    pub(super) eps: f64,
    /// Bicubic tables of the rows and columns ([`bicubic_table`]).
    pub(super) ytab: &'a [f64],
    pub(super) xtab: &'a [f64],
}

impl PatchGeom<'_> {
    /// The interpolated mean `m[px]` and `1 / (std + eps)` `d[px]` of pixel row `py`, from the
    /// `[np, np, (mean, std)]` statistics `st`; `rm`, `rs` are `np` values of workspace.
    pub(super) fn row_maps(&self, st: &[f32], py: usize, rm: &mut [f64], rs: &mut [f64], m: &mut [f64], d: &mut [f64]) {
        let np = self.np;
        let yt = &self.ytab[8 * py..8 * py + 8];
        for tx in 0..np {
            let (mut mean, mut std) = (0.0, 0.0);
            for k in 0..4 {
                let t = (yt[k] as usize * np + tx) * 2;
                mean += yt[4 + k] * f64::from(st[t]);
                std += yt[4 + k] * f64::from(st[t + 1]);
            }
            rm[tx] = mean;
            rs[tx] = std;
        }
        for px in 0..self.width {
            let xt = &self.xtab[8 * px..8 * px + 8];
            let (mut mean, mut std) = (0.0, 0.0);
            for l in 0..4 {
                let tx = xt[l] as usize;
                mean += xt[4 + l] * rm[tx];
                std += xt[4 + l] * rs[tx];
            }
            m[px] = mean;
            d[px] = 1.0 / (std + self.eps);
        }
    }
}

/// Fills the bicubic tables (rows, then columns) of a per-patch GroupNorm into `scratch`.
pub(super) fn patch_tables<'s>(desc: &GroupNormDesc, scratch: &'s mut Scratch<'_, f64>) -> (&'s [f64], &'s [f64]) {
    let h = desc.height;
    debug_assert_eq!(scratch.len(), 8 * (h + desc.width));
    let (ytab, xtab) = scratch.split_at_mut(8 * h);
    bicubic_table(desc.patches, h, ytab);
    bicubic_table(desc.patches, desc.width, xtab);
    (ytab, xtab)
}

/// Statistics of an empty group (no channel or no pixel): mean 0, variance 0.
pub(super) fn empty_group_stats(desc: &GroupNormDesc, stats: &mut [f32]) {
    let second = match desc.kind {
        NormKind::Standard => (1.0 / f64::from(desc.eps).sqrt()) as f32,
        NormKind::StdPlusEps => 0.0,
    };
    for st in stats.chunks_exact_mut(2) {
        st[0] = 0.0;
        st[1] = second;
    }
}
