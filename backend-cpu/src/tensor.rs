//! `TensorOps` on the CPU: elementwise ops, activations and layout changes.
//!
//! * Elementwise ops run over fixed chunks of [`CHUNK`] values; every output value depends on
//!   its inputs only, so the split cannot change a bit.
//! * Activations are evaluated in f64 and rounded once to f32 (so within half an ulp of the
//!   exact function, up to the f64 evaluation error). `GeluErf` uses [`erfc`], a port of
//!   FreeBSD's `s_erf.c` (through the `libm` crate), accurate to about 1 ulp of f64.
//! * [`TensorOps::sum_rows`] is a fixed-order reduction: rows are cut into chunks of
//!   [`ROW_CHUNK`] rows, each chunk summed in f64 in row order, then the chunk sums are added in
//!   chunk order (see [`column_sums`]).
//! * Layout changes are pure copies, parallel over disjoint output slices.
//! * adaLN ops (modulate, gated add): the elementwise parts are f32, one task per fixed block of
//!   token rows; the per-sample reductions over tokens (`dshift`, `dscale`, `dgate`) use
//!   [`batched_column_sums`] (f64 products and chunk sums, combined in chunk order).

use crate::scratch::ScratchPool;
use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::{Activation, ModulateDesc, PatchDesc, TensorOps, TransposeDesc};
use gpstoken_core::shape::check_len;
use rayon::prelude::*;

/// Values per task of the elementwise ops.
pub(crate) const CHUNK: usize = 1 << 14;
/// Rows per chunk of the fixed-order column reductions.
pub(crate) const ROW_CHUNK: usize = 256;
/// Columns per task of the column reductions (the f64 accumulators live on the stack).
const COL_BLOCK: usize = 256;
/// Side of the square tiles of the transpose.
const TILE: usize = 32;

/// `out[c] = Σ_r x[r, c]` for `x [rows, cols]`, in a fixed order whatever the thread count:
/// chunks of [`ROW_CHUNK`] rows are summed in f64 in row order (in parallel over chunks and
/// column blocks), then the chunk sums are added in chunk order in f64 and rounded once.
pub(crate) fn column_sums(scratch: &ScratchPool<f64>, rows: usize, cols: usize, x: &[f32], out: &mut [f32]) {
    debug_assert!(x.len() == rows * cols && out.len() == cols);
    if cols == 0 {
        return;
    }
    let chunks = rows.div_ceil(ROW_CHUNK);
    if chunks <= 1 {
        out.par_chunks_mut(COL_BLOCK).enumerate().for_each(|(blk, o)| {
            let c0 = blk * COL_BLOCK;
            let mut acc = [0.0f64; COL_BLOCK];
            for r in 0..rows {
                let row = &x[r * cols + c0..r * cols + c0 + o.len()];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += f64::from(v);
                }
            }
            for (o, &a) in o.iter_mut().zip(&acc) {
                *o = a as f32;
            }
        });
        return;
    }
    // partials[chunk][c] = that chunk's f64 sum.
    let mut partials = scratch.take(chunks * cols);
    partials.par_chunks_mut(cols).enumerate().for_each(|(chunk, part)| {
        let r0 = chunk * ROW_CHUNK;
        let r1 = (r0 + ROW_CHUNK).min(rows);
        for (blk, p) in part.chunks_mut(COL_BLOCK).enumerate() {
            let c0 = blk * COL_BLOCK;
            let width = p.len();
            let mut acc = [0.0f64; COL_BLOCK];
            for r in r0..r1 {
                let row = &x[r * cols + c0..r * cols + c0 + width];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += f64::from(v);
                }
            }
            p.copy_from_slice(&acc[..width]);
        }
    });
    let partials = &partials;
    out.par_chunks_mut(COL_BLOCK).enumerate().for_each(|(blk, o)| {
        for (k, o) in o.iter_mut().enumerate() {
            let c = blk * COL_BLOCK + k;
            let mut sum = 0.0f64;
            for chunk in 0..chunks {
                sum += partials[chunk * cols + c];
            }
            *o = sum as f32;
        }
    });
}

/// `out[b, c] = Σ_r value((b·rows + r)·cols + c)` for `batch` stacked `[rows, cols]` matrices
/// (`out [batch, cols]`), in a fixed order whatever the thread count: per matrix, chunks of
/// [`ROW_CHUNK`] rows are summed in f64 in row order (one task per (matrix, chunk)), then the
/// chunk sums are added in chunk order in f64 and rounded once. For `batch = 1` and
/// `value = x[i]` this gives the same bits as [`column_sums`]. `rows == 0` gives zeros.
pub(crate) fn batched_column_sums(
    scratch: &ScratchPool<f64>,
    batch: usize,
    rows: usize,
    cols: usize,
    value: impl Fn(usize) -> f64 + Sync,
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), batch * cols);
    if out.is_empty() {
        return;
    }
    if rows == 0 {
        out.fill(0.0);
        return;
    }
    let chunks = rows.div_ceil(ROW_CHUNK);
    // partials[(b·chunks + chunk)·cols + c] = that chunk's f64 sum.
    let mut partials = scratch.take(batch * chunks * cols);
    partials.par_chunks_mut(cols).enumerate().for_each(|(t, part)| {
        let (b, chunk) = (t / chunks, t % chunks);
        let r0 = chunk * ROW_CHUNK;
        let r1 = (r0 + ROW_CHUNK).min(rows);
        for (blk, p) in part.chunks_mut(COL_BLOCK).enumerate() {
            let c0 = blk * COL_BLOCK;
            let width = p.len();
            let mut acc = [0.0f64; COL_BLOCK];
            for r in r0..r1 {
                let base = (b * rows + r) * cols + c0;
                for (k, a) in acc[..width].iter_mut().enumerate() {
                    *a += value(base + k);
                }
            }
            p.copy_from_slice(&acc[..width]);
        }
    });
    let partials = &partials;
    out.par_chunks_mut(cols).enumerate().for_each(|(b, o)| {
        for (c, o) in o.iter_mut().enumerate() {
            let mut sum = 0.0f64;
            for chunk in 0..chunks {
                sum += partials[(b * chunks + chunk) * cols + c];
            }
            *o = sum as f32;
        }
    });
}

/// For every token row of `[batch, tokens, dim]` (row `r` of sample `r / tokens`), in parallel
/// over fixed blocks of rows: `f(out_row, row_index)`.
fn for_token_rows(desc: &ModulateDesc, out: &mut [f32], f: impl Fn(&mut [f32], usize) + Sync) {
    let dim = desc.dim;
    if out.is_empty() {
        return;
    }
    let per = rows_per_task(dim);
    out.par_chunks_mut(dim * per).enumerate().for_each(|(t, block)| {
        for (k, row) in block.chunks_exact_mut(dim).enumerate() {
            f(row, t * per + k);
        }
    });
}

#[cfg(test)]
use fdlibm::erf;
pub(crate) use fdlibm::erfc;

/// `erf`/`erfc` in f64, with fdlibm's coefficients as published (hence more digits than f64 holds).
#[allow(clippy::excessive_precision, clippy::unreadable_literal)]
mod fdlibm {
    // ---------------------------------------------------------------------------------------------
    // erfc: FreeBSD s_erf.c (Sun Microsystems, 1993), via the `libm` crate (MIT/Apache).
    //
    // Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
    // Developed at SunPro, a Sun Microsystems, Inc. business.
    // Permission to use, copy, modify, and distribute this software is freely granted, provided
    // that this notice is preserved.
    // ---------------------------------------------------------------------------------------------

    const ERX: f64 = 8.45062911510467529297e-01;
    const PP0: f64 = 1.28379167095512558561e-01;
    const PP1: f64 = -3.25042107247001499370e-01;
    const PP2: f64 = -2.84817495755985104766e-02;
    const PP3: f64 = -5.77027029648944159157e-03;
    const PP4: f64 = -2.37630166566501626084e-05;
    const QQ1: f64 = 3.97917223959155352819e-01;
    const QQ2: f64 = 6.50222499887672944485e-02;
    const QQ3: f64 = 5.08130628187576562776e-03;
    const QQ4: f64 = 1.32494738004321644526e-04;
    const QQ5: f64 = -3.96022827877536812320e-06;
    const PA0: f64 = -2.36211856075265944077e-03;
    const PA1: f64 = 4.14856118683748331666e-01;
    const PA2: f64 = -3.72207876035701323847e-01;
    const PA3: f64 = 3.18346619901161753674e-01;
    const PA4: f64 = -1.10894694282396677476e-01;
    const PA5: f64 = 3.54783043256182359371e-02;
    const PA6: f64 = -2.16637559486879084300e-03;
    const QA1: f64 = 1.06420880400844228286e-01;
    const QA2: f64 = 5.40397917702171048937e-01;
    const QA3: f64 = 7.18286544141962662868e-02;
    const QA4: f64 = 1.26171219808761642112e-01;
    const QA5: f64 = 1.36370839120290507362e-02;
    const QA6: f64 = 1.19844998467991074170e-02;
    const RA0: f64 = -9.86494403484714822705e-03;
    const RA1: f64 = -6.93858572707181764372e-01;
    const RA2: f64 = -1.05586262253232909814e+01;
    const RA3: f64 = -6.23753324503260060396e+01;
    const RA4: f64 = -1.62396669462573470355e+02;
    const RA5: f64 = -1.84605092906711035994e+02;
    const RA6: f64 = -8.12874355063065934246e+01;
    const RA7: f64 = -9.81432934416914548592e+00;
    const SA1: f64 = 1.96512716674392571292e+01;
    const SA2: f64 = 1.37657754143519042600e+02;
    const SA3: f64 = 4.34565877475229228821e+02;
    const SA4: f64 = 6.45387271733267880336e+02;
    const SA5: f64 = 4.29008140027567833386e+02;
    const SA6: f64 = 1.08635005541779435134e+02;
    const SA7: f64 = 6.57024977031928170135e+00;
    const SA8: f64 = -6.04244152148580987438e-02;
    const RB0: f64 = -9.86494292470009928597e-03;
    const RB1: f64 = -7.99283237680523006574e-01;
    const RB2: f64 = -1.77579549177547519889e+01;
    const RB3: f64 = -1.60636384855821916062e+02;
    const RB4: f64 = -6.37566443368389627722e+02;
    const RB5: f64 = -1.02509513161107724954e+03;
    const RB6: f64 = -4.83519191608651397019e+02;
    const SB1: f64 = 3.03380607434824582924e+01;
    const SB2: f64 = 3.25792512996573918826e+02;
    const SB3: f64 = 1.53672958608443695994e+03;
    const SB4: f64 = 3.19985821950859553908e+03;
    const SB5: f64 = 2.55305040643316442583e+03;
    const SB6: f64 = 4.74528541206955367215e+02;
    const SB7: f64 = -2.24409524465858183362e+01;

    /// `erfc` for `0.84375 <= |x| < 28` (`ix` is the high word of `|x|`).
    fn erfc_tail(ix: u32, x: f64) -> f64 {
        if ix < 0x3ff4_0000 {
            // |x| < 1.25
            let s = x.abs() - 1.0;
            let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
            let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
            return 1.0 - ERX - p / q;
        }
        let x = x.abs();
        let s = 1.0 / (x * x);
        let (r, big_s) = if ix < 0x4006_db6d {
            // |x| < 1/0.35
            (
                RA0 + s * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7)))))),
                1.0 + s * (SA1 + s * (SA2 + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8))))))),
            )
        } else {
            (
                RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6))))),
                1.0 + s * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7)))))),
            )
        };
        let z = f64::from_bits(x.to_bits() & 0xffff_ffff_0000_0000);
        (-z * z - 0.5625).exp() * ((z - x) * (z + x) + r / big_s).exp() / x
    }

    /// The complementary error function `1 - erf(x)` in f64 (fdlibm, error below 1 ulp of f64).
    pub(crate) fn erfc(x: f64) -> f64 {
        let bits = x.to_bits();
        let negative = bits >> 63 != 0;
        let ix = ((bits >> 32) as u32) & 0x7fff_ffff;
        if ix >= 0x7ff0_0000 {
            // erfc(nan) = nan, erfc(+inf) = 0, erfc(-inf) = 2
            return 2.0 * f64::from(u8::from(negative)) + 1.0 / x;
        }
        if ix < 0x3feb_0000 {
            // |x| < 0.84375
            if ix < 0x3c70_0000 {
                return 1.0 - x;
            }
            let z = x * x;
            let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
            let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
            let y = r / s;
            if negative || ix < 0x3fd0_0000 {
                return 1.0 - (x + x * y);
            }
            return 0.5 - (x - 0.5 + x * y);
        }
        if ix < 0x403c_0000 {
            // 0.84375 <= |x| < 28
            let t = erfc_tail(ix, x);
            return if negative { 2.0 - t } else { t };
        }
        if negative {
            2.0
        } else {
            0.0
        }
    }

    /// The error function in f64, `1 - erfc(x)` (`erf(-x) = -erf(x)`); only the tests need it.
    #[cfg(test)]
    pub(super) fn erf(x: f64) -> f64 {
        if x.is_nan() {
            return x;
        }
        if x.abs() < 0.84375 {
            // erfc's small branch is 1 - (x + x y): recover x + x y without the cancellation.
            let z = x * x;
            let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
            let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
            return x + x * (r / s);
        }
        let e = 1.0 - erfc(x.abs());
        if x < 0.0 {
            -e
        } else {
            e
        }
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_TANH_C: f64 = 0.044715;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

#[inline]
fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `f(x)` in f64.
#[inline]
fn act_forward(kind: Activation, x: f64) -> f64 {
    match kind {
        // x Φ(x), Φ(x) = erfc(-x/√2)/2 (no cancellation for negative x).
        Activation::GeluErf => x * 0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2),
        Activation::GeluTanh => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)).tanh()),
        Activation::Silu => x * sigmoid64(x),
        Activation::Sigmoid => sigmoid64(x),
    }
}

/// `f'(x)` in f64.
#[inline]
fn act_derivative(kind: Activation, x: f64) -> f64 {
    match kind {
        Activation::GeluErf => {
            0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2) + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
        }
        Activation::GeluTanh => {
            let t = (SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x * x)
        }
        Activation::Silu => {
            let s = sigmoid64(x);
            s * (1.0 + x * (1.0 - s))
        }
        Activation::Sigmoid => {
            let s = sigmoid64(x);
            s * (1.0 - s)
        }
    }
}

/// Applies `f` to every value in parallel over fixed chunks.
fn map_into(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = f(x);
        }
    });
}

/// Applies `f` to every pair in parallel over fixed chunks.
fn zip_into(a: &[f32], b: &[f32], y: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    y.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((y, a), b)| {
        for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
            *y = f(a, b);
        }
    });
}

/// Updates every value of `y` from the matching value of `x`.
fn update_with(y: &mut [f32], x: &[f32], f: impl Fn(&mut f32, f32) + Sync) {
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
        for (y, &x) in y.iter_mut().zip(x) {
            f(y, x);
        }
    });
}

/// Rows per task of the row-wise copies, so that a task moves at least about [`CHUNK`] values.
fn rows_per_task(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

impl TensorOps for CpuBackend {
    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<(), CpuError> {
        check_len("copy destination", src.len(), dst.len())?;
        self.install(|| update_with(dst, src, |d, s| *d = s));
        Ok(())
    }

    fn fill(&self, dst: &mut Vec<f32>, value: f32) -> Result<(), CpuError> {
        self.install(|| dst.par_chunks_mut(CHUNK).for_each(|d| d.fill(value)));
        Ok(())
    }

    fn scale(&self, x: &mut Vec<f32>, alpha: f32) -> Result<(), CpuError> {
        self.install(|| {
            x.par_chunks_mut(CHUNK).for_each(|x| {
                for v in x {
                    *v *= alpha;
                }
            })
        });
        Ok(())
    }

    fn add(&self, a: &Vec<f32>, b: &Vec<f32>, out: &mut Vec<f32>) -> Result<(), CpuError> {
        check_len("add second operand", a.len(), b.len())?;
        check_len("add output", a.len(), out.len())?;
        self.install(|| zip_into(a, b, out, |a, b| a + b));
        Ok(())
    }

    fn add_assign(&self, dst: &mut Vec<f32>, src: &Vec<f32>) -> Result<(), CpuError> {
        check_len("add_assign source", dst.len(), src.len())?;
        self.install(|| update_with(dst, src, |d, s| *d += s));
        Ok(())
    }

    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<(), CpuError> {
        check_len("axpy y", x.len(), y.len())?;
        self.install(|| update_with(y, x, |y, x| *y += alpha * x));
        Ok(())
    }

    fn add_row_broadcast(&self, rows: usize, cols: usize, x: &mut Vec<f32>, row: &Vec<f32>) -> Result<(), CpuError> {
        check_len("broadcast target", rows * cols, x.len())?;
        check_len("broadcast row", cols, row.len())?;
        if cols == 0 {
            return Ok(());
        }
        self.install(|| {
            x.par_chunks_mut(cols * rows_per_task(cols)).for_each(|x| {
                for x in x.chunks_exact_mut(cols) {
                    for (x, &r) in x.iter_mut().zip(row.iter()) {
                        *x += r;
                    }
                }
            })
        });
        Ok(())
    }

    fn sum_rows(&self, rows: usize, cols: usize, x: &Vec<f32>, out: &mut Vec<f32>) -> Result<(), CpuError> {
        check_len("sum_rows input", rows * cols, x.len())?;
        check_len("sum_rows output", cols, out.len())?;
        self.install(|| column_sums(&self.scratch64, rows, cols, x, out));
        Ok(())
    }

    fn activation_forward(&self, kind: Activation, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<(), CpuError> {
        check_len("activation output", x.len(), y.len())?;
        self.install(|| map_into(x, y, |x| act_forward(kind, f64::from(x)) as f32));
        Ok(())
    }

    fn activation_backward(
        &self,
        kind: Activation,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        check_len("activation dy", x.len(), dy.len())?;
        check_len("activation dx", x.len(), dx.len())?;
        self.install(|| zip_into(x, dy, dx, |x, dy| (act_derivative(kind, f64::from(x)) * f64::from(dy)) as f32));
        Ok(())
    }

    fn transpose(&self, desc: &TransposeDesc, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<(), CpuError> {
        desc.check(x.len(), y.len())?;
        if desc.is_empty() {
            return Ok(());
        }
        let (rows, cols) = (desc.rows, desc.cols);
        self.install(|| {
            // A task: TILE output rows (input columns) of one matrix, visited in TILE x TILE tiles.
            y.par_chunks_mut(rows * cols).zip(x.par_chunks(rows * cols)).for_each(|(y, x)| {
                y.par_chunks_mut(TILE * rows).enumerate().for_each(|(t, y)| {
                    let c0 = t * TILE;
                    let nc = y.len() / rows;
                    for r0 in (0..rows).step_by(TILE) {
                        let r1 = (r0 + TILE).min(rows);
                        for c in 0..nc {
                            let out = &mut y[c * rows + r0..c * rows + r1];
                            for (k, o) in out.iter_mut().enumerate() {
                                *o = x[(r0 + k) * cols + c0 + c];
                            }
                        }
                    }
                })
            })
        });
        Ok(())
    }

    fn concat_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        a: &Vec<f32>,
        b: &Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        check_len("concat first input", rows * a_cols, a.len())?;
        check_len("concat second input", rows * b_cols, b.len())?;
        check_len("concat output", rows * (a_cols + b_cols), out.len())?;
        let width = a_cols + b_cols;
        if out.is_empty() {
            return Ok(());
        }
        let per = rows_per_task(width);
        self.install(|| {
            out.par_chunks_mut(width * per).enumerate().for_each(|(t, out)| {
                for (k, o) in out.chunks_exact_mut(width).enumerate() {
                    let r = t * per + k;
                    o[..a_cols].copy_from_slice(&a[r * a_cols..(r + 1) * a_cols]);
                    o[a_cols..].copy_from_slice(&b[r * b_cols..(r + 1) * b_cols]);
                }
            })
        });
        Ok(())
    }

    fn split_cols(
        &self,
        rows: usize,
        a_cols: usize,
        b_cols: usize,
        x: &Vec<f32>,
        a: &mut Vec<f32>,
        b: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        check_len("split input", rows * (a_cols + b_cols), x.len())?;
        check_len("split first output", rows * a_cols, a.len())?;
        check_len("split second output", rows * b_cols, b.len())?;
        let width = a_cols + b_cols;
        if x.is_empty() {
            return Ok(());
        }
        let per = rows_per_task(width);
        self.install(|| {
            rayon::join(
                || {
                    if a_cols > 0 {
                        a.par_chunks_mut(a_cols * per).enumerate().for_each(|(t, a)| {
                            for (k, a) in a.chunks_exact_mut(a_cols).enumerate() {
                                let r = t * per + k;
                                a.copy_from_slice(&x[r * width..r * width + a_cols]);
                            }
                        })
                    }
                },
                || {
                    if b_cols > 0 {
                        b.par_chunks_mut(b_cols * per).enumerate().for_each(|(t, b)| {
                            for (k, b) in b.chunks_exact_mut(b_cols).enumerate() {
                                let r = t * per + k;
                                b.copy_from_slice(&x[r * width + a_cols..(r + 1) * width]);
                            }
                        })
                    }
                },
            )
        });
        Ok(())
    }

    fn patchify(&self, desc: &PatchDesc, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<(), CpuError> {
        desc.check(x.len(), y.len())?;
        if desc.is_empty() {
            return Ok(());
        }
        let (np, th, tw, c) = (desc.patches, desc.tile_height, desc.tile_width, desc.channels);
        let (h, w) = (np * th, np * tw);
        self.install(|| {
            // One task per tile: y[t] = x[b, :, i*th.., j*tw..], t = b*np² + i*np + j.
            y.par_chunks_mut(c * th * tw).enumerate().for_each(|(t, tile)| {
                let (b, i, j) = (t / (np * np), (t / np) % np, t % np);
                for (ch, plane) in tile.chunks_exact_mut(th * tw).enumerate() {
                    let src = &x[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                    for (r, row) in plane.chunks_exact_mut(tw).enumerate() {
                        let at = (i * th + r) * w + j * tw;
                        row.copy_from_slice(&src[at..at + tw]);
                    }
                }
            })
        });
        Ok(())
    }

    fn unpatchify(&self, desc: &PatchDesc, y: &Vec<f32>, x: &mut Vec<f32>) -> Result<(), CpuError> {
        desc.check(x.len(), y.len())?;
        if desc.is_empty() {
            return Ok(());
        }
        let (np, th, tw, c) = (desc.patches, desc.tile_height, desc.tile_width, desc.channels);
        let (h, w) = (np * th, np * tw);
        self.install(|| {
            // One task per (image, channel) plane, gathered from the np² tiles.
            x.par_chunks_mut(h * w).enumerate().for_each(|(plane, dst)| {
                let (b, ch) = (plane / c, plane % c);
                for (row, out) in dst.chunks_exact_mut(w).enumerate() {
                    let (i, r) = (row / th, row % th);
                    for (j, seg) in out.chunks_exact_mut(tw).enumerate() {
                        let t = b * np * np + i * np + j;
                        let at = ((t * c + ch) * th + r) * tw;
                        seg.copy_from_slice(&y[at..at + tw]);
                    }
                }
            })
        });
        Ok(())
    }

    fn modulate_forward(
        &self,
        desc: &ModulateDesc,
        x: &Vec<f32>,
        shift: &Vec<f32>,
        scale: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        desc.check(
            &[("modulate input", x.len()), ("modulate output", y.len())],
            &[("modulate shift", shift.len()), ("modulate scale", scale.len())],
        )?;
        let (n, d) = (desc.tokens, desc.dim);
        self.install(|| {
            for_token_rows(desc, y, |y, r| {
                let b = r / n;
                let (xr, sh, sc) = (&x[r * d..(r + 1) * d], &shift[b * d..(b + 1) * d], &scale[b * d..(b + 1) * d]);
                for (((y, &x), &sh), &sc) in y.iter_mut().zip(xr).zip(sh).zip(sc) {
                    *y = x * (1.0 + sc) + sh;
                }
            })
        });
        Ok(())
    }

    fn modulate_backward(
        &self,
        desc: &ModulateDesc,
        x: &Vec<f32>,
        scale: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        dshift: &mut Vec<f32>,
        dscale: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        desc.check(
            &[("modulate input", x.len()), ("modulate dy", dy.len()), ("modulate dx", dx.len())],
            &[("modulate scale", scale.len()), ("modulate dshift", dshift.len()), ("modulate dscale", dscale.len())],
        )?;
        let (n, d) = (desc.tokens, desc.dim);
        self.install(|| {
            for_token_rows(desc, dx, |dx, r| {
                let b = r / n;
                for ((dx, &g), &sc) in dx.iter_mut().zip(&dy[r * d..(r + 1) * d]).zip(&scale[b * d..(b + 1) * d]) {
                    *dx = g * (1.0 + sc);
                }
            });
            batched_column_sums(&self.scratch64, desc.batch, n, d, |i| f64::from(dy[i]), dshift);
            batched_column_sums(&self.scratch64, desc.batch, n, d, |i| f64::from(dy[i]) * f64::from(x[i]), dscale);
        });
        Ok(())
    }

    fn gated_add_forward(
        &self,
        desc: &ModulateDesc,
        gate: &Vec<f32>,
        f: &Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        desc.check(
            &[("gated_add branch", f.len()), ("gated_add output", out.len())],
            &[("gated_add gate", gate.len())],
        )?;
        let (n, d) = (desc.tokens, desc.dim);
        self.install(|| {
            for_token_rows(desc, out, |o, r| {
                let b = r / n;
                for ((o, &v), &g) in o.iter_mut().zip(&f[r * d..(r + 1) * d]).zip(&gate[b * d..(b + 1) * d]) {
                    *o += g * v;
                }
            })
        });
        Ok(())
    }

    fn gated_add_backward(
        &self,
        desc: &ModulateDesc,
        gate: &Vec<f32>,
        f: &Vec<f32>,
        dout: &Vec<f32>,
        dgate: &mut Vec<f32>,
        df: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        desc.check(
            &[("gated_add branch", f.len()), ("gated_add dout", dout.len()), ("gated_add df", df.len())],
            &[("gated_add gate", gate.len()), ("gated_add dgate", dgate.len())],
        )?;
        let (n, d) = (desc.tokens, desc.dim);
        self.install(|| {
            for_token_rows(desc, df, |df, r| {
                let b = r / n;
                for ((df, &g), &gt) in df.iter_mut().zip(&dout[r * d..(r + 1) * d]).zip(&gate[b * d..(b + 1) * d]) {
                    *df = g * gt;
                }
            });
            batched_column_sums(&self.scratch64, desc.batch, n, d, |i| f64::from(dout[i]) * f64::from(f[i]), dgate);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::excessive_precision)]
    fn erf_matches_known_values() {
        // Reference values (Abramowitz & Stegun / mpmath, 16 digits).
        let known = [
            (0.0, 0.0),
            (1e-10, 1.128_379_167_095_512_6e-10),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (0.9, 0.796_908_212_422_832_1),
            (1.0, 0.842_700_792_949_714_9),
            (1.5, 0.966_105_146_475_310_7),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
        ];
        for (x, want) in known {
            for (x, want) in [(x, want), (-x, -want)] {
                let got = erf(x);
                assert!((got - want).abs() <= 1e-15 * want.abs().max(1e-300), "erf({x}) = {got}, want {want}");
            }
        }
        // Tails: erfc(3) = 2.209049699858544e-05, erfc(5) = 1.537459794428035e-12, erfc(-1) = 1 + erf(1).
        for (x, want) in
            [(3.0, 2.209_049_699_858_544e-5), (5.0, 1.537_459_794_428_035e-12), (-1.0, 1.842_700_792_949_715)]
        {
            let got = erfc(x);
            assert!(((got - want) / want).abs() < 1e-14, "erfc({x}) = {got}, want {want}");
        }
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
        assert_eq!(erfc(40.0), 0.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn batched_column_sums_matches_column_sums() {
        let pool = ScratchPool::<f64>::default();
        for (rows, cols) in [(3, 5), (700, 7), (1030, 260), (0, 4)] {
            let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
            let (mut a, mut b) = (vec![f32::NAN; cols], vec![f32::NAN; cols]);
            column_sums(&pool, rows, cols, &x, &mut a);
            batched_column_sums(&pool, 1, rows, cols, |i| f64::from(x[i]), &mut b);
            assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()), "{rows}x{cols}");
            // Two stacked copies: each half is the same sum.
            let x2: Vec<f32> = x.iter().chain(&x).copied().collect();
            let mut c = vec![f32::NAN; 2 * cols];
            batched_column_sums(&pool, 2, rows, cols, |i| f64::from(x2[i]), &mut c);
            assert!(c[..cols]
                .iter()
                .chain(&c[cols..])
                .zip(b.iter().chain(&b))
                .all(|(c, b)| c.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn gelu_derivative_matches_finite_differences() {
        for kind in [Activation::GeluErf, Activation::GeluTanh, Activation::Silu, Activation::Sigmoid] {
            for i in -80..=80 {
                let x = f64::from(i) * 0.1 + 0.0123;
                let h = 1e-5;
                let fd = (act_forward(kind, x + h) - act_forward(kind, x - h)) / (2.0 * h);
                let d = act_derivative(kind, x);
                assert!((fd - d).abs() < 1e-9, "{kind:?} at {x}: {d} vs finite difference {fd}");
            }
        }
    }
}
