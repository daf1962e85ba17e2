//! `gpstoken`: turn images into 2D Gaussian tokens and back. This file parses the command line
//! and hands each command to its module in `commands/`.

mod commands;

use clap::{Parser, Subcommand};
use commands::*;
use gpstoken_cli::backends::{BackendKind, BackendSelection};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  gpstoken partition samples/astronaut.png --tokens 128 --viz partition.png
  gpstoken partition photo.jpg --tokens 256 --json > init.json
  gpstoken calibrate generated-layout.json > calibrated.json
  gpstoken fit samples/astronaut.png --tokens 256 --steps 500 -o astronaut.gpst --recon recon.png --viz fit.png
  gpstoken render astronaut.gpst -o render.png --size 512x512
  gpstoken train --config tiny64 --data ../shared/data/train --eval ../shared/data/eval --steps 2000 --out runs/a
  gpstoken reconstruct samples/coffee.png -o recon.png --viz gaussians.png
  gpstoken eval --data ../shared/data/eval --tokens 64 --json
  gpstoken train-generator --stage texture --data ../shared/data/labelled/tuxpaint --out runs/texture
  gpstoken generate --class bird -n 16 --cfg 1.5 -o birds.png
  gpstoken info --json
  gpstoken bench --quick";

#[derive(Parser)]
#[command(
    name = "gpstoken",
    version,
    about = "GPSToken: images as a few hundred 2D Gaussian tokens",
    long_about = "GPSToken: images as a few hundred 2D Gaussian tokens [sigma_x, sigma_y, rho, x, y] + features.\n\
                  Algorithm 1 places Gaussians densely where the image is complex; the splatting renderer \
                  turns tokens back into pixels.",
    after_help = EXAMPLES
)]
struct Cli {
    /// Device for tensor work. `cpu` is bit-reproducible for any thread count.
    #[arg(long, global = true, value_enum, default_value = "cpu")]
    backend: BackendKind,
    /// Device index within the backend (`gpstoken info` lists them); the CPU is device 0.
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    device: usize,
    /// CPU worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// With --backend cuda: let cuBLAS round the GEMMs' inputs to TF32 on tensor cores, as
    /// PyTorch's allow_tf32 (faster; products keep about 3 significant digits, so results drift
    /// from the CPU reference: docs/CUDA.md). Off by default.
    #[arg(long, global = true)]
    tf32: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Algorithm 1 (entropy-driven partition) and print the initial Gaussians and RoI boxes.
    #[command(after_help = partition::EXAMPLES)]
    Partition(partition::Args),
    /// Algorithm 2: snap a generated layout (partition --json schema) to the nearest one Algorithm 1 can make.
    #[command(after_help = calibrate::EXAMPLES)]
    Calibrate(calibrate::Args),
    /// Tokenize one image without a model: Adam on the Gaussians and RGB features through the splat.
    #[command(after_help = fit::EXAMPLES)]
    Fit(fit::Args),
    /// Render RGB tokens (from `gpstoken fit`) to a PNG.
    #[command(after_help = render::EXAMPLES)]
    Render(render::Args),
    /// Version, the backends and the devices each can use here; with --config, a model config's sizes.
    #[command(after_help = info::EXAMPLES)]
    Info(info::Args),
    /// Train the tokenizer (L2 loss, Adam, EMA; optional adversarial stage) on a folder of photos.
    #[command(after_help = train::EXAMPLES)]
    Train(gpstoken_cli::train::TrainOptions),
    /// Encode an image into learned tokens (.gpst with the config's feature channels).
    #[command(after_help = encode::EXAMPLES)]
    Encode(encode::Args),
    /// Decode learned tokens (.gpst from `encode`) to an image with the model's renderer and decoder.
    #[command(after_help = decode::EXAMPLES)]
    Decode(decode::Args),
    /// Encode and decode an image with a trained model; prints PSNR and SSIM.
    #[command(after_help = reconstruct::EXAMPLES)]
    Reconstruct(reconstruct::Args),
    /// Write the weights of a training checkpoint (raw, or EMA with --ema) as a weights-only file.
    #[command(after_help = export::EXAMPLES)]
    Export(export::Args),
    /// Plot training curves of `train` logs: running mean of the training PSNR (lines) and eval PSNR (dots).
    #[command(after_help = plot::EXAMPLES)]
    Plot(plot::Args),
    /// Mean PSNR and SSIM of a trained model on a folder (square centre crops, 256x256 by default).
    #[command(after_help = eval::EXAMPLES)]
    Eval(eval::Args),
    /// Train a generator (layout, texture or one-stage SiT) on the tokens of a labelled folder.
    #[command(after_help = train_generator::EXAMPLES)]
    TrainGenerator(gpstoken_cli::generator::GeneratorTrainOptions),
    /// Generate class-conditional samples (grid PNG and .gpst tokens) with trained generators.
    #[command(after_help = generate::EXAMPLES)]
    Generate(generate::Args),
    /// Algorithm 1 layouts of a labelled folder, per class, for `generate --layouts bank`.
    #[command(after_help = build_layout_bank::EXAMPLES)]
    BuildLayoutBank(build_layout_bank::Args),
    /// Measure this CPU: Algorithm 1, the splat, a training step and the GEMM, in one table.
    #[command(after_help = bench::EXAMPLES)]
    Bench(bench::Args),
    /// Train the small classifier whose features score generators (eval-generator) on a labelled folder.
    #[command(after_help = train_classifier::EXAMPLES)]
    TrainClassifier(gpstoken_cli::generator::classify::ClassifierTrainOptions),
    /// Fréchet / kernel distances and classifier accuracy of a generator's samples against held-out images.
    #[command(after_help = eval_generator::EXAMPLES)]
    EvalGenerator(eval_generator::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let backend = BackendSelection { kind: cli.backend, device: cli.device, threads: cli.threads, tf32: cli.tf32 };
    let result = match cli.command {
        Command::Partition(args) => partition::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Fit(args) => fit::run(args, &backend),
        Command::Render(args) => render::run(args, &backend),
        Command::Info(args) => info::run(args),
        Command::Train(opts) => train::run(opts, &backend),
        Command::Encode(args) => encode::run(args, &backend),
        Command::Decode(args) => decode::run(args, &backend),
        Command::Reconstruct(args) => reconstruct::run(args, &backend),
        Command::Export(args) => export::run(args, &backend),
        Command::Plot(args) => plot::run(args),
        Command::Eval(args) => eval::run(args, &backend),
        Command::TrainGenerator(opts) => train_generator::run(opts, &backend),
        Command::Generate(args) => generate::run(args, &backend),
        Command::BuildLayoutBank(args) => build_layout_bank::run(args),
        Command::Bench(args) => bench::run(args, &backend),
        Command::TrainClassifier(o) => train_classifier::run(o, &backend),
        Command::EvalGenerator(args) => eval_generator::run(args, &backend),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpstoken: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
