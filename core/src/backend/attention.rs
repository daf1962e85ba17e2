//! Multi-head scaled-dot-product attention (the core of PyTorch `MultiheadAttention`, the
//! decoder's single-head `AttnBlock` and SiT's attention). The projections around it are
//! [`super::LinearOps`] / [`super::ConvOps`] calls.

use super::Buffers;
use crate::shape::{check_len, ensure, ShapeError};

/// `out[b, i, h] = Σ_j softmax_j(scale · q[b, i, h] · k[b, j, h]) v[b, j, h]`, per head `h`.
/// Layouts: `q [B, Lq, H*D]`, `k, v [B, Lk, H*D]`, `out [B, Lq, H*D]` (head `h` is columns
/// `h*D .. (h+1)*D`, as PyTorch splits heads), saved `probs [B, H, Lq, Lk]`. No mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDesc {
    pub batch: usize,
    pub heads: usize,
    pub seq_q: usize,
    pub seq_k: usize,
    pub head_dim: usize,
    /// Usually `1 / sqrt(head_dim)`.
    pub scale: f32,
}

impl AttentionDesc {
    pub fn q_len(&self) -> usize {
        self.batch * self.seq_q * self.heads * self.head_dim
    }
    pub fn kv_len(&self) -> usize {
        self.batch * self.seq_k * self.heads * self.head_dim
    }
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq_q * self.seq_k
    }
    pub fn check(&self, q: usize, k: usize, v: usize, out: usize, probs: usize) -> Result<(), ShapeError> {
        ensure(self.seq_k >= 1 || self.seq_q == 0, "attention needs at least one key")?;
        check_len("attention q", self.q_len(), q)?;
        check_len("attention k", self.kv_len(), k)?;
        check_len("attention v", self.kv_len(), v)?;
        check_len("attention output", self.q_len(), out)?;
        check_len("attention probabilities", self.probs_len(), probs)
    }
}

pub trait AttentionOps: Buffers {
    /// Forward; saves the softmax probabilities for the backward.
    fn attention_forward(
        &self,
        desc: &AttentionDesc,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        out: &mut Self::Buffer,
        probs: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `dq`, `dk`, `dv`, each overwritten.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        desc: &AttentionDesc,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        probs: &Self::Buffer,
        dout: &Self::Buffer,
        dq: &mut Self::Buffer,
        dk: &mut Self::Buffer,
        dv: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

/// The kernels behind [`AttentionOps`], one per op, same signature. Called only after the front end
/// (the blanket `impl<T: AttentionKernels> AttentionOps for T` below) has checked every buffer length
/// against the descriptor: implementations contain no shape logic.
pub trait AttentionKernels: Buffers {
    /// [`AttentionOps::attention_forward`].
    fn attention_forward(
        &self,
        desc: &AttentionDesc,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        out: &mut Self::Buffer,
        probs: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`AttentionOps::attention_backward`].
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        desc: &AttentionDesc,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        probs: &Self::Buffer,
        dout: &Self::Buffer,
        dq: &mut Self::Buffer,
        dk: &mut Self::Buffer,
        dv: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

impl<T: AttentionKernels> AttentionOps for T {
    fn attention_forward(
        &self,
        desc: &AttentionDesc,
        q: &T::Buffer,
        k: &T::Buffer,
        v: &T::Buffer,
        out: &mut T::Buffer,
        probs: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(q), self.len(k), self.len(v), self.len(out), self.len(probs))?;
        AttentionKernels::attention_forward(self, desc, q, k, v, out, probs)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        desc: &AttentionDesc,
        q: &T::Buffer,
        k: &T::Buffer,
        v: &T::Buffer,
        probs: &T::Buffer,
        dout: &T::Buffer,
        dq: &mut T::Buffer,
        dk: &mut T::Buffer,
        dv: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(q), self.len(k), self.len(v), self.len(dout), self.len(probs))?;
        check_len("attention dq", desc.q_len(), self.len(dq))?;
        check_len("attention dk", desc.kv_len(), self.len(dk))?;
        check_len("attention dv", desc.kv_len(), self.len(dv))?;
        AttentionKernels::attention_backward(self, desc, q, k, v, probs, dout, dq, dk, dv)
    }
}
