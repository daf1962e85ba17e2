//! A whole photo through the model at its own size and shape (spec 3.6 without the crop): the
//! patches of its [`Grid`] in batches of the runner's size, so the model's memory does not grow
//! with the photo; or, for `--multi-patch merged`, a square patch grid (np x np patches, each
//! square or not) as one merged canvas (spec 2.4), whose memory does grow with the grid (up to
//! [`MAX_PASS_PIXELS`]).

use crate::backends::device_error;
use crate::imageio::Rgb8;
use crate::model_io::{infer, MultiPatch, Output, Runner, Sample};
use crate::tiling::{cut, Blend, Grid};
use anyhow::{bail, Result};
use gpstoken_core::backend::Backend;
use gpstoken_core::model::Gradients;

/// Most pixels one forward pass may take (patches x patch area, or a merged canvas): every
/// activation scales with it (1024 x 1024 pixels hold about 10 GB of tiny64 or M128
/// activations), so a larger pass is refused with a one-line error instead of an abort.
pub const MAX_PASS_PIXELS: usize = 1 << 20;

/// `Ok` when `pixels` fit one forward pass ([`MAX_PASS_PIXELS`]).
pub fn check_pass(pixels: usize, what: &str) -> Result<()> {
    if pixels > MAX_PASS_PIXELS {
        bail!("{what} puts {pixels} pixels in one forward pass; at most {MAX_PASS_PIXELS} (1024x1024) are supported");
    }
    Ok(())
}

/// Patches per forward pass by default: one. Every activation of a pass is held until it ends
/// (about 40 MB per 64-pixel tiny64 patch, 0.5 GB per 256-pixel M128 patch), while the CPU
/// backend already spreads each op over every core, so larger passes cost memory and buy no
/// speed on the CPU (docs/RESULTS.md); `--batch` trades memory for speed on a device.
pub const DEFAULT_BATCH: usize = 1;

/// A focus map (Algorithm 1's cdbias, one value per pixel) of a `width x height` image.
pub struct FocusMap {
    pub values: Vec<f32>,
    pub width: usize,
    pub height: usize,
}

impl FocusMap {
    fn patch(&self, at: (usize, usize), size: (usize, usize)) -> Vec<f32> {
        cut(&self.values, (self.width, self.height, 1), at, size)
    }
}

impl<B: Backend> Runner<B> {
    /// The whole photo (of `grid`'s size) through the model: tokens `[patches·N, 5+C]` in grid
    /// order, coordinates local to each patch, and the decoded `[3, H, W]`. `done(k)` is called
    /// after every forward pass with the patches it finished.
    pub fn run_whole(
        &mut self,
        be: &B,
        photo: &Rgb8,
        focus: Option<&FocusMap>,
        grid: &Grid,
        done: &mut dyn FnMut(usize),
    ) -> Result<Output> {
        if self.mode == MultiPatch::Merged {
            let (cw, ch) = self.merged_canvas(be, grid)?;
            let canvas = Rgb8 {
                width: cw,
                height: ch,
                data: cut(&photo.data, (photo.width, photo.height, 3), (0, 0), (cw, ch)),
            };
            let bias = focus.map(|f| f.patch((0, 0), (cw, ch)));
            let mut out = infer(be, &self.model, &mut self.acts, &self.spec, &[(&canvas, bias.as_deref())])?;
            let mut out = out.pop().ok_or_else(|| anyhow::anyhow!("internal error: no output"))?;
            out.decoded = crop_to(grid, (cw, ch), &out.decoded)?;
            done(grid.len());
            return Ok(out);
        }
        self.check_single_patches()?;
        let (pw, ph) = grid.patch();
        let mut blend = Blend::new(grid);
        let (mut tokens, mut g_init) = (Vec::new(), Vec::new());
        let order: Vec<usize> = (0..grid.len()).collect();
        for chunk in order.chunks(self.acts.batch()) {
            let tiles: Vec<Rgb8> = chunk
                .iter()
                .map(|&k| Rgb8 {
                    width: pw,
                    height: ph,
                    data: cut(&photo.data, (photo.width, photo.height, 3), grid.origin(k), (pw, ph)),
                })
                .collect();
            let biases: Vec<Option<Vec<f32>>> =
                chunk.iter().map(|&k| focus.map(|f| f.patch(grid.origin(k), (pw, ph)))).collect();
            let samples: Vec<Sample> = tiles.iter().zip(&biases).map(|(t, b)| (t, b.as_deref())).collect();
            for (&k, o) in chunk.iter().zip(infer(be, &self.model, &mut self.acts, &self.spec, &samples)?) {
                blend.add(grid.origin(k), &o.decoded);
                tokens.extend_from_slice(&o.tokens);
                g_init.extend_from_slice(&o.g_init);
            }
            done(chunk.len());
        }
        Ok(Output { decoded: blend.finish(), tokens, g_init })
    }

    /// Decodes tokens `[patches·N, 5+C]` of `grid` (no overlap: the `.gpst` layout) to `[3, H, W]`.
    pub fn decode_whole(&mut self, be: &B, grid: &Grid, tokens: &[f32]) -> Result<Vec<f32>> {
        let err = device_error(be);
        let per_patch = tokens.len() / grid.len().max(1);
        if self.mode == MultiPatch::Merged {
            let (cw, ch) = self.merged_canvas(be, grid)?;
            self.model.decode_tokens(be, &mut self.acts, tokens).map_err(err)?;
            let mut decoded = vec![0.0f32; 3 * cw * ch];
            be.download(self.acts.decoded(), &mut decoded).map_err(err)?;
            return crop_to(grid, (cw, ch), &decoded);
        }
        self.check_single_patches()?;
        let ((pw, ph), batch) = (grid.patch(), self.acts.batch());
        let mut blend = Blend::new(grid);
        let mut decoded = vec![0.0f32; batch * 3 * pw * ph];
        let order: Vec<usize> = (0..grid.len()).collect();
        for chunk in order.chunks(batch) {
            // A short last chunk repeats its last patch to fill the batch.
            let mut input = Vec::with_capacity(batch * per_patch);
            for i in 0..batch {
                let k = chunk[i.min(chunk.len() - 1)];
                input.extend_from_slice(&tokens[k * per_patch..(k + 1) * per_patch]);
            }
            self.model.decode_tokens(be, &mut self.acts, &input).map_err(err)?;
            be.download(self.acts.decoded(), &mut decoded).map_err(err)?;
            for (&k, d) in chunk.iter().zip(decoded.chunks_exact(3 * pw * ph)) {
                blend.add(grid.origin(k), d);
            }
        }
        Ok(blend.finish())
    }

    /// `(width, height)` of the merged canvas of `grid`, with the activations reshaped for it:
    /// the grid must have as many patch rows as columns, no overlap, and fit one pass
    /// ([`MAX_PASS_PIXELS`]).
    fn merged_canvas(&mut self, be: &B, grid: &Grid) -> Result<(usize, usize)> {
        let (nx, ny) = (grid.xs.len(), grid.ys.len());
        let (pw, ph) = grid.patch();
        if nx != ny || grid.overlap != 0 {
            bail!(
                "--multi-patch merged decodes a square grid of patches side by side, but this {}x{} image is {nx}x{ny} \
                 patches of {pw}x{ph}{}: use --multi-patch tiled, or --crop for a square centre crop",
                grid.width,
                grid.height,
                if grid.overlap > 0 { " with overlap" } else { "" }
            );
        }
        check_pass((nx * pw) * (ny * ph), &format!("--multi-patch merged on a {}x{} image", grid.width, grid.height))?;
        if self.patches != nx || self.acts.patches() != nx || self.acts.batch() != 1 {
            let err = device_error(be);
            // An empty set first, so the old buffers are freed before the new ones exist.
            self.acts = self.model.activations_with(be, 0, 1, Gradients::No).map_err(&err)?;
            self.acts = self.model.activations_with(be, 1, nx, Gradients::No).map_err(&err)?;
            self.patches = nx;
        }
        Ok((nx * pw, ny * ph))
    }

    fn check_single_patches(&self) -> Result<()> {
        if self.patches != 1 || self.acts.patches() != 1 {
            bail!("internal error: tiled whole-image inference needs a runner for single patches");
        }
        Ok(())
    }
}

/// The top-left `[3, H, W]` of a decoded `[3, canvas height, canvas width]` canvas.
fn crop_to(grid: &Grid, canvas: (usize, usize), decoded: &[f32]) -> Result<Vec<f32>> {
    let mut blend = Blend::new(&Grid::with_patch(grid.width, grid.height, canvas, 0)?);
    blend.add((0, 0), decoded);
    Ok(blend.finish())
}

/// Tokens `[patches·N, stride]` with coordinates local to their patch of `grid`, moved onto the
/// whole image (normalised to its width and height as the renderer's align-corners grid is):
/// what a picture of the photo's Gaussians needs.
pub fn tokens_on_image(tokens: &[f32], stride: usize, grid: &Grid) -> Vec<f32> {
    let mut out = tokens.to_vec();
    let per_patch = tokens.len() / stride / grid.len().max(1);
    // One normalised unit is (side - 1) / 2 pixels of the patch and of the image, per axis.
    let (pw, ph) = (grid.patch_width as f32, grid.patch_height as f32);
    let sx = (pw - 1.0) / (grid.width.max(2) as f32 - 1.0);
    let sy = (ph - 1.0) / (grid.height.max(2) as f32 - 1.0);
    for (i, t) in out.chunks_exact_mut(stride).enumerate() {
        let (x0, y0) = grid.origin((i / per_patch.max(1)).min(grid.len() - 1));
        let px = x0 as f32 + (t[3] + 1.0) * (pw - 1.0) / 2.0;
        let py = y0 as f32 + (t[4] + 1.0) * (ph - 1.0) / 2.0;
        t[0] *= sx;
        t[1] *= sy;
        t[3] = px * 2.0 / (grid.width.max(2) as f32 - 1.0) - 1.0;
        t[4] = py * 2.0 / (grid.height.max(2) as f32 - 1.0) - 1.0;
    }
    out
}
