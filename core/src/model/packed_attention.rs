//! Multi-head self-attention on packed projections `qkv [rows, 3E]` whose columns are
//! `[q | k | v]` (PyTorch `MultiheadAttention`'s `in_proj`, timm `Attention`'s `qkv`): the
//! split and the attention forward, and backward the attention and the packing of `dq, dk, dv`
//! into `dqkv`. Shared by the encoder blocks and SiT's blocks; the projections around it are
//! the layers' own.

use super::layers::{zeros, Res};
use crate::backend::{AttentionDesc, Backend, Buffers};

/// What the attention keeps for its backward, and its output `o [rows, E]`.
pub(crate) struct PackedAttnActs<B: Buffers> {
    q: B::Buffer,
    kv: B::Buffer,
    k: B::Buffer,
    v: B::Buffer,
    probs: B::Buffer,
    pub o: B::Buffer,
}

/// Gradient scratch; `dqkv [rows, 3E]` is the result.
pub(crate) struct PackedAttnGrads<B: Buffers> {
    dq: B::Buffer,
    dk: B::Buffer,
    dv: B::Buffer,
    dkv: B::Buffer,
    pub dqkv: B::Buffer,
}

fn width(desc: &AttentionDesc) -> usize {
    desc.heads * desc.head_dim
}

impl<B: Backend> PackedAttnActs<B> {
    pub fn new(be: &B, desc: &AttentionDesc) -> Result<Self, B::Error> {
        let n = desc.q_len();
        Ok(PackedAttnActs {
            q: zeros(be, n)?,
            kv: zeros(be, 2 * n)?,
            k: zeros(be, n)?,
            v: zeros(be, n)?,
            probs: zeros(be, desc.probs_len())?,
            o: zeros(be, n)?,
        })
    }

    /// `o = MHA(q, k, v)` with `[q | k | v] = qkv`.
    pub fn forward(&mut self, be: &B, desc: &AttentionDesc, qkv: &B::Buffer) -> Res<B> {
        let (rows, e) = (desc.batch * desc.seq_q, width(desc));
        be.split_cols(rows, e, 2 * e, qkv, &mut self.q, &mut self.kv)?;
        be.split_cols(rows, e, e, &self.kv, &mut self.k, &mut self.v)?;
        be.attention_forward(desc, &self.q, &self.k, &self.v, &mut self.o, &mut self.probs)
    }

    /// `g.dqkv` = dL/d(qkv) from `d_o` = dL/d(o) (overwritten).
    pub fn backward(&self, be: &B, desc: &AttentionDesc, d_o: &B::Buffer, g: &mut PackedAttnGrads<B>) -> Res<B> {
        let (rows, e) = (desc.batch * desc.seq_q, width(desc));
        be.attention_backward(desc, &self.q, &self.k, &self.v, &self.probs, d_o, &mut g.dq, &mut g.dk, &mut g.dv)?;
        be.concat_cols(rows, e, e, &g.dk, &g.dv, &mut g.dkv)?;
        be.concat_cols(rows, e, 2 * e, &g.dq, &g.dkv, &mut g.dqkv)
    }
}

impl<B: Backend> PackedAttnGrads<B> {
    pub fn new(be: &B, desc: &AttentionDesc) -> Result<Self, B::Error> {
        let n = desc.q_len();
        Ok(PackedAttnGrads {
            dq: zeros(be, n)?,
            dk: zeros(be, n)?,
            dv: zeros(be, n)?,
            dkv: zeros(be, 2 * n)?,
            dqkv: zeros(be, 3 * n)?,
        })
    }
}
