//! `DecoderNP` (spec 6): conv_in, mid (ResnetBlockNP, AttnBlock per tile, ResnetBlockNP), the up
//! levels from the deepest to level 0, NormalizeNP, swish, conv_out.

use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;

use super::config::DecoderConfig;
use super::layers::{zeros, ConvAttn, ConvAttnActs, ConvP, NormP, Res, ResActs, ResBlock, UpActs, UpBlock};
use super::params::{Gradients, GradientsReady, ParamId, ParamRegistry, ParamStore};
use crate::backend::{Activation, Backend, Buffers, Conv2dDesc, GroupNormDesc, NormKind};
use crate::shape::ShapeError;

/// One step of the decoder body, in execution order.
#[derive(Clone, Debug)]
pub(crate) enum Stage {
    Res(ResBlock),
    Attn(ConvAttn),
    Up(UpBlock),
}

pub(crate) enum StageActs<B: Buffers> {
    Res(ResActs<B>),
    Attn(ConvAttnActs<B>),
    Up(UpActs<B>),
}

impl<B: Buffers> StageActs<B> {
    fn out(&self) -> &B::Buffer {
        match self {
            StageActs::Res(a) => &a.out,
            StageActs::Attn(a) => a.out(),
            StageActs::Up(a) => &a.out,
        }
    }
    fn dx(&self) -> &B::Buffer {
        match self {
            StageActs::Res(a) => &a.dx,
            StageActs::Attn(a) => a.dx(),
            StageActs::Up(a) => &a.dx,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Decoder {
    conv_in: ConvP,
    stages: Vec<Stage>,
    norm_out: NormP,
    conv_out: ConvP,
    out_ch: usize,
    /// The parameter ids of each layer group, announced to a [`GradientsReady`] as the backward
    /// finishes it: `conv_in`, each stage (as `stages`), `norm_out` with `conv_out`.
    conv_in_ids: Range<ParamId>,
    stage_ids: Vec<Range<ParamId>>,
    out_ids: Range<ParamId>,
}

/// Input shape of the decoder body: batch, canvas height and width, patches per side.
#[derive(Clone, Copy, Debug)]
struct BodyShape {
    batch: usize,
    h: usize,
    w: usize,
    patches: usize,
}

/// Every buffer of the decoder for one batch.
pub(crate) struct DecActs<B: Buffers> {
    cin: Conv2dDesc,
    h0: B::Buffer,
    /// One buffer set per stage, kept for the backward; empty for inference
    /// ([`Gradients::No`]), where each stage's set is made when it runs and dropped once the
    /// next stage has read its output, so at most two are alive.
    stages: Vec<StageActs<B>>,
    body: BodyShape,
    gn_out: GroupNormDesc,
    n_out: B::Buffer,
    st_out: B::Buffer,
    s_out: B::Buffer,
    cout: Conv2dDesc,
    /// `[B, out_ch, H, W]`.
    pub decoded: B::Buffer,
    /// dL/d(decoded): the input of the backward.
    pub d_decoded: B::Buffer,
    d_s_out: B::Buffer,
    d_n_out: B::Buffer,
    d_last: B::Buffer,
    /// dL/d(rendered feature map).
    pub d_z: B::Buffer,
}

impl Decoder {
    /// Registers `decoder.conv_in`, `decoder.mid.*`, `decoder.up.{0..L}.*` (index order, as
    /// `self.up.insert(0, ...)` leaves them), `decoder.norm_out`, `decoder.conv_out`.
    pub fn new(reg: &mut ParamRegistry, cfg: &DecoderConfig) -> Self {
        let levels = cfg.ch_mult.len();
        let mid = cfg.mid_channels();
        let np = NormKind::StdPlusEps;
        let (conv_in, conv_in_ids) = reg.registered(|reg| ConvP::new(reg, "decoder.conv_in", cfg.z_channels, mid, 3));
        let mid1 = reg.registered(|reg| Stage::Res(ResBlock::new(reg, "decoder.mid.block_1", mid, mid, np, false)));
        let attn = reg.registered(|reg| Stage::Attn(ConvAttn::new(reg, "decoder.mid.attn_1", mid)));
        let mid2 = reg.registered(|reg| Stage::Res(ResBlock::new(reg, "decoder.mid.block_2", mid, mid, np, false)));
        // Registered in level order 0..L, executed L-1..0. Level i's first block takes the
        // channels of level i+1 (of the mid blocks for the deepest level).
        let mut levels_stages: Vec<Vec<(Stage, Range<ParamId>)>> = Vec::with_capacity(levels);
        for i in 0..levels {
            let block_in = if i + 1 < levels { cfg.level_channels(i + 1) } else { mid };
            let block_out = cfg.level_channels(i);
            let mut level: Vec<_> = (0..=cfg.num_res_blocks)
                .map(|j| {
                    let cin = if j == 0 { block_in } else { block_out };
                    let name = format!("decoder.up.{i}.block.{j}");
                    reg.registered(|reg| Stage::Res(ResBlock::new(reg, &name, cin, block_out, np, false)))
                })
                .collect();
            if i != 0 {
                let name = format!("decoder.up.{i}.upsample");
                level.push(reg.registered(|reg| Stage::Up(UpBlock::new(reg, &name, block_out))));
            }
            levels_stages.push(level);
        }
        let c0 = cfg.level_channels(0);
        let ((norm_out, conv_out), out_ids) = reg.registered(|reg| {
            (NormP::new(reg, "decoder.norm_out", c0), ConvP::new(reg, "decoder.conv_out", c0, cfg.out_ch, 3))
        });
        let mut stages = alloc::vec![mid1, attn, mid2];
        for level in levels_stages.into_iter().rev() {
            stages.extend(level);
        }
        let (stages, stage_ids) = stages.into_iter().unzip();
        Decoder { conv_in, stages, norm_out, conv_out, out_ch: cfg.out_ch, conv_in_ids, stage_ids, out_ids }
    }

    /// Buffers for inputs `[batch, z, h, w]` made of `patches x patches` tiles.
    pub fn acts<B: Backend>(
        &self,
        be: &B,
        batch: usize,
        h: usize,
        w: usize,
        patches: usize,
        g: Gradients,
    ) -> Result<DecActs<B>, B::Error> {
        let cin = self.conv_in.desc(batch, h, w);
        let body = BodyShape { batch, h, w, patches };
        let (ch, hh, ww) = self.body_output(body);
        let mut stages = Vec::new();
        if g == Gradients::Yes {
            let (mut hh, mut ww) = (h, w);
            for s in &self.stages {
                stages.push(self.stage_acts(be, s, BodyShape { h: hh, w: ww, ..body }, g)?);
                if matches!(s, Stage::Up(_)) {
                    (hh, ww) = (2 * hh, 2 * ww);
                }
            }
        }
        let n = batch * ch * hh * ww;
        let nout = batch * self.out_ch * hh * ww;
        Ok(DecActs {
            cin,
            h0: zeros(be, cin.output_len())?,
            stages,
            body,
            gn_out: self.norm_out.group_desc(batch, hh, ww, NormKind::StdPlusEps, patches),
            n_out: zeros(be, n)?,
            st_out: zeros(be, batch * super::config::NORM_GROUPS * patches * patches * 2)?,
            s_out: zeros(be, n)?,
            cout: self.conv_out.desc(batch, hh, ww),
            decoded: zeros(be, nout)?,
            d_decoded: g.zeros(be, nout)?,
            d_s_out: g.zeros(be, n)?,
            d_n_out: g.zeros(be, n)?,
            d_last: g.zeros(be, n)?,
            d_z: g.zeros(be, cin.input_len())?,
        })
    }

    /// Channels, height and width after the body (the last up level).
    fn body_output(&self, body: BodyShape) -> (usize, usize, usize) {
        let (mut ch, mut hh, mut ww) = (self.conv_in.cout, body.h, body.w);
        for s in &self.stages {
            match s {
                Stage::Res(r) => ch = r.cout,
                Stage::Attn(_) => {}
                Stage::Up(_) => (hh, ww) = (2 * hh, 2 * ww),
            }
        }
        (ch, hh, ww)
    }

    /// The buffers of stage `s` for inputs of `shape`.
    fn stage_acts<B: Backend>(
        &self,
        be: &B,
        s: &Stage,
        shape: BodyShape,
        g: Gradients,
    ) -> Result<StageActs<B>, B::Error> {
        let BodyShape { batch, h, w, patches } = shape;
        Ok(match s {
            Stage::Res(r) => StageActs::Res(r.acts(be, batch, h, w, patches, g)?),
            Stage::Attn(t) => StageActs::Attn(t.acts(be, batch, h, w, patches, g)?),
            Stage::Up(u) => StageActs::Up(u.acts(be, batch, h, w, g)?),
        })
    }

    /// Runs stage `s` on `x` into its buffers `sa`.
    fn stage_forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        s: &Stage,
        x: &B::Buffer,
        sa: &mut StageActs<B>,
    ) -> Res<B> {
        match (s, sa) {
            (Stage::Res(l), StageActs::Res(sa)) => l.forward(be, p, x, sa),
            (Stage::Attn(l), StageActs::Attn(sa)) => l.forward(be, p, x, sa),
            (Stage::Up(l), StageActs::Up(sa)) => l.forward(be, p, x, sa),
            _ => unreachable!("stage and activation lists are built together"),
        }
    }

    /// `z` (the rendered feature map) to `a.decoded`.
    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, z: &B::Buffer, a: &mut DecActs<B>) -> Res<B> {
        self.conv_in.forward(be, p, &a.cin, z, &mut a.h0)?;
        if a.stages.is_empty() && !self.stages.is_empty() {
            // Inference: two stages' buffers at a time.
            let (mut hh, mut ww) = (a.body.h, a.body.w);
            let mut prev: Option<StageActs<B>> = None;
            for s in &self.stages {
                let mut cur = self.stage_acts(be, s, BodyShape { h: hh, w: ww, ..a.body }, Gradients::No)?;
                self.stage_forward(be, p, s, prev.as_ref().map_or(&a.h0, |q| q.out()), &mut cur)?;
                if matches!(s, Stage::Up(_)) {
                    (hh, ww) = (2 * hh, 2 * ww);
                }
                prev = Some(cur);
            }
            let last = prev.as_ref().map_or(&a.h0, |q| q.out());
            self.norm_out.gn_forward(be, p, &a.gn_out, last, &mut a.n_out, &mut a.st_out)?;
            drop(prev);
            be.activation_forward(Activation::Silu, &a.n_out, &mut a.s_out)?;
            return self.conv_out.forward(be, p, &a.cout, &a.s_out, &mut a.decoded);
        }
        for (i, s) in self.stages.iter().enumerate() {
            let (done, rest) = a.stages.split_at_mut(i);
            let x = if i == 0 { &a.h0 } else { done[i - 1].out() };
            self.stage_forward(be, p, s, x, &mut rest[0])?;
        }
        let last = a.stages.last().map_or(&a.h0, |s| s.out());
        self.norm_out.gn_forward(be, p, &a.gn_out, last, &mut a.n_out, &mut a.st_out)?;
        be.activation_forward(Activation::Silu, &a.n_out, &mut a.s_out)?;
        self.conv_out.forward(be, p, &a.cout, &a.s_out, &mut a.decoded)
    }

    /// `dw = dL/d(conv_out.weight)` for `dy = dL/d(decoded)` alone (conv_out is the last layer,
    /// so its own backward is enough): the adaptive GAN weight compares two such norms (spec 8).
    pub fn conv_out_weight_grad<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        a: &DecActs<B>,
        dy: &B::Buffer,
        dw: &mut B::Buffer,
    ) -> Res<B> {
        be.conv2d_backward(&a.cout, &a.s_out, p.value(self.conv_out.w), dy, None, Some(dw), None)
    }

    /// Values of `decoder.conv_out.weight`.
    pub fn conv_out_weight_len(&self) -> usize {
        self.conv_out.cout * self.conv_out.cin * self.conv_out.k * self.conv_out.k
    }

    /// From `a.d_decoded` to every decoder parameter gradient and `a.d_z`, telling `ready` of
    /// each layer's gradients as they are done.
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        z: &B::Buffer,
        a: &mut DecActs<B>,
        ready: &mut dyn GradientsReady<B>,
    ) -> Res<B> {
        if a.stages.len() != self.stages.len() {
            return Err(ShapeError::Invalid { what: "a backward pass needs activations made with gradients" }.into());
        }
        self.conv_out.backward(be, p, &a.cout, &a.s_out, &a.d_decoded, Some(&mut a.d_s_out))?;
        be.activation_backward(Activation::Silu, &a.n_out, &a.d_s_out, &mut a.d_n_out)?;
        {
            let last = a.stages.last().map_or(&a.h0, |s| s.out());
            self.norm_out.gn_backward(be, p, &a.gn_out, last, &a.st_out, &a.d_n_out, &mut a.d_last)?;
        }
        ready.ready(be, p, self.out_ids.clone());
        for i in (0..self.stages.len()).rev() {
            let (done, rest) = a.stages.split_at_mut(i);
            let (cur, later) = rest.split_first_mut().expect("stage exists");
            let x = if i == 0 { &a.h0 } else { done[i - 1].out() };
            let dout = later.first().map_or(&a.d_last, |s| s.dx());
            match (&self.stages[i], cur) {
                (Stage::Res(l), StageActs::Res(sa)) => l.backward(be, p, x, dout, sa)?,
                (Stage::Attn(l), StageActs::Attn(sa)) => l.backward(be, p, x, dout, sa)?,
                (Stage::Up(l), StageActs::Up(sa)) => l.backward(be, p, dout, sa)?,
                _ => unreachable!("stage and activation lists are built together"),
            }
            ready.ready(be, p, self.stage_ids[i].clone());
        }
        let d0 = a.stages.first().map_or(&a.d_last, |s| s.dx());
        self.conv_in.backward(be, p, &a.cin, z, d0, Some(&mut a.d_z))?;
        ready.ready(be, p, self.conv_in_ids.clone());
        Ok(())
    }
}
