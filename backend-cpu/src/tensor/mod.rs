//! `TensorOps` on the CPU: elementwise ops, activations and layout changes.
//!
//! * Elementwise ops run over fixed chunks of [`CHUNK`] values; every output value depends on
//!   its inputs only, so the split cannot change a bit.
//! * Activations are evaluated in f64 and rounded once to f32 (so within half an ulp of the
//!   exact function, up to the f64 evaluation error). `GeluErf` uses `libm::erfc` (FreeBSD's `s_erf.c`),
//!   accurate to about 1 ulp of f64. SiLU and sigmoid take `e^-x` from a 16-lane `libm::expf`
//!   (within an ulp of f32) and do the rest in f64.
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

mod activation;
mod reduce;

use activation::{act_derivative, act_forward, is_sigmoid_family, sigmoid_family_backward, sigmoid_family_forward};
use reduce::for_token_rows;
pub(crate) use reduce::{batched_column_sums, column_sums};

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
        if is_sigmoid_family(kind) {
            let silu = kind == Activation::Silu;
            self.install(|| {
                y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| sigmoid_family_forward(silu, x, y))
            });
            return Ok(());
        }
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
        if is_sigmoid_family(kind) {
            let silu = kind == Activation::Silu;
            self.install(|| {
                dx.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .zip(dy.par_chunks(CHUNK))
                    .for_each(|((dx, x), dy)| sigmoid_family_backward(silu, x, dy, dx))
            });
            return Ok(());
        }
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
