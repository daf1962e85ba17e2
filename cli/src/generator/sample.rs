//! Sampling: a generator file on a backend, latents for labels, then the post-processing of
//! spec 9.7 into tokens (layouts calibrated by Algorithm 2 for the layout model), decoded by the
//! tokenizer and put in a grid. Used by `generate` and by the sample grids of `train-generator`.

use super::model::{GeneratorFile, GeneratorInfo, Stage};
use crate::backends::device_error;
use crate::imageio::Rgb8;
use crate::model_io::Runner;
use anyhow::{anyhow, bail, Result};
use gpstoken_core::backend::Backend;
use gpstoken_core::calibrate::CalibrateParams;
use gpstoken_core::model::sit::{latents_to_layouts, latents_to_tokens, GenerateRequest, Guidance, Sampler, Sit};
use gpstoken_core::rng::SplitMix64;

/// A generator on a backend.
pub struct Generator<B: Backend> {
    pub sit: Sit<B>,
    pub info: GeneratorInfo,
}

impl<B: Backend> Generator<B> {
    /// Builds the SiT of `file` and loads its weights (strict).
    pub fn build(be: &B, file: &GeneratorFile, what: &str) -> Result<Generator<B>> {
        let mut sit = Sit::new(be, file.info.config.clone()).map_err(|e| anyhow!("{what}: {e}"))?;
        gpstoken_core::model::load_safetensors(be, &mut sit.params, &file.weights)
            .map_err(|e| anyhow!("{what} does not match its metadata: {}", crate::model_io::mismatch_summary(&e)))?;
        Ok(Generator { sit, info: file.info.clone() })
    }

    /// Latents `[n, C, N, 1]` for `labels`; guidance (`cfg > 1`) on the official interval
    /// `t ∈ [0.2, 1]` (spec 9.6).
    pub fn latents(
        &self,
        be: &B,
        labels: &[u32],
        cond: Option<&[f32]>,
        sampler: Sampler,
        cfg: f32,
        rng: &mut SplitMix64,
    ) -> Result<Vec<f32>> {
        let guidance = (cfg != 1.0).then_some(Guidance { scale: cfg, ..Guidance::generate_sh() });
        let err = device_error(be);
        let mut acts = self.sit.generate_activations(be, labels.len(), guidance.is_some()).map_err(err)?;
        let req = GenerateRequest { labels, cond, sampler, guidance };
        let z = self.sit.generate(be, &mut acts, &req, rng).map_err(err)?;
        if z.iter().any(|v| !v.is_finite()) {
            bail!(
                "the {} generator diverged (non-finite latents); try more --steps or the ode sampler",
                self.info.stage.name()
            );
        }
        Ok(z)
    }

    /// Layouts `[n, N, 5]` from the layout model (unguided), calibrated by Algorithm 2 (spec 4.2,
    /// 9.8), duplicates moved apart with `repair`.
    pub fn layouts(
        &self,
        be: &B,
        labels: &[u32],
        sampler: Sampler,
        repair: bool,
        rng: &mut SplitMix64,
    ) -> Result<Vec<f32>> {
        self.expect(Stage::Layout)?;
        let z = self.latents(be, labels, None, sampler, 1.0, rng)?;
        let params = CalibrateParams::new(self.info.patch);
        latents_to_layouts(&self.info.stats, &z, self.info.config.tokens, &params, repair).map_err(|e| anyhow!("{e}"))
    }

    /// Token rows `[n, N, 5 + C]`: the texture model around `layouts`, or the one-stage model
    /// (`layouts` None), post-processed as spec 9.7.
    pub fn tokens(
        &self,
        be: &B,
        labels: &[u32],
        layouts: Option<&[f32]>,
        sampler: Sampler,
        cfg: f32,
        rng: &mut SplitMix64,
    ) -> Result<Vec<f32>> {
        match (self.info.stage, layouts) {
            (Stage::Texture, Some(_)) | (Stage::OneStage, None) => {}
            (Stage::Texture, None) => bail!("the texture generator needs layouts (--layouts model|bank)"),
            (Stage::OneStage, Some(_)) => bail!("the one-stage generator makes its own layouts"),
            (Stage::Layout, _) => bail!("a layout generator makes layouts, not tokens; pass it as --layout-model"),
        }
        let z = self.latents(be, labels, layouts, sampler, cfg, rng)?;
        latents_to_tokens(&self.info.stats, &z, self.info.config.tokens, layouts).map_err(|e| anyhow!("{e}"))
    }

    fn expect(&self, stage: Stage) -> Result<()> {
        if self.info.stage != stage {
            bail!("expected a {} generator, got a {} generator", stage.name(), self.info.stage.name());
        }
        Ok(())
    }
}

/// Decodes token rows `[n, N, 5 + C]` one patch at a time (the runner holds one crop).
pub fn decode_all<B: Backend>(be: &B, runner: &mut Runner<B>, rows: &[f32], n: usize) -> Result<Vec<Rgb8>> {
    let s = runner.crop_size();
    let per = rows.len() / n.max(1);
    (0..n).map(|i| Ok(to_rgb8_truncated(&runner.decode(be, &rows[i * per..(i + 1) * per])?, s))).collect()
}

/// `u8((clamp(v, −1, 1) + 1)·127.5)` with truncation, as the official generation script saves
/// its samples (spec 9.7).
pub fn to_rgb8_truncated(chw: &[f32], side: usize) -> Rgb8 {
    let pixels = side * side;
    let mut data = vec![0u8; pixels * 3];
    for p in 0..pixels {
        for c in 0..3 {
            data[p * 3 + c] = ((chw[c * pixels + p].clamp(-1.0, 1.0) + 1.0) * 127.5) as u8;
        }
    }
    Rgb8 { width: side, height: side, data }
}

/// Columns and rows of a grid of `n` cells with no empty cell: the divisor of `n` nearest
/// above its square root as the column count.
pub fn grid_shape(n: usize) -> (usize, usize) {
    let cols = (1..=n).find(|c| c * c >= n && n.is_multiple_of(*c)).unwrap_or(n.max(1));
    (cols, n.div_ceil(cols))
}

/// Square tiles of one size, row-major, without gaps (so the grid is the image the `.gpst`
/// patch grid decodes to).
pub fn grid(tiles: &[Rgb8], cols: usize) -> Rgb8 {
    let s = tiles.first().map_or(0, |t| t.width);
    let rows = tiles.len().div_ceil(cols.max(1));
    let w = cols * s;
    let mut data = vec![255u8; w * rows * s * 3];
    for (k, t) in tiles.iter().enumerate() {
        let (ox, oy) = ((k % cols) * s, (k / cols) * s);
        for y in 0..s {
            let dst = ((oy + y) * w + ox) * 3;
            data[dst..dst + s * 3].copy_from_slice(&t.data[y * s * 3..(y + 1) * s * 3]);
        }
    }
    Rgb8 { width: w, height: rows * s, data }
}

/// The ellipses of each cell's tokens (`[n, N, stride]`, coordinates local to the cell) over
/// the grid.
pub fn draw_layouts(img: &Rgb8, rows: &[f32], stride: usize, tokens: usize, cols: usize, patch: usize) -> Rgb8 {
    let mut canvas = crate::viz::Canvas::new(img, 4, 0.6);
    for (k, cell) in rows.chunks_exact(tokens * stride).enumerate() {
        let at = ((k % cols) * patch, (k / cols) * patch, patch, patch);
        for t in cell.chunks_exact(stride) {
            canvas.gaussian(&gpstoken_core::Gaussian::from_token(t), 1.0, at, [255, 64, 32]);
        }
    }
    canvas.img
}
