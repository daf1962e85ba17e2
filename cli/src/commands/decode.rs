//! `gpstoken decode`: learned tokens (from `encode`) to an image, with the model's renderer and decoder.

use super::model::{Layout, ModelArgs, OpenedModel};
use super::read_token_file;
use anyhow::{bail, Context, Result};
use gpstoken_cli::backends::{with_backend, BackendSelection, BackendTask};
use gpstoken_cli::imageio;
use gpstoken_cli::tiling::Grid;
use gpstoken_core::backend::Backend;
use std::path::PathBuf;

pub const EXAMPLES: &str =
    "Example:\n  gpstoken encode photo.png -o photo.gpst && gpstoken decode photo.gpst -o decoded.png";

#[derive(clap::Args)]
pub struct Args {
    /// Token file from `gpstoken encode`.
    #[arg(value_name = "TOKENS.gpst")]
    token_file: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Output PNG.
    #[arg(short = 'o', long = "output", value_name = "OUT.png")]
    output: PathBuf,
}

/// Decodes the tokens of a `.gpst` grid to `[3, H, W]`.
struct Decode<'a> {
    args: &'a ModelArgs,
    opened: &'a OpenedModel,
    layout: &'a Layout,
    grid: &'a Grid,
    tokens: &'a [f32],
}

impl BackendTask for Decode<'_> {
    type Output = Vec<f32>;

    fn run<B: Backend>(self, be: &B) -> Result<Vec<f32>> {
        let mut runner = self.args.runner(be, self.opened, self.layout)?;
        runner.decode_whole(be, self.grid, self.tokens)
    }
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { token_file, mut model, output } = args;
    gpstoken_cli::outputs::check(&[&token_file], &[("-o", output.as_path())])?;
    let (header, values) = read_token_file(&token_file)?;
    let n = header.tokens_per_patch as usize;
    match model.tokens {
        Some(t) if t != n => bail!("--tokens {t} does not match the {n} tokens of '{}'", token_file.display()),
        _ => model.tokens = Some(n),
    }
    let opened = model.open()?;
    let cfg = &opened.config;
    let (ph, pw) = cfg.image_hw;
    let file_patch = (header.patch_width as usize, header.patch_height as usize);
    if header.channels as usize != cfg.gps.gps_c || file_patch != (pw, ph) {
        bail!(
            "'{}' has {} feature channels on {}x{} pixel patches, but model '{}' ({}) uses {} channels on {pw}x{ph} pixel patches",
            token_file.display(),
            header.channels,
            file_patch.0,
            file_patch.1,
            opened.path.display(),
            cfg.name,
            cfg.gps.gps_c,
        );
    }
    // The token count comes from the file, not from a flag: say so when it is unusable.
    let max_tokens = gpstoken_core::partition::max_regions(pw, ph, gpstoken_core::partition::DEFAULT_MIN_SIZE);
    if n > max_tokens {
        bail!("'{}' holds {n} tokens per patch; this model takes at most {max_tokens}", token_file.display());
    }
    let layout = model.layout(&opened, None, Some(0))?;
    let (w, h) = (header.image_width as usize, header.image_height as usize);
    let grid = Grid::with_patch(w, h, (pw, ph), 0).with_context(|| format!("'{}'", token_file.display()))?;
    let decoded =
        with_backend(backend, Decode { args: &model, opened: &opened, layout: &layout, grid: &grid, tokens: &values })?;
    imageio::save_png(&output, &imageio::chw_unit_to_rgb8(&decoded, w, h))
}
