//! The whole tokenizer: encoder → (multi-patch merge) → splat → DecoderNP, forward and backward,
//! with every activation preallocated for one batch size ([`Activations`]).

use alloc::vec::Vec;
use core::fmt;

use super::config::{ConfigError, ModelConfig};
use super::decoder::{DecActs, Decoder};
use super::encoder::{EncActs, Encoder};
use super::layers::{zeros, Res};
use super::params::{Gradients, GradientsReady, NoListener, ParamRegistry, ParamSpec, ParamStore};
use crate::backend::{Backend, MergeDesc, PatchDesc};
use crate::render::SplatDesc;
use crate::shape::check_len;
use crate::token::GAUSSIAN_PARAMS;

/// Builds the layer structure of `cfg` and its parameter specs in the official state-dict order
/// (`GPSToken.__init__` registers `decoder` first, then the encoder modules).
fn layout(cfg: &ModelConfig) -> Result<(Encoder, Decoder, ParamRegistry), ConfigError> {
    cfg.validate()?;
    let mut reg = ParamRegistry::new();
    let decoder = Decoder::new(&mut reg, &cfg.decoder);
    let encoder = Encoder::new(&mut reg, cfg);
    Ok((encoder, decoder, reg))
}

impl ModelConfig {
    /// Every parameter (name, shape, init) in state-dict order, without touching a backend.
    pub fn param_specs(&self) -> Result<Vec<ParamSpec>, ConfigError> {
        Ok(layout(self)?.2.into_specs())
    }

    /// Number of parameter values, counted from the specs (nothing is allocated), including the
    /// unused `temb_proj` of the encoder's ResnetBlocks (spec 7.2).
    pub fn parameter_count(&self) -> Result<usize, ConfigError> {
        Ok(layout(self)?.2.count())
    }
}

/// Errors of model construction.
#[derive(Debug)]
pub enum ModelError<E> {
    Config(ConfigError),
    Backend(E),
}

impl<E: fmt::Display> fmt::Display for ModelError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Config(e) => write!(f, "{e}"),
            ModelError::Backend(e) => write!(f, "backend error: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for ModelError<E> {}

/// GPSToken (`models/gpstoken.py`) on a backend.
pub struct GpsToken<B: Backend> {
    config: ModelConfig,
    encoder: Encoder,
    decoder: Decoder,
    /// Parameter values and gradients, official names, state-dict order.
    pub params: ParamStore<B>,
}

/// Every activation and gradient buffer of one forward/backward for a fixed batch size and
/// patch count, allocated once by [`GpsToken::activations`] and reused by every step.
pub struct Activations<B: Backend> {
    batch: usize,
    patches: usize,
    /// Full images `[B, 3, h·np, w·np]` (np > 1 only; with np = 1 the encoder input is the image).
    image_full: Option<B::Buffer>,
    d_image_full: Option<B::Buffer>,
    img_tiles: PatchDesc,
    enc: EncActs<B>,
    /// Merged tokens `[B, np²·N, 5+C]` and their gradient (np > 1 only).
    merged: Option<B::Buffer>,
    d_merged: Option<B::Buffer>,
    merge: MergeDesc,
    splat: SplatDesc,
    rendered: B::Buffer,
    dec: DecActs<B>,
}

impl<B: Backend> Activations<B> {
    /// Images per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Patches per side (np).
    pub fn patches(&self) -> usize {
        self.patches
    }
    /// The image the model reconstructs `[B, 3, h·np, w·np]`.
    pub fn image(&self) -> &B::Buffer {
        self.image_full.as_ref().unwrap_or(&self.enc.image)
    }
    /// `preprocess_img` output `[B·np², 128, h, w]`.
    pub fn x_preprocess(&self) -> &B::Buffer {
        self.enc.x_preprocess()
    }
    /// RoI boxes `[B·np²·N, 5]` `(batch index, x1, y1, x2, y2)` in pixels (golden `roi`).
    pub fn roi_boxes(&self) -> &B::Buffer {
        &self.enc.boxes
    }
    /// `roialign_layer` output `[B·np²·N, E, R, R]` (golden `roi_conds`).
    pub fn roi_conds(&self) -> &B::Buffer {
        &self.enc.rc
    }
    /// Encoder tokens `[B·np², N, 5+C]`.
    pub fn tokens(&self) -> &B::Buffer {
        &self.enc.tokens
    }
    /// The splat output `[B, C, rs_h·np, rs_w·np]`.
    pub fn rendered(&self) -> &B::Buffer {
        &self.rendered
    }
    /// The decoder output `[B, 3, h·np, w·np]`.
    pub fn decoded(&self) -> &B::Buffer {
        &self.dec.decoded
    }
    /// dL/d(decoded): fill it (or call [`GpsToken::mse_backward`]) before [`GpsToken::backward`].
    pub fn d_decoded(&self) -> &B::Buffer {
        &self.dec.d_decoded
    }
    pub fn d_decoded_mut(&mut self) -> &mut B::Buffer {
        &mut self.dec.d_decoded
    }
    /// dL/d(rendered).
    pub fn d_rendered(&self) -> &B::Buffer {
        &self.dec.d_z
    }
    /// dL/d(tokens) `[B·np², N, 5+C]`.
    pub fn d_tokens(&self) -> &B::Buffer {
        &self.enc.d_tokens
    }
    /// dL/d(g_init) `[B·np², N, 5]`.
    pub fn d_g_init(&self) -> &B::Buffer {
        &self.enc.d_g_init
    }
    /// dL/d(image) through the encoder only (the golden `grad_image_target_detached`).
    pub fn d_image(&self) -> &B::Buffer {
        self.d_image_full.as_ref().unwrap_or(&self.enc.d_image)
    }

    /// dL/d(image) when the image is also the MSE target (golden `grad_image`): the encoder
    /// path plus the target path `∂L/∂target = -∂L/∂pred`. Written into `out`.
    pub fn d_image_with_target(&self, be: &B, out: &mut B::Buffer) -> Res<B> {
        be.copy(self.d_image(), out)?;
        be.axpy(-1.0, &self.dec.d_decoded, out)
    }
}

impl<B: Backend> GpsToken<B> {
    /// A model with every parameter zero (load weights or call [`GpsToken::init`] next).
    pub fn new(be: &B, config: ModelConfig) -> Result<Self, ModelError<B::Error>> {
        Self::with_gradients(be, config, Gradients::Yes)
    }

    /// [`GpsToken::new`] with parameter gradient buffers only for [`Gradients::Yes`]: an
    /// inference model ([`Gradients::No`]) holds its weights once.
    pub fn with_gradients(be: &B, config: ModelConfig, gradients: Gradients) -> Result<Self, ModelError<B::Error>> {
        let (encoder, decoder, reg) = layout(&config).map_err(ModelError::Config)?;
        let params = ParamStore::zeros_with(be, reg.into_specs(), gradients).map_err(ModelError::Backend)?;
        Ok(GpsToken { config, encoder, decoder, params })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// PyTorch-default initialisation from `seed` (spec 5.3, [`super::init`]).
    pub fn init(&mut self, be: &B, seed: u64) -> Result<(), B::Error> {
        super::init::init_params(be, &mut self.params, seed)
    }

    /// Buffers for `batch` images of `patches x patches` patches of `image_hw` each.
    pub fn activations(&self, be: &B, batch: usize, patches: usize) -> Result<Activations<B>, B::Error> {
        self.activations_with(be, batch, patches, Gradients::Yes)
    }

    /// [`GpsToken::activations`] with gradient buffers only for [`Gradients::Yes`]; the
    /// inference set ([`Gradients::No`]) also lets each ResnetBlock with equal input and output
    /// widths reuse its first norm/swish buffers for the second pair.
    pub fn activations_with(
        &self,
        be: &B,
        batch: usize,
        patches: usize,
        gradients: Gradients,
    ) -> Result<Activations<B>, B::Error> {
        let np = patches.max(1);
        let (sh, sw) = self.encoder.size();
        let g = &self.config.gps;
        let stride = GAUSSIAN_PARAMS + g.gps_c;
        let bp = batch * np * np;
        let tiled = np > 1;
        let splat = SplatDesc {
            batch,
            gaussians: np * np * g.gps_num,
            channels: g.gps_c,
            height: g.gps_rs.0 * np,
            width: g.gps_rs.1 * np,
            kappa: g.gps_dmax,
        };
        let ntok = bp * g.gps_num * stride;
        let opt = |on: bool, n: usize| -> Result<Option<B::Buffer>, B::Error> {
            if on {
                Ok(Some(zeros(be, n)?))
            } else {
                Ok(None)
            }
        };
        Ok(Activations {
            batch,
            patches: np,
            image_full: opt(tiled, bp * 3 * sh * sw)?,
            d_image_full: opt(tiled && gradients == Gradients::Yes, bp * 3 * sh * sw)?,
            img_tiles: PatchDesc { batch, channels: 3, patches: np, tile_height: sh, tile_width: sw },
            enc: self.encoder.acts(be, bp, gradients)?,
            merged: opt(tiled, ntok)?,
            d_merged: opt(tiled && gradients == Gradients::Yes, ntok)?,
            merge: MergeDesc { batch, patches: np, tokens_per_patch: g.gps_num, channels: g.gps_c },
            splat,
            rendered: zeros(be, splat.image_len())?,
            dec: self.decoder.acts(be, batch, splat.height, splat.width, np, gradients)?,
        })
    }

    /// Forward pass: `image [B, 3, h·np, w·np]`, `g_init [B·np², N, 5]` and `regions
    /// [B·np², N, 4]` (normalised, Algorithm 1's boxes; patch `k = i·np + j` of image `b` is row
    /// `b·np² + k`, spec 2.4) to `decoded`, keeping every intermediate in `a`.
    pub fn forward(&self, be: &B, a: &mut Activations<B>, image: &[f32], g_init: &[f32], regions: &[f32]) -> Res<B> {
        self.check_inputs(a, image, g_init, regions)?;
        match &mut a.image_full {
            Some(full) => {
                be.write(full, image)?;
                be.patchify(&a.img_tiles, full, &mut a.enc.image)?;
            }
            None => be.write(&mut a.enc.image, image)?,
        }
        be.write(&mut a.enc.g_init, g_init)?;
        a.enc.set_regions(be, regions, self.encoder.size())?;
        // encoder
        self.encoder.forward(be, &self.params, &mut a.enc)?;
        self.render_and_decode(be, a)
    }

    /// The decoder half on its own: `tokens [B·np², N, 5+C]` (what the encoder produces, e.g.
    /// read back from a `.gpst` file) are rendered and decoded into `a.decoded()`.
    pub fn decode_tokens(&self, be: &B, a: &mut Activations<B>, tokens: &[f32]) -> Res<B> {
        check_len("tokens", be.len(&a.enc.tokens), tokens.len())?;
        be.write(&mut a.enc.tokens, tokens)?;
        self.render_and_decode(be, a)
    }

    /// Renders `a.enc.tokens` (with the multi-patch merge of spec 2.4 when np > 1) and decodes.
    fn render_and_decode(&self, be: &B, a: &mut Activations<B>) -> Res<B> {
        match &mut a.merged {
            Some(merged) => {
                be.merge_patches_forward(&a.merge, &a.enc.tokens, merged)?;
                be.splat_forward(&a.splat, merged, &mut a.rendered)?;
            }
            None => be.splat_forward(&a.splat, &a.enc.tokens, &mut a.rendered)?,
        }
        self.decoder.forward(be, &self.params, &a.rendered, &mut a.dec)
    }

    /// Backward pass from `a.d_decoded()` (set by the caller or [`GpsToken::mse_backward`]):
    /// overwrites every parameter gradient, `d_tokens`, `d_g_init` and `d_image`.
    pub fn backward(&mut self, be: &B, a: &mut Activations<B>) -> Res<B> {
        self.backward_announcing(be, a, &mut NoListener)
    }

    /// [`GpsToken::backward`], telling `ready` of each layer's parameter gradients as soon as
    /// they are final: every parameter with a gradient is announced exactly once per pass.
    pub fn backward_announcing(&mut self, be: &B, a: &mut Activations<B>, ready: &mut dyn GradientsReady<B>) -> Res<B> {
        self.decoder.backward(be, &mut self.params, &a.rendered, &mut a.dec, ready)?;
        match (&a.merged, &mut a.d_merged) {
            (Some(merged), Some(d_merged)) => {
                be.splat_backward(&a.splat, merged, &a.dec.d_z, d_merged)?;
                be.merge_patches_backward(&a.merge, d_merged, &mut a.enc.d_tokens)?;
            }
            _ => be.splat_backward(&a.splat, &a.enc.tokens, &a.dec.d_z, &mut a.enc.d_tokens)?,
        }
        self.encoder.backward(be, &mut self.params, &mut a.enc, ready)?;
        if let Some(full) = &mut a.d_image_full {
            be.unpatchify(&a.img_tiles, &a.enc.d_image, full)?;
        }
        Ok(())
    }

    /// `mean((decoded - image)²)` (as the backend's f64 convenience returns it: finite-difference
    /// checks need more than the f32 of a device buffer) and its gradient into `d_decoded`,
    /// without the backward pass.
    pub fn mse_loss_grad(&self, be: &B, a: &mut Activations<B>) -> Result<f64, B::Error> {
        let target = a.image_full.as_ref().unwrap_or(&a.enc.image);
        be.mse_loss(&a.dec.decoded, target, Some(&mut a.dec.d_decoded))
    }

    /// `mean((decoded - image)²)` into the one-value device buffer `loss` and its gradient into
    /// `d_decoded`, without the backward pass (the adversarial stage adds its own term to
    /// `d_decoded` first).
    pub fn mse_loss_grad_into(&self, be: &B, a: &mut Activations<B>, loss: &mut B::Buffer) -> Res<B> {
        let target = a.image_full.as_ref().unwrap_or(&a.enc.image);
        be.mse_loss_into(&a.dec.decoded, target, Some(&mut a.dec.d_decoded), loss)
    }

    /// `dw = dL/d(decoder.conv_out.weight)` of `dy = dL/d(decoded)` alone, after a forward pass
    /// (`dw` holds [`GpsToken::conv_out_weight_len`] values); touches no other gradient.
    pub fn conv_out_weight_grad(&self, be: &B, a: &Activations<B>, dy: &B::Buffer, dw: &mut B::Buffer) -> Res<B> {
        self.decoder.conv_out_weight_grad(be, &self.params, &a.dec, dy, dw)
    }

    /// Values of `decoder.conv_out.weight`.
    pub fn conv_out_weight_len(&self) -> usize {
        self.decoder.conv_out_weight_len()
    }

    /// The training loss of spec 8 without the perceptual/GAN terms: `mean((decoded - image)²)`
    /// (`LossOps::mse_loss`), its gradient into `d_decoded`, then [`GpsToken::backward`].
    pub fn mse_backward(&mut self, be: &B, a: &mut Activations<B>) -> Result<f64, B::Error> {
        let target = a.image_full.as_ref().unwrap_or(&a.enc.image);
        let loss = be.mse_loss(&a.dec.decoded, target, Some(&mut a.dec.d_decoded))?;
        self.backward(be, a)?;
        Ok(loss)
    }

    /// [`GpsToken::mse_backward`] with the loss left in the one-value device buffer `loss`
    /// (no wait for the device; a training loop reads it when it logs).
    pub fn mse_backward_into(&mut self, be: &B, a: &mut Activations<B>, loss: &mut B::Buffer) -> Res<B> {
        self.mse_loss_grad_into(be, a, loss)?;
        self.backward(be, a)
    }

    /// Checks host input lengths for [`GpsToken::forward`] (the ops check them too; this names
    /// the input).
    pub fn check_inputs(&self, a: &Activations<B>, image: &[f32], g_init: &[f32], regions: &[f32]) -> Res<B> {
        let (sh, sw) = self.encoder.size();
        let rows = a.enc.dims.rows();
        check_len("image", a.batch * 3 * sh * a.patches * sw * a.patches, image.len())?;
        check_len("g_init", rows * GAUSSIAN_PARAMS, g_init.len())?;
        check_len("regions", rows * 4, regions.len())?;
        Ok(())
    }
}
