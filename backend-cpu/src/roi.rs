//! `RoiOps` on the CPU: torchvision's RoIAlign (spec 5.2), in f32 with torchvision's CPU
//! operation order, so the forward and the backward give the bits of `roi_align` on the CPU.
//!
//! * Forward: one task per RoI. The sample coordinates of a RoI are separable (a row sample
//!   depends on `(ph, iy)` only, a column sample on `(pw, ix)`), so each task tabulates both axes,
//!   then builds torchvision's `pre_calc` (four positions and four f32 weights per sample, the
//!   same products) once and reuses it for every channel.
//! * Backward: one task per (image, channel) feature plane, looping over the RoIs of that image
//!   in RoI order and adding `dout * w / count` to the four taps in torchvision's order (for one
//!   plane that is exactly the order of torchvision's serial loop). No atomics: each plane has
//!   one writer, so the result is the same for any thread count.

use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::RoiKernels;
use gpstoken_core::backend::RoiAlignDesc;
use rayon::prelude::*;

/// Values per entry of an axis table: `valid, low, high, l, h` (indices stored exactly as f32).
const ENTRY: usize = 5;
/// Values per sample of the forward's `pre_calc`: four positions, then four weights.
const PRE_CALC: usize = 8;

/// The f32 geometry of one RoI (torchvision's names in the comments).
#[derive(Clone, Copy, Debug)]
struct RoiGeom {
    /// The image the box reads; `None` for an invalid batch index (the front end's contract
    /// excludes it, the kernels skip such a box rather than read out of bounds).
    batch: Option<usize>,
    /// `roi_start_h`, `roi_start_w`.
    start_h: f32,
    start_w: f32,
    /// `bin_size_h`, `bin_size_w`.
    bin_h: f32,
    bin_w: f32,
    /// `roi_bin_grid_h`, `roi_bin_grid_w` (may be <= 0 for empty or inverted boxes).
    grid_h: i32,
    grid_w: i32,
    /// `max(grid_h * grid_w, 1)` as f32.
    count: f32,
}

impl RoiGeom {
    fn new(desc: &RoiAlignDesc, roi: &[f32]) -> RoiGeom {
        let offset = if desc.aligned { 0.5f32 } else { 0.0 };
        let scale = desc.spatial_scale;
        let start_w = roi[1] * scale - offset;
        let start_h = roi[2] * scale - offset;
        let end_w = roi[3] * scale - offset;
        let end_h = roi[4] * scale - offset;
        let mut roi_w = end_w - start_w;
        let mut roi_h = end_h - start_h;
        if !desc.aligned {
            roi_w = roi_w.max(1.0);
            roi_h = roi_h.max(1.0);
        }
        let pooled = desc.pooled as f32;
        let (bin_h, bin_w) = (roi_h / pooled, roi_w / pooled);
        let (grid_h, grid_w) = if desc.sampling_ratio > 0 {
            (desc.sampling_ratio, desc.sampling_ratio)
        } else {
            ((roi_h / pooled).ceil() as i32, (roi_w / pooled).ceil() as i32)
        };
        let count = (i64::from(grid_h) * i64::from(grid_w)).max(1) as f32;
        RoiGeom { batch: desc.batch_index(roi[0]), start_h, start_w, bin_h, bin_w, grid_h, grid_w, count }
    }

    fn samples_h(&self) -> usize {
        self.grid_h.max(0) as usize
    }
    fn samples_w(&self) -> usize {
        self.grid_w.max(0) as usize
    }
    /// Table values of both axes.
    fn table_len(&self, pooled: usize) -> usize {
        ENTRY * pooled * (self.samples_h() + self.samples_w())
    }
}

/// Tabulates one axis: for bin `p` and sample `i`, the torchvision coordinate
/// `start + p bin + (i + 0.5) bin / grid`, its border rules, taps and weights.
fn axis_table(start: f32, bin: f32, grid: i32, pooled: usize, size: usize, table: &mut [f32]) {
    let samples = grid.max(0) as usize;
    for p in 0..pooled {
        for i in 0..samples {
            let mut c = start + p as f32 * bin + (i as f32 + 0.5) * bin / grid as f32;
            let e = &mut table[ENTRY * (p * samples + i)..ENTRY * (p * samples + i + 1)];
            if c < -1.0 || c > size as f32 {
                e.copy_from_slice(&[0.0; ENTRY]);
                continue;
            }
            if c <= 0.0 {
                c = 0.0;
            }
            let mut low = c as usize;
            let high;
            if low >= size - 1 {
                low = size - 1;
                high = size - 1;
                c = low as f32;
            } else {
                high = low + 1;
            }
            let l = c - low as f32;
            // torchvision: `T hy = 1. - ly` (a double subtraction, then rounded to T).
            let h = (1.0f64 - f64::from(l)) as f32;
            e.copy_from_slice(&[1.0, low as f32, high as f32, l, h]);
        }
    }
}

/// Fills both axis tables of `g` into `table` and returns (rows, columns).
fn roi_tables<'t>(desc: &RoiAlignDesc, g: &RoiGeom, table: &'t mut [f32]) -> (&'t [f32], &'t [f32]) {
    let (ty, rest) = table.split_at_mut(ENTRY * desc.pooled * g.samples_h());
    let tx = &mut rest[..ENTRY * desc.pooled * g.samples_w()];
    axis_table(g.start_h, g.bin_h, g.grid_h, desc.pooled, desc.height, ty);
    axis_table(g.start_w, g.bin_w, g.grid_w, desc.pooled, desc.width, tx);
    (ty, tx)
}

impl RoiKernels for CpuBackend {
    fn roi_align_forward(
        &self,
        desc: &RoiAlignDesc,
        features: &Vec<f32>,
        boxes: &Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        if out.is_empty() {
            return Ok(());
        }
        let (channels, pooled, hw, width) = (desc.channels, desc.pooled, desc.height * desc.width, desc.width);
        if hw == 0 {
            out.fill(0.0);
            return Ok(());
        }
        let pool = &self.scratch;
        self.install(|| {
            out.par_chunks_mut(channels * pooled * pooled).zip(boxes.par_chunks(5)).for_each(|(out, roi)| {
                let g = RoiGeom::new(desc, roi);
                let Some(image) = g.batch else {
                    out.fill(0.0);
                    return;
                };
                let (sh, sw) = (g.samples_h(), g.samples_w());
                let per_bin = PRE_CALC * sh * sw;
                let mut scratch = pool.take(pooled * pooled * per_bin + g.table_len(pooled));
                let (pre, table) = scratch.split_at_mut(pooled * pooled * per_bin);
                let (ty, tx) = roi_tables(desc, &g, table);
                // torchvision's `pre_calc`, in its order (ph, pw, iy, ix): the four positions
                // (u32 bits stored in f32 slots, never used as floats) and the four weights.
                let mut entries = pre.chunks_exact_mut(PRE_CALC);
                for ph in 0..pooled {
                    for pw in 0..pooled {
                        for iy in 0..sh {
                            let ey = &ty[ENTRY * (ph * sh + iy)..ENTRY * (ph * sh + iy + 1)];
                            for ix in 0..sw {
                                let ex = &tx[ENTRY * (pw * sw + ix)..ENTRY * (pw * sw + ix + 1)];
                                let e = entries.next().expect("pre_calc sized for every sample");
                                if ey[0] == 0.0 || ex[0] == 0.0 {
                                    // An empty sample: positions 0 (0.0 has zero bits) and
                                    // weights 0, as torchvision.
                                    e.fill(0.0);
                                    continue;
                                }
                                let (yl, yh, ly, hy) = (ey[1] as usize, ey[2] as usize, ey[3], ey[4]);
                                let (xl, xh, lx, hx) = (ex[1] as usize, ex[2] as usize, ex[3], ex[4]);
                                let pos = [yl * width + xl, yl * width + xh, yh * width + xl, yh * width + xh];
                                for (slot, p) in e[..4].iter_mut().zip(pos) {
                                    *slot = f32::from_bits(p as u32);
                                }
                                e[4..].copy_from_slice(&[hy * hx, hy * lx, ly * hx, ly * lx]);
                            }
                        }
                    }
                }
                let pre = &*pre;
                for (c, out_c) in out.chunks_mut(pooled * pooled).enumerate() {
                    let plane = &features[(image * channels + c) * hw..(image * channels + c + 1) * hw];
                    let at = |slot: f32| plane[slot.to_bits() as usize];
                    for (bin, o) in out_c.iter_mut().enumerate() {
                        let mut acc = 0.0f32;
                        for e in pre[bin * per_bin..(bin + 1) * per_bin].chunks_exact(PRE_CALC) {
                            acc += e[4] * at(e[0]) + e[5] * at(e[1]) + e[6] * at(e[2]) + e[7] * at(e[3]);
                        }
                        *o = acc / g.count;
                    }
                }
            });
        });
        Ok(())
    }

    fn roi_align_backward(
        &self,
        desc: &RoiAlignDesc,
        boxes: &Vec<f32>,
        dout: &Vec<f32>,
        dfeatures: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let (channels, pooled, hw, width) = (desc.channels, desc.pooled, desc.height * desc.width, desc.width);
        if dfeatures.is_empty() {
            return Ok(());
        }
        let table_len = boxes.chunks_exact(5).map(|roi| RoiGeom::new(desc, roi).table_len(pooled)).max().unwrap_or(0);
        let pool = &self.scratch;
        self.install(|| {
            dfeatures.par_chunks_mut(hw).enumerate().for_each(|(plane_index, plane)| {
                let (b, c) = (plane_index / channels, plane_index % channels);
                plane.fill(0.0);
                let mut table = pool.take(table_len);
                for (n, roi) in boxes.chunks_exact(5).enumerate() {
                    let g = RoiGeom::new(desc, roi);
                    if g.batch != Some(b) {
                        continue;
                    }
                    let (sh, sw) = (g.samples_h(), g.samples_w());
                    let (ty, tx) = roi_tables(desc, &g, &mut table);
                    let dout_c = &dout[(n * channels + c) * pooled * pooled..(n * channels + c + 1) * pooled * pooled];
                    for ph in 0..pooled {
                        for pw in 0..pooled {
                            let d = dout_c[ph * pooled + pw];
                            for iy in 0..sh {
                                let ey = &ty[ENTRY * (ph * sh + iy)..ENTRY * (ph * sh + iy + 1)];
                                if ey[0] == 0.0 {
                                    continue;
                                }
                                let (yl, yh, ly, hy) = (ey[1] as usize, ey[2] as usize, ey[3], ey[4]);
                                for ix in 0..sw {
                                    let ex = &tx[ENTRY * (pw * sw + ix)..ENTRY * (pw * sw + ix + 1)];
                                    if ex[0] == 0.0 {
                                        continue;
                                    }
                                    let (xl, xh, lx, hx) = (ex[1] as usize, ex[2] as usize, ex[3], ex[4]);
                                    let (w1, w2, w3, w4) = (hy * hx, hy * lx, ly * hx, ly * lx);
                                    plane[yl * width + xl] += d * w1 / g.count;
                                    plane[yl * width + xh] += d * w2 / g.count;
                                    plane[yh * width + xl] += d * w3 / g.count;
                                    plane[yh * width + xh] += d * w4 / g.count;
                                }
                            }
                        }
                    }
                }
            });
        });
        Ok(())
    }
}
