//! `gpstoken train-classifier`: see `gpstoken_cli::generator::classify`.

use anyhow::Result;
use gpstoken_cli::backends::BackendSelection;
use gpstoken_cli::generator::classify::{train_classifier, ClassifierTrainOptions};

pub const EXAMPLES: &str = "\
Examples:
  gpstoken --threads 1 train-classifier --data ../shared/data/labelled/tuxpaint --hold-out 4 -o classifier.safetensors
  gpstoken eval-generator --classifier classifier.safetensors --data ../shared/data/labelled/tuxpaint --references";

pub fn run(o: ClassifierTrainOptions, backend: &BackendSelection) -> Result<()> {
    let (loss, acc) = train_classifier(&o, backend)?;
    outln!(
        "trained classifier: {} (last training loss {loss:.4}, held-out accuracy {:.1}%)",
        o.output.display(),
        acc * 100.0
    );
    Ok(())
}
