//! The encoder's conditional transformer block (models/attnblock.py), spec 5.3.

use super::*;

/// ```text
/// h1 = x + roimlp(rc)          (rc [B·N·E, R²] -> [B·N·E] = [B, N, E])
/// h2 = h1 + out_proj(MHA(LN1(h1)))      (8 heads, packed in_proj [Wq; Wk; Wv])
/// out = h2 + mlp.2(GELU(mlp.0(LN2(h2))))
/// ```
#[derive(Clone, Debug)]
pub(crate) struct EncBlock {
    roimlp: LinearP,
    ln1: NormP,
    in_proj: LinearP,
    out_proj: LinearP,
    ln2: NormP,
    mlp0: LinearP,
    mlp2: LinearP,
    e: usize,
}

/// Shapes shared by every encoder block of one activation set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EncDims {
    /// Patches in the encoder batch (`B·np²`).
    pub batch: usize,
    /// Tokens per patch.
    pub tokens: usize,
}

impl EncDims {
    pub fn rows(&self) -> usize {
        self.batch * self.tokens
    }
}

/// Buffers one block keeps for its backward.
pub(crate) struct EncBlockActs<B: Buffers> {
    r: B::Buffer,
    h1: B::Buffer,
    a: B::Buffer,
    st1: B::Buffer,
    qkv: B::Buffer,
    attn: PackedAttnActs<B>,
    h2: B::Buffer,
    b: B::Buffer,
    st2: B::Buffer,
    u: B::Buffer,
    g: B::Buffer,
    pub out: B::Buffer,
    /// dL/d(block input) (= dL/dh1).
    pub dx: B::Buffer,
}

/// Gradient scratch shared by all blocks (used one block at a time).
pub(crate) struct EncBlockGrads<B: Buffers> {
    dg: B::Buffer,
    du: B::Buffer,
    db: B::Buffer,
    dh2: B::Buffer,
    d_o: B::Buffer,
    attn: PackedAttnGrads<B>,
    da: B::Buffer,
    d_rc_tmp: B::Buffer,
}

impl EncBlock {
    /// Registers `{prefix}.roimlp, ln1, attn1.{in_proj_weight, in_proj_bias, out_proj}, ln2,
    /// mlp.0, mlp.2` (the module's registration order). `roic` = rois².
    pub fn new(reg: &mut ParamRegistry, prefix: &str, e: usize, roic: usize) -> Self {
        let roimlp = LinearP::new(reg, &format!("{prefix}.roimlp"), roic, 1);
        let ln1 = NormP::new(reg, &format!("{prefix}.ln1"), e);
        // nn.MultiheadAttention._reset_parameters: xavier_uniform_ in_proj, zero biases,
        // out_proj weight keeps the nn.Linear default.
        let in_proj = LinearP::named(
            reg,
            format!("{prefix}.attn1.in_proj_weight"),
            format!("{prefix}.attn1.in_proj_bias"),
            e,
            3 * e,
            Init::XavierUniform { fan_in: e, fan_out: 3 * e },
            Init::Zeros,
        );
        let out_proj = LinearP::named(
            reg,
            format!("{prefix}.attn1.out_proj.weight"),
            format!("{prefix}.attn1.out_proj.bias"),
            e,
            e,
            Init::KaimingUniform { fan_in: e },
            Init::Zeros,
        );
        let ln2 = NormP::new(reg, &format!("{prefix}.ln2"), e);
        let mlp0 = LinearP::new(reg, &format!("{prefix}.mlp.0"), e, 4 * e);
        let mlp2 = LinearP::new(reg, &format!("{prefix}.mlp.2"), 4 * e, e);
        EncBlock { roimlp, ln1, in_proj, out_proj, ln2, mlp0, mlp2, e }
    }

    fn attention_desc(&self, d: EncDims) -> AttentionDesc {
        let head_dim = self.e / ENCODER_HEADS;
        AttentionDesc {
            batch: d.batch,
            heads: ENCODER_HEADS,
            seq_q: d.tokens,
            seq_k: d.tokens,
            head_dim,
            // F.scaled_dot_product_attention's default, 1/sqrt(head_dim).
            scale: 1.0 / libm::sqrtf(head_dim as f32),
        }
    }

    pub fn acts<B: Backend>(&self, be: &B, d: EncDims, g: Gradients) -> Result<EncBlockActs<B>, B::Error> {
        let (rows, e) = (d.rows(), self.e);
        Ok(EncBlockActs {
            r: zeros(be, rows * e)?,
            h1: zeros(be, rows * e)?,
            a: zeros(be, rows * e)?,
            st1: zeros(be, rows * 2)?,
            qkv: zeros(be, rows * 3 * e)?,
            attn: PackedAttnActs::new(be, &self.attention_desc(d))?,
            h2: zeros(be, rows * e)?,
            b: zeros(be, rows * e)?,
            st2: zeros(be, rows * 2)?,
            u: zeros(be, rows * 4 * e)?,
            g: zeros(be, rows * 4 * e)?,
            out: zeros(be, rows * e)?,
            dx: g.zeros(be, rows * e)?,
        })
    }

    pub fn grads<B: Backend>(
        &self,
        be: &B,
        d: EncDims,
        roic: usize,
        g: Gradients,
    ) -> Result<EncBlockGrads<B>, B::Error> {
        let (rows, e) = (d.rows(), self.e);
        let zeros = |n: usize| g.zeros(be, n);
        Ok(EncBlockGrads {
            dg: zeros(rows * 4 * e)?,
            du: zeros(rows * 4 * e)?,
            db: zeros(rows * e)?,
            dh2: zeros(rows * e)?,
            d_o: zeros(rows * e)?,
            attn: PackedAttnGrads::new(be, &self.attention_desc(d), g)?,
            da: zeros(rows * e)?,
            d_rc_tmp: zeros(rows * e * roic)?,
        })
    }

    /// `x`, `out`: `[B·N, E]`; `rc`: `[B·N·E, R²]` (the shared RoI features).
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        d: EncDims,
        x: &B::Buffer,
        rc: &B::Buffer,
        a: &mut EncBlockActs<B>,
    ) -> Res<B> {
        let (rows, e) = (d.rows(), self.e);
        // roimlp over the R² samples of every (token, channel): [B·N·E, R²] -> [B·N·E, 1]
        self.roimlp.forward(be, p, rows * e, rc, &mut a.r)?;
        be.add(x, &a.r, &mut a.h1)?;
        // self-attention, pre-norm
        self.ln1.ln_forward(be, p, rows, &a.h1, &mut a.a, &mut a.st1)?;
        self.in_proj.forward(be, p, rows, &a.a, &mut a.qkv)?;
        a.attn.forward(be, &self.attention_desc(d), &a.qkv)?;
        self.out_proj.forward(be, p, rows, &a.attn.o, &mut a.h2)?;
        be.add_assign(&mut a.h2, &a.h1)?;
        // MLP, pre-norm
        self.ln2.ln_forward(be, p, rows, &a.h2, &mut a.b, &mut a.st2)?;
        self.mlp0.forward(be, p, rows, &a.b, &mut a.u)?;
        be.activation_forward(Activation::GeluErf, &a.u, &mut a.g)?;
        self.mlp2.forward(be, p, rows, &a.g, &mut a.out)?;
        be.add_assign(&mut a.out, &a.h2)
    }

    /// Writes `a.dx` and ADDS this block's share of dL/d(rc) to `d_rc`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        d: EncDims,
        rc: &B::Buffer,
        dout: &B::Buffer,
        a: &mut EncBlockActs<B>,
        g: &mut EncBlockGrads<B>,
        d_rc: &mut B::Buffer,
    ) -> Res<B> {
        let (rows, e) = (d.rows(), self.e);
        // MLP branch
        self.mlp2.backward(be, p, rows, &a.g, dout, Some(&mut g.dg))?;
        be.activation_backward(Activation::GeluErf, &a.u, &g.dg, &mut g.du)?;
        self.mlp0.backward(be, p, rows, &a.b, &g.du, Some(&mut g.db))?;
        self.ln2.ln_backward(be, p, rows, &a.h2, &a.st2, &g.db, &mut g.dh2)?;
        be.add_assign(&mut g.dh2, dout)?;
        // attention branch
        self.out_proj.backward(be, p, rows, &a.attn.o, &g.dh2, Some(&mut g.d_o))?;
        a.attn.backward(be, &self.attention_desc(d), &g.d_o, &mut g.attn)?;
        self.in_proj.backward(be, p, rows, &a.a, &g.attn.dqkv, Some(&mut g.da))?;
        self.ln1.ln_backward(be, p, rows, &a.h1, &a.st1, &g.da, &mut a.dx)?;
        be.add_assign(&mut a.dx, &g.dh2)?;
        // h1 = x + r: both get dL/dh1; r came from roimlp(rc)
        self.roimlp.backward(be, p, rows * e, rc, &a.dx, Some(&mut g.d_rc_tmp))?;
        be.add_assign(d_rc, &g.d_rc_tmp)
    }
}
