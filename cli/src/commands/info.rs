//! `gpstoken info`: the version, every backend with the devices it can see, or a model config's sizes.

use anyhow::Result;
use gpstoken_cli::backends::BackendKind;
use gpstoken_cli::devices::{self, BackendReport, DeviceRow};
use gpstoken_cli::json;

pub const EXAMPLES: &str = "Examples:\n  gpstoken info --json\n  gpstoken info --config tiny64 --json";

#[derive(clap::Args)]
pub struct Args {
    /// Describe this model config (a built-in name or an official yaml file) instead.
    #[arg(long, value_name = "NAME|FILE")]
    config: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    match &args.config {
        Some(name) => describe_config(name, args.json),
        None => describe_backends(args.json),
    }
}

/// `{"version":...,"backends":{"cpu":{"compiled":true,"usable":true,"threads":N},...},"devices":[...]}`
/// or a table: each backend, then its devices (the index is what `--device` takes).
fn describe_backends(as_json: bool) -> Result<()> {
    let reports = devices::list();
    let threads = rayon::current_num_threads();
    let version = env!("CARGO_PKG_VERSION");
    if as_json {
        let backends: Vec<String> = reports
            .iter()
            .map(|r| {
                let threads =
                    if r.kind == BackendKind::Cpu { format!(",\"threads\":{threads}") } else { String::new() };
                let note = r.note.as_ref().map_or(String::new(), |n| format!(",\"note\":{}", json::string(n)));
                format!("\"{}\":{{\"compiled\":{},\"usable\":{}{threads}{note}}}", r.kind.name(), r.compiled, r.usable)
            })
            .collect();
        let rows: Vec<String> = reports.iter().flat_map(|r| &r.devices).map(device_json).collect();
        outln!(
            "{{\"version\":{},\"backends\":{{{}}},\"devices\":[{}]}}",
            json::string(version),
            backends.join(","),
            rows.join(",")
        );
    } else {
        outln!("gpstoken {version}");
        for r in &reports {
            outln!("  {:<7} {}", r.kind.name(), backend_state(r));
            for d in &r.devices {
                outln!("          device {}: {}", d.index, device_text(d));
            }
        }
    }
    Ok(())
}

fn backend_state(r: &BackendReport) -> String {
    match (&r.note, r.kind) {
        (Some(note), _) if !r.compiled => note.clone(),
        (Some(note), _) => format!("built in, not usable: {note}"),
        (None, BackendKind::Cpu) => "built in, usable (deterministic for any --threads)".to_string(),
        (None, _) => "built in, usable".to_string(),
    }
}

fn device_text(d: &DeviceRow) -> String {
    let memory = d.memory_bytes.map_or(String::new(), |b| format!(", {:.1} GiB", b as f64 / (1u64 << 30) as f64));
    let unusable = if d.usable { "" } else { " [not usable by this build]" };
    format!("{} ({}), {}{memory}{unusable}", d.name, d.device_type, d.driver)
}

fn device_json(d: &DeviceRow) -> String {
    format!(
        "{{\"backend\":\"{}\",\"index\":{},\"name\":{},\"type\":{},\"driver\":{},\"memory_bytes\":{},\"usable\":{}}}",
        d.backend.name(),
        d.index,
        json::string(&d.name),
        json::string(&d.device_type),
        json::string(&d.driver),
        d.memory_bytes.map_or("null".to_string(), |b| b.to_string()),
        d.usable
    )
}

/// A model config's sizes: `{"config":...,"params":P,"tokens":N,...}` or a few lines.
fn describe_config(name: &str, as_json: bool) -> Result<()> {
    let cfg = gpstoken_cli::config::load_config(name)?;
    let params = cfg.parameter_count().map_err(|e| anyhow::anyhow!("{e}"))?;
    let g = &cfg.gps;
    if as_json {
        outln!(
            "{{\"config\":{},\"params\":{params},\"tokens\":{},\"image_size\":{},\"image_hw\":[{},{}],\"channels\":{},\"encoder_blocks\":{},\"encoder_width\":{},\"render_size\":[{},{}],\"decoder_ch\":{},\"decoder_ch_mult\":[{}]}}",
            json::string(&cfg.name),
            g.gps_num,
            // A square patch's side; null for a non-square one (`image_hw` has both).
            cfg.square_patch().map_or("null".to_string(), |s| s.to_string()),
            cfg.image_hw.0,
            cfg.image_hw.1,
            g.gps_c,
            g.gpsenc_n,
            g.gpsenc_c,
            g.gps_rs.0,
            g.gps_rs.1,
            cfg.decoder.ch,
            cfg.decoder.ch_mult.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")
        );
    } else {
        outln!("config {}: {params} parameters", cfg.name);
        let (h, w) = cfg.image_hw;
        outln!("  tokens per patch {} ({} feature channels), patch {w}x{h} (width x height)", g.gps_num, g.gps_c);
        outln!("  encoder {} blocks of width {}, render {}x{}", g.gpsenc_n, g.gpsenc_c, g.gps_rs.0, g.gps_rs.1);
        outln!("  decoder ch {} mult {:?}", cfg.decoder.ch, cfg.decoder.ch_mult);
    }
    Ok(())
}
