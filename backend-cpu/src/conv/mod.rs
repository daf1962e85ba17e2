//! `ConvOps` on the CPU: im2col + GEMM convolutions and nearest ×2 upsampling. 3x3 stride-1
//! padding-1 convolutions with at least 16 channels in and out (nearly all of the decoder's work)
//! go through Winograd instead: [`winograd`] for the forward and `dx`, [`winograd_dw`] for `dW`.
//!
//! Notation: `K = in·k·k` (rows of the im2col matrix), `P = Ho·Wo` (output positions). Every
//! task owns a fixed block of ONE output tensor, computed with full inner sums, so results are
//! bit-identical for any thread count (block sizes depend on the shape only):
//!
//! * forward, task = (image, block of [`POS_BLOCK`] output positions):
//!   `y[b][:, block] = W [out, K] · col [K, block]`, then the bias. 1x1 stride-1 unpadded
//!   convolutions read `x` directly (no im2col).
//! * `dx`, task = (image, block of input rows, block of [`CI_BLOCK`] input channels):
//!   `dcol = W[:, rows of the channel block]ᵀ · dy[b][:, output rows touching the input rows]`,
//!   then col2im into its own input rows only, each value summing its `(kh, kw)` taps in order
//!   (the few output rows two blocks share are multiplied twice rather than summed across tasks).
//! * `dW`, task = (block of [`CO_BLOCK`] output channels, block of [`CI_BLOCK`] input channels):
//!   images then chunks of [`DW_POS`] positions in order, each chunk one GEMM accumulated into
//!   the block (`beta = 1`), so each weight gradient sums in one fixed order. Skipped for frozen
//!   layers (`dw = None`).
//! * `db`, task = output channel: sums over images then positions in f64.
//!
//! Upsampling backward sums the four copies in PyTorch's order (output-pixel order).

mod winograd;
mod winograd_dw;
mod winograd_tiles;

use crate::gemm::{blocks, gemm, Mat, OutPtr};
use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::ConvKernels;
use gpstoken_core::backend::{Conv2dDesc, UpsampleDesc};
use rayon::prelude::*;

/// Output positions per forward task.
const POS_BLOCK: usize = 256;
/// Input channels per `dx` / `dW` task.
const CI_BLOCK: usize = 32;
/// Output channels per `dW` task.
const CO_BLOCK: usize = 128;
/// Output positions per `dW` GEMM (the im2col chunk).
const DW_POS: usize = 1024;
/// Input positions a `dx` task aims for (it takes whole input rows).
const DX_POSITIONS: usize = 4096;
/// Values per upsampling task (whole planes).
const UPSAMPLE_CHUNK: usize = 1 << 14;

/// The shape numbers every kernel needs.
#[derive(Clone, Copy)]
struct Geometry {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(d: &Conv2dDesc) -> Geometry {
        Geometry {
            cin: d.in_channels,
            cout: d.out_channels,
            h: d.height,
            w: d.width,
            k: d.kernel,
            s: d.stride,
            p: d.padding,
            ho: d.out_height(),
            wo: d.out_width(),
        }
    }
    /// Output positions per image.
    fn positions(&self) -> usize {
        self.ho * self.wo
    }
    /// im2col rows.
    fn kdim(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// A 3x3, stride-1, padding-1 convolution with enough channels for [`winograd`].
    fn winograd(&self) -> bool {
        self.k == 3 && self.s == 1 && self.p == 1 && self.cin.min(self.cout) >= winograd::MIN_CHANNELS
    }
    /// A 1x1, stride-1, unpadded convolution: the im2col matrix is the input itself.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.s == 1 && self.p == 0
    }

    /// The output columns `ow` whose tap `kw` lands inside the input row (`0 <= ow·s + kw - p < w`),
    /// as a range `lo..hi` (empty when none does): the columns outside it read the zero padding.
    fn valid_cols(&self, kw: usize) -> (usize, usize) {
        let (s, p, w, wo) = (self.s, self.p, self.w, self.wo);
        let lo = if p > kw { (p - kw).div_ceil(s) } else { 0 }.min(wo);
        let hi = if w + p > kw { ((w - 1 + p - kw) / s + 1).min(wo) } else { 0 };
        (lo, hi.max(lo))
    }

    /// `col [(ci1-ci0)·k·k, p1-p0]` for image `x_img [in, H, W]`, channels `ci0..ci1`,
    /// output positions `p0..p1` (zero padding). Each output row segment is a zero head, a copy
    /// of (stride 1) or a gather from (stride > 1) one input row, and a zero tail.
    fn im2col(&self, x_img: &[f32], ci0: usize, ci1: usize, p0: usize, p1: usize, col: &mut [f32]) {
        let (k, s, w, h, wo) = (self.k, self.s, self.w, self.h, self.wo);
        let np = p1 - p0;
        debug_assert_eq!(col.len(), (ci1 - ci0) * k * k * np);
        for (row, dst) in col.chunks_exact_mut(np).enumerate() {
            let ci = ci0 + row / (k * k);
            let (kh, kw) = ((row / k) % k, row % k);
            let plane = &x_img[ci * h * w..(ci + 1) * h * w];
            let (lo, hi) = self.valid_cols(kw);
            let mut pos = p0;
            while pos < p1 {
                let (oh, ow0) = (pos / wo, pos % wo);
                let ow1 = wo.min(ow0 + (p1 - pos));
                let seg = &mut dst[pos - p0..pos - p0 + (ow1 - ow0)];
                let ih = (oh * s + kh) as isize - self.p as isize;
                if ih < 0 || ih >= h as isize {
                    seg.fill(0.0);
                } else {
                    let src = &plane[ih as usize * w..(ih as usize + 1) * w];
                    let (a, b) = (lo.clamp(ow0, ow1), hi.clamp(ow0, ow1));
                    seg[..a - ow0].fill(0.0);
                    seg[b - ow0..].fill(0.0);
                    let mid = &mut seg[a - ow0..b - ow0];
                    // In the valid range `ow·s + kw >= p`, so the subtraction cannot wrap.
                    if s == 1 {
                        mid.copy_from_slice(&src[a + kw - self.p..b + kw - self.p]);
                    } else {
                        for (o, ow) in mid.iter_mut().zip(a..b) {
                            *o = src[ow * s + kw - self.p];
                        }
                    }
                }
                pos += ow1 - ow0;
            }
        }
    }
}

impl ConvKernels for CpuBackend {
    fn conv2d_forward(
        &self,
        desc: &Conv2dDesc,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        y: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let g = Geometry::new(desc);
        let (pos, kdim) = (g.positions(), g.kdim());
        if y.is_empty() {
            return Ok(());
        }
        if g.winograd() {
            let shape = winograd::Shape { batch: desc.batch, cin: g.cin, cout: g.cout, h: g.h, w: g.w };
            self.install(|| {
                let mut u = self.scratch.take_for_overwrite(16 * g.cin * g.cout);
                winograd::transform_kernels(w, g.cin, g.cout, false, &mut u);
                self.winograd_conv3x3(shape, x, &u, bias.map(|b| &b[..]), y);
            });
            return Ok(());
        }
        let out = OutPtr::new(y);
        self.install(|| {
            blocks(desc.batch, pos, 1, POS_BLOCK).for_each(|(b, _, p0, np)| {
                let x_img = &x[b * g.cin * g.h * g.w..(b + 1) * g.cin * g.h * g.w];
                let y_off = b * g.cout * pos + p0;
                // SAFETY: tasks write disjoint (image, position block) parts of `y`.
                unsafe {
                    if g.pointwise() {
                        gemm(
                            g.cout,
                            kdim,
                            np,
                            1.0,
                            Mat::rows(w, 0, kdim),
                            Mat::rows(x_img, p0, pos),
                            0.0,
                            out,
                            y_off,
                            pos,
                            1,
                        );
                    } else {
                        let mut col = self.scratch.take_for_overwrite(kdim * np);
                        g.im2col(x_img, 0, g.cin, p0, p0 + np, &mut col);
                        let (wm, cm) = (Mat::rows(w, 0, kdim), Mat::rows(&col, 0, np));
                        gemm(g.cout, kdim, np, 1.0, wm, cm, 0.0, out, y_off, pos, 1);
                    }
                    if let Some(bias) = bias {
                        for (co, &bv) in bias.iter().enumerate() {
                            for v in out.slice(y_off + co * pos, np) {
                                *v += bv;
                            }
                        }
                    }
                }
            })
        });
        Ok(())
    }

    fn conv2d_backward(
        &self,
        desc: &Conv2dDesc,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dx: Option<&mut Vec<f32>>,
        dw: Option<&mut Vec<f32>>,
        dbias: Option<&mut Vec<f32>>,
    ) -> Result<(), CpuError> {
        let g = Geometry::new(desc);
        self.install(|| {
            if let Some(dx) = dx {
                self.conv_dx(desc.batch, &g, w, dy, dx);
            }
            if let Some(dw) = dw {
                self.conv_dw(desc.batch, &g, x, dy, dw);
            }
            if let Some(db) = dbias {
                let pos = g.positions();
                db.par_iter_mut().enumerate().for_each(|(co, db)| {
                    let mut sum = 0.0f64;
                    for b in 0..desc.batch {
                        let at = (b * g.cout + co) * pos;
                        for &v in &dy[at..at + pos] {
                            sum += f64::from(v);
                        }
                    }
                    *db = sum as f32;
                });
            }
        });
        Ok(())
    }

    fn upsample_nearest2x_forward(&self, desc: &UpsampleDesc, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<(), CpuError> {
        let (h, w) = (desc.height, desc.width);
        if x.is_empty() {
            return Ok(());
        }
        let planes = (UPSAMPLE_CHUNK / (h * w)).max(1);
        self.install(|| {
            y.par_chunks_mut(4 * h * w * planes).zip(x.par_chunks(h * w * planes)).for_each(|(y, x)| {
                for (yp, xp) in y.chunks_exact_mut(4 * h * w).zip(x.chunks_exact(h * w)) {
                    for (rows, src) in yp.chunks_exact_mut(4 * w).zip(xp.chunks_exact(w)) {
                        let (top, bottom) = rows.split_at_mut(2 * w);
                        for (pair, &v) in top.chunks_exact_mut(2).zip(src) {
                            pair[0] = v;
                            pair[1] = v;
                        }
                        bottom.copy_from_slice(top);
                    }
                }
            })
        });
        Ok(())
    }

    fn upsample_nearest2x_backward(
        &self,
        desc: &UpsampleDesc,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let (h, w) = (desc.height, desc.width);
        if dx.is_empty() {
            return Ok(());
        }
        let planes = (UPSAMPLE_CHUNK / (h * w)).max(1);
        self.install(|| {
            dx.par_chunks_mut(h * w * planes).zip(dy.par_chunks(4 * h * w * planes)).for_each(|(dx, dy)| {
                for (xp, yp) in dx.chunks_exact_mut(h * w).zip(dy.chunks_exact(4 * h * w)) {
                    for (dst, rows) in xp.chunks_exact_mut(w).zip(yp.chunks_exact(4 * w)) {
                        let (top, bottom) = rows.split_at(2 * w);
                        for (j, d) in dst.iter_mut().enumerate() {
                            // PyTorch's order: the output pixels in raster order.
                            *d = ((top[2 * j] + top[2 * j + 1]) + bottom[2 * j]) + bottom[2 * j + 1];
                        }
                    }
                }
            })
        });
        Ok(())
    }
}

impl CpuBackend {
    /// `dx` (overwritten), see the module docs.
    fn conv_dx(&self, batch: usize, g: &Geometry, w: &[f32], dy: &[f32], dx: &mut [f32]) {
        if dx.is_empty() {
            return;
        }
        let (pos, kdim, kk, plane) = (g.positions(), g.kdim(), g.k * g.k, g.h * g.w);
        if g.winograd() {
            // dx is the 3x3 convolution of dy with the flipped kernels, channels swapped.
            let shape = winograd::Shape { batch, cin: g.cout, cout: g.cin, h: g.h, w: g.w };
            let mut u = self.scratch.take_for_overwrite(16 * g.cin * g.cout);
            winograd::transform_kernels(w, g.cout, g.cin, true, &mut u);
            self.winograd_conv3x3(shape, dy, &u, None, dx);
            return;
        }
        let ci_blocks = g.cin.div_ceil(CI_BLOCK);
        let out = OutPtr::new(dx);
        if g.pointwise() {
            // dx[b][ci block, positions] = W[:, ci block]ᵀ · dy[b][:, positions], directly.
            blocks(batch * ci_blocks, pos, 1, DX_POSITIONS).for_each(|(t, _, p0, np)| {
                let (b, ci0) = (t / ci_blocks, (t % ci_blocks) * CI_BLOCK);
                let nci = CI_BLOCK.min(g.cin - ci0);
                let a = Mat { data: w, offset: ci0, rs: 1, cs: kdim };
                let bm = Mat::rows(dy, b * g.cout * pos + p0, pos);
                // SAFETY: tasks write disjoint (image, channel block, position block) parts.
                unsafe { gemm(nci, g.cout, np, 1.0, a, bm, 0.0, out, (b * g.cin + ci0) * plane + p0, plane, 1) };
            });
            return;
        }
        let rows_per_task = DX_POSITIONS.div_ceil(g.w).clamp(1, g.h);
        let row_blocks = g.h.div_ceil(rows_per_task);
        (0..batch * row_blocks * ci_blocks).into_par_iter().for_each(|t| {
            let (b, rb, cb) = (t / (row_blocks * ci_blocks), (t / ci_blocks) % row_blocks, t % ci_blocks);
            let (ih0, ih1) = (rb * rows_per_task, ((rb + 1) * rows_per_task).min(g.h));
            let (ci0, ci1) = (cb * CI_BLOCK, ((cb + 1) * CI_BLOCK).min(g.cin));
            // Output rows whose taps reach input rows ih0..ih1: oh*s - p + kh in [ih0, ih1).
            let lo = ih0 as isize + g.p as isize - (g.k as isize - 1);
            let oh0 = if lo <= 0 { 0 } else { (lo as usize).div_ceil(g.s) };
            let oh1 = ((ih1 - 1 + g.p) / g.s + 1).min(g.ho);
            // This task's rows of channel `ci` of `dx`.
            // SAFETY: tasks own disjoint (image, channel block, row block) parts of `dx`, and each
            // slice is dropped before the next one of the task is made.
            let rows_of = |ci: usize| unsafe { out.slice((b * g.cin + ci) * plane + ih0 * g.w, (ih1 - ih0) * g.w) };
            for ci in ci0..ci1 {
                rows_of(ci).fill(0.0);
            }
            if oh0 >= oh1 {
                return;
            }
            let (rows, np) = ((ci1 - ci0) * kk, (oh1 - oh0) * g.wo);
            let mut dcol = self.scratch.take_for_overwrite(rows * np);
            let a = Mat { data: w, offset: ci0 * kk, rs: 1, cs: kdim };
            let bm = Mat::rows(dy, b * g.cout * pos + oh0 * g.wo, pos);
            // SAFETY: `dcol` is this task's own scratch.
            unsafe { gemm(rows, g.cout, np, 1.0, a, bm, 0.0, OutPtr::new(&mut dcol), 0, np, 1) };
            for (r, src) in dcol.chunks_exact(np).enumerate() {
                let (ci, kh, kw) = (ci0 + r / kk, (r / g.k) % g.k, r % g.k);
                let d = rows_of(ci);
                for oh in oh0..oh1 {
                    let ih = (oh * g.s + kh) as isize - g.p as isize;
                    if ih < ih0 as isize || ih >= ih1 as isize {
                        continue;
                    }
                    let drow = &mut d[(ih as usize - ih0) * g.w..(ih as usize - ih0 + 1) * g.w];
                    let srow = &src[(oh - oh0) * g.wo..(oh - oh0 + 1) * g.wo];
                    // Only the columns whose tap lands inside the row; each input value gets at
                    // most one term per (r, oh), so the order of its sum is unchanged.
                    let (lo, hi) = g.valid_cols(kw);
                    if g.s == 1 {
                        let dst = &mut drow[lo + kw - g.p..hi + kw - g.p];
                        for (d, &v) in dst.iter_mut().zip(&srow[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (ow, &v) in srow.iter().enumerate().take(hi).skip(lo) {
                            drow[ow * g.s + kw - g.p] += v;
                        }
                    }
                }
            }
        });
    }

    /// `dW` (overwritten), see the module docs.
    fn conv_dw(&self, batch: usize, g: &Geometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        if dw.is_empty() {
            return;
        }
        if g.winograd() {
            let shape = winograd::Shape { batch, cin: g.cin, cout: g.cout, h: g.h, w: g.w };
            self.winograd_conv3x3_dw(shape, x, dy, dw);
            return;
        }
        let (pos, kdim, kk, plane) = (g.positions(), g.kdim(), g.k * g.k, g.h * g.w);
        let out = OutPtr::new(dw);
        blocks(g.cout, g.cin, CO_BLOCK, CI_BLOCK).for_each(|(co0, nco, ci0, nci)| {
            let c_off = co0 * kdim + ci0 * kk;
            let mut first = true;
            let mut col =
                if g.pointwise() { None } else { Some(self.scratch.take_for_overwrite(nci * kk * DW_POS.min(pos))) };
            for b in 0..batch {
                for p0 in (0..pos).step_by(DW_POS) {
                    let np = DW_POS.min(pos - p0);
                    let a = Mat::rows(dy, (b * g.cout + co0) * pos + p0, pos);
                    let beta = if first { 0.0 } else { 1.0 };
                    first = false;
                    let x_img = &x[b * g.cin * plane..(b + 1) * g.cin * plane];
                    // SAFETY: tasks write disjoint (output block, input block) parts of `dW`.
                    unsafe {
                        match col.as_mut() {
                            None => {
                                let bm = Mat { data: x_img, offset: ci0 * plane + p0, rs: 1, cs: plane };
                                gemm(nco, np, nci, 1.0, a, bm, beta, out, c_off, kdim, 1);
                            }
                            Some(col) => {
                                let col = &mut col[..nci * kk * np];
                                g.im2col(x_img, ci0, ci0 + nci, p0, p0 + np, col);
                                let bm = Mat { data: col, offset: 0, rs: 1, cs: np };
                                gemm(nco, np, nci * kk, 1.0, a, bm, beta, out, c_off, kdim, 1);
                            }
                        }
                    }
                }
            }
            if first {
                // No image or no position: the gradient is zero.
                for co in co0..co0 + nco {
                    // SAFETY: as above.
                    unsafe { out.slice(co * kdim + ci0 * kk, nci * kk) }.fill(0.0);
                }
            }
        });
    }
}
