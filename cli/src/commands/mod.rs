//! One module per `gpstoken` command: its clap arguments (`Args`), its `--help` examples and
//! its `run`. Commands that touch tensors prepare their host-side inputs first (so bad input
//! fails before a device is opened), then run the rest as a [`gpstoken_cli::backends::BackendTask`]
//! on the backend of `--backend`/`--device`/`--threads`.

/// `println!` that never panics: a closed pipe (`gpstoken ... | head`) ends the program quietly,
/// any other write error is an error.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(anyhow::anyhow!("cannot write to standard output: {e}"));
        }
    }};
}

pub mod bench;
pub mod build_layout_bank;
pub mod calibrate;
pub mod decode;
pub mod encode;
pub mod eval;
pub mod eval_generator;
pub mod export;
pub mod fit;
pub mod generate;
pub mod info;
pub mod model;
pub mod partition;
pub mod plot;
pub mod reconstruct;
pub mod render;
pub mod train;
pub mod train_classifier;
pub mod train_generator;

/// Reads a `.gpst` file: its header and values.
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<(gpstoken_core::gpst::Header, Vec<f32>)> {
    use anyhow::Context;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read token file '{}'", path.display()))?;
    gpstoken_core::gpst::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("'{}' is not a valid .gpst file: {e}", path.display()))
}

/// Writes tokens as a `.gpst` file (atomically).
pub fn write_token_file(
    path: &std::path::Path,
    header: &gpstoken_core::gpst::Header,
    tokens: &[f32],
) -> anyhow::Result<()> {
    let bytes =
        gpstoken_core::gpst::to_bytes(header, tokens).map_err(|e| anyhow::anyhow!("cannot encode tokens: {e}"))?;
    gpstoken_cli::imageio::write_atomically(path, &bytes)
}
