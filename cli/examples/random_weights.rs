//! Writes a weights file of a config with PyTorch-default random weights, e.g. to measure the
//! memory and speed of a config no trained weights exist for:
//! `cargo run --release -p gpstoken-cli --example random_weights -- m128 m128-random.safetensors [SEED]`.
//! The file names its config in the metadata, so `--model FILE` needs no `--config`.

use anyhow::{bail, Context, Result};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::model::{save_safetensors, GpsToken};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 3 {
        bail!("usage: random_weights CONFIG OUT.safetensors [SEED]");
    }
    let seed = args.get(2).map(|s| s.parse::<u64>()).transpose().context("SEED must be an integer")?.unwrap_or(23);
    let cfg = gpstoken_cli::config::load_config(&args[0])?;
    let be = CpuBackend::new();
    let mut model = GpsToken::new(&be, cfg.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    model.init(&be, seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = save_safetensors(&be, &model.params).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Tag the file with its config as `gpstoken train` does.
    let tagged = retag(&bytes, &args[0])?;
    gpstoken_cli::imageio::write_atomically(std::path::Path::new(&args[1]), &tagged)?;
    println!("{}: {} parameters of config {} (seed {seed})", args[1], model.params.count(), cfg.name);
    Ok(())
}

/// The same tensors with `gpstoken_config = name` in the metadata.
fn retag(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let meta = std::collections::HashMap::from([(gpstoken_cli::model_io::META_CONFIG.to_string(), name.to_string())]);
    safetensors::serialize(st.tensors(), Some(meta)).map_err(|e| anyhow::anyhow!("{e}"))
}
