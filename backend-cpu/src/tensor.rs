//! `TensorOps` on the CPU: elementwise ops, activations and layout changes.
//!
//! * Elementwise ops run over fixed chunks of [`CHUNK`] values; every output value depends on
//!   its inputs only, so the split cannot change a bit.
//! * Activations are evaluated in f64 and rounded once to f32 (so within half an ulp of the
//!   exact function, up to the f64 evaluation error). `GeluErf` uses `libm::erfc` (FreeBSD's `s_erf.c`),
//!   accurate to about 1 ulp of f64.
//! * [`TensorOps::sum_rows`] is a fixed-order reduction: rows are cut into chunks of
//!   [`ROW_CHUNK`] rows, each chunk summed in f64 in row order, then the chunk sums are added in
//!   chunk order (see [`column_sums`]).
//! * Layout changes are pure copies, parallel over disjoint output slices.
//! * adaLN ops (modulate, gated add): the elementwise parts are f32, one task per fixed block of
//!   token rows; the per-sample reductions over tokens (`dshift`, `dscale`, `dgate`) use
//!   [`batched_column_sums`] (f64 products and chunk sums, combined in chunk order).

use crate::scratch::ScratchPool;
use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::TensorKernels;
use gpstoken_core::backend::{Activation, ModulateDesc, PatchDesc, TransposeDesc};
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

use libm::erfc;

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
        // The product of two f32 values is exact in f64: rounding it once gives PyTorch's f32 bits.
        Activation::LeakyRelu02 => {
            if x > 0.0 {
                x
            } else {
                f64::from(Activation::LEAKY_SLOPE) * x
            }
        }
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
        Activation::LeakyRelu02 => {
            if x > 0.0 {
                1.0
            } else {
                f64::from(Activation::LEAKY_SLOPE)
            }
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

impl TensorKernels for CpuBackend {
    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<(), CpuError> {
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
        self.install(|| zip_into(a, b, out, |a, b| a + b));
        Ok(())
    }

    fn add_assign(&self, dst: &mut Vec<f32>, src: &Vec<f32>) -> Result<(), CpuError> {
        self.install(|| update_with(dst, src, |d, s| *d += s));
        Ok(())
    }

    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<(), CpuError> {
        self.install(|| update_with(y, x, |y, x| *y += alpha * x));
        Ok(())
    }

    fn add_row_broadcast(&self, _rows: usize, cols: usize, x: &mut Vec<f32>, row: &Vec<f32>) -> Result<(), CpuError> {
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
        self.install(|| column_sums(&self.scratch64, rows, cols, x, out));
        Ok(())
    }

    fn activation_forward(&self, kind: Activation, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<(), CpuError> {
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
        self.install(|| zip_into(x, dy, dx, |x, dy| (act_derivative(kind, f64::from(x)) * f64::from(dy)) as f32));
        Ok(())
    }

    fn transpose(&self, desc: &TransposeDesc, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<(), CpuError> {
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
        _rows: usize,
        a_cols: usize,
        b_cols: usize,
        a: &Vec<f32>,
        b: &Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
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
        _rows: usize,
        a_cols: usize,
        b_cols: usize,
        x: &Vec<f32>,
        a: &mut Vec<f32>,
        b: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
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
        for kind in
            [Activation::GeluErf, Activation::GeluTanh, Activation::Silu, Activation::Sigmoid, Activation::LeakyRelu02]
        {
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
