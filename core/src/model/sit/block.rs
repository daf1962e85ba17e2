//! The adaLN-Zero transformer block of SiT and its final layer (spec 9.2), forward and backward.
//!
//! ```text
//! (sh1, sc1, g1, sh2, sc2, g2) = chunk6(adaLN_modulation(SiLU(c)))
//! h   = x + g1 ⊙ attn.proj(MHA(qkv(LN(x)·(1+sc1) + sh1)))
//! out = h + g2 ⊙ mlp.fc2(GELU_tanh(mlp.fc1(LN(h)·(1+sc2) + sh2)))
//! ```
//! LN has no affine and eps 1e-6; the attention packs `[q | k | v]` in one Linear(D → 3D) and
//! splits each into heads of `D / heads` columns (timm `Attention`).

use alloc::format;

use super::adaln::{AdaLn, AdaLnActs, AdaLnScratch};
use crate::backend::{Activation, AttentionDesc, Backend, Buffers, LayerNormDesc, ModulateDesc};
use crate::model::layers::{zeros, LinearP, Res};
use crate::model::packed_attention::{PackedAttnActs, PackedAttnGrads};
use crate::model::params::{Init, ParamRegistry, ParamStore};

/// Eps of SiT's affine-free LayerNorms (`nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)`).
pub(crate) const SIT_LAYER_NORM_EPS: f32 = 1e-6;

/// Shapes shared by every layer of one activation set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SitDims {
    pub batch: usize,
    pub tokens: usize,
    pub hidden: usize,
}

impl SitDims {
    pub fn rows(&self) -> usize {
        self.batch * self.tokens
    }
    fn ln(&self) -> LayerNormDesc {
        LayerNormDesc { rows: self.rows(), features: self.hidden, eps: SIT_LAYER_NORM_EPS }
    }
    fn modulate(&self) -> ModulateDesc {
        ModulateDesc { batch: self.batch, tokens: self.tokens, dim: self.hidden }
    }
}

/// A `nn.Linear` with SiT's `_basic_init`: xavier-uniform weight, zero bias.
pub(crate) fn xavier_linear(reg: &mut ParamRegistry, prefix: &str, inp: usize, out: usize) -> LinearP {
    LinearP::named(
        reg,
        format!("{prefix}.weight"),
        format!("{prefix}.bias"),
        inp,
        out,
        Init::XavierUniform { fan_in: inp, fan_out: out },
        Init::Zeros,
    )
}

/// `blocks.{i}`.
#[derive(Clone, Debug)]
pub(crate) struct SitBlock {
    qkv: LinearP,
    proj: LinearP,
    fc1: LinearP,
    fc2: LinearP,
    ada: AdaLn,
    heads: usize,
    mlp: usize,
}

/// What one block keeps for its backward.
pub(crate) struct SitBlockActs<B: Buffers> {
    ada: AdaLnActs<B>,
    ln1: B::Buffer,
    st1: B::Buffer,
    m1: B::Buffer,
    qkv: B::Buffer,
    mha: PackedAttnActs<B>,
    attn: B::Buffer,
    h: B::Buffer,
    ln2: B::Buffer,
    st2: B::Buffer,
    m2: B::Buffer,
    u: B::Buffer,
    g: B::Buffer,
    f: B::Buffer,
    pub out: B::Buffer,
    /// dL/d(block input).
    pub dx: B::Buffer,
}

/// Gradient scratch shared by every block (used one block at a time).
pub(crate) struct SitBlockGrads<B: Buffers> {
    df: B::Buffer,
    dg: B::Buffer,
    du: B::Buffer,
    dm: B::Buffer,
    dln: B::Buffer,
    dh: B::Buffer,
    dattn: B::Buffer,
    d_o: B::Buffer,
    mha: PackedAttnGrads<B>,
}

impl SitBlock {
    /// Registers `{prefix}.attn.qkv, attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1` (the
    /// module order; the LayerNorms have no parameters).
    pub fn new(reg: &mut ParamRegistry, prefix: &str, hidden: usize, heads: usize, mlp: usize) -> Self {
        SitBlock {
            qkv: xavier_linear(reg, &format!("{prefix}.attn.qkv"), hidden, 3 * hidden),
            proj: xavier_linear(reg, &format!("{prefix}.attn.proj"), hidden, hidden),
            fc1: xavier_linear(reg, &format!("{prefix}.mlp.fc1"), hidden, mlp),
            fc2: xavier_linear(reg, &format!("{prefix}.mlp.fc2"), mlp, hidden),
            ada: AdaLn::new(reg, prefix, hidden, 6),
            heads,
            mlp,
        }
    }

    fn attention(&self, d: SitDims) -> AttentionDesc {
        let head_dim = d.hidden / self.heads;
        AttentionDesc {
            batch: d.batch,
            heads: self.heads,
            seq_q: d.tokens,
            seq_k: d.tokens,
            head_dim,
            // F.scaled_dot_product_attention's default, 1/sqrt(head_dim)
            scale: 1.0 / libm::sqrtf(head_dim as f32),
        }
    }

    pub fn acts<B: Backend>(&self, be: &B, d: SitDims) -> Result<SitBlockActs<B>, B::Error> {
        let (r, e, m) = (d.rows(), d.hidden, self.mlp);
        Ok(SitBlockActs {
            ada: self.ada.acts(be, d.batch)?,
            ln1: zeros(be, r * e)?,
            st1: zeros(be, d.ln().stats_len())?,
            m1: zeros(be, r * e)?,
            qkv: zeros(be, r * 3 * e)?,
            mha: PackedAttnActs::new(be, &self.attention(d))?,
            attn: zeros(be, r * e)?,
            h: zeros(be, r * e)?,
            ln2: zeros(be, r * e)?,
            st2: zeros(be, d.ln().stats_len())?,
            m2: zeros(be, r * e)?,
            u: zeros(be, r * m)?,
            g: zeros(be, r * m)?,
            f: zeros(be, r * e)?,
            out: zeros(be, r * e)?,
            dx: zeros(be, r * e)?,
        })
    }

    pub fn grads<B: Backend>(&self, be: &B, d: SitDims) -> Result<SitBlockGrads<B>, B::Error> {
        let (r, e, m) = (d.rows(), d.hidden, self.mlp);
        Ok(SitBlockGrads {
            df: zeros(be, r * e)?,
            dg: zeros(be, r * m)?,
            du: zeros(be, r * m)?,
            dm: zeros(be, r * e)?,
            dln: zeros(be, r * e)?,
            dh: zeros(be, r * e)?,
            dattn: zeros(be, r * e)?,
            d_o: zeros(be, r * e)?,
            mha: PackedAttnGrads::new(be, &self.attention(d))?,
        })
    }

    /// `x`, `a.out`: `[B·N, D]`; `sc = SiLU(c)` `[B, D]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        d: SitDims,
        x: &B::Buffer,
        sc: &B::Buffer,
        a: &mut SitBlockActs<B>,
        s: &mut AdaLnScratch<B>,
    ) -> Res<B> {
        let r = d.rows();
        self.ada.forward(be, p, sc, &mut a.ada, s)?;
        let [shift1, scale1, gate1, shift2, scale2, gate2] = &a.ada.parts[..] else {
            unreachable!("AdaLn::new(.., 6) makes six chunks")
        };
        // attention branch
        be.layer_norm_forward(&d.ln(), x, None, &mut a.ln1, &mut a.st1)?;
        be.modulate_forward(&d.modulate(), &a.ln1, shift1, scale1, &mut a.m1)?;
        self.qkv.forward(be, p, r, &a.m1, &mut a.qkv)?;
        a.mha.forward(be, &self.attention(d), &a.qkv)?;
        self.proj.forward(be, p, r, &a.mha.o, &mut a.attn)?;
        be.copy(x, &mut a.h)?;
        be.gated_add_forward(&d.modulate(), gate1, &a.attn, &mut a.h)?;
        // MLP branch
        be.layer_norm_forward(&d.ln(), &a.h, None, &mut a.ln2, &mut a.st2)?;
        be.modulate_forward(&d.modulate(), &a.ln2, shift2, scale2, &mut a.m2)?;
        self.fc1.forward(be, p, r, &a.m2, &mut a.u)?;
        be.activation_forward(Activation::GeluTanh, &a.u, &mut a.g)?;
        self.fc2.forward(be, p, r, &a.g, &mut a.f)?;
        be.copy(&a.h, &mut a.out)?;
        be.gated_add_forward(&d.modulate(), gate2, &a.f, &mut a.out)
    }

    /// Writes `a.dx`, every parameter gradient of the block (overwritten) and this block's share
    /// of dL/d(SiLU(c)) into `s.dsc` (overwritten; the caller sums the blocks).
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        d: SitDims,
        x: &B::Buffer,
        sc: &B::Buffer,
        dout: &B::Buffer,
        a: &mut SitBlockActs<B>,
        g: &mut SitBlockGrads<B>,
        s: &mut AdaLnScratch<B>,
    ) -> Res<B> {
        let (r, md) = (d.rows(), d.modulate());
        {
            let [_, scale1, gate1, _, scale2, gate2] = &a.ada.parts[..] else {
                unreachable!("AdaLn::new(.., 6) makes six chunks")
            };
            let [dshift1, dscale1, dgate1, dshift2, dscale2, dgate2] = &mut a.ada.dparts[..] else {
                unreachable!("AdaLn::new(.., 6) makes six chunks")
            };
            // MLP branch: out = h + gate2 ⊙ f
            be.gated_add_backward(&md, gate2, &a.f, dout, dgate2, &mut g.df)?;
            self.fc2.backward(be, p, r, &a.g, &g.df, Some(&mut g.dg))?;
            be.activation_backward(Activation::GeluTanh, &a.u, &g.dg, &mut g.du)?;
            self.fc1.backward(be, p, r, &a.m2, &g.du, Some(&mut g.dm))?;
            be.modulate_backward(&md, &a.ln2, scale2, &g.dm, &mut g.dln, dshift2, dscale2)?;
            be.layer_norm_backward(&d.ln(), &a.h, None, &a.st2, &g.dln, &mut g.dh, None)?;
            be.add_assign(&mut g.dh, dout)?;
            // attention branch: h = x + gate1 ⊙ attn
            be.gated_add_backward(&md, gate1, &a.attn, &g.dh, dgate1, &mut g.dattn)?;
            self.proj.backward(be, p, r, &a.mha.o, &g.dattn, Some(&mut g.d_o))?;
            a.mha.backward(be, &self.attention(d), &g.d_o, &mut g.mha)?;
            self.qkv.backward(be, p, r, &a.m1, &g.mha.dqkv, Some(&mut g.dm))?;
            be.modulate_backward(&md, &a.ln1, scale1, &g.dm, &mut g.dln, dshift1, dscale1)?;
            be.layer_norm_backward(&d.ln(), x, None, &a.st1, &g.dln, &mut a.dx, None)?;
            be.add_assign(&mut a.dx, &g.dh)?;
        }
        self.ada.backward(be, p, sc, &mut a.ada, s)
    }
}

/// `final_layer`: `Linear(D → out)(LN(x)·(1+scale) + shift)` with `(shift, scale)` from its own
/// adaLN modulation.
#[derive(Clone, Debug)]
pub(crate) struct FinalLayer {
    linear: LinearP,
    ada: AdaLn,
}

pub(crate) struct FinalActs<B: Buffers> {
    ada: AdaLnActs<B>,
    ln: B::Buffer,
    st: B::Buffer,
    m: B::Buffer,
    /// `[B·N, out]`.
    pub out: B::Buffer,
    dm: B::Buffer,
    dln: B::Buffer,
    /// dL/d(input) `[B·N, D]`.
    pub dx: B::Buffer,
}

impl FinalLayer {
    /// Registers `final_layer.linear` then `final_layer.adaLN_modulation.1`, both zero-initialised.
    pub fn new(reg: &mut ParamRegistry, hidden: usize, out: usize) -> Self {
        let linear = LinearP::named(
            reg,
            "final_layer.linear.weight".into(),
            "final_layer.linear.bias".into(),
            hidden,
            out,
            Init::Zeros,
            Init::Zeros,
        );
        FinalLayer { linear, ada: AdaLn::new(reg, "final_layer", hidden, 2) }
    }

    pub fn acts<B: Backend>(&self, be: &B, d: SitDims) -> Result<FinalActs<B>, B::Error> {
        let (r, e) = (d.rows(), d.hidden);
        Ok(FinalActs {
            ada: self.ada.acts(be, d.batch)?,
            ln: zeros(be, r * e)?,
            st: zeros(be, d.ln().stats_len())?,
            m: zeros(be, r * e)?,
            out: zeros(be, r * self.linear.out)?,
            dm: zeros(be, r * e)?,
            dln: zeros(be, r * e)?,
            dx: zeros(be, r * e)?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        d: SitDims,
        x: &B::Buffer,
        sc: &B::Buffer,
        a: &mut FinalActs<B>,
        s: &mut AdaLnScratch<B>,
    ) -> Res<B> {
        self.ada.forward(be, p, sc, &mut a.ada, s)?;
        let [shift, scale] = &a.ada.parts[..] else { unreachable!("AdaLn::new(.., 2) makes two chunks") };
        be.layer_norm_forward(&d.ln(), x, None, &mut a.ln, &mut a.st)?;
        be.modulate_forward(&d.modulate(), &a.ln, shift, scale, &mut a.m)?;
        self.linear.forward(be, p, d.rows(), &a.m, &mut a.out)
    }

    /// From `dout` `[B·N, out]`: `a.dx`, the parameter gradients and `s.dsc` (all overwritten).
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        d: SitDims,
        x: &B::Buffer,
        sc: &B::Buffer,
        dout: &B::Buffer,
        a: &mut FinalActs<B>,
        s: &mut AdaLnScratch<B>,
    ) -> Res<B> {
        {
            let [_, scale] = &a.ada.parts[..] else { unreachable!("AdaLn::new(.., 2) makes two chunks") };
            let [dshift, dscale] = &mut a.ada.dparts[..] else { unreachable!("AdaLn::new(.., 2) makes two chunks") };
            self.linear.backward(be, p, d.rows(), &a.m, dout, Some(&mut a.dm))?;
            be.modulate_backward(&d.modulate(), &a.ln, scale, &a.dm, &mut a.dln, dshift, dscale)?;
            be.layer_norm_backward(&d.ln(), x, None, &a.st, &a.dln, &mut a.dx, None)?;
        }
        self.ada.backward(be, p, sc, &mut a.ada, s)
    }
}
