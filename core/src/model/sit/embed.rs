//! The conditioning embedders of SiT (spec 9.2): timestep sinusoid + MLP, label table, and the
//! layout condition MLP of the texture model (the two MLPs share [`SiluMlp`]).

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

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

/// `Linear(in → D) → SiLU → Linear(D → D)`: the shape of `t_embedder.mlp` and `cond_embedder`.
#[derive(Clone, Debug)]
pub(crate) struct SiluMlp {
    lin0: LinearP,
    lin2: LinearP,
}

pub(crate) struct SiluMlpActs<B: Buffers> {
    rows: usize,
    /// The input `[rows, in]`.
    pub input: B::Buffer,
    h: B::Buffer,
    s: B::Buffer,
    pub out: B::Buffer,
    ds: B::Buffer,
    dh: B::Buffer,
    /// dL/d(input), when asked for.
    pub dinput: Option<B::Buffer>,
}

impl SiluMlp {
    /// Registers `{prefix}.0` and `{prefix}.2` with the given initialisers.
    pub fn new(reg: &mut ParamRegistry, prefix: &str, inp: usize, hidden: usize, w_init: Option<Init>) -> Self {
        let mut lin = |i: usize, inp: usize| match w_init {
            Some(init) => LinearP::named(
                reg,
                format!("{prefix}.{i}.weight"),
                format!("{prefix}.{i}.bias"),
                inp,
                hidden,
                init,
                Init::Zeros,
            ),
            None => xavier_linear(reg, &format!("{prefix}.{i}"), inp, hidden),
        };
        let lin0 = lin(0, inp);
        let lin2 = lin(2, hidden);
        SiluMlp { lin0, lin2 }
    }

    /// Buffers for `rows` inputs; `input_grad` allocates dL/d(input).
    pub fn acts<B: Backend>(&self, be: &B, rows: usize, input_grad: bool) -> Result<SiluMlpActs<B>, B::Error> {
        let (c, d) = (self.lin0.inp, self.lin0.out);
        Ok(SiluMlpActs {
            rows,
            input: zeros(be, rows * c)?,
            h: zeros(be, rows * d)?,
            s: zeros(be, rows * d)?,
            out: zeros(be, rows * d)?,
            ds: zeros(be, rows * d)?,
            dh: zeros(be, rows * d)?,
            dinput: if input_grad { Some(zeros(be, rows * c)?) } else { None },
        })
    }

    /// `a.out` from `input` (host values, written into `a.input`).
    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, input: &[f32], a: &mut SiluMlpActs<B>) -> Res<B> {
        be.write(&mut a.input, input)?;
        self.lin0.forward(be, p, a.rows, &a.input, &mut a.h)?;
        be.activation_forward(Activation::Silu, &a.h, &mut a.s)?;
        self.lin2.forward(be, p, a.rows, &a.s, &mut a.out)
    }

    /// Parameter gradients (and `a.dinput`, if allocated) from `dout` = dL/d(out).
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        dout: &B::Buffer,
        a: &mut SiluMlpActs<B>,
    ) -> Res<B> {
        self.lin2.backward(be, p, a.rows, &a.s, dout, Some(&mut a.ds))?;
        be.activation_backward(Activation::Silu, &a.h, &a.ds, &mut a.dh)?;
        self.lin0.backward(be, p, a.rows, &a.input, &a.dh, a.dinput.as_mut())
    }
}

/// `t_embedder`: the sinusoid of [`timestep_embedding`], then `mlp` with N(0, 0.02) weights.
#[derive(Clone, Debug)]
pub(crate) struct TimestepEmbedder {
    mlp: SiluMlp,
}

pub(crate) struct TimestepActs<B: Buffers> {
    /// Host scratch for the sinusoid `[B, 256]`.
    freq: Vec<f32>,
    pub mlp: SiluMlpActs<B>,
}

impl TimestepEmbedder {
    pub fn new(reg: &mut ParamRegistry, hidden: usize) -> Self {
        let normal = Init::NormalScaled { mean: 0.0, std: 0.02 };
        TimestepEmbedder { mlp: SiluMlp::new(reg, "t_embedder.mlp", FREQUENCY_EMBEDDING_SIZE, hidden, Some(normal)) }
    }

    pub fn acts<B: Backend>(&self, be: &B, batch: usize) -> Result<TimestepActs<B>, B::Error> {
        Ok(TimestepActs { freq: vec![0.0; batch * FREQUENCY_EMBEDDING_SIZE], mlp: self.mlp.acts(be, batch, false)? })
    }

    /// `t` `[B]` (host) to `a.mlp.out` `[B, D]`.
    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, t: &[f32], a: &mut TimestepActs<B>) -> Res<B> {
        timestep_embedding(t, FREQUENCY_EMBEDDING_SIZE, &mut a.freq)?;
        self.mlp.forward(be, p, &a.freq, &mut a.mlp)
    }

    /// Parameter gradients from dL/d(t_emb) (`t` is data: no input gradient).
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        dout: &B::Buffer,
        a: &mut TimestepActs<B>,
    ) -> Res<B> {
        self.mlp.backward(be, p, dout, &mut a.mlp)
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

/// `cond_embedder`: [`SiluMlp`] (xavier, as every SiT Linear) on each token's layout condition.
pub(crate) fn cond_embedder(reg: &mut ParamRegistry, channels: usize, hidden: usize) -> SiluMlp {
    SiluMlp::new(reg, "cond_embedder", channels, hidden, None)
}
