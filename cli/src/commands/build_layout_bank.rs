//! `gpstoken build-layout-bank`: Algorithm 1 layouts of every image of a labelled folder (and
//! its mirror image), one `[K, N, 5]` tensor per class; see `gpstoken_cli::generator::bank`.

use anyhow::{bail, Result};
use gpstoken_cli::generator::bank::LayoutBank;
use std::path::PathBuf;

pub const EXAMPLES: &str = "\
Examples:
  gpstoken build-layout-bank --data ../shared/data/labelled/tuxpaint --tokens 32 -o bank.safetensors
  gpstoken generate --class bird --layouts bank --bank bank.safetensors -o birds.png";

#[derive(clap::Args)]
pub struct Args {
    /// Labelled images: one sub-folder per class.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Tokens per layout (N).
    #[arg(long)]
    tokens: usize,
    /// Patch side the images are resized to (the tokenizer's patch size).
    #[arg(long, default_value_t = 64)]
    patch: usize,
    /// Algorithm 1's lambda (the config's gps_adaptive_w).
    #[arg(long, default_value_t = 2.5)]
    weight: f64,
    #[arg(short = 'o', long = "output", value_name = "BANK.safetensors")]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    if !args.patch.is_power_of_two() || args.patch < 8 || args.patch > 1024 {
        bail!("--patch must be a power of two between 8 and 1024, got {}", args.patch);
    }
    if !(args.weight.is_finite() && args.weight >= 0.0) {
        bail!("--weight must be finite and non-negative");
    }
    let bank = LayoutBank::build(&args.data, args.patch, args.tokens, args.weight)?;
    gpstoken_cli::imageio::write_atomically(&args.output, &bank.to_bytes()?)?;
    for (k, (name, _)) in bank.classes.iter().enumerate() {
        outln!("{name}: {} layouts", bank.count(k));
    }
    Ok(())
}
