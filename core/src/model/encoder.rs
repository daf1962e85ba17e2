//! The encoder (`GPSToken.encode`, spec 5.1-5.3): image features, RoIAlign, the conditional
//! transformer over the tokens, and the reparameterised Gaussian head.

use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;

use super::config::{ModelConfig, PREPROCESS_CHANNELS};
use super::layers::{zeros, ConvP, EncBlock, EncBlockActs, EncBlockGrads, EncDims, LinearP, Res, ResActs, ResBlock};
use super::params::{Gradients, GradientsReady, Init, ParamId, ParamRegistry, ParamStore};
use crate::backend::{Activation, Backend, Buffers, Conv2dDesc, NormKind, ReparamDesc, RoiAlignDesc};
use crate::shape::ShapeError;
use crate::token::GAUSSIAN_PARAMS;

/// Layer structure of the encoder (parameter ids only).
#[derive(Clone, Debug)]
pub(crate) struct Encoder {
    conv0: ConvP,
    res1: ResBlock,
    res2: ResBlock,
    roi_layer: ConvP,
    embed: ParamId,
    blocks: Vec<EncBlock>,
    emb0: LinearP,
    emb2: LinearP,
    to_gps0: LinearP,
    to_gps1: LinearP,
    /// E
    width: usize,
    /// C
    channels: usize,
    /// N
    tokens: usize,
    /// R
    rois: usize,
    /// Patch `(height, width)` in pixels.
    size: (usize, usize),
    /// The parameter ids of each layer group, announced to a [`GradientsReady`] as the backward
    /// finishes it: the image stem (`preprocess_img.*`, `roialign_layer`), each block, the
    /// Gaussian embedding (`gps_embed_layer.*`) and head (`to_gps.*`).
    stem_ids: Range<ParamId>,
    block_ids: Vec<Range<ParamId>>,
    embedding_ids: Range<ParamId>,
    head_ids: Range<ParamId>,
}

/// Every buffer of the encoder for one batch of patches.
pub(crate) struct EncActs<B: Buffers> {
    pub dims: EncDims,
    /// Inference ([`Gradients::No`]): `p0`, `res1` and `blocks` are empty; the forward makes
    /// them as it goes and drops each once the next layer has read it.
    streamed: bool,
    c0: Conv2dDesc,
    roi: RoiAlignDesc,
    rl: Conv2dDesc,
    rep: ReparamDesc,
    /// Input `[Bp, 3, h, w]`.
    pub image: B::Buffer,
    p0: B::Buffer,
    res1: ResActs<B>,
    /// `res2.out` is `x_preprocess` `[Bp, 128, h, w]`.
    res2: ResActs<B>,
    /// Host staging of the RoI boxes (filled by [`EncActs::set_regions`]).
    boxes_host: Vec<f32>,
    /// `[Bp·N, 5]` rows `(batch_index, x1, y1, x2, y2)` in pixels.
    pub boxes: B::Buffer,
    rf: B::Buffer,
    /// `roi_conds` `[Bp·N, E, R, R]` (= `[Bp·N·E, R²]`).
    pub rc: B::Buffer,
    /// `[Bp·N, 5]`.
    pub g_init: B::Buffer,
    u0: B::Buffer,
    gl: B::Buffer,
    h0: B::Buffer,
    blocks: Vec<EncBlockActs<B>>,
    bgrads: EncBlockGrads<B>,
    delta: B::Buffer,
    feat: B::Buffer,
    /// `[Bp, N, 5+C]`.
    pub tokens: B::Buffer,
    // gradients
    /// dL/d(tokens), the input of the backward.
    pub d_tokens: B::Buffer,
    d_delta: B::Buffer,
    d_feat: B::Buffer,
    /// dL/d(g_init) `[Bp, N, 5]` (reparameterisation + embedding paths).
    pub d_g_init: B::Buffer,
    d_gi_tmp: B::Buffer,
    d_h: B::Buffer,
    d_h_tmp: B::Buffer,
    d_rc: B::Buffer,
    d_rf: B::Buffer,
    d_xp: B::Buffer,
    d_gl: B::Buffer,
    d_u0: B::Buffer,
    /// dL/d(image) through the encoder `[Bp, 3, h, w]`.
    pub d_image: B::Buffer,
}

impl<B: Buffers> EncActs<B> {
    pub fn x_preprocess(&self) -> &B::Buffer {
        &self.res2.out
    }

    /// Converts normalised regions `[Bp, N, 4]` to the RoI boxes exactly as the official
    /// in-place conversion does (spec 5.2, golden `regions_px`): `X = ((W-1)·(Xn+1))/2` and
    /// `Y = ((H-1)·(Yn+1))/2` in f32, left to right, with the batch index in front. `(height,
    /// width)` is the patch: x is normalised to its width, y to its height.
    pub fn set_regions(&mut self, be: &B, regions: &[f32], (height, width): (usize, usize)) -> Result<(), B::Error> {
        let n = self.dims.tokens;
        crate::shape::check_len("regions", self.dims.rows() * 4, regions.len())?;
        let (sx, sy) = ((width - 1) as f32, (height - 1) as f32);
        for (r, (src, dst)) in regions.chunks_exact(4).zip(self.boxes_host.chunks_exact_mut(5)).enumerate() {
            dst[0] = (r / n) as f32;
            // [X1, Y1, X2, Y2]: even entries are x, odd ones y.
            for k in 0..4 {
                let scale = if k % 2 == 0 { sx } else { sy };
                dst[1 + k] = (scale * (src[k] + 1.0)) / 2.0;
            }
        }
        // The RoI kernels trust the boxes (a device cannot check them without a read-back).
        self.roi.check_boxes(&self.boxes_host)?;
        be.write(&mut self.boxes, &self.boxes_host)
    }
}

impl Encoder {
    /// Registers `preprocess_img`, `roialign_layer`, `gps_embed`, `attnblocks`,
    /// `gps_embed_layer`, `to_gps` in `GPSToken.__init__` order.
    pub fn new(reg: &mut ParamRegistry, cfg: &ModelConfig) -> Self {
        let g = &cfg.gps;
        let (e, pc) = (g.gpsenc_c, PREPROCESS_CHANNELS);
        let ((conv0, res1, res2, roi_layer), stem_ids) = reg.registered(|reg| {
            (
                ConvP::new(reg, "preprocess_img.0", 3, pc, 3),
                ResBlock::new(reg, "preprocess_img.1", pc, pc, NormKind::Standard, true),
                ResBlock::new(reg, "preprocess_img.2", pc, pc, NormKind::Standard, true),
                ConvP::new(reg, "roialign_layer", pc, e, 1),
            )
        });
        let embed = reg.add("gps_embed.weight".into(), &[1, e], Init::Normal);
        let (blocks, block_ids) = (0..g.gpsenc_n)
            .map(|i| reg.registered(|reg| EncBlock::new(reg, &format!("attnblocks.{i}"), e, g.rois * g.rois)))
            .unzip();
        let ((emb0, emb2), embedding_ids) = reg.registered(|reg| {
            (LinearP::new(reg, "gps_embed_layer.0", GAUSSIAN_PARAMS, e), LinearP::new(reg, "gps_embed_layer.2", e, e))
        });
        let ((to_gps0, to_gps1), head_ids) = reg.registered(|reg| {
            // to_gps.0 is zero-filled in GPSToken.__init__ (tokens start at g_init).
            let to_gps0 = LinearP::named(
                reg,
                "to_gps.0.weight".into(),
                "to_gps.0.bias".into(),
                e,
                GAUSSIAN_PARAMS,
                Init::Zeros,
                Init::Zeros,
            );
            (to_gps0, LinearP::new(reg, "to_gps.1", e, g.gps_c))
        });
        Encoder {
            conv0,
            res1,
            res2,
            roi_layer,
            embed,
            blocks,
            emb0,
            emb2,
            to_gps0,
            to_gps1,
            width: e,
            channels: g.gps_c,
            tokens: g.gps_num,
            rois: g.rois,
            size: cfg.image_hw,
            stem_ids,
            block_ids,
            embedding_ids,
            head_ids,
        }
    }

    /// Patch `(height, width)`.
    pub fn size(&self) -> (usize, usize) {
        self.size
    }

    /// Buffers for `batch` patches.
    pub fn acts<B: Backend>(&self, be: &B, batch: usize, g: Gradients) -> Result<EncActs<B>, B::Error> {
        let ((sh, sw), pc, e, c, r) = (self.size, PREPROCESS_CHANNELS, self.width, self.channels, self.rois);
        let dims = EncDims { batch, tokens: self.tokens };
        let rows = dims.rows();
        let stride = GAUSSIAN_PARAMS + c;
        let streamed = g == Gradients::No;
        let blocks = if streamed {
            Vec::new()
        } else {
            self.blocks.iter().map(|b| b.acts(be, dims, g)).collect::<Result<Vec<_>, _>>()?
        };
        let kept = if streamed { 0 } else { batch };
        // Block gradient scratch; with no block a tiny placeholder keeps the struct uniform.
        let bgrads = match self.blocks.first() {
            Some(b) => b.grads(be, dims, r * r, g)?,
            None => EncBlock::new(&mut ParamRegistry::new(), "x", e, r * r).grads(
                be,
                EncDims { batch: 0, tokens: 0 },
                0,
                g,
            )?,
        };
        Ok(EncActs {
            dims,
            streamed,
            c0: self.conv0.desc(batch, sh, sw),
            roi: RoiAlignDesc {
                batch,
                channels: pc,
                height: sh,
                width: sw,
                rois: rows,
                pooled: r,
                spatial_scale: 1.0,
                sampling_ratio: -1,
                aligned: true,
            },
            rl: Conv2dDesc::same(rows, pc, e, r, r, 1),
            rep: ReparamDesc { rows, channels: c },
            image: zeros(be, batch * 3 * sh * sw)?,
            p0: zeros(be, kept * pc * sh * sw)?,
            res1: self.res1.acts(be, kept, sh, sw, 1, g)?,
            res2: self.res2.acts(be, batch, sh, sw, 1, g)?,
            boxes_host: alloc::vec![0.0; rows * 5],
            boxes: zeros(be, rows * 5)?,
            rf: zeros(be, rows * pc * r * r)?,
            rc: zeros(be, rows * e * r * r)?,
            g_init: zeros(be, rows * GAUSSIAN_PARAMS)?,
            u0: zeros(be, rows * e)?,
            gl: zeros(be, rows * e)?,
            h0: zeros(be, rows * e)?,
            blocks,
            bgrads,
            delta: zeros(be, rows * GAUSSIAN_PARAMS)?,
            feat: zeros(be, rows * c)?,
            tokens: zeros(be, rows * stride)?,
            d_tokens: g.zeros(be, rows * stride)?,
            d_delta: g.zeros(be, rows * GAUSSIAN_PARAMS)?,
            d_feat: g.zeros(be, rows * c)?,
            d_g_init: g.zeros(be, rows * GAUSSIAN_PARAMS)?,
            d_gi_tmp: g.zeros(be, rows * GAUSSIAN_PARAMS)?,
            d_h: g.zeros(be, rows * e)?,
            d_h_tmp: g.zeros(be, rows * e)?,
            d_rc: g.zeros(be, rows * e * r * r)?,
            d_rf: g.zeros(be, rows * pc * r * r)?,
            d_xp: g.zeros(be, batch * pc * sh * sw)?,
            d_gl: g.zeros(be, rows * e)?,
            d_u0: g.zeros(be, rows * e)?,
            d_image: g.zeros(be, batch * 3 * sh * sw)?,
        })
    }

    /// `encode(x, g_init, boxes)` on `a.image`, `a.g_init`, `a.boxes` (spec 5.2) into `a.tokens`.
    pub fn forward<B: Backend>(&self, be: &B, p: &ParamStore<B>, a: &mut EncActs<B>) -> Res<B> {
        let (rows, e) = (a.dims.rows(), self.width);
        // image features: conv3x3 + two taming ResnetBlocks (standard GroupNorm)
        if a.streamed {
            let mut p0 = zeros(be, a.c0.output_len())?;
            self.conv0.forward(be, p, &a.c0, &a.image, &mut p0)?;
            let mut res1 = self.res1.acts(be, a.dims.batch, self.size.0, self.size.1, 1, Gradients::No)?;
            self.res1.forward(be, p, &p0, &mut res1)?;
            drop(p0);
            self.res2.forward(be, p, &res1.out, &mut a.res2)?;
        } else {
            self.conv0.forward(be, p, &a.c0, &a.image, &mut a.p0)?;
            self.res1.forward(be, p, &a.p0, &mut a.res1)?;
            self.res2.forward(be, p, &a.res1.out, &mut a.res2)?;
        }
        // RoI features, computed once and shared by every block
        be.roi_align_forward(&a.roi, &a.res2.out, &a.boxes, &mut a.rf)?;
        self.roi_layer.forward(be, p, &a.rl, &a.rf, &mut a.rc)?;
        // token embedding: gps_embed_layer(g_init) + gps_embed.weight[0]
        self.emb0.forward(be, p, rows, &a.g_init, &mut a.u0)?;
        be.activation_forward(Activation::GeluErf, &a.u0, &mut a.gl)?;
        self.emb2.forward(be, p, rows, &a.gl, &mut a.h0)?;
        be.add_row_broadcast(rows, e, &mut a.h0, p.value(self.embed))?;
        // transformer blocks
        let mut streamed_last = None;
        if a.streamed {
            for blk in &self.blocks {
                let mut cur = blk.acts(be, a.dims, Gradients::No)?;
                blk.forward(
                    be,
                    p,
                    a.dims,
                    streamed_last.as_ref().map_or(&a.h0, |q: &EncBlockActs<B>| &q.out),
                    &a.rc,
                    &mut cur,
                )?;
                streamed_last = Some(cur);
            }
        }
        for (i, blk) in self.blocks.iter().enumerate().take(a.blocks.len()) {
            let (done, rest) = a.blocks.split_at_mut(i);
            let x = if i == 0 { &a.h0 } else { &done[i - 1].out };
            blk.forward(be, p, a.dims, x, &a.rc, &mut rest[0])?;
        }
        let h = streamed_last.as_ref().or(a.blocks.last()).map_or(&a.h0, |b| &b.out);
        // Gaussian head
        self.to_gps0.forward(be, p, rows, h, &mut a.delta)?;
        self.to_gps1.forward(be, p, rows, h, &mut a.feat)?;
        be.gaussian_reparam_forward(&a.rep, &a.g_init, &a.delta, &a.feat, &mut a.tokens)
    }

    /// From `a.d_tokens` to every encoder parameter gradient, `a.d_g_init` and `a.d_image`,
    /// telling `ready` of each layer's gradients as they are done.
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        a: &mut EncActs<B>,
        ready: &mut dyn GradientsReady<B>,
    ) -> Res<B> {
        if a.streamed {
            return Err(ShapeError::Invalid { what: "a backward pass needs activations made with gradients" }.into());
        }
        let (rows, e) = (a.dims.rows(), self.width);
        be.gaussian_reparam_backward(
            &a.rep,
            &a.g_init,
            &a.delta,
            &a.d_tokens,
            &mut a.d_delta,
            &mut a.d_feat,
            Some(&mut a.d_g_init),
        )?;
        {
            let h = a.blocks.last().map_or(&a.h0, |b| &b.out);
            self.to_gps0.backward(be, p, rows, h, &a.d_delta, Some(&mut a.d_h))?;
            self.to_gps1.backward(be, p, rows, h, &a.d_feat, Some(&mut a.d_h_tmp))?;
        }
        ready.ready(be, p, self.head_ids.clone());
        be.add_assign(&mut a.d_h, &a.d_h_tmp)?;
        // blocks, last to first; each adds its roimlp share to d_rc
        be.fill(&mut a.d_rc, 0.0)?;
        for i in (0..self.blocks.len()).rev() {
            let (cur, later) = a.blocks[i..].split_first_mut().expect("block exists");
            let dout = later.first().map_or(&a.d_h, |b| &b.dx);
            self.blocks[i].backward(be, p, a.dims, &a.rc, dout, cur, &mut a.bgrads, &mut a.d_rc)?;
            ready.ready(be, p, self.block_ids[i].clone());
        }
        let dh0 = a.blocks.first().map_or(&a.d_h, |b| &b.dx);
        // embedding: the shared row gets the column sums; the MLP gets dh0
        be.sum_rows(rows, e, dh0, p.grad_mut(self.embed))?;
        self.emb2.backward(be, p, rows, &a.gl, dh0, Some(&mut a.d_gl))?;
        be.activation_backward(Activation::GeluErf, &a.u0, &a.d_gl, &mut a.d_u0)?;
        self.emb0.backward(be, p, rows, &a.g_init, &a.d_u0, Some(&mut a.d_gi_tmp))?;
        be.add_assign(&mut a.d_g_init, &a.d_gi_tmp)?;
        ready.ready(be, p, self.embed..self.embed + 1);
        ready.ready(be, p, self.embedding_ids.clone());
        // RoI path back to the image features (boxes get no gradient, as in torchvision)
        self.roi_layer.backward(be, p, &a.rl, &a.rf, &a.d_rc, Some(&mut a.d_rf))?;
        be.roi_align_backward(&a.roi, &a.boxes, &a.d_rf, &mut a.d_xp)?;
        self.res2.backward(be, p, &a.res1.out, &a.d_xp, &mut a.res2)?;
        self.res1.backward(be, p, &a.p0, &a.res2.dx, &mut a.res1)?;
        self.conv0.backward(be, p, &a.c0, &a.image, &a.res1.dx, Some(&mut a.d_image))?;
        ready.ready(be, p, self.stem_ids.clone());
        Ok(())
    }
}
