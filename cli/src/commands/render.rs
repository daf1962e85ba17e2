//! `gpstoken render`: RGB tokens (from `fit`) splatted to a PNG at any size.

use super::read_token_file;
use anyhow::{bail, Result};
use gpstoken_cli::backends::{device_error, with_backend, BackendSelection, BackendTask};
use gpstoken_cli::imageio;
use gpstoken_core::backend::Backend;
use gpstoken_core::render::{self, SplatDesc};
use std::path::PathBuf;

/// Largest canvas side `render` draws (pixels), from `--size` or from the file's header.
pub const MAX_RENDER_SIDE: usize = 16_384;
/// Largest canvas `render` draws, in pixels (2^26, e.g. 8192 x 8192: 768 MiB of f32 RGB), so a
/// header that claims a huge image is refused before anything is allocated.
pub const MAX_RENDER_PIXELS: usize = 1 << 26;

pub const EXAMPLES: &str = "Example:\n  gpstoken render astronaut.gpst -o render.png --size 512x512";

#[derive(clap::Args)]
pub struct Args {
    /// Token file.
    tokens: PathBuf,
    /// Output PNG.
    #[arg(short = 'o', long = "output", value_name = "OUT.png")]
    output: PathBuf,
    /// Canvas size (default: the size of the image the tokens describe); at most 16384 per side
    /// and 2^26 pixels.
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
    gpstoken_cli::outputs::check(&[&tokens], &[("-o", output.as_path())])?;
    let (header, values) = read_token_file(&tokens)?;
    if header.channels != 3 {
        bail!(
            "'{}' has {} feature channels; only RGB tokens (3 channels, from `gpstoken fit`) can be rendered without a decoder model",
            tokens.display(),
            header.channels
        );
    }
    // The canvas first: the header's size is only trusted once it is known to be drawable.
    let (width, height) = match size {
        Some(wh) => wh,
        None => {
            let wh = (header.image_width as usize, header.image_height as usize);
            check_canvas(wh).map_err(|e| {
                anyhow::anyhow!("'{}' describes a {}x{} image: {e}; pass --size WxH", tokens.display(), wh.0, wh.1)
            })?;
            wh
        }
    };
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
    // The splat's align-corners grid needs two pixels per axis: a one-pixel axis is drawn on two
    // (its two ends, -1 and +1) and averaged, so every valid file renders (docs/FORMAT.md).
    let (canvas_w, canvas_h) = (width.max(2), height.max(2));
    let desc = SplatDesc {
        batch: 1,
        gaussians: px * py * n,
        channels: 3,
        height: canvas_h,
        width: canvas_w,
        kappa: header.kappa,
    };
    let out = with_backend(backend, Splat { desc, tokens: &merged })?;
    let out = average_to(&out, (canvas_w, canvas_h), (width, height));
    gpstoken_cli::outputs::check_finite(&out, &format!("the render of '{}'", tokens.display()))?;
    imageio::save_png(&output, &imageio::chw_unit_to_rgb8(&out, width, height))
}

/// Whether a canvas is within the documented limits (one clause for the message if not).
fn check_canvas((w, h): (usize, usize)) -> Result<(), String> {
    if w > MAX_RENDER_SIDE || h > MAX_RENDER_SIDE {
        return Err(format!("a side above the render limit of {MAX_RENDER_SIDE} pixels"));
    }
    match w.checked_mul(h) {
        Some(p) if p <= MAX_RENDER_PIXELS => Ok(()),
        _ => Err(format!("more than the render limit of {MAX_RENDER_PIXELS} pixels")),
    }
}

/// `[3, ch, cw]` to `[3, h, w]` where each of `w`, `h` is the canvas's size or 1 (the mean of the
/// canvas's two pixels on that axis).
fn average_to(chw: &[f32], (cw, ch): (usize, usize), (w, h): (usize, usize)) -> Vec<f32> {
    if (cw, ch) == (w, h) {
        return chw.to_vec();
    }
    let mut out = Vec::with_capacity(3 * w * h);
    for plane in chw.chunks_exact(cw * ch) {
        for y in 0..h {
            for x in 0..w {
                let rows: &[usize] = if h == ch { &[y] } else { &[0, 1] };
                let cols: &[usize] = if w == cw { &[x] } else { &[0, 1] };
                let sum: f32 = rows.iter().flat_map(|&r| cols.iter().map(move |&c| plane[r * cw + c])).sum();
                out.push(sum / (rows.len() * cols.len()) as f32);
            }
        }
    }
    out
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("'{s}' is not WxH (e.g. 512x512)"))?;
    let w: usize = w.parse().map_err(|_| format!("bad width in '{s}'"))?;
    let h: usize = h.parse().map_err(|_| format!("bad height in '{s}'"))?;
    if w == 0 || h == 0 {
        return Err(format!("size {w}x{h} must be at least 1x1"));
    }
    check_canvas((w, h)).map_err(|e| format!("size {w}x{h} has {e}"))?;
    Ok((w, h))
}
