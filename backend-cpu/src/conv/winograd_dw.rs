//! The kernel gradient of a 3x3, stride-1, padding-1 convolution by Winograd F(3x3, 2x2): the
//! transpose of the forward's F(2x2, 3x3). The forward computes, for one 2x2 output tile `y`,
//! `y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`, a form linear in the kernel `g`; its gradient with respect to
//! `g` for the tile's output gradient `dy` is `Gᵀ[(A dy Aᵀ) ⊙ (Bᵀ d B)]G`. Summed over tiles,
//! `dW = Gᵀ S G` with `S[ξ] = Σ_t (A dy_t Aᵀ)[ξ] (Bᵀ d_t B)[ξ]ᵀ`: for each of the 16 positions
//! `ξ` one GEMM `[out x tiles] · [tiles x in]`, 4/9 of the multiply-adds of im2col.
//!
//! Order of the sums: images in order, then blocks of tiles in order (each block's GEMM added to
//! `S` with `beta = 1`; the GEMM's own order is fixed, `crate::gemm`). The transforms of a block
//! run in parallel over channels and the 16 GEMMs in parallel over `ξ`, each task writing its own
//! rows: the bits do not depend on the thread count.

#![allow(clippy::needless_range_loop)]

use super::winograd::Shape;
use super::winograd_tiles::{input_tiles, row_buffer_len, row_runs, tile_stride, SplitRows, LANES};
use crate::gemm::{gemm, Mat, OutPtr};
use crate::simd::multiversion;
use crate::CpuBackend;
use rayon::prelude::*;

/// Channels per transform task.
const CHANNELS_PER_TASK: usize = 8;

/// Rows `channels` of `DY [16][cout][tile_stride(nt)]`: `A dy Aᵀ` of the 2x2 tiles
/// `t0 .. t0 + nt` of image `dy_img [cout][h][w]` (zero past the plane). `rows` holds
/// `row_buffer_len` values.
///
/// The pass over the rows, `[y0, y0 + y1, y0 - y1, -y1]`, runs on whole image rows, written split
/// into even and odd padded columns as the input transform's ([`SplitRows`]), then the same pass
/// over the columns on contiguous lanes: the per-tile order, rows first.
///
/// # Safety
/// Nobody else may access rows `channels` of `out` meanwhile.
#[inline(always)]
unsafe fn gradient_tiles_impl(
    s: Shape,
    dy_img: &[f32],
    block: (usize, usize),
    channels: std::ops::Range<usize>,
    rows: &mut [f32],
    out: OutPtr,
) {
    let ((t0, nt), tiles_x, plane, w) = (block, s.tiles_x(), s.h * s.w, s.w);
    let stride = tile_stride(nt);
    // The row pass of zeros: `-0` in the last row.
    let SplitRows { mut even, mut odd, zeros } = SplitRows::new(s, rows, [0.0, 0.0, 0.0, -0.0]);
    let pairs = w / 2;
    for co in channels {
        let yp = &dy_img[co * plane..(co + 1) * plane];
        for (ty, tx0, tx1, at0) in row_runs(t0, nt, tiles_x) {
            let image_row =
                |r: usize| if 2 * ty + r < s.h { &yp[(2 * ty + r) * w..(2 * ty + r + 1) * w] } else { zeros };
            let (y0, y1) = (image_row(0), image_row(1));
            // Image columns (2k, 2k + 1) go to odd[k] and even[k + 1] (padded columns 2k + 1, 2k + 2).
            {
                let [e0, e1, e2, e3] = &mut even;
                let [o0, o1, o2, o3] = &mut odd;
                let (e0, e1, e2, e3) = (&mut e0[1..=pairs], &mut e1[1..=pairs], &mut e2[1..=pairs], &mut e3[1..=pairs]);
                let (o0, o1, o2, o3) = (&mut o0[..pairs], &mut o1[..pairs], &mut o2[..pairs], &mut o3[..pairs]);
                let (y0, y1) = (&y0[..2 * pairs], &y1[..2 * pairs]);
                for k in 0..pairs {
                    let (j, i) = (2 * k, 2 * k + 1);
                    o0[k] = y0[j];
                    o1[k] = y0[j] + y1[j];
                    o2[k] = y0[j] - y1[j];
                    o3[k] = -y1[j];
                    e0[k] = y0[i];
                    e1[k] = y0[i] + y1[i];
                    e2[k] = y0[i] - y1[i];
                    e3[k] = -y1[i];
                }
            }
            if w % 2 == 1 {
                let j = w - 1;
                odd[0][pairs] = y0[j];
                odd[1][pairs] = y0[j] + y1[j];
                odd[2][pairs] = y0[j] - y1[j];
                odd[3][pairs] = -y1[j];
            }
            for lx in (tx0..tx1).step_by(LANES) {
                let at_t = at0 + (lx - tx0);
                for a in 0..4 {
                    // Tile lx + l reads padded columns 2 (lx + l) + 1 and + 2: odd[l], even[l + 1].
                    let c0 = <&[f32; LANES]>::try_from(&odd[a][lx..lx + LANES]).expect("whole groups");
                    let c1 = <&[f32; LANES]>::try_from(&even[a][lx + 1..=lx + LANES]).expect("whole groups");
                    let mut t = [[0.0f32; LANES]; 4];
                    for l in 0..LANES {
                        t[0][l] = c0[l];
                        t[1][l] = c0[l] + c1[l];
                        t[2][l] = c0[l] - c1[l];
                        t[3][l] = -c1[l];
                    }
                    for (b, tb) in t.iter().enumerate() {
                        // Whole groups, as in `input_tiles`.
                        // SAFETY: row `(a, b, co)` of `out` is the caller's alone.
                        let dst = unsafe { out.slice(((a * 4 + b) * s.cout + co) * stride + at_t, LANES) };
                        dst.copy_from_slice(tb);
                    }
                }
            }
        }
    }
}

multiversion! {
    /// [`gradient_tiles_impl`] for the CPU's vector unit.
    ///
    /// # Safety
    /// Nobody else may access rows `channels` of `out` meanwhile.
    unsafe fn gradient_tiles(s: Shape, dy_img: &[f32], block: (usize, usize), channels: std::ops::Range<usize>, rows: &mut [f32], out: OutPtr) => gradient_tiles_impl
}

/// `Gᵀ v` of a 4-vector: `[v0 + (v1 + v2)/2, (v1 - v2)/2, (v1 + v2)/2 + v3]`.
fn gt(v: [f64; 4]) -> [f64; 3] {
    [v[0] + 0.5 * (v[1] + v[2]), 0.5 * (v[1] - v[2]), 0.5 * (v[1] + v[2]) + v[3]]
}

impl CpuBackend {
    /// `dw [cout][cin][3][3]` (overwritten) of the 3x3 stride-1 padding-1 convolution of
    /// `x [batch][cin][h][w]` whose output gradient is `dy [batch][cout][h][w]`.
    pub(super) fn winograd_conv3x3_dw(&self, s: Shape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        let (tiles, per_block, plane) = (s.tiles(), s.tiles_per_task(), s.h * s.w);
        let mut sums = self.scratch.take_for_overwrite(16 * s.cout * s.cin);
        let sums_out = OutPtr::new(&mut sums);
        let pad_len = row_buffer_len(s);
        let mut first = true;
        for b in 0..s.batch {
            let (x_img, dy_img) =
                (&x[b * s.cin * plane..(b + 1) * s.cin * plane], &dy[b * s.cout * plane..(b + 1) * s.cout * plane]);
            for t0 in (0..tiles).step_by(per_block) {
                let (nt, stride) = (per_block.min(tiles - t0), tile_stride(per_block.min(tiles - t0)));
                let mut xt = self.scratch.take_for_overwrite(16 * s.cin * stride);
                let mut dyt = self.scratch.take_for_overwrite(16 * s.cout * stride);
                let (xt_out, dyt_out) = (OutPtr::new(&mut xt), OutPtr::new(&mut dyt));
                let (cin_tasks, cout_tasks) = (s.cin.div_ceil(CHANNELS_PER_TASK), s.cout.div_ceil(CHANNELS_PER_TASK));
                (0..cin_tasks + cout_tasks).into_par_iter().for_each(|task| {
                    let mut rows = self.scratch.take_for_overwrite(pad_len);
                    let (c0, n) = if task < cin_tasks { (task, s.cin) } else { (task - cin_tasks, s.cout) };
                    let range = c0 * CHANNELS_PER_TASK..n.min((c0 + 1) * CHANNELS_PER_TASK);
                    // SAFETY: each task writes its own channel rows of one of the two buffers.
                    unsafe {
                        if task < cin_tasks {
                            input_tiles(s, x_img, (t0, nt), range, &mut rows, xt_out);
                        } else {
                            gradient_tiles(s, dy_img, (t0, nt), range, &mut rows, dyt_out);
                        }
                    }
                });
                let beta = if first { 0.0 } else { 1.0 };
                first = false;
                (0..16).into_par_iter().for_each(|xi| {
                    let a = Mat::rows(&dyt, xi * s.cout * stride, stride);
                    let bm = Mat { data: &xt, offset: xi * s.cin * stride, rs: 1, cs: stride };
                    // SAFETY: task `xi` writes only `S[xi]`.
                    unsafe { gemm(s.cout, nt, s.cin, 1.0, a, bm, beta, sums_out, xi * s.cout * s.cin, s.cin, 1) };
                });
            }
        }
        if first {
            dw.fill(0.0);
            return;
        }
        dw.par_chunks_mut(9).enumerate().for_each(|(k, out)| {
            let (co, ci) = (k / s.cin, k % s.cin);
            let sv = |xi: usize| f64::from(sums[(xi * s.cout + co) * s.cin + ci]);
            // Gᵀ S G: over the rows (per column), then over the columns.
            let mut cols = [[0.0f64; 3]; 4];
            for c in 0..4 {
                cols[c] = gt([sv(c), sv(4 + c), sv(8 + c), sv(12 + c)]);
            }
            for a in 0..3 {
                let r = gt([cols[0][a], cols[1][a], cols[2][a], cols[3][a]]);
                for (bb, &v) in r.iter().enumerate() {
                    out[a * 3 + bb] = v as f32;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpstoken_core::backend::{Buffers, Conv2dDesc, ConvOps};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + seed) * 2654435761) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// The output-gradient transform gives every tile the bits of the one-tile-at-a-time
    /// textbook order (`A dy Aᵀ`: the 2x2 tile, zeros past the plane, rows then columns), at the
    /// CPU's vector level and in the baseline build; blocks from the first tile and from inside a
    /// tile row, one and two lane groups per row.
    #[test]
    fn gradient_tiles_give_the_per_tile_bits() {
        for (cout, h, w) in [(2, 9, 37), (3, 6, 5), (1, 17, 66)] {
            let s = Shape { batch: 1, cin: 1, cout, h, w };
            let dy = values(cout * h * w, 4);
            for (t0, nt) in [(0, s.tiles()), (5, s.tiles() - 5)] {
                let stride = tile_stride(nt);
                let mut rows = vec![0.0; row_buffer_len(s)];
                let (mut fast, mut plain) = (vec![f32::NAN; 16 * cout * stride], vec![f32::NAN; 16 * cout * stride]);
                // SAFETY: the buffers are this test's own.
                unsafe {
                    gradient_tiles(s, &dy, (t0, nt), 0..cout, &mut rows, OutPtr::new(&mut fast));
                    gradient_tiles_impl(s, &dy, (t0, nt), 0..cout, &mut rows, OutPtr::new(&mut plain));
                }
                let a_dy = |y: [f32; 2]| [y[0], y[0] + y[1], y[0] - y[1], -y[1]];
                for co in 0..cout {
                    for t in t0..t0 + nt {
                        let (ty, tx) = (t / s.tiles_x(), t % s.tiles_x());
                        let v = |r: usize, c: usize| {
                            let (i, j) = (2 * ty + r, 2 * tx + c);
                            if i < h && j < w {
                                dy[(co * h + i) * w + j]
                            } else {
                                0.0
                            }
                        };
                        let (c0, c1) = (a_dy([v(0, 0), v(1, 0)]), a_dy([v(0, 1), v(1, 1)]));
                        for a in 0..4 {
                            for (b, want) in a_dy([c0[a], c1[a]]).iter().enumerate() {
                                let at = ((a * 4 + b) * cout + co) * stride + t - t0;
                                assert_eq!(fast[at].to_bits(), want.to_bits(), "{s:?}: tile {t} value {a} {b}");
                                assert_eq!(plain[at].to_bits(), want.to_bits(), "baseline build, {s:?}: tile {t}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// `dW` through `ConvOps::conv2d_backward` (so through the dispatch to Winograd) against the
    /// f64 sum, relative to the sum of the absolute terms; odd planes, several images, a plane
    /// of more than one tile block (33 x 35 tiles), 1 and 3 threads with the same bits.
    #[test]
    fn kernel_gradient_matches_the_direct_sum() {
        for (batch, cin, cout, h, w) in [(2, 16, 24, 7, 10), (3, 20, 17, 9, 9), (1, 16, 16, 1, 1), (2, 16, 16, 66, 70)]
        {
            let desc = Conv2dDesc {
                batch,
                in_channels: cin,
                out_channels: cout,
                height: h,
                width: w,
                kernel: 3,
                stride: 1,
                padding: 1,
            };
            let (x, wt, dy) =
                (values(batch * cin * h * w, 1), values(cout * cin * 9, 7), values(batch * cout * h * w, 11));
            let plane = h * w;
            let (mut want, mut scale) = (vec![0.0f64; cout * cin * 9], vec![0.0f64; cout * cin * 9]);
            for b in 0..batch {
                for co in 0..cout {
                    for ci in 0..cin {
                        for u in 0..3 {
                            for v in 0..3 {
                                let k = (co * cin + ci) * 9 + u * 3 + v;
                                for i in 0..h {
                                    for j in 0..w {
                                        let (iy, ix) = (i as isize + u as isize - 1, j as isize + v as isize - 1);
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let t = f64::from(dy[(b * cout + co) * plane + i * w + j])
                                            * f64::from(x[(b * cin + ci) * plane + iy as usize * w + ix as usize]);
                                        want[k] += t;
                                        scale[k] += t.abs();
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let mut last: Option<Vec<f32>> = None;
            for threads in [1, 3] {
                let be = CpuBackend::with_threads(threads).unwrap();
                let (xb, wb, dyb) = (be.upload(&x).unwrap(), be.upload(&wt).unwrap(), be.upload(&dy).unwrap());
                let mut dw = be.zeros(cout * cin * 9).unwrap();
                be.conv2d_backward(&desc, &xb, &wb, &dyb, None, Some(&mut dw), None).unwrap();
                for k in 0..dw.len() {
                    let err = (f64::from(dw[k]) - want[k]).abs();
                    assert!(
                        err <= 4e-6 * scale[k] + 1e-30,
                        "{batch}x{cin}->{cout} {h}x{w}: dW {k}: {} vs {}",
                        dw[k],
                        want[k]
                    );
                }
                if let Some(prev) = &last {
                    assert!(
                        prev.iter().zip(dw.iter()).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "dW bits depend on the threads"
                    );
                }
                last = Some(dw.to_vec());
            }
        }
    }
}
