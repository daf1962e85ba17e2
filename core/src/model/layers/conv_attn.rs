//! The decoder's mid AttnBlock (taming "vanilla", single head, standard GroupNorm), spec 6.1.

use super::*;

/// `out = x + proj_out(attn(q(hn), k(hn), v(hn)))`, `hn = GroupNorm(x)`, over the `h·w` positions,
/// scale `c^-0.5`. With np > 1 it runs on each tile independently (`to_bnpnp`, spec 6.3).
#[derive(Clone, Debug)]
pub(crate) struct ConvAttn {
    norm: NormP,
    q: ConvP,
    k: ConvP,
    v: ConvP,
    proj: ConvP,
    pub ch: usize,
}

pub(crate) struct ConvAttnActs<B: Buffers> {
    pd: PatchDesc,
    gn: GroupNormDesc,
    cd: Conv2dDesc,
    /// `[Bp, C, hw] -> [Bp, hw, C]`.
    t_in: TransposeDesc,
    /// `[Bp, hw, C] -> [Bp, C, hw]`.
    t_out: TransposeDesc,
    att: AttentionDesc,
    /// The input cut into tiles (np > 1 only).
    xp: Option<B::Buffer>,
    hn: B::Buffer,
    st: B::Buffer,
    q: B::Buffer,
    k: B::Buffer,
    v: B::Buffer,
    qt: B::Buffer,
    kt: B::Buffer,
    vt: B::Buffer,
    ot: B::Buffer,
    o: B::Buffer,
    probs: B::Buffer,
    /// Output in tile space (the output itself when np = 1).
    res: B::Buffer,
    out_full: Option<B::Buffer>,
    // gradients
    gp: Option<B::Buffer>,
    d_o: B::Buffer,
    d_ot: B::Buffer,
    d_qt: B::Buffer,
    d_kt: B::Buffer,
    d_vt: B::Buffer,
    d_q: B::Buffer,
    d_k: B::Buffer,
    d_v: B::Buffer,
    d_hn: B::Buffer,
    d_tmp: B::Buffer,
    dres: B::Buffer,
    dx_full: Option<B::Buffer>,
}

impl<B: Buffers> ConvAttnActs<B> {
    pub fn out(&self) -> &B::Buffer {
        self.out_full.as_ref().unwrap_or(&self.res)
    }
    pub fn dx(&self) -> &B::Buffer {
        self.dx_full.as_ref().unwrap_or(&self.dres)
    }
}

impl ConvAttn {
    /// Registers `{prefix}.norm, q, k, v, proj_out`.
    pub fn new(reg: &mut ParamRegistry, prefix: &str, ch: usize) -> Self {
        ConvAttn {
            norm: NormP::new(reg, &format!("{prefix}.norm"), ch),
            q: ConvP::new(reg, &format!("{prefix}.q"), ch, ch, 1),
            k: ConvP::new(reg, &format!("{prefix}.k"), ch, ch, 1),
            v: ConvP::new(reg, &format!("{prefix}.v"), ch, ch, 1),
            proj: ConvP::new(reg, &format!("{prefix}.proj_out"), ch, ch, 1),
            ch,
        }
    }

    /// Buffers for inputs `[batch, ch, h, w]` made of `patches x patches` tiles.
    pub fn acts<B: Backend>(
        &self,
        be: &B,
        batch: usize,
        h: usize,
        w: usize,
        patches: usize,
        g: Gradients,
    ) -> Result<ConvAttnActs<B>, B::Error> {
        let (th, tw) = (h / patches, w / patches);
        let bp = batch * patches * patches;
        let hw = th * tw;
        let n = bp * self.ch * hw;
        let tiled = patches > 1;
        let opt = |on: bool| -> Result<Option<B::Buffer>, B::Error> {
            if on {
                Ok(Some(zeros(be, n)?))
            } else {
                Ok(None)
            }
        };
        Ok(ConvAttnActs {
            pd: PatchDesc { batch, channels: self.ch, patches, tile_height: th, tile_width: tw },
            gn: self.norm.group_desc(bp, th, tw, NormKind::Standard, 1),
            cd: Conv2dDesc::same(bp, self.ch, self.ch, th, tw, 1),
            t_in: TransposeDesc { batch: bp, rows: self.ch, cols: hw },
            t_out: TransposeDesc { batch: bp, rows: hw, cols: self.ch },
            // taming: `w_ * (int(c)**(-0.5))`, a Python float rounded to f32 by torch.
            att: AttentionDesc {
                batch: bp,
                heads: 1,
                seq_q: hw,
                seq_k: hw,
                head_dim: self.ch,
                scale: libm::pow(self.ch as f64, -0.5) as f32,
            },
            xp: opt(tiled)?,
            hn: zeros(be, n)?,
            st: zeros(be, bp * NORM_GROUPS * 2)?,
            q: zeros(be, n)?,
            k: zeros(be, n)?,
            v: zeros(be, n)?,
            qt: zeros(be, n)?,
            kt: zeros(be, n)?,
            vt: zeros(be, n)?,
            ot: zeros(be, n)?,
            o: zeros(be, n)?,
            probs: zeros(be, bp * hw * hw)?,
            res: zeros(be, n)?,
            out_full: opt(tiled)?,
            gp: opt(tiled && g == Gradients::Yes)?,
            d_o: g.zeros(be, n)?,
            d_ot: g.zeros(be, n)?,
            d_qt: g.zeros(be, n)?,
            d_kt: g.zeros(be, n)?,
            d_vt: g.zeros(be, n)?,
            d_q: g.zeros(be, n)?,
            d_k: g.zeros(be, n)?,
            d_v: g.zeros(be, n)?,
            d_hn: g.zeros(be, n)?,
            d_tmp: g.zeros(be, n)?,
            dres: g.zeros(be, n)?,
            dx_full: opt(tiled && g == Gradients::Yes)?,
        })
    }

    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, x: &B::Buffer, a: &mut ConvAttnActs<B>) -> Res<B> {
        let xin: &B::Buffer = match &mut a.xp {
            Some(xp) => {
                be.patchify(&a.pd, x, xp)?;
                xp
            }
            None => x,
        };
        self.norm.gn_forward(be, p, &a.gn, xin, &mut a.hn, &mut a.st)?;
        self.q.forward(be, p, &a.cd, &a.hn, &mut a.q)?;
        self.k.forward(be, p, &a.cd, &a.hn, &mut a.k)?;
        self.v.forward(be, p, &a.cd, &a.hn, &mut a.v)?;
        be.transpose(&a.t_in, &a.q, &mut a.qt)?;
        be.transpose(&a.t_in, &a.k, &mut a.kt)?;
        be.transpose(&a.t_in, &a.v, &mut a.vt)?;
        be.attention_forward(&a.att, &a.qt, &a.kt, &a.vt, &mut a.ot, &mut a.probs)?;
        be.transpose(&a.t_out, &a.ot, &mut a.o)?;
        self.proj.forward(be, p, &a.cd, &a.o, &mut a.res)?;
        be.add_assign(&mut a.res, xin)?;
        if let Some(full) = &mut a.out_full {
            be.unpatchify(&a.pd, &a.res, full)?;
        }
        Ok(())
    }

    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        x: &B::Buffer,
        dout: &B::Buffer,
        a: &mut ConvAttnActs<B>,
    ) -> Res<B> {
        let dres_in: &B::Buffer = match &mut a.gp {
            Some(gp) => {
                be.patchify(&a.pd, dout, gp)?;
                gp
            }
            None => dout,
        };
        let xin: &B::Buffer = a.xp.as_ref().unwrap_or(x);
        self.proj.backward(be, p, &a.cd, &a.o, dres_in, Some(&mut a.d_o))?;
        be.transpose(&a.t_in, &a.d_o, &mut a.d_ot)?;
        be.attention_backward(&a.att, &a.qt, &a.kt, &a.vt, &a.probs, &a.d_ot, &mut a.d_qt, &mut a.d_kt, &mut a.d_vt)?;
        be.transpose(&a.t_out, &a.d_qt, &mut a.d_q)?;
        be.transpose(&a.t_out, &a.d_kt, &mut a.d_k)?;
        be.transpose(&a.t_out, &a.d_vt, &mut a.d_v)?;
        self.q.backward(be, p, &a.cd, &a.hn, &a.d_q, Some(&mut a.d_hn))?;
        self.k.backward(be, p, &a.cd, &a.hn, &a.d_k, Some(&mut a.d_tmp))?;
        be.add_assign(&mut a.d_hn, &a.d_tmp)?;
        self.v.backward(be, p, &a.cd, &a.hn, &a.d_v, Some(&mut a.d_tmp))?;
        be.add_assign(&mut a.d_hn, &a.d_tmp)?;
        self.norm.gn_backward(be, p, &a.gn, xin, &a.st, &a.d_hn, &mut a.dres)?;
        be.add_assign(&mut a.dres, dres_in)?;
        if let Some(full) = &mut a.dx_full {
            be.unpatchify(&a.pd, &a.dres, full)?;
        }
        Ok(())
    }
}
