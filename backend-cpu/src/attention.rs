//! `AttentionOps` on the CPU: scaled dot-product attention with `matrixmultiply::sgemm` (f32,
//! single-threaded inside each rayon task).
//!
//! * Forward: one task per (image, head, block of [`ROW_BLOCK`] query rows): `S = scale Q Kᵀ`
//!   written straight into the saved probabilities, a softmax per row (max subtracted, f32 `exp`,
//!   the row sum in f64), then `O = P V` written into the head's columns of `out`.
//! * Backward, for a group of (image, head) pairs whose `dS` fits in [`DS_CAP`] values:
//!   phase 1, one task per (pair, query block): `dP = dO Vᵀ`, `dS = P ⊙ (dP - rowsum(dP ⊙ P))`
//!   (kept in scratch), `dQ = scale dS K`; phase 2, one task per (pair, block of [`KEY_BLOCK`]
//!   keys): `dK = scale dSᵀ Q` and `dV = Pᵀ dO` over the full query range. Every output value is
//!   produced by exactly one sgemm call whose shape does not depend on the thread count, so the
//!   results are bit-identical for any number of threads.
//!
//! The tasks write disjoint column blocks of the `[B, L, H*D]` outputs through raw pointers
//! (sgemm takes raw pointers anyway).

use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::{AttentionDesc, AttentionOps};
use gpstoken_core::shape::check_len;
use rayon::prelude::*;

/// Query rows per task.
const ROW_BLOCK: usize = 64;
/// Keys per task in the `dK`/`dV` phase.
const KEY_BLOCK: usize = 64;
/// Most `dS` values the backward keeps at once (64 MiB): the (image, head) pairs are processed
/// in groups of `max(1, DS_CAP / (Lq Lk))`, a size that depends on the shape only.
const DS_CAP: usize = 1 << 24;

/// A raw output pointer shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: the tasks holding a `SendPtr` write disjoint regions of a buffer that the op borrows
// mutably for its whole duration, and nobody reads those regions meanwhile.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer. (A method, so that closures capture the whole `SendPtr`, not its field.)
    fn get(self) -> *mut f32 {
        self.0
    }
}

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
    /// Offset of `[b, row, h*D]` in a `[B, L, H*D]` tensor of `len` rows per image.
    fn offset(&self, pair: usize, rows: usize, row: usize) -> usize {
        let (b, h) = (pair / self.heads, pair % self.heads);
        (b * rows + row) * self.hd + h * self.d
    }
}

/// `C (m x n) = alpha A (m x k) B (k x n)`, overwriting C.
///
/// # Safety
/// The pointers with their strides must address valid matrices, and `c` must not overlap `a`
/// or `b` nor be written by anyone else during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    a: *const f32,
    (rsa, csa): (usize, usize),
    b: *const f32,
    (rsb, csb): (usize, usize),
    c: *mut f32,
    rsc: usize,
) {
    matrixmultiply::sgemm(
        m,
        k,
        n,
        alpha,
        a,
        rsa as isize,
        csa as isize,
        b,
        rsb as isize,
        csb as isize,
        0.0,
        c,
        rsc as isize,
        1,
    )
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

impl AttentionOps for CpuBackend {
    fn attention_forward(
        &self,
        desc: &AttentionDesc,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
        probs: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        desc.check(q.len(), k.len(), v.len(), out.len(), probs.len())?;
        if probs.is_empty() {
            // No image, head or query: `out` is empty too.
            return Ok(());
        }
        let g = Geom::new(desc);
        let out_ptr = SendPtr(out.as_mut_ptr());
        self.install(|| {
            probs.par_chunks_mut(g.lq * g.lk).enumerate().for_each(|(pair, p)| {
                p.par_chunks_mut(ROW_BLOCK * g.lk).enumerate().for_each(|(block, s)| {
                    let (i0, rows) = (block * ROW_BLOCK, s.len() / g.lk);
                    // SAFETY: every matrix lies inside its buffer (lengths checked above); `s` is
                    // this task's own slice and the output block (rows i0.., columns of head h)
                    // is written by this task only.
                    unsafe {
                        gemm(
                            (rows, g.d, g.lk),
                            g.scale,
                            q.as_ptr().add(g.offset(pair, g.lq, i0)),
                            (g.hd, 1),
                            k.as_ptr().add(g.offset(pair, g.lk, 0)),
                            (1, g.hd),
                            s.as_mut_ptr(),
                            g.lk,
                        );
                    }
                    s.chunks_mut(g.lk).for_each(softmax_row);
                    unsafe {
                        gemm(
                            (rows, g.lk, g.d),
                            1.0,
                            s.as_ptr(),
                            (g.lk, 1),
                            v.as_ptr().add(g.offset(pair, g.lk, 0)),
                            (g.hd, 1),
                            out_ptr.get().add(g.offset(pair, g.lq, i0)),
                            g.hd,
                        );
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
        desc.check(q.len(), k.len(), v.len(), dout.len(), probs.len())?;
        check_len("attention dq", desc.q_len(), dq.len())?;
        check_len("attention dk", desc.kv_len(), dk.len())?;
        check_len("attention dv", desc.kv_len(), dv.len())?;
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
        let (dq_ptr, dk_ptr, dv_ptr) = (SendPtr(dq.as_mut_ptr()), SendPtr(dk.as_mut_ptr()), SendPtr(dv.as_mut_ptr()));
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
                        // SAFETY: as in the forward; the dQ block is this task's own.
                        unsafe {
                            gemm(
                                (rows, g.d, g.lk),
                                1.0,
                                dout.as_ptr().add(g.offset(pair, g.lq, i0)),
                                (g.hd, 1),
                                v.as_ptr().add(g.offset(pair, g.lk, 0)),
                                (1, g.hd),
                                s.as_mut_ptr(),
                                g.lk,
                            );
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
                        unsafe {
                            gemm(
                                (rows, g.lk, g.d),
                                g.scale,
                                s.as_ptr(),
                                (g.lk, 1),
                                k.as_ptr().add(g.offset(pair, g.lk, 0)),
                                (g.hd, 1),
                                dq_ptr.get().add(g.offset(pair, g.lq, i0)),
                                g.hd,
                            );
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
                    // SAFETY: dSᵀ and Pᵀ column blocks are read through (1, lk) strides inside
                    // their slices; the dK/dV blocks (keys j0.., columns of head h) are this
                    // task's own.
                    unsafe {
                        gemm(
                            (cols, g.lq, g.d),
                            g.scale,
                            ds.as_ptr().add(j0),
                            (1, g.lk),
                            q.as_ptr().add(g.offset(pair, g.lq, 0)),
                            (g.hd, 1),
                            dk_ptr.get().add(g.offset(pair, g.lk, j0)),
                            g.hd,
                        );
                        gemm(
                            (cols, g.lq, g.d),
                            1.0,
                            p.as_ptr().add(j0),
                            (1, g.lk),
                            dout.as_ptr().add(g.offset(pair, g.lq, 0)),
                            (g.hd, 1),
                            dv_ptr.get().add(g.offset(pair, g.lk, j0)),
                            g.hd,
                        );
                    }
                });
            }
        });
        Ok(())
    }
}
