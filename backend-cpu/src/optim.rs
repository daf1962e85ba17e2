//! `OptimOps` on the CPU: elementwise, parallel over fixed chunks (no reduction, so the thread
//! count cannot change a bit).
//!
//! Adam follows PyTorch's single-tensor `torch.optim.Adam` (the default on CPU) op by op in f32:
//! ```text
//! g  = grad + wd·p                         (only when wd != 0)
//! m  = lerp(m, g, 1-b1)                    (PyTorch >= 1.13: exp_avg.lerp_(grad, 1-beta1))
//! v  = v·b2 + ((1-b2)·g)·g                 (mul_ then addcmul_)
//! p  = p + (-step_size · m) / (sqrt(v) / bc2_sqrt + eps)   (addcdiv_)
//! ```
//! with `bc1 = 1 - b1^t`, `bc2 = 1 - b2^t`, `step_size = lr / bc1`, `bc2_sqrt = sqrt(bc2)` in
//! f64 (Python floats) and rounded to f32 where PyTorch passes them to a kernel. `lerp` is
//! PyTorch's scalar formula: `w < 0.5 ? a + w·(b-a) : b - (b-a)·(1-w)`. The configuration is
//! f32, so `1 - b2` etc. start from the f32 betas (0.9f32 is not Python's 0.9).

use crate::tensor::CHUNK;
use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::OptimKernels;
use gpstoken_core::backend::{ema_weight, AdamConfig, AdamStepScalars, AdamTensor, EmaTensor};
use rayon::prelude::*;

/// PyTorch's `lerp(a, b, w)` (CPU kernel, scalar form).
#[inline]
fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

/// Adam's update of consecutive values with the step's scalars (slices of one length).
#[inline]
fn adam_apply(s: &AdamStepScalars, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = if s.weight_decay != 0.0 { g + s.weight_decay * *p } else { g };
        *m = lerp(*m, g, s.one_minus_b1);
        *v = *v * s.beta2 + s.one_minus_b2 * g * g;
        let denom = v.sqrt() / s.bc2_sqrt + s.eps;
        *p += s.neg_step_size * *m / denom;
    }
}

fn ema_apply(weight: f32, ema: &mut [f32], param: &[f32]) {
    for (e, &p) in ema.iter_mut().zip(param) {
        *e = lerp(*e, p, weight);
    }
}

/// Cuts `lengths` (tensors laid end to end) at every multiple of [`CHUNK`] of the concatenated
/// index: calls `piece(chunk, tensor, start, end)` for each piece in order, `start..end` an
/// index range of tensor `tensor`. Empty tensors give no piece.
fn cut_into_chunks(lengths: &[usize], mut piece: impl FnMut(usize, usize, usize, usize)) {
    let mut offset = 0;
    for (tensor, &len) in lengths.iter().enumerate() {
        let mut start = 0;
        while start < len {
            let chunk = offset / CHUNK;
            let end = len.min(start + (chunk + 1) * CHUNK - offset);
            piece(chunk, tensor, start, end);
            offset += end - start;
            start = end;
        }
    }
}

/// Runs `work` on groups of pieces of the same chunk (`chunk_of` says which): one rayon task
/// per chunk, or on the calling thread when there is a single chunk (no pool hand-off).
fn for_each_chunk<P: Send>(
    backend: &CpuBackend,
    pieces: &mut [P],
    chunk_of: impl Fn(&P) -> usize + Sync,
    work: impl Fn(&mut P) + Sync,
) {
    let single = pieces.first().zip(pieces.last()).is_none_or(|(a, b)| chunk_of(a) == chunk_of(b));
    if single {
        pieces.iter_mut().for_each(work);
        return;
    }
    backend.install(|| {
        pieces.par_chunk_by_mut(|a, b| chunk_of(a) == chunk_of(b)).for_each(|group| group.iter_mut().for_each(&work))
    });
}

/// One piece of a multi-tensor Adam step: a chunk number and the tensor's slices.
struct AdamPiece<'a> {
    chunk: usize,
    param: &'a mut [f32],
    grad: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
}

impl<'a> AdamPiece<'a> {
    /// The first `n` values as a piece of chunk `chunk`; `self` keeps the rest.
    fn take_front(&mut self, n: usize, chunk: usize) -> AdamPiece<'a> {
        let (param, param_rest) = std::mem::take(&mut self.param).split_at_mut(n);
        let (grad, grad_rest) = self.grad.split_at(n);
        let (m, m_rest) = std::mem::take(&mut self.m).split_at_mut(n);
        let (v, v_rest) = std::mem::take(&mut self.v).split_at_mut(n);
        (self.param, self.grad, self.m, self.v) = (param_rest, grad_rest, m_rest, v_rest);
        AdamPiece { chunk, param, grad, m, v }
    }
}

/// One piece of a multi-tensor EMA update.
struct EmaPiece<'a> {
    chunk: usize,
    ema: &'a mut [f32],
    param: &'a [f32],
}

impl<'a> EmaPiece<'a> {
    /// The first `n` values as a piece of chunk `chunk`; `self` keeps the rest.
    fn take_front(&mut self, n: usize, chunk: usize) -> EmaPiece<'a> {
        let (ema, ema_rest) = std::mem::take(&mut self.ema).split_at_mut(n);
        let (param, param_rest) = self.param.split_at(n);
        (self.ema, self.param) = (ema_rest, param_rest);
        EmaPiece { chunk, ema, param }
    }
}

impl OptimKernels for CpuBackend {
    fn adam_step(
        &self,
        config: &AdamConfig,
        step: u32,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let scalars = config.step_scalars(step);
        self.install(|| {
            param
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .for_each(|((p, g), (m, v))| adam_apply(&scalars, p, g, m, v))
        });
        Ok(())
    }

    fn ema_update(&self, decay: f32, ema: &mut Vec<f32>, param: &Vec<f32>) -> Result<(), CpuError> {
        let weight = ema_weight(decay);
        self.install(|| {
            ema.par_chunks_mut(CHUNK).zip(param.par_chunks(CHUNK)).for_each(|(e, p)| ema_apply(weight, e, p))
        });
        Ok(())
    }

    fn adam_step_many(
        &self,
        config: &AdamConfig,
        step: u32,
        tensors: &mut [AdamTensor<'_, Vec<f32>>],
    ) -> Result<(), CpuError> {
        let scalars = config.step_scalars(step);
        // Each tensor's values still to cut, taken apart front to back.
        let mut rest: Vec<AdamPiece> = tensors
            .iter_mut()
            .map(|t| AdamPiece {
                chunk: 0,
                param: t.param.as_mut_slice(),
                grad: t.grad.as_slice(),
                m: t.m.as_mut_slice(),
                v: t.v.as_mut_slice(),
            })
            .collect();
        let lengths: Vec<usize> = rest.iter().map(|r| r.param.len()).collect();
        let mut pieces = Vec::new();
        cut_into_chunks(&lengths, |chunk, tensor, start, end| pieces.push(rest[tensor].take_front(end - start, chunk)));
        for_each_chunk(self, &mut pieces, |p| p.chunk, |p| adam_apply(&scalars, p.param, p.grad, p.m, p.v));
        Ok(())
    }

    fn ema_update_many(&self, decay: f32, tensors: &mut [EmaTensor<'_, Vec<f32>>]) -> Result<(), CpuError> {
        let weight = ema_weight(decay);
        let mut rest: Vec<EmaPiece> = tensors
            .iter_mut()
            .map(|t| EmaPiece { chunk: 0, ema: t.ema.as_mut_slice(), param: t.param.as_slice() })
            .collect();
        let lengths: Vec<usize> = rest.iter().map(|r| r.ema.len()).collect();
        let mut pieces = Vec::new();
        cut_into_chunks(&lengths, |chunk, tensor, start, end| pieces.push(rest[tensor].take_front(end - start, chunk)));
        for_each_chunk(self, &mut pieces, |p| p.chunk, |p| ema_apply(weight, p.ema, p.param));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{cut_into_chunks, CHUNK};

    /// The pieces cover every tensor's indices once, in order, and each lies in one chunk of
    /// the concatenated index space (the chunk its first value falls in).
    #[test]
    fn pieces_tile_the_concatenation_at_chunk_boundaries() {
        let lengths = [1, 0, CHUNK - 2, 3, 2 * CHUNK + 5, 0, 7];
        let mut pieces = Vec::new();
        cut_into_chunks(&lengths, |chunk, tensor, start, end| pieces.push((chunk, tensor, start, end)));
        let mut next = [0usize; 7];
        let mut offset = 0;
        for &(chunk, tensor, start, end) in &pieces {
            assert_eq!(start, next[tensor], "piece {:?} out of order", (chunk, tensor, start, end));
            assert!(start < end, "an empty piece");
            assert_eq!(chunk, offset / CHUNK);
            assert_eq!(chunk, (offset + end - start - 1) / CHUNK, "piece crosses a chunk boundary");
            next[tensor] = end;
            offset += end - start;
        }
        assert_eq!(next, lengths);
        // The third tensor ends one value short of the first boundary; the fourth straddles it.
        assert_eq!(pieces[1..4], [(0, 2, 0, CHUNK - 2), (0, 3, 0, 1), (1, 3, 1, 3)]);
    }
}
