//! ResnetBlock (taming, encoder) and ResnetBlockNP (decoder), spec 5.1 / 6.1, and the decoder's upsampling (nearest x2 + conv3x3).

use super::*;

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
    /// Inference with cin = cout: `n2`, `s2` are empty and the forward writes `n1`, `s1` again.
    reuse: bool,
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
        g: Gradients,
    ) -> Result<ResActs<B>, B::Error> {
        let patches = if self.kind == NormKind::Standard { 1 } else { patches };
        let nin = batch * self.cin * h * w;
        let nout = batch * self.cout * h * w;
        // Inference keeps nothing for a backward: with cin = cout the second norm and swish
        // reuse the first pair's buffers (see `forward`).
        let reuse = g == Gradients::No && nin == nout;
        let second = if reuse { 0 } else { nout };
        Ok(ResActs {
            reuse,
            gn1: self.norm1.group_desc(batch, h, w, self.kind, patches),
            gn2: self.norm2.group_desc(batch, h, w, self.kind, patches),
            c1: self.conv1.desc(batch, h, w),
            c2: self.conv2.desc(batch, h, w),
            cs: Conv2dDesc::same(batch, self.cin, self.cout, h, w, 1),
            n1: zeros(be, nin)?,
            s1: zeros(be, nin)?,
            st1: zeros(be, batch * NORM_GROUPS * patches * patches * 2)?,
            h1: zeros(be, nout)?,
            n2: zeros(be, second)?,
            s2: zeros(be, second)?,
            st2: zeros(be, batch * NORM_GROUPS * patches * patches * 2)?,
            sc: if self.nin.is_some() { Some(zeros(be, nout)?) } else { None },
            out: zeros(be, nout)?,
            ga: g.zeros(be, nout)?,
            gb: g.zeros(be, nout)?,
            gc: g.zeros(be, nin)?,
            gd: g.zeros(be, nin)?,
            dx: g.zeros(be, nin)?,
        })
    }

    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, x: &B::Buffer, a: &mut ResActs<B>) -> Res<B> {
        self.norm1.gn_forward(be, p, &a.gn1, x, &mut a.n1, &mut a.st1)?;
        be.activation_forward(Activation::Silu, &a.n1, &mut a.s1)?;
        self.conv1.forward(be, p, &a.c1, &a.s1, &mut a.h1)?;
        let (n2, s2) = if a.reuse { (&mut a.n1, &mut a.s1) } else { (&mut a.n2, &mut a.s2) };
        self.norm2.gn_forward(be, p, &a.gn2, &a.h1, n2, &mut a.st2)?;
        be.activation_forward(Activation::Silu, n2, s2)?;
        self.conv2.forward(be, p, &a.c2, s2, &mut a.out)?;
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
    pub fn acts<B: Backend>(
        &self,
        be: &B,
        batch: usize,
        h: usize,
        w: usize,
        g: Gradients,
    ) -> Result<UpActs<B>, B::Error> {
        let n = batch * self.ch * h * w;
        Ok(UpActs {
            ud: UpsampleDesc { batch, channels: self.ch, height: h, width: w },
            cd: self.conv.desc(batch, 2 * h, 2 * w),
            up: zeros(be, 4 * n)?,
            out: zeros(be, 4 * n)?,
            gup: g.zeros(be, 4 * n)?,
            dx: g.zeros(be, n)?,
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
