//! `AttentionOps` on the CPU: scaled dot-product attention with [`crate::gemm::gemm`] (f32
//! GEMM, single-threaded inside each rayon task).
//!
//! * Forward: one task per (image, head, block of [`ROW_BLOCK`] query rows): `S = scale Q Kᵀ`
//!   written straight into the saved probabilities, a softmax per row (max subtracted, f32 `exp`,
//!   the row sum in f64), then `O = P V` written into the head's columns of `out`.
//! * Backward, for a group of (image, head) pairs whose `dS` fits in [`DS_CAP`] values:
//!   phase 1, one task per (pair, query block): `dP = dO Vᵀ`, `dS = P ⊙ (dP - rowsum(dP ⊙ P))`
//!   (kept in scratch), `dQ = scale dS K`; phase 2, one task per (pair, block of [`KEY_BLOCK`]
//!   keys): `dK = scale dSᵀ Q` and `dV = Pᵀ dO` over the full query range. Every output value is
//!   produced by exactly one GEMM call whose shape does not depend on the thread count, so the
//!   results are bit-identical for any number of threads.
//!
//! The tasks write disjoint blocks (rows of one head's columns) of the `[B, L, H*D]` outputs
//! through [`OutPtr`]s (see [`crate::gemm`]).

use crate::gemm::{gemm, Mat, OutPtr};
use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::AttentionKernels;
use gpstoken_core::backend::AttentionDesc;
use rayon::prelude::*;

/// Query rows per task.
const ROW_BLOCK: usize = 64;
/// Keys per task in the `dK`/`dV` phase.
const KEY_BLOCK: usize = 64;
/// Most `dS` values the backward keeps at once (64 MiB): the (image, head) pairs are processed
/// in groups of `max(1, DS_CAP / (Lq Lk))`, a size that depends on the shape only.
const DS_CAP: usize = 1 << 24;

/// Geometry shared by the forward and the backward.
#[derive(Clone, Copy)]
struct Geom {
    heads: usize,
    lq: usize,
    lk: usize,
    d: usize,
    /// `H * D`: the row stride of q, k, v and the outputs.
    hd: usize,
    scale: f32,
}

impl Geom {
    fn new(desc: &AttentionDesc) -> Geom {
        Geom {
            heads: desc.heads,
            lq: desc.seq_q,
            lk: desc.seq_k,
            d: desc.head_dim,
            hd: desc.heads * desc.head_dim,
            scale: desc.scale,
        }
    }
    /// Offset of `[b, row, h*D]` in a `[B, L, H*D]` tensor of `rows` rows per image.
    fn offset(&self, pair: usize, rows: usize, row: usize) -> usize {
        let (b, h) = (pair / self.heads, pair % self.heads);
        (b * rows + row) * self.hd + h * self.d
    }
    /// Head `pair % H` of image `pair / H` of a `[B, L, H*D]` tensor (`L = rows`), from row
    /// `row` on, as a `[.., D]` matrix.
    fn head<'a>(&self, data: &'a [f32], pair: usize, rows: usize, row: usize) -> Mat<'a> {
        Mat::rows(data, self.offset(pair, rows, row), self.hd)
    }
    /// The transpose of [`Geom::head`]: a `[D, ..]` matrix.
    fn head_t<'a>(&self, data: &'a [f32], pair: usize, rows: usize, row: usize) -> Mat<'a> {
        Mat::cols(data, self.offset(pair, rows, row), self.hd)
    }
}

/// In-place softmax of one row: `exp(s - max) / sum`, the sum in f64.
fn softmax_row(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f64;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

impl AttentionKernels for CpuBackend {
    fn attention_forward(
        &self,
        desc: &AttentionDesc,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
        probs: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        if probs.is_empty() {
            // No image, head or query: `out` is empty too.
            return Ok(());
        }
        let g = Geom::new(desc);
        let out_ptr = OutPtr::new(out);
        self.install(|| {
            probs.par_chunks_mut(g.lq * g.lk).enumerate().for_each(|(pair, p)| {
                p.par_chunks_mut(ROW_BLOCK * g.lk).enumerate().for_each(|(block, s)| {
                    let (i0, rows) = (block * ROW_BLOCK, s.len() / g.lk);
                    // S [rows, Lk] = scale Q[i0..] Kᵀ, into this task's own slice `s`.
                    // SAFETY: `s` is this task's own chunk of `probs`, which `q` and `k` do not alias.
                    unsafe {
                        let (qm, km) = (g.head(q, pair, g.lq, i0), g.head_t(k, pair, g.lk, 0));
                        gemm(rows, g.d, g.lk, g.scale, qm, km, 0.0, OutPtr::new(s), 0, g.lk, 1);
                    }
                    s.chunks_mut(g.lk).for_each(softmax_row);
                    // O[i0.., head h] = P V.
                    // SAFETY: the output block (rows i0..i0+rows of image b, columns of head h) is
                    // written by this task only; `out` is exclusively borrowed by this op.
                    unsafe {
                        let (pm, vm) = (Mat::rows(s, 0, g.lk), g.head(v, pair, g.lk, 0));
                        gemm(rows, g.lk, g.d, 1.0, pm, vm, 0.0, out_ptr, g.offset(pair, g.lq, i0), g.hd, 1);
                    }
                });
            });
        });
        Ok(())
    }

    fn attention_backward(
        &self,
        desc: &AttentionDesc,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        probs: &Vec<f32>,
        dout: &Vec<f32>,
        dq: &mut Vec<f32>,
        dk: &mut Vec<f32>,
        dv: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let g = Geom::new(desc);
        if probs.is_empty() || g.d == 0 {
            // No query (or no channel): every gradient is zero (or empty).
            dq.fill(0.0);
            dk.fill(0.0);
            dv.fill(0.0);
            return Ok(());
        }
        let per_pair = g.lq * g.lk;
        let pairs = probs.len() / per_pair;
        let group = (DS_CAP / per_pair).clamp(1, pairs);
        let (dq_ptr, dk_ptr, dv_ptr) = (OutPtr::new(dq), OutPtr::new(dk), OutPtr::new(dv));
        let mut ds_buf = self.scratch.take(group * per_pair);
        self.install(|| {
            for p0 in (0..pairs).step_by(group) {
                let p1 = (p0 + group).min(pairs);
                let ds_all = &mut ds_buf[..(p1 - p0) * per_pair];
                // Phase 1: dS and dQ, per (pair, query block).
                ds_all.par_chunks_mut(per_pair).enumerate().for_each(|(pi, ds)| {
                    let pair = p0 + pi;
                    let p = &probs[pair * per_pair..(pair + 1) * per_pair];
                    ds.par_chunks_mut(ROW_BLOCK * g.lk).enumerate().for_each(|(block, s)| {
                        let (i0, rows) = (block * ROW_BLOCK, s.len() / g.lk);
                        // dP [rows, Lk] = dO[i0..] Vᵀ, into this task's own slice `s`.
                        // SAFETY: `s` is this task's own chunk of the `dS` scratch.
                        unsafe {
                            let (dom, vm) = (g.head(dout, pair, g.lq, i0), g.head_t(v, pair, g.lk, 0));
                            gemm(rows, g.d, g.lk, 1.0, dom, vm, 0.0, OutPtr::new(s), 0, g.lk, 1);
                        }
                        for (r, s_row) in s.chunks_mut(g.lk).enumerate() {
                            let p_row = &p[(i0 + r) * g.lk..(i0 + r + 1) * g.lk];
                            let dot = p_row
                                .iter()
                                .zip(s_row.iter())
                                .fold(0.0f64, |acc, (&pv, &dp)| acc + f64::from(pv) * f64::from(dp))
                                as f32;
                            for (dsv, &pv) in s_row.iter_mut().zip(p_row) {
                                *dsv = pv * (*dsv - dot);
                            }
                        }
                        // dQ[i0.., head h] = scale dS K.
                        // SAFETY: the dQ block (rows i0.. of image b, columns of head h) is written
                        // by this task only; `dq` is exclusively borrowed by this op.
                        unsafe {
                            let (dsm, km) = (Mat::rows(s, 0, g.lk), g.head(k, pair, g.lk, 0));
                            gemm(rows, g.lk, g.d, g.scale, dsm, km, 0.0, dq_ptr, g.offset(pair, g.lq, i0), g.hd, 1);
                        }
                    });
                });
                // Phase 2: dK and dV, per (pair, key block), over every query row.
                let ds_all = &*ds_all;
                let key_blocks = g.lk.div_ceil(KEY_BLOCK);
                (0..(p1 - p0) * key_blocks).into_par_iter().for_each(|task| {
                    let (pi, block) = (task / key_blocks, task % key_blocks);
                    let pair = p0 + pi;
                    let j0 = block * KEY_BLOCK;
                    let cols = KEY_BLOCK.min(g.lk - j0);
                    let ds = &ds_all[pi * per_pair..(pi + 1) * per_pair];
                    let p = &probs[pair * per_pair..(pair + 1) * per_pair];
                    // dK[j0..] = scale dSᵀ Q and dV[j0..] = Pᵀ dO, the transposed column blocks
                    // of dS and P read through (1, Lk) strides.
                    // SAFETY: the dK/dV blocks (keys j0..j0+cols of image b, columns of head h)
                    // are written by this task only; `dk`, `dv` are exclusively borrowed by this op.
                    unsafe {
                        let (dst, qm) = (Mat::cols(ds, j0, g.lk), g.head(q, pair, g.lq, 0));
                        gemm(cols, g.lq, g.d, g.scale, dst, qm, 0.0, dk_ptr, g.offset(pair, g.lk, j0), g.hd, 1);
                        let (pt, dom) = (Mat::cols(p, j0, g.lk), g.head(dout, pair, g.lq, 0));
                        gemm(cols, g.lq, g.d, 1.0, pt, dom, 0.0, dv_ptr, g.offset(pair, g.lk, j0), g.hd, 1);
                    }
                });
            }
        });
        Ok(())
    }
}
