//! Fixed-order column reductions (the order never depends on the thread count) and the
//! per-token-row split of the adaLN ops.

use super::*;

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
pub(super) fn for_token_rows(desc: &ModulateDesc, out: &mut [f32], f: impl Fn(&mut [f32], usize) + Sync) {
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
