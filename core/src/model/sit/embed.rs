//! The conditioning embedders of SiT (spec 9.2): timestep sinusoid + MLP, label table, and the
//! layout condition MLP of the texture model.

use alloc::format;

use super::block::xavier_linear;
use super::config::FREQUENCY_EMBEDDING_SIZE;
use crate::backend::{Activation, Backend, Buffers, EmbeddingDesc};
use crate::model::layers::{zeros, LinearP, Res};
use crate::model::params::{Init, ParamId, ParamRegistry, ParamStore};
use crate::shape::{check_len, ShapeError};

/// The official `TimestepEmbedder.timestep_embedding` in float32 (GLIDE's sinusoid):
/// `freqs_k = exp(-ln(10000)·k/half)`, `out[b] = [cos(t_b·freqs), sin(t_b·freqs)]`, `t` used as
/// is (no ×1000). Each f32 operation is PyTorch's (the f64 constant rounded to f32 first); exp,
/// cos and sin are evaluated in f64 and rounded, within an ulp of PyTorch's vectorised f32 ones.
/// `out` is `[t.len(), dim]`; an odd `dim` gets a zero last column, as the official code.
pub fn timestep_embedding(t: &[f32], dim: usize, out: &mut [f32]) -> Result<(), ShapeError> {
    check_len("timestep embedding", t.len() * dim, out.len())?;
    let half = dim / 2;
    let coef = -libm::log(10000.0) as f32;
    for (&tb, row) in t.iter().zip(out.chunks_exact_mut(dim.max(1))) {
        for k in 0..half {
            let freq = libm::exp(f64::from(coef * k as f32 / half as f32)) as f32;
            let arg = f64::from(tb * freq);
            row[k] = libm::cos(arg) as f32;
            row[half + k] = libm::sin(arg) as f32;
        }
        if dim % 2 == 1 {
            row[dim - 1] = 0.0;
        }
    }
    Ok(())
}

/// `t_embedder.mlp`: Linear(256 → D) → SiLU → Linear(D → D), weights N(0, 0.02).
#[derive(Clone, Debug)]
pub(crate) struct TimestepEmbedder {
    mlp0: LinearP,
    mlp2: LinearP,
}

pub(crate) struct TimestepActs<B: Buffers> {
    batch: usize,
    freq: B::Buffer,
    h: B::Buffer,
    s: B::Buffer,
    pub out: B::Buffer,
    ds: B::Buffer,
    dh: B::Buffer,
}

impl TimestepEmbedder {
    pub fn new(reg: &mut ParamRegistry, hidden: usize) -> Self {
        let normal = Init::NormalScaled { mean: 0.0, std: 0.02 };
        let mut mlp = |i: usize, inp: usize| {
            LinearP::named(
                reg,
                format!("t_embedder.mlp.{i}.weight"),
                format!("t_embedder.mlp.{i}.bias"),
                inp,
                hidden,
                normal,
                Init::Zeros,
            )
        };
        let mlp0 = mlp(0, FREQUENCY_EMBEDDING_SIZE);
        let mlp2 = mlp(2, hidden);
        TimestepEmbedder { mlp0, mlp2 }
    }

    pub fn acts<B: Backend>(&self, be: &B, batch: usize) -> Result<TimestepActs<B>, B::Error> {
        let d = self.mlp2.out;
        Ok(TimestepActs {
            batch,
            freq: zeros(be, batch * FREQUENCY_EMBEDDING_SIZE)?,
            h: zeros(be, batch * d)?,
            s: zeros(be, batch * d)?,
            out: zeros(be, batch * d)?,
            ds: zeros(be, batch * d)?,
            dh: zeros(be, batch * d)?,
        })
    }

    /// `t` `[B]` (host) to `a.out` `[B, D]`; `host` is scratch of `B·256` values.
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        t: &[f32],
        host: &mut [f32],
        a: &mut TimestepActs<B>,
    ) -> Res<B> {
        timestep_embedding(t, FREQUENCY_EMBEDDING_SIZE, host)?;
        be.write(&mut a.freq, host)?;
        self.mlp0.forward(be, p, a.batch, &a.freq, &mut a.h)?;
        be.activation_forward(Activation::Silu, &a.h, &mut a.s)?;
        self.mlp2.forward(be, p, a.batch, &a.s, &mut a.out)
    }

    /// Parameter gradients from `dout` = dL/d(t_emb) `[B, D]` (the sinusoid has no input
    /// gradient worth keeping: `t` is data).
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        dout: &B::Buffer,
        a: &mut TimestepActs<B>,
    ) -> Res<B> {
        self.mlp2.backward(be, p, a.batch, &a.s, dout, Some(&mut a.ds))?;
        be.activation_backward(Activation::Silu, &a.h, &a.ds, &mut a.dh)?;
        self.mlp0.backward(be, p, a.batch, &a.freq, &a.dh, None)
    }
}

/// `y_embedder.embedding_table`: `[classes (+1 null), D]`, N(0, 0.02).
#[derive(Clone, Debug)]
pub(crate) struct LabelEmbedder {
    pub table: ParamId,
    pub rows: usize,
    pub dim: usize,
}

impl LabelEmbedder {
    pub fn new(reg: &mut ParamRegistry, rows: usize, dim: usize) -> Self {
        let table = reg.add(
            "y_embedder.embedding_table.weight".into(),
            &[rows, dim],
            Init::NormalScaled { mean: 0.0, std: 0.02 },
        );
        LabelEmbedder { table, rows, dim }
    }

    fn desc(&self, batch: usize) -> EmbeddingDesc {
        EmbeddingDesc { rows: batch, vocab: self.rows, dim: self.dim }
    }

    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, labels: &[u32], out: &mut B::Buffer) -> Res<B> {
        be.embedding_forward(&self.desc(labels.len()), p.value(self.table), labels, out)
    }

    pub fn backward<B: Backend>(&self, be: &B, p: &mut ParamStore<B>, labels: &[u32], dout: &B::Buffer) -> Res<B> {
        be.embedding_backward(&self.desc(labels.len()), labels, dout, p.grad_mut(self.table))
    }
}

/// `cond_embedder`: Linear(c → D) → SiLU → Linear(D → D) on every token's layout condition.
#[derive(Clone, Debug)]
pub(crate) struct CondEmbedder {
    lin0: LinearP,
    lin2: LinearP,
}

pub(crate) struct CondActs<B: Buffers> {
    rows: usize,
    /// The condition `[B·N, c]`.
    pub cond: B::Buffer,
    h: B::Buffer,
    s: B::Buffer,
    pub out: B::Buffer,
    ds: B::Buffer,
    dh: B::Buffer,
    /// dL/d(cond) `[B·N, c]`.
    pub dcond: B::Buffer,
}

impl CondEmbedder {
    pub fn new(reg: &mut ParamRegistry, channels: usize, hidden: usize) -> Self {
        CondEmbedder {
            lin0: xavier_linear(reg, "cond_embedder.0", channels, hidden),
            lin2: xavier_linear(reg, "cond_embedder.2", hidden, hidden),
        }
    }

    pub fn acts<B: Backend>(&self, be: &B, rows: usize) -> Result<CondActs<B>, B::Error> {
        let (c, d) = (self.lin0.inp, self.lin0.out);
        Ok(CondActs {
            rows,
            cond: zeros(be, rows * c)?,
            h: zeros(be, rows * d)?,
            s: zeros(be, rows * d)?,
            out: zeros(be, rows * d)?,
            ds: zeros(be, rows * d)?,
            dh: zeros(be, rows * d)?,
            dcond: zeros(be, rows * c)?,
        })
    }

    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, cond: &[f32], a: &mut CondActs<B>) -> Res<B> {
        be.write(&mut a.cond, cond)?;
        self.lin0.forward(be, p, a.rows, &a.cond, &mut a.h)?;
        be.activation_forward(Activation::Silu, &a.h, &mut a.s)?;
        self.lin2.forward(be, p, a.rows, &a.s, &mut a.out)
    }

    pub fn backward<B: Backend>(&self, be: &B, p: &mut ParamStore<B>, dout: &B::Buffer, a: &mut CondActs<B>) -> Res<B> {
        self.lin2.backward(be, p, a.rows, &a.s, dout, Some(&mut a.ds))?;
        be.activation_backward(Activation::Silu, &a.h, &a.ds, &mut a.dh)?;
        self.lin0.backward(be, p, a.rows, &a.cond, &a.dh, Some(&mut a.dcond))
    }
}
