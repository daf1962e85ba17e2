//! `gpstoken render`: RGB tokens (from `fit`) splatted to a PNG at any size.

use super::read_token_file;
use anyhow::{bail, Result};
use gpstoken_cli::backends::{device_error, with_backend, BackendSelection, BackendTask};
use gpstoken_cli::imageio;
use gpstoken_core::backend::Backend;
use gpstoken_core::render::{self, SplatDesc};
use std::path::PathBuf;

pub const EXAMPLES: &str = "Example:\n  gpstoken render astronaut.gpst -o render.png --size 512x512";

#[derive(clap::Args)]
pub struct Args {
    /// Token file.
    tokens: PathBuf,
    /// Output PNG.
    #[arg(short = 'o', long = "output", value_name = "OUT.png")]
    output: PathBuf,
    /// Canvas size (default: the size of the image the tokens describe).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    size: Option<(usize, usize)>,
}

/// One splat of tokens `[N, 8]` onto a canvas: the image `[3, H, W]`.
struct Splat<'a> {
    desc: SplatDesc,
    tokens: &'a [f32],
}

impl BackendTask for Splat<'_> {
    type Output = Vec<f32>;

    fn run<B: Backend>(self, be: &B) -> Result<Vec<f32>> {
        let err = device_error(be);
        let tokens = be.upload(self.tokens).map_err(err)?;
        let mut image = be.zeros(self.desc.image_len()).map_err(err)?;
        be.splat_forward(&self.desc, &tokens, &mut image).map_err(err)?;
        let mut out = vec![0.0f32; self.desc.image_len()];
        be.download(&image, &mut out).map_err(err)?;
        Ok(out)
    }
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { tokens, output, size } = args;
    let (header, values) = read_token_file(&tokens)?;
    if header.channels != 3 {
        bail!(
            "'{}' has {} feature channels; only RGB tokens (3 channels, from `gpstoken fit`) can be rendered without a decoder model",
            tokens.display(),
            header.channels
        );
    }
    let (px, py) = (header.patches_x as usize, header.patches_y as usize);
    let n = header.tokens_per_patch as usize;
    let merged = if px == 1 && py == 1 {
        values
    } else {
        let mut merged = vec![0.0f32; values.len()];
        render::merge_patches(px, py, n, 3, &values, &mut merged)
            .map_err(|e| anyhow::anyhow!("cannot merge patches: {e}"))?;
        merged
    };
    let (width, height) = size.unwrap_or((header.image_width as usize, header.image_height as usize));
    let desc = SplatDesc { batch: 1, gaussians: px * py * n, channels: 3, height, width, kappa: header.kappa };
    let out = with_backend(backend, Splat { desc, tokens: &merged })?;
    imageio::save_png(&output, &imageio::chw_unit_to_rgb8(&out, width, height))
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("'{s}' is not WxH (e.g. 512x512)"))?;
    let w: usize = w.parse().map_err(|_| format!("bad width in '{s}'"))?;
    let h: usize = h.parse().map_err(|_| format!("bad height in '{s}'"))?;
    if !(2..=16384).contains(&w) || !(2..=16384).contains(&h) {
        return Err(format!("size {w}x{h} must be between 2x2 and 16384x16384"));
    }
    Ok((w, h))
}
