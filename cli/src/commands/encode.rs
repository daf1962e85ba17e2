//! `gpstoken encode`: an image to learned tokens (`.gpst` with the config's feature channels).

use super::model::{CropArgs, ModelArgs, OneCrop};
use anyhow::Result;
use gpstoken_cli::backends::{with_backend, BackendSelection};
use gpstoken_core::gpst::{DType, Header};
use std::path::PathBuf;

pub const EXAMPLES: &str = "Example:\n  gpstoken encode photo.png -o photo.gpst --tokens 32";

#[derive(clap::Args)]
pub struct Args {
    /// Input image; its square centre crop (see --size) is encoded.
    image: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    crop: CropArgs,
    /// Output token file.
    #[arg(short = 'o', long = "output", value_name = "OUT.gpst")]
    output: PathBuf,
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { image, model, crop: CropArgs { size, focus }, output } = args;
    let inputs: Vec<&std::path::Path> = [Some(image.as_path()), focus.as_deref()].into_iter().flatten().collect();
    gpstoken_cli::outputs::check(&inputs, &[("-o", output.as_path())])?;
    let opened = model.open()?;
    let layout = model.layout(&opened, size)?;
    let (s, np, side) = (layout.patch, layout.patches, layout.side);
    let task = OneCrop { args: &model, opened: &opened, size, image: &image, focus: focus.as_deref() };
    let (_, out) = with_backend(backend, task)?;
    let cfg = &opened.config;
    let header = Header {
        dtype: DType::F32,
        image_width: side as u32,
        image_height: side as u32,
        patch_size: s as u32,
        patches_x: np as u32,
        patches_y: np as u32,
        tokens_per_patch: layout.tokens as u32,
        channels: cfg.gps.gps_c as u32,
        kappa: cfg.gps.gps_dmax,
    };
    super::write_token_file(&output, &header, &out.tokens)?;
    eprintln!(
        "{}: {} tokens ({np}x{np} patches of {s}x{s}, {} each) from {}",
        output.display(),
        layout.tokens * np * np,
        layout.tokens,
        opened.path.display()
    );
    Ok(())
}
