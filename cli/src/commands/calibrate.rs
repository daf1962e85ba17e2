//! `gpstoken calibrate`: Algorithm 2 on a layout in the `partition --json` schema. Every Gaussian
//! snaps to the nearest region Algorithm 1 could have made (spec 4.2); the output has the same
//! schema, with the Gaussians and RoI boxes recomputed exactly as Algorithm 1 writes them.

use anyhow::{bail, Context, Result};
use gpstoken_cli::json;
use gpstoken_core::calibrate::{self, CalibrateParams};
use gpstoken_core::partition::{region_box, region_gaussian, Region};
use std::io::Read;
use std::path::PathBuf;

pub const EXAMPLES: &str = "Examples:\n  gpstoken partition samples/coffee.png --tokens 64 --json > layout.json\n  gpstoken calibrate generated.json > calibrated.json\n  gpstoken calibrate generated.json --repair -o calibrated.json\n  some-layout-model | gpstoken calibrate -";

/// Layouts larger than this are refused before parsing (a 4096x4096 image with 1024 tokens per
/// 256 patch is about 20 MB of JSON).
const MAX_INPUT_BYTES: u64 = 256 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// Layout JSON (`{"width","height","patch","tokens","gaussians":[[sx,sy,rho,x,y],...],...}`, as
    /// `gpstoken partition --json` prints it), or `-` for standard input.
    layout: PathBuf,
    /// Algorithm 1's minhw: the smallest region side the layout may use follows from it.
    #[arg(long, default_value_t = 8)]
    min_size: usize,
    /// Move duplicates (several Gaussians snapped to one rectangle) to the nearest free rectangle
    /// of the same size (spec 4.2's optional repair); the number moved goes to standard error.
    #[arg(long)]
    repair: bool,
    /// Write the calibrated layout here instead of standard output.
    #[arg(short, long, value_name = "OUT.json")]
    output: Option<PathBuf>,
}

/// The fields of the `partition --json` schema that calibration needs.
struct Layout {
    width: usize,
    height: usize,
    patch: usize,
    tokens: usize,
    gaussians: Vec<[f32; 5]>,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(out) = &args.output {
        gpstoken_cli::outputs::check(&[&args.layout], &[("-o", out.as_path())])?;
    }
    let text = read_input(&args.layout)?;
    let layout = parse(&text).with_context(|| format!("'{}' is not a layout", args.layout.display()))?;
    let params = CalibrateParams { patch: layout.patch, min_size: args.min_size };
    params.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let blank = Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 };
    let mut regions = vec![blank; layout.gaussians.len()];
    let mut moved = 0;
    for (k, (gs, rs)) in layout.gaussians.chunks(layout.tokens).zip(regions.chunks_mut(layout.tokens)).enumerate() {
        calibrate::calibrate(gs, &params, rs).map_err(|e| anyhow::anyhow!("patch {k}: {e}"))?;
        if args.repair {
            moved += calibrate::repair_duplicates(rs, &params).map_err(|e| anyhow::anyhow!("patch {k}: {e}"))?;
        }
    }
    let p = layout.patch;
    let gaussians: Vec<[f32; 5]> = regions.iter().map(|r| region_gaussian(r, p, p)).collect();
    let boxes: Vec<[f32; 4]> = regions.iter().map(|r| region_box(r, p, p)).collect();
    let out = format!(
        "{{\"width\":{},\"height\":{},\"patch\":{p},\"tokens\":{},\"gaussians\":{},\"boxes\":{}}}\n",
        layout.width,
        layout.height,
        layout.tokens,
        json::rows(&gaussians),
        json::rows(&boxes)
    );
    if args.repair {
        eprintln!("calibrate: moved {moved} duplicate region(s) of {}", regions.len());
    }
    match &args.output {
        Some(path) => gpstoken_cli::imageio::write_atomically(path, out.as_bytes())?,
        None => outln!("{}", out.trim_end()),
    }
    Ok(())
}

fn read_input(path: &PathBuf) -> Result<String> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(MAX_INPUT_BYTES + 1).read_to_string(&mut text)
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read layout '{}'", path.display()))?;
        file.take(MAX_INPUT_BYTES + 1).read_to_string(&mut text)
    };
    read.with_context(|| format!("cannot read layout '{}'", path.display()))?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        bail!("layout '{}' is larger than {} MiB", path.display(), MAX_INPUT_BYTES >> 20);
    }
    Ok(text)
}

fn parse(text: &str) -> Result<Layout> {
    let v: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
    let size = |key: &str| -> Result<usize> {
        v.get(key)
            .and_then(|x| x.as_u64())
            .and_then(|x| usize::try_from(x).ok())
            .filter(|&x| x >= 1)
            .with_context(|| format!("\"{key}\" must be a positive integer"))
    };
    let (width, height, patch, tokens) = (size("width")?, size("height")?, size("patch")?, size("tokens")?);
    if width % patch != 0 || height % patch != 0 {
        bail!("the {width}x{height} canvas is not a whole number of {patch}x{patch} patches");
    }
    let rows = v.get("gaussians").and_then(|g| g.as_array()).context("\"gaussians\" must be an array")?;
    let patches = (width / patch).checked_mul(height / patch).context("too many patches")?;
    if Some(rows.len()) != patches.checked_mul(tokens) {
        bail!("{} Gaussians, but {patches} patch(es) of {tokens} tokens need {}", rows.len(), patches * tokens);
    }
    let gaussians = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let values = row.as_array().filter(|r| r.len() >= 5).with_context(|| {
                format!("Gaussian {i} must be an array of at least 5 numbers [sigma_x,sigma_y,rho,x,y]")
            })?;
            let mut g = [0.0f32; 5];
            for (k, (dst, src)) in g.iter_mut().zip(values).enumerate() {
                // `null` is how `--json` writes a non-finite value: calibration rejects it by name.
                *dst = if src.is_null() {
                    f32::NAN
                } else {
                    src.as_f64().with_context(|| format!("Gaussian {i} value {k} is not a number"))? as f32
                };
            }
            Ok(g)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Layout { width, height, patch, tokens, gaussians })
}
