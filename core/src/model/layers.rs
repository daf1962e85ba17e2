//! Layers with explicit forward and backward passes (llm.c style).
//!
//! A layer struct holds only [`ParamId`]s and sizes; its activation struct (`*Acts`) holds every
//! buffer its forward saves for the backward and every gradient buffer its backward writes,
//! allocated once for one batch size. Conventions:
//! * a layer's `forward(x, acts)` reads its input `x` (owned by the previous layer) and writes
//!   `acts.out`; its `backward(x, dout, acts)` writes `acts.dx` (= dL/dx) and **overwrites** the
//!   gradients of its own parameters (spec: backend ops overwrite; a tensor with several consumers
//!   is summed with `add_assign`);
//! * residual sums are computed as `h += x` (the official `x + h`; f32 addition commutes, so the
//!   bits are the same).

use alloc::format;
use alloc::string::String;

use super::config::{ENCODER_HEADS, NORM_GROUPS, TEMB_CHANNELS};
use super::packed_attention::{PackedAttnActs, PackedAttnGrads};
use super::params::{Init, ParamId, ParamRegistry, ParamStore};
use crate::backend::{
    Activation, AttentionDesc, Backend, Buffers, Conv2dDesc, GroupNormDesc, LayerNormDesc, LinearDesc, NormKind,
    PatchDesc, TransposeDesc, UpsampleDesc,
};

pub(crate) type Res<B> = Result<(), <B as Buffers>::Error>;

/// Eps of every GroupNorm (standard and NP) in the model (spec 6.2).
pub(crate) const GROUP_NORM_EPS: f32 = 1e-6;
/// Eps of the encoder blocks' LayerNorms (PyTorch default, spec 5.3).
pub(crate) const LAYER_NORM_EPS: f32 = 1e-5;

pub(crate) fn zeros<B: Buffers>(be: &B, n: usize) -> Result<B::Buffer, B::Error> {
    be.zeros(n)
}

// ---------------------------------------------------------------------------------------------
// Parameterised primitives
// ---------------------------------------------------------------------------------------------

/// `nn.Linear(inp, out)`: weight `[out, inp]`, bias `[out]`.
#[derive(Clone, Debug)]
pub(crate) struct LinearP {
    pub w: ParamId,
    pub b: ParamId,
    pub inp: usize,
    pub out: usize,
}

impl LinearP {
    /// PyTorch's default `nn.Linear` init, names `{prefix}.weight`, `{prefix}.bias`.
    pub fn new(reg: &mut ParamRegistry, prefix: &str, inp: usize, out: usize) -> Self {
        Self::named(
            reg,
            format!("{prefix}.weight"),
            format!("{prefix}.bias"),
            inp,
            out,
            Init::KaimingUniform { fan_in: inp },
            Init::BiasUniform { fan_in: inp },
        )
    }

    pub fn named(
        reg: &mut ParamRegistry,
        wname: String,
        bname: String,
        inp: usize,
        out: usize,
        winit: Init,
        binit: Init,
    ) -> Self {
        let w = reg.add(wname, &[out, inp], winit);
        let b = reg.add(bname, &[out], binit);
        LinearP { w, b, inp, out }
    }

    pub fn desc(&self, rows: usize) -> LinearDesc {
        LinearDesc { rows, in_features: self.inp, out_features: self.out }
    }

    pub fn forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        rows: usize,
        x: &B::Buffer,
        y: &mut B::Buffer,
    ) -> Res<B> {
        be.linear_forward(&self.desc(rows), x, p.value(self.w), Some(p.value(self.b)), y)
    }

    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        rows: usize,
        x: &B::Buffer,
        dy: &B::Buffer,
        dx: Option<&mut B::Buffer>,
    ) -> Res<B> {
        let (w, dw, db) = p.wgrads(self.w, self.b);
        be.linear_backward(&self.desc(rows), x, w, dy, dx, Some(dw), Some(db))
    }
}

/// `nn.Conv2d(cin, cout, k, padding=k/2)`: weight `[cout, cin, k, k]`, bias `[cout]`.
#[derive(Clone, Debug)]
pub(crate) struct ConvP {
    pub w: ParamId,
    pub b: ParamId,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
}

impl ConvP {
    pub fn new(reg: &mut ParamRegistry, prefix: &str, cin: usize, cout: usize, k: usize) -> Self {
        let fan_in = cin * k * k;
        let w = reg.add(format!("{prefix}.weight"), &[cout, cin, k, k], Init::KaimingUniform { fan_in });
        let b = reg.add(format!("{prefix}.bias"), &[cout], Init::BiasUniform { fan_in });
        ConvP { w, b, cin, cout, k }
    }

    pub fn desc(&self, batch: usize, h: usize, w: usize) -> Conv2dDesc {
        Conv2dDesc::same(batch, self.cin, self.cout, h, w, self.k)
    }

    pub fn forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        d: &Conv2dDesc,
        x: &B::Buffer,
        y: &mut B::Buffer,
    ) -> Res<B> {
        be.conv2d_forward(d, x, p.value(self.w), Some(p.value(self.b)), y)
    }

    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        d: &Conv2dDesc,
        x: &B::Buffer,
        dy: &B::Buffer,
        dx: Option<&mut B::Buffer>,
    ) -> Res<B> {
        let (w, dw, db) = p.wgrads(self.w, self.b);
        be.conv2d_backward(d, x, w, dy, dx, Some(dw), Some(db))
    }
}

/// An affine norm (GroupNorm or LayerNorm): weight and bias `[channels]`.
#[derive(Clone, Debug)]
pub(crate) struct NormP {
    pub w: ParamId,
    pub b: ParamId,
    pub channels: usize,
}

impl NormP {
    pub fn new(reg: &mut ParamRegistry, prefix: &str, channels: usize) -> Self {
        let w = reg.add(format!("{prefix}.weight"), &[channels], Init::Ones);
        let b = reg.add(format!("{prefix}.bias"), &[channels], Init::Zeros);
        NormP { w, b, channels }
    }

    pub fn group_desc(&self, batch: usize, h: usize, w: usize, kind: NormKind, patches: usize) -> GroupNormDesc {
        GroupNormDesc {
            batch,
            channels: self.channels,
            height: h,
            width: w,
            groups: NORM_GROUPS,
            eps: GROUP_NORM_EPS,
            kind,
            patches,
        }
    }

    pub fn gn_forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        d: &GroupNormDesc,
        x: &B::Buffer,
        y: &mut B::Buffer,
        stats: &mut B::Buffer,
    ) -> Res<B> {
        be.group_norm_forward(d, x, p.value(self.w), p.value(self.b), y, stats)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn gn_backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        d: &GroupNormDesc,
        x: &B::Buffer,
        stats: &B::Buffer,
        dy: &B::Buffer,
        dx: &mut B::Buffer,
    ) -> Res<B> {
        let (g, dg, db) = p.wgrads(self.w, self.b);
        be.group_norm_backward(d, x, g, stats, dy, dx, dg, db)
    }

    pub fn ln_desc(&self, rows: usize) -> LayerNormDesc {
        LayerNormDesc { rows, features: self.channels, eps: LAYER_NORM_EPS }
    }

    pub fn ln_forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        rows: usize,
        x: &B::Buffer,
        y: &mut B::Buffer,
        stats: &mut B::Buffer,
    ) -> Res<B> {
        be.layer_norm_forward(&self.ln_desc(rows), x, Some((p.value(self.w), p.value(self.b))), y, stats)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn ln_backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        rows: usize,
        x: &B::Buffer,
        stats: &B::Buffer,
        dy: &B::Buffer,
        dx: &mut B::Buffer,
    ) -> Res<B> {
        let (g, dg, db) = p.wgrads(self.w, self.b);
        be.layer_norm_backward(&self.ln_desc(rows), x, Some(g), stats, dy, dx, Some((dg, db)))
    }
}

// ---------------------------------------------------------------------------------------------
// ResnetBlock (taming, encoder) and ResnetBlockNP (decoder), spec 5.1 / 6.1
// ---------------------------------------------------------------------------------------------

/// `h = conv1(swish(norm1(x))); h = conv2(swish(norm2(h))); out = shortcut(x) + h`.
///
/// `kind` selects the norm: [`NormKind::Standard`] for the encoder's `ResnetBlock`,
/// [`NormKind::StdPlusEps`] (with per-patch statistics) for the decoder's `ResnetBlockNP`.
#[derive(Clone, Debug)]
pub(crate) struct ResBlock {
    norm1: NormP,
    conv1: ConvP,
    norm2: NormP,
    conv2: ConvP,
    nin: Option<ConvP>,
    kind: NormKind,
    pub cin: usize,
    pub cout: usize,
}

/// Buffers of one [`ResBlock`] for one batch size.
pub(crate) struct ResActs<B: Buffers> {
    gn1: GroupNormDesc,
    gn2: GroupNormDesc,
    c1: Conv2dDesc,
    c2: Conv2dDesc,
    cs: Conv2dDesc,
    n1: B::Buffer,
    s1: B::Buffer,
    st1: B::Buffer,
    h1: B::Buffer,
    n2: B::Buffer,
    s2: B::Buffer,
    st2: B::Buffer,
    sc: Option<B::Buffer>,
    pub out: B::Buffer,
    // gradient scratch: two of the output size, two of the input size
    ga: B::Buffer,
    gb: B::Buffer,
    gc: B::Buffer,
    gd: B::Buffer,
    pub dx: B::Buffer,
}

impl ResBlock {
    /// Registers `{prefix}.norm1, conv1, [temb_proj], norm2, conv2, [nin_shortcut]` (taming's
    /// registration order = state-dict order). `temb` adds the unused `temb_proj`
    /// Linear(512 → cout) of the encoder's blocks (spec 5.1 quirk).
    pub fn new(reg: &mut ParamRegistry, prefix: &str, cin: usize, cout: usize, kind: NormKind, temb: bool) -> Self {
        let norm1 = NormP::new(reg, &format!("{prefix}.norm1"), cin);
        let conv1 = ConvP::new(reg, &format!("{prefix}.conv1"), cin, cout, 3);
        if temb {
            reg.add_unused(
                format!("{prefix}.temb_proj.weight"),
                &[cout, TEMB_CHANNELS],
                Init::KaimingUniform { fan_in: TEMB_CHANNELS },
            );
            reg.add_unused(format!("{prefix}.temb_proj.bias"), &[cout], Init::BiasUniform { fan_in: TEMB_CHANNELS });
        }
        let norm2 = NormP::new(reg, &format!("{prefix}.norm2"), cout);
        let conv2 = ConvP::new(reg, &format!("{prefix}.conv2"), cout, cout, 3);
        let nin = (cin != cout).then(|| ConvP::new(reg, &format!("{prefix}.nin_shortcut"), cin, cout, 1));
        ResBlock { norm1, conv1, norm2, conv2, nin, kind, cin, cout }
    }

    /// Buffers for inputs `[batch, cin, h, w]`; `patches` is the decoder's np (1 in the encoder).
    pub fn acts<B: Backend>(
        &self,
        be: &B,
        batch: usize,
        h: usize,
        w: usize,
        patches: usize,
    ) -> Result<ResActs<B>, B::Error> {
        let patches = if self.kind == NormKind::Standard { 1 } else { patches };
        let nin = batch * self.cin * h * w;
        let nout = batch * self.cout * h * w;
        Ok(ResActs {
            gn1: self.norm1.group_desc(batch, h, w, self.kind, patches),
            gn2: self.norm2.group_desc(batch, h, w, self.kind, patches),
            c1: self.conv1.desc(batch, h, w),
            c2: self.conv2.desc(batch, h, w),
            cs: Conv2dDesc::same(batch, self.cin, self.cout, h, w, 1),
            n1: zeros(be, nin)?,
            s1: zeros(be, nin)?,
            st1: zeros(be, batch * NORM_GROUPS * patches * patches * 2)?,
            h1: zeros(be, nout)?,
            n2: zeros(be, nout)?,
            s2: zeros(be, nout)?,
            st2: zeros(be, batch * NORM_GROUPS * patches * patches * 2)?,
            sc: if self.nin.is_some() { Some(zeros(be, nout)?) } else { None },
            out: zeros(be, nout)?,
            ga: zeros(be, nout)?,
            gb: zeros(be, nout)?,
            gc: zeros(be, nin)?,
            gd: zeros(be, nin)?,
            dx: zeros(be, nin)?,
        })
    }

    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, x: &B::Buffer, a: &mut ResActs<B>) -> Res<B> {
        self.norm1.gn_forward(be, p, &a.gn1, x, &mut a.n1, &mut a.st1)?;
        be.activation_forward(Activation::Silu, &a.n1, &mut a.s1)?;
        self.conv1.forward(be, p, &a.c1, &a.s1, &mut a.h1)?;
        self.norm2.gn_forward(be, p, &a.gn2, &a.h1, &mut a.n2, &mut a.st2)?;
        be.activation_forward(Activation::Silu, &a.n2, &mut a.s2)?;
        self.conv2.forward(be, p, &a.c2, &a.s2, &mut a.out)?;
        match (&self.nin, &mut a.sc) {
            (Some(nin), Some(sc)) => {
                nin.forward(be, p, &a.cs, x, sc)?;
                be.add_assign(&mut a.out, sc)
            }
            _ => be.add_assign(&mut a.out, x),
        }
    }

    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        x: &B::Buffer,
        dout: &B::Buffer,
        a: &mut ResActs<B>,
    ) -> Res<B> {
        // residual branch: dout reaches conv2 directly
        self.conv2.backward(be, p, &a.c2, &a.s2, dout, Some(&mut a.ga))?; // d s2
        be.activation_backward(Activation::Silu, &a.n2, &a.ga, &mut a.gb)?; // d n2
        self.norm2.gn_backward(be, p, &a.gn2, &a.h1, &a.st2, &a.gb, &mut a.ga)?; // d h1
        self.conv1.backward(be, p, &a.c1, &a.s1, &a.ga, Some(&mut a.gc))?; // d s1
        be.activation_backward(Activation::Silu, &a.n1, &a.gc, &mut a.gd)?; // d n1
        self.norm1.gn_backward(be, p, &a.gn1, x, &a.st1, &a.gd, &mut a.dx)?; // d x (residual part)
                                                                             // shortcut branch
        match &self.nin {
            Some(nin) => {
                nin.backward(be, p, &a.cs, x, dout, Some(&mut a.gc))?;
                be.add_assign(&mut a.dx, &a.gc)
            }
            None => be.add_assign(&mut a.dx, dout),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upsample (nearest x2 + conv3x3), spec 6.1
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) struct UpBlock {
    conv: ConvP,
    pub ch: usize,
}

pub(crate) struct UpActs<B: Buffers> {
    ud: UpsampleDesc,
    cd: Conv2dDesc,
    up: B::Buffer,
    pub out: B::Buffer,
    gup: B::Buffer,
    pub dx: B::Buffer,
}

impl UpBlock {
    /// Registers `{prefix}.conv`.
    pub fn new(reg: &mut ParamRegistry, prefix: &str, ch: usize) -> Self {
        UpBlock { conv: ConvP::new(reg, &format!("{prefix}.conv"), ch, ch, 3), ch }
    }

    /// Buffers for inputs `[batch, ch, h, w]`.
    pub fn acts<B: Backend>(&self, be: &B, batch: usize, h: usize, w: usize) -> Result<UpActs<B>, B::Error> {
        let n = batch * self.ch * h * w;
        Ok(UpActs {
            ud: UpsampleDesc { batch, channels: self.ch, height: h, width: w },
            cd: self.conv.desc(batch, 2 * h, 2 * w),
            up: zeros(be, 4 * n)?,
            out: zeros(be, 4 * n)?,
            gup: zeros(be, 4 * n)?,
            dx: zeros(be, n)?,
        })
    }

    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, x: &B::Buffer, a: &mut UpActs<B>) -> Res<B> {
        be.upsample_nearest2x_forward(&a.ud, x, &mut a.up)?;
        self.conv.forward(be, p, &a.cd, &a.up, &mut a.out)
    }

    pub fn backward<B: Backend>(&self, be: &B, p: &mut ParamStore<B>, dout: &B::Buffer, a: &mut UpActs<B>) -> Res<B> {
        self.conv.backward(be, p, &a.cd, &a.up, dout, Some(&mut a.gup))?;
        be.upsample_nearest2x_backward(&a.ud, &a.gup, &mut a.dx)
    }
}

// ---------------------------------------------------------------------------------------------
// The decoder's mid AttnBlock (taming "vanilla", single head, standard GroupNorm), spec 6.1
// ---------------------------------------------------------------------------------------------

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
            gp: opt(tiled)?,
            d_o: zeros(be, n)?,
            d_ot: zeros(be, n)?,
            d_qt: zeros(be, n)?,
            d_kt: zeros(be, n)?,
            d_vt: zeros(be, n)?,
            d_q: zeros(be, n)?,
            d_k: zeros(be, n)?,
            d_v: zeros(be, n)?,
            d_hn: zeros(be, n)?,
            d_tmp: zeros(be, n)?,
            dres: zeros(be, n)?,
            dx_full: opt(tiled)?,
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

// ---------------------------------------------------------------------------------------------
// The encoder's conditional transformer block (models/attnblock.py), spec 5.3
// ---------------------------------------------------------------------------------------------

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

    pub fn acts<B: Backend>(&self, be: &B, d: EncDims) -> Result<EncBlockActs<B>, B::Error> {
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
            dx: zeros(be, rows * e)?,
        })
    }

    pub fn grads<B: Backend>(&self, be: &B, d: EncDims, roic: usize) -> Result<EncBlockGrads<B>, B::Error> {
        let (rows, e) = (d.rows(), self.e);
        Ok(EncBlockGrads {
            dg: zeros(be, rows * 4 * e)?,
            du: zeros(be, rows * 4 * e)?,
            db: zeros(be, rows * e)?,
            dh2: zeros(be, rows * e)?,
            d_o: zeros(be, rows * e)?,
            attn: PackedAttnGrads::new(be, &self.attention_desc(d))?,
            da: zeros(be, rows * e)?,
            d_rc_tmp: zeros(be, rows * e * roic)?,
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
