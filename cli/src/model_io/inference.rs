//! Running a loaded model: the patch grid of a crop (merged or tiled), batched inference and
//! PSNR/SSIM evaluation.

use crate::backends::device_error;
use crate::data::{push_layout, Batch, SampleSpec};
use crate::fit::Init;
use crate::imageio::Rgb8;
use crate::tiling::cut;
use anyhow::{bail, Result};
use gpstoken_core::backend::Backend;
use gpstoken_core::metrics;
use gpstoken_core::model::{Activations, GpsToken, Gradients, ModelConfig};

/// How a crop of several patches is decoded (spec 2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MultiPatch {
    /// Merge every patch's tokens onto one canvas, render it and decode it with DecoderNP(np)
    /// (the official path of S64 and M128).
    Merged,
    /// Decode every patch on its own (np = 1) and tile the outputs (the official path of L256).
    Tiled,
}

impl MultiPatch {
    pub fn name(self) -> &'static str {
        match self {
            MultiPatch::Merged => "merged",
            MultiPatch::Tiled => "tiled",
        }
    }

    /// The official choice for the released configs (spec 2.4): merged for S64 and M128, tiled
    /// for L256. Every other config (tiny64, yaml files) decodes tiled: a model trained on single
    /// patches only has not seen the merged canvas, where the large Gaussians of neighbouring
    /// patches overlap and the patch borders are gone (docs/RESULTS.md measures both).
    pub fn default_for(cfg: &ModelConfig) -> MultiPatch {
        match cfg.name.as_str() {
            "s64" | "m128" => MultiPatch::Merged,
            _ => MultiPatch::Tiled,
        }
    }
}

/// A model with activations for a fixed batch size and patch grid, for inference.
pub struct Runner<B: Backend> {
    pub model: GpsToken<B>,
    /// The model's activations: `batch` crops of np x np patches when merged, `batch·np²`
    /// single patches when tiled (each patch `spec.width x spec.height`).
    pub acts: Activations<B>,
    /// Patches per side of a crop (np).
    pub(crate) patches: usize,
    pub mode: MultiPatch,
    /// Per patch: width and height, tokens N, Algorithm 1's settings.
    pub spec: SampleSpec,
    /// Optional cdbias map (focus mask) of the whole crop, applied to every crop's Algorithm 1.
    pub bias: Option<Vec<f32>>,
}

/// What one inference gives per image (of `np x np` patches).
pub struct Output {
    /// `[3, h·np, w·np]` in [-1, 1] (unclamped decoder output).
    pub decoded: Vec<f32>,
    /// `[np²·N, 5 + C]` encoder tokens, patch after patch, coordinates local to each patch (the
    /// `.gpst` layout).
    pub tokens: Vec<f32>,
    /// `[np²·N, 5]` initial Gaussians in the same layout.
    pub g_init: Vec<f32>,
}

impl<B: Backend> Runner<B> {
    /// `patches` is np: the model runs on `w·np x h·np` crops cut into `np x np` patches of the
    /// model's `w x h` (the official multi-patch path, spec 2.4 / 3.6); 1 is a single patch.
    pub fn new(
        be: &B,
        model: GpsToken<B>,
        batch: usize,
        patches: usize,
        mode: MultiPatch,
        init: Init,
    ) -> Result<Runner<B>> {
        if patches == 0 {
            bail!("the patch grid must have at least one patch");
        }
        let cfg = model.config();
        let spec = SampleSpec::for_model(cfg, init);
        let acts = match mode {
            MultiPatch::Merged => model.activations_with(be, batch, patches, Gradients::No),
            MultiPatch::Tiled => model.activations_with(be, batch * patches * patches, 1, Gradients::No),
        }
        .map_err(device_error(be))?;
        Ok(Runner { model, acts, patches, mode, spec, bias: None })
    }

    /// Patches per side (np).
    pub fn patches(&self) -> usize {
        self.patches
    }

    /// Side of the crops this runner takes, `S·np`, for a model with square `S x S` patches
    /// (the generator's; see [`Runner::crop_hw`]).
    pub fn crop_size(&self) -> usize {
        self.spec.width * self.patches()
    }

    /// `(width, height)` of the crops this runner takes: `(w·np, h·np)`.
    pub fn crop_hw(&self) -> (usize, usize) {
        (self.spec.width * self.patches(), self.spec.height * self.patches())
    }

    /// Runs `crops` (each [`Runner::crop_hw`]) in chunks of the batch size (see [`infer`]), with
    /// the focus map, if any, on every crop.
    pub fn run(&mut self, be: &B, crops: &[&Rgb8]) -> Result<Vec<Output>> {
        let (np, patch, side) = (self.patches, (self.spec.width, self.spec.height), self.crop_hw());
        let samples: Vec<Sample> = crops.iter().map(|&c| (c, self.bias.as_deref())).collect();
        if np == 1 || self.mode == MultiPatch::Merged {
            return infer(be, &self.model, &mut self.acts, &self.spec, &samples);
        }
        // Tiled: every patch is an image of its own; the outputs are put back together.
        let mut tiles = Vec::with_capacity(crops.len() * np * np);
        let mut tile_bias = Vec::with_capacity(tiles.capacity());
        for &(c, bias) in &samples {
            check_side(c, side)?;
            for k in 0..np * np {
                let at = ((k % np) * patch.0, (k / np) * patch.1);
                tiles.push(Rgb8 {
                    width: patch.0,
                    height: patch.1,
                    data: cut(&c.data, (side.0, side.1, 3), at, patch),
                });
                tile_bias.push(bias.map(|b| cut(b, (side.0, side.1, 1), at, patch)));
            }
        }
        let tile_samples: Vec<Sample> = tiles.iter().zip(&tile_bias).map(|(t, b)| (t, b.as_deref())).collect();
        let outs = infer(be, &self.model, &mut self.acts, &self.spec, &tile_samples)?;
        Ok(outs
            .chunks(np * np)
            .map(|parts| Output {
                decoded: stitch(parts.iter().map(|p| &p.decoded[..]), np, patch),
                tokens: parts.iter().flat_map(|p| p.tokens.iter().copied()).collect(),
                g_init: parts.iter().flat_map(|p| p.g_init.iter().copied()).collect(),
            })
            .collect())
    }

    /// Decodes tokens `[np²·N, 5+C]` (patch after patch, the `.gpst` layout) to `[3, h·np, w·np]`.
    pub fn decode(&mut self, be: &B, tokens: &[f32]) -> Result<Vec<f32>> {
        let err = device_error(be);
        let (np, patch, side) = (self.patches, (self.spec.width, self.spec.height), self.crop_hw());
        if self.acts.batch() * self.acts.patches().pow(2) != np * np {
            bail!("internal error: decode needs a runner for one crop");
        }
        self.model.decode_tokens(be, &mut self.acts, tokens).map_err(err)?;
        // Merged: one [3, h·np, w·np] image; tiled: np² images [3, h, w] to put side by side.
        let mut decoded = vec![0.0f32; 3 * side.0 * side.1];
        be.download(self.acts.decoded(), &mut decoded).map_err(err)?;
        if self.mode == MultiPatch::Merged || np == 1 {
            return Ok(decoded);
        }
        Ok(stitch(decoded.chunks_exact(3 * patch.0 * patch.1), np, patch))
    }
}

/// Puts np² decoded patches `[3, h, w]` (row-major) together as one `[3, h·np, w·np]` image.
fn stitch<'a>(parts: impl Iterator<Item = &'a [f32]>, np: usize, (w, h): (usize, usize)) -> Vec<f32> {
    let (width, height) = (np * w, np * h);
    let mut decoded = vec![0.0f32; 3 * width * height];
    for (k, p) in parts.enumerate() {
        let (x0, y0) = ((k % np) * w, (k / np) * h);
        for c in 0..3 {
            for y in 0..h {
                let dst = (c * height + y0 + y) * width + x0;
                decoded[dst..dst + w].copy_from_slice(&p[(c * h + y) * w..(c * h + y + 1) * w]);
            }
        }
    }
    decoded
}

/// A crop and its optional focus map (cdbias, one value per pixel of the crop).
pub type Sample<'a> = (&'a Rgb8, Option<&'a [f32]>);

fn check_side(crop: &Rgb8, (width, height): (usize, usize)) -> Result<()> {
    if (crop.width, crop.height) != (width, height) {
        bail!("internal error: a {}x{} crop for a {width}x{height} runner", crop.width, crop.height);
    }
    Ok(())
}

/// The official evaluation and inference crop (spec 3.7).
pub const OFFICIAL_CROP: usize = 256;

/// Side of the centre crop for `--size`: a multiple of the model's patch size S; by default
/// 256 (the official crop, several patches for a model with smaller patches) when S divides it,
/// else S.
pub fn crop_side(size: Option<usize>, patch: usize) -> Result<usize> {
    match size {
        None if patch > 0 && OFFICIAL_CROP.is_multiple_of(patch) => Ok(OFFICIAL_CROP),
        None => Ok(patch),
        Some(s) if s == 0 || s % patch != 0 => {
            bail!("--size {s} must be a positive multiple of the model's patch size {patch}")
        }
        Some(s) if s / patch > 16 => bail!("--size {s} is more than 16 patches of {patch} per side"),
        Some(s) => Ok(s),
    }
}

/// Runs `samples` (crops of `w·np x h·np`, np from the activations, each with an optional focus
/// map) through `model` in chunks of the activations' batch size (the last chunk padded by
/// repeating its last sample). Each crop is cut into np x np patches of `w x h`, row-major; Algorithm 1
/// runs on every patch with N tokens and coordinates local to the patch (spec 3.6); the model
/// merges them onto one canvas (spec 2.4).
pub fn infer<B: Backend>(
    be: &B,
    model: &GpsToken<B>,
    acts: &mut Activations<B>,
    spec: &SampleSpec,
    samples: &[Sample],
) -> Result<Vec<Output>> {
    let bsz = acts.batch();
    let np = acts.patches();
    let patch = (spec.width, spec.height);
    let side = (patch.0 * np, patch.1 * np);
    let pixels = side.0 * side.1;
    let stride = 5 + model.config().gps.gps_c;
    let n = spec.tokens * np * np;
    let mut outs = Vec::with_capacity(samples.len());
    let err = device_error(be);
    for &(c, bias) in samples {
        check_side(c, side)?;
        if bias.is_some_and(|b| b.len() != pixels) {
            bail!("internal error: a focus map that is not {}x{}", side.0, side.1);
        }
    }
    for chunk in samples.chunks(bsz) {
        let mut batch = Batch { step: 0, image: Vec::new(), g_init: Vec::new(), regions: Vec::new() };
        for i in 0..bsz {
            let (crop, bias) = chunk[i.min(chunk.len() - 1)];
            // The whole crop once, then each patch's layout.
            let hwc = crate::imageio::to_unit(crop);
            batch.image.extend_from_slice(&crate::imageio::hwc_to_chw(&hwc, 3));
            for k in 0..np * np {
                let at = ((k % np) * patch.0, (k / np) * patch.1);
                if np == 1 {
                    push_layout(&hwc, spec, bias, &mut batch)?;
                } else {
                    let patch_bias = bias.map(|b| cut(b, (side.0, side.1, 1), at, patch));
                    push_layout(&cut(&hwc, (side.0, side.1, 3), at, patch), spec, patch_bias.as_deref(), &mut batch)?;
                }
            }
        }
        model.forward(be, acts, &batch.image, &batch.g_init, &batch.regions).map_err(err)?;
        let mut decoded = vec![0.0f32; bsz * 3 * pixels];
        be.download(acts.decoded(), &mut decoded).map_err(err)?;
        let mut tokens = vec![0.0f32; bsz * n * stride];
        be.download(acts.tokens(), &mut tokens).map_err(err)?;
        for i in 0..chunk.len() {
            outs.push(Output {
                decoded: decoded[i * 3 * pixels..(i + 1) * 3 * pixels].to_vec(),
                tokens: tokens[i * n * stride..(i + 1) * n * stride].to_vec(),
                g_init: batch.g_init[i * n * 5..(i + 1) * n * 5].to_vec(),
            });
        }
    }
    Ok(outs)
}

/// PSNR and SSIM (on [0, 1], the decoder output clamped) of a `[3, H, W]` reconstruction
/// against the image it reconstructs.
pub fn score(decoded: &[f32], crop: &Rgb8) -> Result<(f64, f64)> {
    crate::outputs::check_finite(decoded, "the decoder output")?;
    let target: Vec<f32> = crate::imageio::hwc_to_chw(&crate::imageio::to_unit(crop), 3)
        .iter()
        .map(|&v| metrics::unit_from_signed(v))
        .collect();
    let pred: Vec<f32> = decoded.iter().map(|&v| metrics::unit_from_signed(v)).collect();
    let psnr = metrics::psnr(&pred, &target);
    let ssim = metrics::ssim(&pred, &target, 3, crop.height, crop.width).map_err(|e| anyhow::anyhow!("ssim: {e}"))?;
    Ok((psnr, ssim))
}

/// PSNR and SSIM of every output against its crop, and their means.
pub struct Evaluation {
    pub psnr: f64,
    pub ssim: f64,
    /// `(psnr, ssim)` per crop, in order.
    pub per_image: Vec<(f64, f64)>,
    pub outputs: Vec<Output>,
}

/// [`Evaluation`] of `runner` over `crops`.
pub fn evaluate<B: Backend>(be: &B, runner: &mut Runner<B>, crops: &[&Rgb8]) -> Result<Evaluation> {
    let outs = runner.run(be, crops)?;
    score_all(outs, crops)
}

/// [`Evaluation`] of `outs` against `crops`.
pub fn score_all(outputs: Vec<Output>, crops: &[&Rgb8]) -> Result<Evaluation> {
    let per_image = outputs.iter().zip(crops).map(|(o, c)| score(&o.decoded, c)).collect::<Result<Vec<_>>>()?;
    let k = per_image.len().max(1) as f64;
    let psnr = per_image.iter().map(|s| s.0).sum::<f64>() / k;
    let ssim = per_image.iter().map(|s| s.1).sum::<f64>() / k;
    Ok(Evaluation { psnr, ssim, per_image, outputs })
}
