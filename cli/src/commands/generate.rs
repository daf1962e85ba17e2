//! `gpstoken generate`: class-conditional samples from a trained generator, two-stage (layouts
//! from the layout model or a layout bank, then the texture model) or one-stage, decoded by the
//! tokenizer into a grid PNG, with the tokens as one `.gpst` patch grid (`gpstoken decode` turns
//! it back into the same grid) and, with `--viz`, the layouts drawn over the samples.

use super::write_token_file;
use anyhow::{bail, Result};
use gpstoken_cli::backends::{with_backend, BackendSelection, BackendTask};
use gpstoken_cli::generator::bank::LayoutBank;
use gpstoken_cli::generator::model::{read_generator, GeneratorFile, Stage, WeightsChoice};
use gpstoken_cli::generator::sample::{decode_all, draw_layouts, grid, grid_shape, Generator};
use gpstoken_cli::imageio::{save_png, Rgb8};
use gpstoken_cli::model_io::{self, MultiPatch, Runner};
use gpstoken_core::backend::Backend;
use gpstoken_core::gpst::{DType, Header};
use gpstoken_core::model::sit::{Sampler, SdeConfig};
use gpstoken_core::rng::SplitMix64;
use std::path::{Path, PathBuf};

pub const EXAMPLES: &str = "\
Examples:
  gpstoken generate --class bird -n 16 -o birds.png
  gpstoken generate --class 3 -n 8 --cfg 1.5 --sampler ode --seed 7 -o grid.png --viz layouts.png
  gpstoken generate --class flower --layouts bank --bank bank.safetensors --model run/generator.safetensors -o f.png
  gpstoken generate --class mammal --model one-stage/generator.safetensors -o one-stage.png";

/// Shipped generators, looked up in `models/` as the shipped tokenizer is.
pub const DEFAULT_TEXTURE: &str = "generator-texture.safetensors";
pub const DEFAULT_LAYOUT: &str = "generator-layout.safetensors";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerKind {
    /// Euler–Maruyama SDE (the official default, spec 9.4).
    Sde,
    /// Adaptive dopri5 ODE (rtol 1e-3, atol 1e-6; spec 9.5).
    Ode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutSource {
    /// The layout model (--layout-model), calibrated by Algorithm 2.
    Model,
    /// Algorithm 1 layouts of real images (--bank), taken from the end.
    Bank,
}

#[derive(clap::Args)]
pub struct Args {
    /// Class name (as in the training folder) or index.
    #[arg(long, value_name = "NAME|K")]
    class: String,
    /// Number of samples.
    #[arg(short = 'n', long = "count", default_value_t = 16)]
    count: usize,
    /// Classifier-free guidance scale on t in [0.2, 1] (1 = none).
    #[arg(long, default_value_t = 1.0)]
    cfg: f32,
    #[arg(long, value_enum, default_value = "sde")]
    sampler: SamplerKind,
    /// SDE steps, or ODE output times [default: 250 for sde, 5 for ode].
    #[arg(long)]
    steps: Option<usize>,
    /// Where the layouts come from (two-stage) [default: model, bank when only --bank is given].
    #[arg(long, value_enum)]
    layouts: Option<LayoutSource>,
    /// Layout generator [default: models/generator-layout.safetensors].
    #[arg(long, value_name = "M")]
    layout_model: Option<PathBuf>,
    /// Layout bank from `gpstoken build-layout-bank`.
    #[arg(long, value_name = "B")]
    bank: Option<PathBuf>,
    /// dopri5 output times of the layout model's ODE (the paper's "5-step ODE").
    #[arg(long, default_value_t = 5)]
    layout_steps: usize,
    /// Move layout-model tokens that Algorithm 2 snapped onto the same rectangle apart (spec 4.2's
    /// optional repair).
    #[arg(long)]
    repair_duplicates: bool,
    /// Texture or one-stage generator [default: models/generator-texture.safetensors].
    #[arg(long, value_name = "M")]
    model: Option<PathBuf>,
    /// Tokenizer that decodes the tokens [default: $GPSTOKEN_MODEL, else models/tiny64.safetensors].
    #[arg(long, value_name = "MODEL")]
    tokenizer: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which weights of the generator files: the EMA weights (`ema_model.*`) when a file has them,
    /// or always EMA, or always the raw weights.
    #[arg(long, value_enum, default_value = "auto")]
    weights: WeightsChoice,
    /// Grid of the samples (PNG).
    #[arg(short = 'o', long = "output", value_name = "GRID.png")]
    output: PathBuf,
    /// Tokens of the grid [default: the output with .gpst].
    #[arg(long, value_name = "FILE.gpst")]
    tokens_out: Option<PathBuf>,
    /// The layouts (Gaussian ellipses) over the samples (PNG).
    #[arg(long, value_name = "OUT.png")]
    viz: Option<PathBuf>,
}

/// A file in the repository's `models/` (as the tokenizer's default), or an error naming the flag.
fn shipped(name: &str, flag: &str) -> Result<PathBuf> {
    let dirs = std::env::current_exe().ok().map(|e| e.ancestors().skip(1).map(Path::to_path_buf).collect::<Vec<_>>());
    for d in dirs.unwrap_or_default().into_iter().chain([PathBuf::from(".")]) {
        let p = d.join("models").join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("no {flag} given and no models/{name} found")
}

enum Layouts {
    None,
    Model(Box<GeneratorFile>),
    Bank(Vec<f32>),
}

struct Generate {
    texture: GeneratorFile,
    layouts: Layouts,
    tokenizer: (Vec<u8>, gpstoken_core::model::ModelConfig),
    labels: Vec<u32>,
    sampler: Sampler,
    layout_sampler: Sampler,
    repair: bool,
    cfg: f32,
    seed: u64,
}

impl BackendTask for Generate {
    type Output = (Vec<f32>, Vec<Rgb8>, Option<Vec<f32>>);

    fn run<B: Backend>(self, be: &B) -> Result<Self::Output> {
        let n = self.texture.info.config.tokens;
        let tokenizer = model_io::build_model(be, &self.tokenizer.1, Some(n), &self.tokenizer.0, "the tokenizer")?;
        let mut runner = Runner::new(be, tokenizer, 1, 1, MultiPatch::Tiled, gpstoken_cli::data::Init::Adaptive)?;
        let texture = Generator::build(be, &self.texture, "the generator")?;
        let mut rng = SplitMix64::new(self.seed);
        let layouts = match self.layouts {
            Layouts::None => None,
            Layouts::Bank(g) => Some(g),
            Layouts::Model(file) => {
                let layout = Generator::build(be, &file, "the layout generator")?;
                Some(layout.layouts(be, &self.labels, self.layout_sampler, self.repair, &mut rng)?)
            }
        };
        let rows = texture.tokens(be, &self.labels, layouts.as_deref(), self.sampler, self.cfg, &mut rng)?;
        let images = decode_all(be, &mut runner, &rows, self.labels.len())?;
        Ok((rows, images, layouts))
    }
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    if args.count == 0 || args.count > 1024 {
        bail!("-n must be between 1 and 1024, got {}", args.count);
    }
    if !(args.cfg.is_finite() && args.cfg >= 1.0) {
        bail!("--cfg must be at least 1, got {}", args.cfg);
    }
    let steps = args.steps.unwrap_or(match args.sampler {
        SamplerKind::Sde => 250,
        SamplerKind::Ode => 5,
    });
    if steps < 2 || args.layout_steps < 2 {
        bail!("--steps and --layout-steps must be at least 2");
    }
    let sampler = match args.sampler {
        SamplerKind::Sde => Sampler::Sde(SdeConfig::official(steps)),
        SamplerKind::Ode => Sampler::dopri5(steps),
    };
    let texture_path = match &args.model {
        Some(p) => p.clone(),
        None => shipped(DEFAULT_TEXTURE, "--model")?,
    };
    let mut texture = read_generator(&texture_path)?;
    texture.select(args.weights, &texture_path)?;
    let info = &texture.info;
    let label = info.label(&args.class)?;
    let class_name = info.class_names[label as usize].clone();
    let tok_path = match &args.tokenizer {
        Some(p) => p.clone(),
        None => model_io::default_model_path()?,
    };
    let tokenizer = model_io::read_model(&tok_path, model_io::Which::Raw, None)?;
    if (tokenizer.1.image_hw, tokenizer.1.gps.gps_c) != ((info.patch, info.patch), info.features) {
        let (h, w) = tokenizer.1.image_hw;
        bail!(
            "generator '{}' makes tokens for {}-pixel patches with {} features; tokenizer '{}' has {w}x{h} and {}",
            texture_path.display(),
            info.patch,
            info.features,
            tok_path.display(),
            tokenizer.1.gps.gps_c
        );
    }
    let n = info.config.tokens;
    let source = match (info.stage, args.layouts) {
        (Stage::Layout, _) => bail!("'{}' is a layout generator; pass it as --layout-model", texture_path.display()),
        (Stage::OneStage, None) => None,
        (Stage::OneStage, Some(_)) => {
            bail!("'{}' is a one-stage generator: it makes its own layouts", texture_path.display())
        }
        (Stage::Texture, Some(s)) => Some(s),
        (Stage::Texture, None) if args.bank.is_some() && args.layout_model.is_none() => Some(LayoutSource::Bank),
        (Stage::Texture, None) => Some(LayoutSource::Model),
    };
    let layouts = match source {
        None => Layouts::None,
        Some(LayoutSource::Bank) => {
            let Some(path) = &args.bank else { bail!("--layouts bank needs --bank FILE") };
            let bank = LayoutBank::load(path)?;
            if (bank.patch, bank.tokens) != (info.patch, n) {
                bail!(
                    "layout bank '{}' holds {}-token layouts of {}-pixel patches; the generator needs {n} tokens of {}",
                    path.display(),
                    bank.tokens,
                    bank.patch,
                    info.patch
                );
            }
            let Some(k) = bank.label(&class_name) else {
                bail!("layout bank '{}' has no class '{class_name}'", path.display())
            };
            Layouts::Bank(bank.take(k, args.count)?)
        }
        Some(LayoutSource::Model) => {
            let path = match &args.layout_model {
                Some(p) => p.clone(),
                None => shipped(DEFAULT_LAYOUT, "--layout-model")?,
            };
            let mut file = read_generator(&path)?;
            file.select(args.weights, &path)?;
            let li = &file.info;
            if li.stage != Stage::Layout {
                bail!("--layout-model '{}' is a {} generator, not a layout generator", path.display(), li.stage.name());
            }
            if li.class_names != info.class_names || li.config.tokens != n || li.patch != info.patch {
                bail!(
                    "layout generator '{}' was trained on other classes, token counts or patches than '{}'",
                    path.display(),
                    texture_path.display()
                );
            }
            Layouts::Model(Box::new(file))
        }
    };
    let labels = vec![label; args.count];
    let task = Generate {
        texture,
        layouts,
        tokenizer,
        labels,
        sampler,
        layout_sampler: Sampler::dopri5(args.layout_steps),
        repair: args.repair_duplicates,
        cfg: args.cfg,
        seed: args.seed,
    };
    let (patch, features) = (task.texture.info.patch, task.texture.info.features);
    let (rows, images, _) = with_backend(backend, task)?;
    let (cols, grid_rows) = grid_shape(args.count);
    let picture = grid(&images, cols);
    save_png(&args.output, &picture)?;
    let header = Header::for_image(
        DType::F32,
        (cols * patch) as u32,
        (grid_rows * patch) as u32,
        patch as u32,
        n as u32,
        features as u32,
    );
    let tokens_out = args.tokens_out.clone().unwrap_or_else(|| args.output.with_extension("gpst"));
    write_token_file(&tokens_out, &header, &rows)?;
    if let Some(v) = &args.viz {
        save_png(v, &draw_layouts(&picture, &rows, 5 + features, n, cols, patch))?;
    }
    Ok(())
}
