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
use super::params::{Gradients, Init, ParamId, ParamRegistry, ParamStore};
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

mod conv_attn;
mod enc_block;
mod resnet;

pub(crate) use conv_attn::*;
pub(crate) use enc_block::*;
pub(crate) use resnet::*;
