//! `gpstoken export`: the weights of a training checkpoint (raw or EMA) as a weights-only file.

use anyhow::Result;
use gpstoken_cli::backends::{with_backend, BackendSelection, BackendTask};
use gpstoken_cli::{imageio, model_io};
use gpstoken_core::backend::Backend;
use gpstoken_core::model::ModelConfig;
use std::path::PathBuf;

pub const EXAMPLES: &str =
    "Example:\n  gpstoken export runs/a/checkpoint.safetensors --ema -o models/tiny64.safetensors";

#[derive(clap::Args)]
pub struct Args {
    /// Training checkpoint (or weights file).
    checkpoint: PathBuf,
    /// Export the EMA weights.
    #[arg(long)]
    ema: bool,
    /// Output weights file.
    #[arg(short = 'o', long = "output", value_name = "OUT.safetensors")]
    output: PathBuf,
}

/// Loads the weights strictly into the model of their config: only a complete, matching set of
/// weights is exported.
struct StrictLoad<'a> {
    config: &'a ModelConfig,
    weights: &'a [u8],
    what: String,
}

impl BackendTask for StrictLoad<'_> {
    type Output = ();

    fn run<B: Backend>(self, be: &B) -> Result<()> {
        model_io::build_model(be, self.config, None, self.weights, &self.what).map(|_| ())
    }
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { checkpoint, ema, output } = args;
    gpstoken_cli::outputs::check(&[&checkpoint], &[("-o", output.as_path())])?;
    let which = if ema { model_io::Which::Ema } else { model_io::Which::Raw };
    let (weights, cfg) = model_io::read_model(&checkpoint, which, None)?;
    let what = format!("checkpoint '{}'", checkpoint.display());
    with_backend(backend, StrictLoad { config: &cfg, weights: &weights, what })?;
    imageio::write_atomically(&output, &weights)?;
    outln!("{}: {} weights of config {}", output.display(), if ema { "EMA" } else { "raw" }, cfg.name);
    Ok(())
}
