//! `gpstoken build-layout-bank`: Algorithm 1 layouts of every image of a labelled folder (and
//! its mirror image), one `[K, N, 5]` tensor per class; or the official inference's layout cache
//! `initg.pickle` converted; see `gpstoken_cli::generator::bank`.

use anyhow::{bail, Context, Result};
use gpstoken_cli::generator::bank::LayoutBank;
use gpstoken_cli::generator::initg::bank_from_initg;
use std::path::PathBuf;

pub const EXAMPLES: &str = "\
Examples:
  gpstoken build-layout-bank --data ../shared/data/labelled/tuxpaint --tokens 32 -o bank.safetensors
  gpstoken generate --class bird --layouts bank --bank bank.safetensors -o birds.png
  gpstoken build-layout-bank --from-initg initg.pickle --patch 256 -o imagenet-bank.safetensors";

#[derive(clap::Args)]
pub struct Args {
    /// Labelled images: one sub-folder per class.
    #[arg(long, value_name = "DIR", required_unless_present = "from_initg", conflicts_with = "from_initg")]
    data: Option<PathBuf>,
    /// The official inference's layout cache (`initg.pickle`, spec 4.3) instead of images: its
    /// classes are named 0, 1, ...; the pickle is read without running any code it names.
    #[arg(long, value_name = "FILE")]
    from_initg: Option<PathBuf>,
    /// Tokens per layout (N); with --from-initg, the file's (and checked when given).
    #[arg(long)]
    tokens: Option<usize>,
    /// Patch side the layouts are for (the tokenizer's patch size; the official ImageNet models: 256).
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
    let bank = match (&args.data, &args.from_initg) {
        (Some(dir), _) => {
            let Some(tokens) = args.tokens else { bail!("--data needs --tokens N (tokens per layout)") };
            LayoutBank::build(dir, args.patch, tokens, args.weight)?
        }
        (None, Some(file)) => {
            let bytes = std::fs::read(file).with_context(|| format!("cannot read '{}'", file.display()))?;
            let bank = bank_from_initg(&bytes, args.patch).with_context(|| format!("'{}'", file.display()))?;
            if let Some(t) = args.tokens.filter(|&t| t != bank.tokens) {
                bail!("'{}' holds {}-token layouts, not {t} (--tokens)", file.display(), bank.tokens);
            }
            bank
        }
        (None, None) => unreachable!("clap requires --data or --from-initg"),
    };
    gpstoken_cli::imageio::write_atomically(&args.output, &bank.to_bytes()?)?;
    if bank.classes.len() > 20 {
        let counts: Vec<usize> = (0..bank.classes.len()).map(|k| bank.count(k)).collect();
        let (least, most) = (counts.iter().min().unwrap_or(&0), counts.iter().max().unwrap_or(&0));
        outln!("{} classes, {least} to {most} layouts each, {} tokens per layout", counts.len(), bank.tokens);
    } else {
        for (k, (name, _)) in bank.classes.iter().enumerate() {
            outln!("{name}: {} layouts", bank.count(k));
        }
    }
    Ok(())
}
