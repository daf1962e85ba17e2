//! `gpstoken plot`: training curves of `train` logs.

use anyhow::{bail, Context, Result};
use gpstoken_cli::{imageio, plot};
use std::path::PathBuf;

pub const EXAMPLES: &str = "Examples:\n  gpstoken plot runs/adaptive/log.jsonl runs/grid/log.jsonl -o curves.png\n  gpstoken plot two-stage.jsonl one-stage.jsonl --x budget --y fd -o fd.png";

#[derive(clap::Args)]
pub struct Args {
    /// log.jsonl files; colours in order: blue, orange, green, red.
    #[arg(required = true)]
    logs: Vec<PathBuf>,
    /// Running-mean window of the training PSNR (or of --y), in points.
    #[arg(long, default_value_t = 50)]
    window: usize,
    /// Plot this key of every line that has it (and the --x key) as a line with dots, instead
    /// of the training and eval PSNR of `train` logs (e.g. `--y fd` for eval-generator tables).
    #[arg(long, value_name = "KEY")]
    y: Option<String>,
    /// The x key for --y.
    #[arg(long, value_name = "KEY", default_value = "step")]
    x: String,
    /// Output PNG.
    #[arg(short = 'o', long = "output", value_name = "OUT.png")]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let Args { logs, window, y, x, output } = args;
    if logs.len() > plot::COLOURS.len() {
        bail!("at most {} logs can be plotted together", plot::COLOURS.len());
    }
    let mut series = Vec::new();
    for (k, path) in logs.iter().enumerate() {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read log '{}'", path.display()))?;
        let (mut train_pts, mut eval_pts) = (Vec::new(), Vec::new());
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("'{}' is not a gpstoken train log", path.display()))?;
            if let Some(key) = &y {
                if let (Some(t), Some(p)) = (v.get(&x).and_then(|x| x.as_f64()), v.get(key).and_then(|y| y.as_f64())) {
                    train_pts.push((t, p));
                }
                continue;
            }
            if let (Some(t), Some(p)) = (v.get("step").and_then(|x| x.as_f64()), v["psnr"].as_f64()) {
                train_pts.push((t, p));
            } else if let (Some(t), Some(p)) = (v.get("eval").and_then(|x| x.as_f64()), v["psnr"].as_f64()) {
                eval_pts.push((t, p));
            }
        }
        let colour = plot::COLOURS[k];
        if y.is_some() {
            if train_pts.is_empty() {
                bail!("'{}' has no line with both '{x}' and '{}'", path.display(), y.as_deref().unwrap_or(""));
            }
            // a running mean of --window points; dots where there are few points (evaluations)
            series.push(plot::Series { points: plot::running_mean(&train_pts, window.max(1)), colour, dots: false });
            if train_pts.len() <= 50 {
                series.push(plot::Series { points: train_pts, colour, dots: true });
            }
            continue;
        }
        series.push(plot::Series { points: plot::running_mean(&train_pts, window.max(1)), colour, dots: false });
        series.push(plot::Series { points: eval_pts, colour, dots: true });
    }
    imageio::save_png(&output, &plot::plot(&series, 800, 450))?;
    Ok(())
}
