//! `gpstoken train-generator`: see `gpstoken_cli::generator::train`.

use anyhow::Result;
use gpstoken_cli::backends::BackendSelection;
use gpstoken_cli::generator::{train_generator, GeneratorTrainOptions};

pub const EXAMPLES: &str = "\
Examples:
  gpstoken train-generator --stage layout --data ../shared/data/labelled/tuxpaint --steps 2000 --out runs/layout
  gpstoken train-generator --stage texture --tokenizer models/tiny64.safetensors --data ../shared/data/labelled/tuxpaint --out runs/texture
  gpstoken train-generator --stage one-stage --data ../shared/data/labelled/tuxpaint --out runs/one --resume";

pub fn run(o: GeneratorTrainOptions, backend: &BackendSelection) -> Result<()> {
    let loss = train_generator(&o, backend)?;
    outln!(
        "trained {} generator: {} (last loss {loss:.5})",
        o.stage.name(),
        o.out.join("generator.safetensors").display()
    );
    Ok(())
}
