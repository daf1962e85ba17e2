//! Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2015) for the 3x3, stride-1, padding-1 convolutions that carry most of the decoder's work:
//! 16 products per 2x2 output tile instead of 36, so the GEMMs do 4/9 of the multiply-adds of
//! im2col. The input gradient of such a convolution is the same convolution of `dy` with the
//! kernels flipped and the channel roles swapped, so it goes through here too.
//!
//! Per call: the kernels are transformed once, `U[ξ] = (G g Gᵀ)[ξ]` for the 16 tile positions
//! `ξ` (in f64, rounded once), stored `[in][16][out]` (each input channel's block written by
//! one task in place) so that the GEMM reads each `U[ξ]` as an `out x in` matrix with
//! contiguous columns. Then one task per (image, block of output tiles) transforms
//! its input tiles `V[ξ] = (Bᵀ d B)[ξ]` (`[16][in][tiles + 16]`, the transforms in
//! `winograd_tiles`), runs 16 GEMMs `M[ξ] = U[ξ] V[ξ]` and transforms every tile back,
//! `y = Aᵀ M A` (+ bias). Each output value
//! is written by one task, and the GEMM sums in a fixed order whatever the block
//! (`crate::gemm`), so the result is the same for any thread count. The tile blocks depend on
//! the channel counts only.
//!
//! Accuracy: the transforms with these matrices (entries 0, ±1, ±1/2) add a few f32 roundings
//! per value; the results differ from im2col's by about 1e-6 relative (tests below and the
//! golden model parity).

// The transforms index rows and columns of small matrices in both orders; index loops say that
// more plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use super::winograd_tiles::{input_tiles, output_row_buffer_len, output_tiles, row_buffer_len, tile_stride};
use crate::gemm::{gemm, Mat, OutPtr};
use crate::CpuBackend;
use rayon::prelude::*;

/// Values of the per-task transformed inputs at most (`16 x in x tiles`): about 16 MB, so that
/// the U panels are packed once per many tiles without the scratch growing with the image.
const V_VALUES: usize = 1 << 22;
/// Tiles per task at most (and at least [`MIN_TILES`]).
const MAX_TILES: usize = 1024;
const MIN_TILES: usize = 64;
/// Channels below which im2col stays: the transforms would cost more than they save.
pub(super) const MIN_CHANNELS: usize = 16;

/// The shape of one Winograd convolution: `cin` channels in, `cout` out, `h x w` planes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub(super) fn tiles_x(&self) -> usize {
        self.w.div_ceil(2)
    }
    pub(super) fn tiles(&self) -> usize {
        self.h.div_ceil(2) * self.tiles_x()
    }
    /// Tiles per task: as many as fit [`V_VALUES`] (and the same for the outputs), in whole
    /// 16-tile micro-kernel columns.
    pub(super) fn tiles_per_task(&self) -> usize {
        (V_VALUES / (16 * self.cin.max(self.cout))).clamp(MIN_TILES, MAX_TILES) / 16 * 16
    }
}

/// `U [cin][16][cout]` (one contiguous block per input channel) of kernels `w`: `[cout][cin][3][3]` as stored (`flipped == false`), or,
/// for the input gradient, the kernels `w'[ci][co][u][v] = w[co][ci][2-u][2-v]` of the
/// transposed convolution (`flipped == true`, with `cin`/`cout` those of `w'`).
pub(super) fn transform_kernels(w: &[f32], cin: usize, cout: usize, flipped: bool, u: &mut [f32]) {
    debug_assert_eq!(u.len(), 16 * cin * cout);
    // One task per input channel, writing its own `[16][cout]` rows in place.
    u.par_chunks_mut(16 * cout).enumerate().for_each(|(ci, row)| {
        for co in 0..cout {
            let g = |a: usize, b: usize| -> f64 {
                f64::from(if flipped {
                    w[(ci * cout + co) * 9 + (2 - a) * 3 + (2 - b)]
                } else {
                    w[(co * cin + ci) * 9 + a * 3 + b]
                })
            };
            // G g: 4 x 3, rows (g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2).
            let mut gg = [[0.0f64; 3]; 4];
            for b in 0..3 {
                let (g0, g1, g2) = (g(0, b), g(1, b), g(2, b));
                gg[0][b] = g0;
                gg[1][b] = 0.5 * (g0 + g1 + g2);
                gg[2][b] = 0.5 * (g0 - g1 + g2);
                gg[3][b] = g2;
            }
            for (a, r) in gg.iter().enumerate() {
                let t = [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]];
                for (b, &v) in t.iter().enumerate() {
                    row[(a * 4 + b) * cout + co] = v as f32;
                }
            }
        }
    });
}

impl CpuBackend {
    /// `y [batch][cout][h][w] = conv3x3(x [batch][cin][h][w]) + bias` (stride 1, padding 1)
    /// with the transformed kernels `u` of [`transform_kernels`]; `y` is overwritten.
    pub(super) fn winograd_conv3x3(&self, s: Shape, x: &[f32], u: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        let (tiles, per_task) = (s.tiles(), s.tiles_per_task());
        let blocks = tiles.div_ceil(per_task);
        let (plane, out) = (s.h * s.w, OutPtr::new(y));
        (0..s.batch * blocks).into_par_iter().for_each(|task| {
            let (b, t0) = (task / blocks, (task % blocks) * per_task);
            let nt = per_task.min(tiles - t0);
            let x_img = &x[b * s.cin * plane..(b + 1) * s.cin * plane];
            let stride = tile_stride(nt);
            let mut v = self.scratch.take_for_overwrite(16 * s.cin * stride);
            let mut m = self.scratch.take_for_overwrite(16 * s.cout * stride);
            let mut rows = self.scratch.take_for_overwrite(row_buffer_len(s).max(output_row_buffer_len(s)));
            // SAFETY: `v` is this task's own scratch.
            unsafe { input_tiles(s, x_img, (t0, nt), 0..s.cin, &mut rows, OutPtr::new(&mut v)) };
            for xi in 0..16 {
                let ua = Mat { data: u, offset: xi * s.cout, rs: 1, cs: 16 * s.cout };
                let vb = Mat::rows(&v, xi * s.cin * stride, stride);
                // SAFETY: `m` is this task's own scratch.
                unsafe {
                    gemm(s.cout, s.cin, nt, 1.0, ua, vb, 0.0, OutPtr::new(&mut m), xi * s.cout * stride, stride, 1)
                };
            }
            // SAFETY: tasks own disjoint tile blocks of each image, and `y` is exclusively
            // borrowed by the op.
            unsafe { output_tiles(s, b, (t0, nt), &m, bias, &mut rows, out) };
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

    /// The 3x3 padding-1 convolution in f64 and, per output, the sum of the absolute terms
    /// (the scale of its rounding error).
    fn direct(s: Shape, x: &[f32], w: &[f32], bias: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let plane = s.h * s.w;
        let (mut y, mut scale) = (vec![0.0; s.batch * s.cout * plane], vec![0.0; s.batch * s.cout * plane]);
        for b in 0..s.batch {
            for co in 0..s.cout {
                for i in 0..s.h {
                    for j in 0..s.w {
                        let (mut acc, mut abs) = (f64::from(bias[co]), f64::from(bias[co]).abs());
                        for ci in 0..s.cin {
                            for u in 0..3 {
                                for v in 0..3 {
                                    let (iy, ix) = (i as isize + u as isize - 1, j as isize + v as isize - 1);
                                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                        continue;
                                    }
                                    let t = f64::from(x[(b * s.cin + ci) * plane + iy as usize * s.w + ix as usize])
                                        * f64::from(w[(co * s.cin + ci) * 9 + u * 3 + v]);
                                    acc += t;
                                    abs += t.abs();
                                }
                            }
                        }
                        y[(b * s.cout + co) * plane + i * s.w + j] = acc;
                        scale[(b * s.cout + co) * plane + i * s.w + j] = abs;
                    }
                }
            }
        }
        (y, scale)
    }

    fn check(name: &str, got: &[f32], want: &[f64], scale: &[f64]) {
        for (k, ((&g, &w), &sc)) in got.iter().zip(want).zip(scale).enumerate() {
            let err = (f64::from(g) - w).abs();
            assert!(err <= 4e-6 * sc + 1e-30, "{name}: value {k}: {g} vs {w} (terms {sc})");
        }
    }

    /// Forward and input gradient through `ConvOps` (so through the dispatch to Winograd) on odd
    /// and even plane sizes and partial tile rows and lane groups, against the f64 convolution; 1 and 3 threads give the same bits.
    #[test]
    fn forward_and_input_gradient_match_the_direct_convolution() {
        // The last shape has 33 x 35 tiles: more than one task's block, the second block starting
        // inside a tile row.
        for (batch, cin, cout, h, w) in
            [(2, 16, 24, 7, 10), (1, 32, 16, 6, 5), (1, 16, 16, 1, 1), (3, 20, 17, 9, 9), (1, 16, 16, 66, 70)]
        {
            let s = Shape { batch, cin, cout, h, w };
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
            let (x, wt, bias) = (values(batch * cin * h * w, 1), values(cout * cin * 9, 7), values(cout, 3));
            let dy = values(batch * cout * h * w, 11);
            let mut last: Option<(Vec<f32>, Vec<f32>)> = None;
            for threads in [1, 3] {
                let be = CpuBackend::with_threads(threads).unwrap();
                let (xb, wb, bb, dyb) = (
                    be.upload(&x).unwrap(),
                    be.upload(&wt).unwrap(),
                    be.upload(&bias).unwrap(),
                    be.upload(&dy).unwrap(),
                );
                let mut y = be.zeros(batch * cout * h * w).unwrap();
                be.conv2d_forward(&desc, &xb, &wb, Some(&bb), &mut y).unwrap();
                let (want, scale) = direct(s, &x, &wt, &bias);
                check(&format!("forward {batch}x{cin}->{cout} {h}x{w}"), &y, &want, &scale);
                // dx = conv(dy, flipped kernels with the channels swapped), no bias.
                let flipped: Vec<f32> = (0..cin * cout * 9)
                    .map(|i| {
                        let (ci, co, u, v) = (i / (cout * 9), (i / 9) % cout, (i / 3) % 3, i % 3);
                        wt[(co * cin + ci) * 9 + (2 - u) * 3 + (2 - v)]
                    })
                    .collect();
                let mut dx = be.zeros(batch * cin * h * w).unwrap();
                be.conv2d_backward(&desc, &xb, &wb, &dyb, Some(&mut dx), None, None).unwrap();
                let ts = Shape { batch, cin: cout, cout: cin, h, w };
                let (want, scale) = direct(ts, &dy, &flipped, &vec![0.0; cin]);
                check(&format!("dx {batch}x{cin}->{cout} {h}x{w}"), &dx, &want, &scale);
                if let Some((y0, dx0)) = &last {
                    assert!(
                        y0.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "forward bits depend on the threads"
                    );
                    assert!(
                        dx0.iter().zip(&dx).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "dx bits depend on the threads"
                    );
                }
                last = Some((y.clone(), dx.clone()));
            }
        }
    }
}
