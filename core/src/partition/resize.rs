//! Step 1-2 of the score (spec 3.2): `u = (R + 1) / 2` resized to 64x64 as `cv2.resize` does
//! with INTER_LINEAR on f32 in OpenCV 4.9 without IPP: a copy at 64x64, the INTER_AREA fast path
//! at exactly 128x128, otherwise separable bilinear, horizontal pass first (`HResizeLinear`),
//! then vertical (`VResizeLinear`), f32 multiply-multiply-add without FMA.
//!
//! Every output value is the same expression on the same operands as in [`reference`] (the plain
//! reading of the spec, kept for the tests); only the loops differ: the column taps are
//! tabulated once per call, each source row is converted to `u` once, and on x86-64 with AVX2
//! the horizontal pass of a region at most 64 wide gathers its taps with in-register permutes
//! (8 outputs at a time) while the vertical pass runs 8 lanes wide (16 with AVX-512).

use super::RS;

/// `(v + 1) / 2` in f32, the first line of `calculate_complexity_degree`.
#[inline(always)]
fn unit(v: f32) -> f32 {
    (v + 1.0) / 2.0
}

/// `floor(f) as i64` for the tap positions (|f| far below 2^31), without `libm::floorf`.
#[inline]
fn floor_i64(f: f32) -> i64 {
    let t = f as i64;
    if (t as f32) > f {
        t - 1
    } else {
        t
    }
}

/// The horizontal taps of a source width `w` (`xofs`, `alpha` in OpenCV): output column `j`
/// is `u[k] * a0 + u[k + 1] * a1` for `j < copy_from`, and `u[w - 1]` from there on (columns at
/// or beyond `xmax` copy the last pixel). A tap left of the image is clamped to column 0 with
/// weight 0 but still blended.
struct Cols {
    /// The source width these taps are for (0: none yet).
    w: usize,
    k: [u32; RS],
    a0: [f32; RS],
    a1: [f32; RS],
    copy_from: usize,
    /// Per block of 8 output columns: the first tap, and each column's tap relative to it (for
    /// the permutes of the AVX2 pass; `w <= 64` keeps them below 8).
    base: [usize; RS / 8],
    rel: [u32; RS],
    /// The same per block of 16 columns (the AVX-512 pass; below 16).
    base16: [usize; RS / 16],
    rel16: [u32; RS],
}

impl Cols {
    const NONE: Cols = Cols {
        w: 0,
        k: [0; RS],
        a0: [0.0; RS],
        a1: [0.0; RS],
        copy_from: 0,
        base: [0; RS / 8],
        rel: [0; RS],
        base16: [0; RS / 16],
        rel16: [0; RS],
    };

    fn new(w: usize) -> Self {
        let scale_x = 1.0 / (RS as f64 / w as f64);
        let mut c = Cols { w, copy_from: RS, ..Cols::NONE };
        for j in 0..RS {
            let f = ((j as f64 + 0.5) * scale_x - 0.5) as f32;
            let mut k = floor_i64(f);
            let mut frac = f - k as f32;
            if k < 0 {
                k = 0;
                frac = 0.0;
            }
            if k + 1 >= w as i64 {
                // `k` only grows with `j`, so the copied columns are a suffix.
                c.copy_from = c.copy_from.min(j);
                k = w as i64 - 1;
                frac = 0.0;
            }
            c.k[j] = k as u32;
            c.a0[j] = 1.0 - frac;
            c.a1[j] = frac;
        }
        for j in 0..RS {
            let (b8, b16) = (j / 8 * 8, j / 16 * 16);
            c.base[j / 8] = c.k[b8] as usize;
            c.rel[j] = c.k[j].wrapping_sub(c.k[b8]);
            c.base16[j / 16] = c.k[b16] as usize;
            c.rel16[j] = c.k[j].wrapping_sub(c.k[b16]);
        }
        c
    }
}

/// The vertical taps of a source height `h` (`yofs`, `beta`): output row `i` is
/// `H[r0] * b0 + H[r1] * b1`; the fraction is not reset at the borders, the rows are clipped.
struct Rows {
    /// The source height these taps are for (0: none yet).
    h: usize,
    r: [[u32; 2]; RS],
    b: [[f32; 2]; RS],
}

impl Rows {
    const NONE: Rows = Rows { h: 0, r: [[0; 2]; RS], b: [[0.0; 2]; RS] };

    fn new(h: usize) -> Self {
        let scale_y = 1.0 / (RS as f64 / h as f64);
        let mut t = Rows { h, ..Rows::NONE };
        for i in 0..RS {
            let f = ((i as f64 + 0.5) * scale_y - 0.5) as f32;
            let k = floor_i64(f);
            let fy = f - k as f32;
            let clip = |v: i64| v.clamp(0, h as i64 - 1) as u32;
            t.r[i] = [clip(k), clip(k + 1)];
            t.b[i] = [1.0 - fy, fy];
        }
        t
    }
}

/// Tap tables by size, kept from score to score: a partition meets only a few region sizes.
pub(super) struct Taps {
    cols: [Cols; 4],
    rows: [Rows; 4],
    next: (usize, usize),
}

impl Taps {
    pub(super) const fn new() -> Self {
        Taps {
            cols: [Cols::NONE, Cols::NONE, Cols::NONE, Cols::NONE],
            rows: [Rows::NONE, Rows::NONE, Rows::NONE, Rows::NONE],
            next: (0, 0),
        }
    }

    /// The slots of the tables for `w` and `h`, made if missing (replacing round robin).
    fn slots(&mut self, w: usize, h: usize) -> (usize, usize) {
        let c = match self.cols.iter().position(|c| c.w == w) {
            Some(i) => i,
            None => {
                let i = self.next.0;
                self.cols[i] = Cols::new(w);
                self.next.0 = (i + 1) % self.cols.len();
                i
            }
        };
        let r = match self.rows.iter().position(|r| r.h == h) {
            Some(i) => i,
            None => {
                let i = self.next.1;
                self.rows[i] = Rows::new(h);
                self.next.1 = (i + 1) % self.rows.len();
                i
            }
        };
        (c, r)
    }
}

/// The region `h x w` at `(y0, x0)` of `grey` (row stride `stride`) that a resize reads.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub grey: &'a [f32],
    pub stride: usize,
    pub y0: usize,
    pub h: usize,
    pub x0: usize,
    pub w: usize,
}

impl Source<'_> {
    /// Row `r` of the region.
    #[inline(always)]
    fn row(&self, r: usize) -> &[f32] {
        &self.grey[(self.y0 + r) * self.stride + self.x0..][..self.w]
    }
}

/// The resize of `src` into `out`.
pub(super) fn resize64(src: &Source, out: &mut [f32; RS * RS], taps: &mut Taps) {
    #[cfg(target_arch = "x86_64")]
    if super::sobel::x86::has_avx2() {
        x86::resize64_x86(src, out, taps);
        return;
    }
    resize_impl(src, out, taps, &mut |row, cols, dst| hrow(row, cols, dst));
}

/// The horizontal pass of one source row (scalar).
#[inline(always)]
fn hrow(row: &[f32], cols: &Cols, dst: &mut [f32; RS]) {
    let last = unit(row[row.len() - 1]);
    let n = cols.copy_from;
    for (((d, &k), &a0), &a1) in dst[..n].iter_mut().zip(&cols.k[..n]).zip(&cols.a0[..n]).zip(&cols.a1[..n]) {
        let k = k as usize;
        *d = unit(row[k]) * a0 + unit(row[k + 1]) * a1;
    }
    for d in &mut dst[cols.copy_from..] {
        *d = last;
    }
}

/// The frame of the resize; `hrow(source row, taps, dst)` does the horizontal pass of one row.
#[inline(always)]
fn resize_impl(
    src: &Source,
    out: &mut [f32; RS * RS],
    taps: &mut Taps,
    hrow: &mut impl FnMut(&[f32], &Cols, &mut [f32; RS]),
) {
    let (h, w) = (src.h, src.w);
    let src_row = |r: usize| src.row(r);
    if w == RS && h == RS {
        // dsize == ssize: cv::resize copies.
        for (o, r) in out.chunks_exact_mut(RS).zip(0..) {
            for (d, &s) in o.iter_mut().zip(src_row(r)) {
                *d = unit(s);
            }
        }
        return;
    }
    if w == 2 * RS && h == 2 * RS {
        // Both scales exactly 2: OpenCV switches INTER_LINEAR to the INTER_AREA fast path.
        for (o, i) in out.chunks_exact_mut(RS).zip(0..) {
            let (a, b) = (src_row(2 * i), src_row(2 * i + 1));
            for (j, d) in o.iter_mut().enumerate() {
                let c = 2 * j;
                *d = ((unit(a[c]) + unit(a[c + 1])) + (unit(b[c]) + unit(b[c + 1]))) * 0.25;
            }
        }
        return;
    }
    let (ci, ri) = taps.slots(w, h);
    let (cols, taps_y) = (&taps.cols[ci], &taps.rows[ri]);
    // Two horizontally resampled rows, cached by source row like OpenCV's ring of rows.
    let mut rows = [[0.0f32; RS]; 2];
    let mut have = [usize::MAX; 2];
    for ((o, &[r0, r1]), &[b0, b1]) in out.chunks_exact_mut(RS).zip(&taps_y.r).zip(&taps_y.b) {
        let (r0, r1) = (r0 as usize, r1 as usize);
        if have[0] != r0 {
            if have[1] == r0 {
                rows[0] = rows[1];
            } else {
                hrow(src_row(r0), cols, &mut rows[0]);
            }
            have[0] = r0;
        }
        if have[1] != r1 {
            hrow(src_row(r1), cols, &mut rows[1]);
            have[1] = r1;
        }
        for ((d, &p), &q) in o.iter_mut().zip(&rows[0]).zip(&rows[1]) {
            *d = p * b0 + q * b1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn reference(
        grey: &[f32],
        stride: usize,
        y0: usize,
        h: usize,
        x0: usize,
        w: usize,
        out: &mut [f32; RS * RS],
    ) {
        let src = |r: usize, c: usize| unit(grey[(y0 + r) * stride + x0 + c]);
        if w == RS && h == RS {
            // dsize == ssize: cv::resize copies.
            for r in 0..RS {
                for c in 0..RS {
                    out[r * RS + c] = src(r, c);
                }
            }
            return;
        }
        if w == 2 * RS && h == 2 * RS {
            // Both scales exactly 2: OpenCV switches INTER_LINEAR to the INTER_AREA fast path.
            for i in 0..RS {
                for j in 0..RS {
                    let (r, c) = (2 * i, 2 * j);
                    out[i * RS + j] = ((src(r, c) + src(r, c + 1)) + (src(r + 1, c) + src(r + 1, c + 1))) * 0.25;
                }
            }
            return;
        }
        // Generic separable bilinear (resizeGeneric_ with HResizeLinear / VResizeLinear).
        // Column taps: `xofs`, `alpha`; `copy` marks the columns at or beyond `xmax`, which take the
        // last source pixel unweighted.
        let scale_x = 1.0 / (RS as f64 / w as f64);
        let mut kx = [0usize; RS];
        let mut ax = [0.0f32; RS];
        let mut copy = [false; RS];
        for j in 0..RS {
            let f = ((j as f64 + 0.5) * scale_x - 0.5) as f32;
            let mut k = libm::floorf(f) as i64;
            let mut frac = f - k as f32;
            if k < 0 {
                k = 0;
                frac = 0.0;
            }
            if k + 1 >= w as i64 {
                k = w as i64 - 1;
                frac = 0.0;
                copy[j] = true;
            }
            kx[j] = k as usize;
            ax[j] = frac;
        }
        let hrow = |r: usize, dst: &mut [f32; RS]| {
            for j in 0..RS {
                let k = kx[j];
                dst[j] = if copy[j] {
                    src(r, k)
                } else {
                    let fx = ax[j];
                    src(r, k) * (1.0 - fx) + src(r, k + 1) * fx
                };
            }
        };
        let scale_y = 1.0 / (RS as f64 / h as f64);
        // Two horizontally resampled rows, cached by source row like OpenCV's ring of rows.
        let mut rows = [[0.0f32; RS]; 2];
        let mut have = [usize::MAX; 2];
        for i in 0..RS {
            let f = ((i as f64 + 0.5) * scale_y - 0.5) as f32;
            let k = libm::floorf(f) as i64;
            let fy = f - k as f32;
            let clip = |v: i64| v.clamp(0, h as i64 - 1) as usize;
            let (r0, r1) = (clip(k), clip(k + 1));
            if have[0] != r0 {
                if have[1] == r0 {
                    rows[0] = rows[1];
                    have[0] = r0;
                } else {
                    hrow(r0, &mut rows[0]);
                    have[0] = r0;
                }
            }
            if have[1] != r1 {
                hrow(r1, &mut rows[1]);
                have[1] = r1;
            }
            let (b0, b1) = (1.0 - fy, fy);
            for j in 0..RS {
                out[i * RS + j] = rows[0][j] * b0 + rows[1][j] * b1;
            }
        }
    }

    fn grey(side: usize) -> [f32; 300 * 300] {
        let mut g = [0.0f32; 300 * 300];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for v in g[..side * side].iter_mut() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // Mostly [-1, 1] at u8 resolution like real inputs, some arbitrary f32 values.
            let r = (state >> 33) as u32;
            *v = if r.is_multiple_of(11) {
                (r as f32 / u32::MAX as f32) * 2.0 - 1.0
            } else {
                (r % 256) as f32 / 127.5 - 1.0
            };
        }
        g
    }

    #[test]
    fn fast_paths_match_reference() {
        let side = 300;
        let g = grey(side);
        // One tap cache for all the calls, so that it is exercised with hits and replacements.
        let mut taps = Taps::new();
        let sizes = [1usize, 2, 3, 5, 8, 9, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 100, 127, 128, 129, 200, 256, 300];
        for &h in &sizes {
            for &w in &sizes {
                for (y0, x0) in [(0usize, 0usize), (side - h, side - w), ((side - h) / 3, (side - w) / 2)] {
                    let mut want = [0.0f32; RS * RS];
                    reference(&g, side, y0, h, x0, w, &mut want);
                    let mut got = [0.0f32; RS * RS];
                    let src = Source { grey: &g, stride: side, y0, h, x0, w };
                    resize64(&src, &mut got, &mut taps);
                    let bits = |a: &[f32; RS * RS]| a.map(f32::to_bits);
                    assert!(bits(&got) == bits(&want), "{h}x{w} at ({y0}, {x0}): dispatched");
                    resize_impl(&src, &mut got, &mut taps, &mut |row, cols, dst| hrow(row, cols, dst));
                    assert!(bits(&got) == bits(&want), "{h}x{w} at ({y0}, {x0}): scalar");
                    #[cfg(target_arch = "x86_64")]
                    if w <= RS && crate::partition::sobel::x86::has_avx2() {
                        got = [0.0; RS * RS];
                        // SAFETY: AVX2 checked just above.
                        #[allow(unsafe_code)]
                        unsafe {
                            x86::resize_avx2(&src, &mut got, &mut taps)
                        };
                        assert!(bits(&got) == bits(&want), "{h}x{w} at ({y0}, {x0}): AVX2");
                    }
                }
            }
        }
    }

    /// `score::GREY_BOUND`'s claim: grey values within it give resized images within [-1, 1],
    /// on the extremes (-3 and 1 next to each other, where every blend mixes the two ends) and
    /// on random values, for every kind of region (copy, area average, up- and downsampling).
    #[test]
    fn grey_bound_keeps_resized_images_in_the_unit_range() {
        let (lo, hi) = crate::partition::score::GREY_BOUND;
        let side = 300;
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut rnd = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as u32
        };
        let sizes = [1usize, 2, 3, 7, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 256, 300];
        for case in 0..3 {
            let mut g = [0.0f32; 300 * 300];
            for (p, v) in g.iter_mut().enumerate() {
                *v = match case {
                    0 => [lo, hi][(p + p / side) % 2],
                    1 => [lo, hi, lo, lo, hi][(rnd() % 5) as usize],
                    _ => lo + (hi - lo) * (rnd() % 65536) as f32 / 65535.0,
                };
            }
            let mut taps = Taps::new();
            for &h in &sizes {
                for &w in &sizes {
                    let (y0, x0) = ((side - h) / 2, (side - w) / 3);
                    let mut out = [0.0f32; RS * RS];
                    resize64(&Source { grey: &g, stride: side, y0, h, x0, w }, &mut out, &mut taps);
                    let worst = out.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    assert!(worst <= 1.0, "case {case}, {h}x{w}: a resized value of magnitude {worst}");
                }
            }
        }
    }
}
