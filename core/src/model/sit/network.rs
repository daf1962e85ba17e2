//! The whole SiT (`models/sit_models.py`, spec 9.2) on a backend: forward keeps every
//! intermediate, backward writes every gradient, the velocity loss of flow matching joins them.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::adaln::{AdaLn, AdaLnScratch};
use super::block::{FinalActs, FinalLayer, SitBlock, SitBlockActs, SitBlockGrads, SitDims};
use super::config::SitConfig;
use super::embed::{cond_embedder, LabelEmbedder, SiluMlp, SiluMlpActs, TimestepActs, TimestepEmbedder};
use crate::backend::{Activation, Backend, TransposeDesc};
use crate::model::layers::{zeros, LinearP, Res};
use crate::model::params::{Init, ParamId, ParamRegistry, ParamStore};
use crate::model::{ConfigError, ModelError};
use crate::shape::{check_len, ensure};

/// The layer structure of a config (ids only).
#[derive(Clone, Debug)]
pub(crate) struct Layers {
    pos_embed: ParamId,
    x_embedder: LinearP,
    t_embedder: TimestepEmbedder,
    y_embedder: LabelEmbedder,
    cond_embedder: Option<SiluMlp>,
    blocks: Vec<SitBlock>,
    final_layer: FinalLayer,
}

/// Builds the layers of `cfg` and registers their parameters in the official state-dict order:
/// `SiT`'s own `pos_embed` first, then its sub-modules as `__init__` creates them
/// (`x_embedder`, `t_embedder`, `y_embedder`, `cond_embedder`, `blocks`, `final_layer`).
pub(crate) fn layout(cfg: &SitConfig) -> Result<(Layers, ParamRegistry), ConfigError> {
    cfg.validate()?;
    let (n, c, d) = (cfg.tokens, cfg.in_channels, cfg.hidden);
    let mut reg = ParamRegistry::new();
    // learnable and zero-initialised with patch size 1; the texture model never reads it
    let pos_embed = if cfg.cond_channels.is_none() {
        reg.add("pos_embed".into(), &[1, n, d], Init::Zeros)
    } else {
        reg.add_unused("pos_embed".into(), &[1, n, d], Init::Zeros)
    };
    // the 1x1 patch conv is a per-token Linear(C → D); initialised as one (xavier on [D, C])
    let w = reg.add("x_embedder.proj.weight".into(), &[d, c, 1, 1], Init::XavierUniform { fan_in: c, fan_out: d });
    let b = reg.add("x_embedder.proj.bias".into(), &[d], Init::Zeros);
    let x_embedder = LinearP { w, b, inp: c, out: d };
    let t_embedder = TimestepEmbedder::new(&mut reg, d);
    let y_embedder = LabelEmbedder::new(&mut reg, cfg.label_rows(), d);
    let cond_embedder = cfg.cond_channels.map(|cc| cond_embedder(&mut reg, cc, d));
    let blocks = (0..cfg.depth)
        .map(|i| SitBlock::new(&mut reg, &format!("blocks.{i}"), d, cfg.heads, cfg.mlp_hidden()))
        .collect();
    let final_layer = FinalLayer::new(&mut reg, d, cfg.out_channels());
    Ok((Layers { pos_embed, x_embedder, t_embedder, y_embedder, cond_embedder, blocks, final_layer }, reg))
}

/// SiT on a backend.
pub struct Sit<B: Backend> {
    config: SitConfig,
    layers: Layers,
    /// Parameter values and gradients, official names, state-dict order.
    pub params: ParamStore<B>,
}

/// Every buffer of one forward/backward for a fixed batch size, allocated once by
/// [`Sit::activations`].
pub struct SitActs<B: Backend> {
    dims: SitDims,
    channels: usize,
    /// `x [B, C, N]` as given, and as token rows `[B·N, C]`.
    x: B::Buffer,
    x_tok: B::Buffer,
    /// Token embeddings entering block 0 `[B·N, D]`.
    tok0: B::Buffer,
    cond: Option<SiluMlpActs<B>>,
    temb: TimestepActs<B>,
    labels: Vec<u32>,
    yemb: B::Buffer,
    c: B::Buffer,
    sc: B::Buffer,
    blocks: Vec<SitBlockActs<B>>,
    block_grads: SitBlockGrads<B>,
    ada: AdaLnScratch<B>,
    fin: FinalActs<B>,
    /// The kept `C` output channels as rows `[B·N, C]`, the dropped sigma half, and `[B, C, N]`.
    pred_tok: B::Buffer,
    sigma_tok: Option<B::Buffer>,
    pred: B::Buffer,
    /// The velocity target of the loss `[B, C, N]`.
    target: B::Buffer,
    // gradients
    dpred: B::Buffer,
    dpred_tok: B::Buffer,
    dfinal: B::Buffer,
    dsc: B::Buffer,
    dc: B::Buffer,
    dx_tok: B::Buffer,
    dx: B::Buffer,
}

impl<B: Backend> SitActs<B> {
    /// Samples per batch.
    pub fn batch(&self) -> usize {
        self.dims.batch
    }
    /// Values of one latent batch `[B, C, N, 1]`.
    pub fn latent_len(&self) -> usize {
        self.dims.batch * self.channels * self.dims.tokens
    }
    /// The model output `[B, C, N, 1]` (the first `C` channels with `learn_sigma`).
    pub fn pred(&self) -> &B::Buffer {
        &self.pred
    }
    /// dL/d(pred): fill it (or call [`Sit::velocity_loss_backward`]) before [`Sit::backward`].
    pub fn d_pred_mut(&mut self) -> &mut B::Buffer {
        &mut self.dpred
    }
    /// dL/d(x) `[B, C, N, 1]` after [`Sit::backward`].
    pub fn d_x(&self) -> &B::Buffer {
        &self.dx
    }
    /// dL/d(cond) `[B, N, c]` after [`Sit::backward`] (texture model only).
    pub fn d_cond(&self) -> Option<&B::Buffer> {
        self.cond.as_ref().and_then(|a| a.dinput.as_ref())
    }
}

impl<B: Backend> Sit<B> {
    /// A model with every parameter zero (load weights or call [`Sit::init`] next).
    pub fn new(be: &B, config: SitConfig) -> Result<Self, ModelError<B::Error>> {
        let (layers, reg) = layout(&config).map_err(ModelError::Config)?;
        let params = ParamStore::zeros(be, reg.into_specs()).map_err(ModelError::Backend)?;
        Ok(Sit { config, layers, params })
    }

    pub fn config(&self) -> &SitConfig {
        &self.config
    }

    /// The official initialisation (spec 9.2: xavier Linears, N(0, 0.02) label table and
    /// t-MLP weights, zero adaLN and final layer, zero `pos_embed`) drawn from `seed`.
    pub fn init(&mut self, be: &B, seed: u64) -> Result<(), B::Error> {
        crate::model::init::init_params(be, &mut self.params, seed)
    }

    /// Buffers for batches of `batch` latents.
    pub fn activations(&self, be: &B, batch: usize) -> Result<SitActs<B>, B::Error> {
        let cfg = &self.config;
        let (n, c, d) = (cfg.tokens, cfg.in_channels, cfg.hidden);
        let dims = SitDims { batch, tokens: n, hidden: d };
        let rows = dims.rows();
        let l = &self.layers;
        let block_grads = match l.blocks.first() {
            Some(b) => b.grads(be, dims)?,
            None => SitBlock::new(&mut ParamRegistry::new(), "", d, cfg.heads, 1).grads(be, dims)?,
        };
        Ok(SitActs {
            dims,
            channels: c,
            x: zeros(be, rows * c)?,
            x_tok: zeros(be, rows * c)?,
            tok0: zeros(be, rows * d)?,
            cond: l.cond_embedder.as_ref().map(|ce| ce.acts(be, rows, true)).transpose()?,
            temb: l.t_embedder.acts(be, batch)?,
            labels: vec![0; batch],
            yemb: zeros(be, batch * d)?,
            c: zeros(be, batch * d)?,
            sc: zeros(be, batch * d)?,
            blocks: l.blocks.iter().map(|b| b.acts(be, dims)).collect::<Result<_, _>>()?,
            block_grads,
            ada: AdaLn::scratch(be, batch, d, 6)?,
            fin: l.final_layer.acts(be, dims)?,
            pred_tok: zeros(be, rows * c)?,
            sigma_tok: if cfg.learn_sigma { Some(zeros(be, rows * c)?) } else { None },
            pred: zeros(be, rows * c)?,
            target: zeros(be, rows * c)?,
            dpred: zeros(be, rows * c)?,
            dpred_tok: zeros(be, rows * c)?,
            dfinal: zeros(be, rows * cfg.out_channels())?,
            dsc: zeros(be, batch * d)?,
            dc: zeros(be, batch * d)?,
            dx_tok: zeros(be, rows * c)?,
            dx: zeros(be, rows * c)?,
        })
    }

    /// Forward pass (`SiT.forward` in eval mode): latents `x [B, C, N, 1]`, times `t [B]`,
    /// labels `y [B]` (the null label `classes` allowed) and, for the texture model, the layout
    /// condition `cond [B, N, c]`, to [`SitActs::pred`]. Label dropout is the caller's
    /// ([`super::drop_labels`]), as the official `train` flag.
    pub fn forward(&self, be: &B, a: &mut SitActs<B>, x: &[f32], t: &[f32], y: &[u32], cond: Option<&[f32]>) -> Res<B> {
        self.check_inputs(a, x, t, y, cond)?;
        let l = &self.layers;
        let d = a.dims;
        let (rows, c, n) = (d.rows(), a.channels, d.tokens);
        be.write(&mut a.x, x)?;
        be.transpose(&TransposeDesc { batch: d.batch, rows: c, cols: n }, &a.x, &mut a.x_tok)?;
        l.x_embedder.forward(be, &self.params, rows, &a.x_tok, &mut a.tok0)?;
        match (&l.cond_embedder, &mut a.cond, cond) {
            (Some(ce), Some(ca), Some(cond)) => {
                ce.forward(be, &self.params, cond, ca)?;
                be.add_assign(&mut a.tok0, &ca.out)?;
            }
            _ => be.add_row_broadcast(d.batch, n * d.hidden, &mut a.tok0, self.params.value(l.pos_embed))?,
        }
        l.t_embedder.forward(be, &self.params, t, &mut a.temb)?;
        a.labels.copy_from_slice(y);
        l.y_embedder.forward(be, &self.params, &a.labels, &mut a.yemb)?;
        be.add(&a.temb.mlp.out, &a.yemb, &mut a.c)?;
        be.activation_forward(Activation::Silu, &a.c, &mut a.sc)?;
        for (i, block) in l.blocks.iter().enumerate() {
            let (done, rest) = a.blocks.split_at_mut(i);
            let x_in = done.last().map_or(&a.tok0, |p| &p.out);
            block.forward(be, &self.params, d, x_in, &a.sc, &mut rest[0], &mut a.ada)?;
        }
        let last = a.blocks.last().map_or(&a.tok0, |b| &b.out);
        l.final_layer.forward(be, &self.params, d, last, &a.sc, &mut a.fin, &mut a.ada)?;
        match &mut a.sigma_tok {
            Some(sigma) => be.split_cols(rows, c, c, &a.fin.out, &mut a.pred_tok, sigma)?,
            None => be.copy(&a.fin.out, &mut a.pred_tok)?,
        }
        be.transpose(&TransposeDesc { batch: d.batch, rows: n, cols: c }, &a.pred_tok, &mut a.pred)
    }

    /// Backward pass from the gradient in [`SitActs::d_pred_mut`]: overwrites every parameter
    /// gradient, [`SitActs::d_x`] and [`SitActs::d_cond`].
    pub fn backward(&mut self, be: &B, a: &mut SitActs<B>) -> Res<B> {
        let l = &self.layers;
        let p = &mut self.params;
        let d = a.dims;
        let (rows, c, n) = (d.rows(), a.channels, d.tokens);
        be.transpose(&TransposeDesc { batch: d.batch, rows: c, cols: n }, &a.dpred, &mut a.dpred_tok)?;
        match &mut a.sigma_tok {
            // the dropped sigma channels get no gradient
            Some(sigma) => {
                be.fill(sigma, 0.0)?;
                be.concat_cols(rows, c, c, &a.dpred_tok, sigma, &mut a.dfinal)?;
            }
            None => be.copy(&a.dpred_tok, &mut a.dfinal)?,
        }
        let last = a.blocks.last().map_or(&a.tok0, |b| &b.out);
        l.final_layer.backward(be, p, d, last, &a.sc, &a.dfinal, &mut a.fin, &mut a.ada)?;
        be.copy(&a.ada.dsc, &mut a.dsc)?;
        for (i, block) in l.blocks.iter().enumerate().rev() {
            let (before, from) = a.blocks.split_at_mut(i);
            let (this, after) = from.split_at_mut(1);
            let x_in = before.last().map_or(&a.tok0, |b| &b.out);
            let dout = after.first().map_or(&a.fin.dx, |b| &b.dx);
            block.backward(be, p, d, x_in, &a.sc, dout, &mut this[0], &mut a.block_grads, &mut a.ada)?;
            be.add_assign(&mut a.dsc, &a.ada.dsc)?;
        }
        let dtok0 = a.blocks.first().map_or(&a.fin.dx, |b| &b.dx);
        // c = t_emb + y_emb, sc = SiLU(c)
        be.activation_backward(Activation::Silu, &a.c, &a.dsc, &mut a.dc)?;
        l.y_embedder.backward(be, p, &a.labels, &a.dc)?;
        l.t_embedder.backward(be, p, &a.dc, &mut a.temb)?;
        match (&l.cond_embedder, &mut a.cond) {
            (Some(ce), Some(ca)) => ce.backward(be, p, dtok0, ca)?,
            _ => be.sum_rows(d.batch, n * d.hidden, dtok0, p.grad_mut(l.pos_embed))?,
        }
        l.x_embedder.backward(be, p, rows, &a.x_tok, dtok0, Some(&mut a.dx_tok))?;
        be.transpose(&TransposeDesc { batch: d.batch, rows: n, cols: c }, &a.dx_tok, &mut a.dx)
    }

    /// The official velocity loss `mean_b(mean((pred − ut)²))` after a forward pass (every sample
    /// has the same size, so it is the mean over all values, `LossOps::mse_loss`), its gradient,
    /// and the backward pass. `ut [B, C, N, 1]`.
    pub fn velocity_loss_backward(&mut self, be: &B, a: &mut SitActs<B>, ut: &[f32]) -> Result<f64, B::Error> {
        check_len("velocity target", a.latent_len(), ut.len())?;
        be.write(&mut a.target, ut)?;
        let loss = be.mse_loss(&a.pred, &a.target, Some(&mut a.dpred))?;
        self.backward(be, a)?;
        Ok(loss)
    }

    /// Checks host inputs for [`Sit::forward`], naming the one at fault.
    fn check_inputs(&self, a: &SitActs<B>, x: &[f32], t: &[f32], y: &[u32], cond: Option<&[f32]>) -> Res<B> {
        let batch = a.dims.batch;
        check_len("latents x", a.latent_len(), x.len())?;
        check_len("times t", batch, t.len())?;
        check_len("labels y", batch, y.len())?;
        ensure(
            y.iter().all(|&v| (v as usize) < self.config.label_rows()),
            "a label is not below the label table size",
        )?;
        match (self.config.cond_channels, cond) {
            (Some(cc), Some(cond)) => check_len("layout condition", a.dims.rows() * cc, cond.len())?,
            (Some(_), None) => ensure(false, "the texture model needs the layout condition")?,
            (None, Some(_)) => ensure(false, "the layout model takes no layout condition")?,
            (None, None) => {}
        }
        Ok(())
    }
}
