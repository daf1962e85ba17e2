//! `gpstoken eval-generator`: Fréchet / kernel distances and classifier accuracy of a generator's
//! samples against held-out real images, on the features of a classifier trained here; see
//! `gpstoken_cli::generator::evaluate` and docs/GENERATION.md.

use anyhow::{bail, Result};
use gpstoken_cli::backends::{with_backend, BackendSelection};
use gpstoken_cli::generator::classify::read_classifier;
use gpstoken_cli::generator::data::{load_labelled, mirrored};
use gpstoken_cli::generator::evaluate::{EvalLayouts, EvalReport, EvalTask, SetScore};
use gpstoken_cli::generator::model::{read_generator, Stage, WeightsChoice};
use gpstoken_cli::generator::tokens;
use gpstoken_cli::model_io;
use std::path::PathBuf;

pub const EXAMPLES: &str = "\
Examples:
  gpstoken eval-generator --classifier clf.safetensors --data ../shared/data/labelled/tuxpaint --references --token-cache run/tokens.safetensors
  gpstoken eval-generator --classifier clf.safetensors --data ../shared/data/labelled/tuxpaint --model one/generator.safetensors --json
  gpstoken eval-generator --classifier clf.safetensors --data ../shared/data/labelled/tuxpaint --model texture/generator.safetensors --layout-model layout/generator.safetensors --grid samples.png";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutChoice {
    /// The layout model (--layout-model), then Algorithm 2.
    Model,
    /// Algorithm 1 layouts of the class's training images (needs --token-cache).
    Training,
}

#[derive(clap::Args)]
pub struct Args {
    /// Classifier from `gpstoken train-classifier`.
    #[arg(long, value_name = "FILE")]
    classifier: PathBuf,
    /// The labelled folder the classifier and the generator were trained on (its held-out images
    /// are the reference; the hold-out is the classifier's).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Texture or one-stage generator to evaluate (none: only the references).
    #[arg(long, value_name = "M")]
    model: Option<PathBuf>,
    /// Layout generator (texture model with --layouts model).
    #[arg(long, value_name = "M")]
    layout_model: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "model")]
    layouts: LayoutChoice,
    /// dopri5 output times of the layout model's ODE.
    #[arg(long, default_value_t = 5)]
    layout_steps: usize,
    /// Move layout-model tokens that Algorithm 2 snapped onto the same rectangle apart (as `generate`).
    #[arg(long)]
    repair_duplicates: bool,
    /// Samples generated per class.
    #[arg(long, default_value_t = 24)]
    per_class: usize,
    /// Heun ODE steps of the texture / one-stage sampler.
    #[arg(long, default_value_t = 16)]
    steps: usize,
    /// Classifier-free guidance scale on t in [0.2, 1] (1 = none).
    #[arg(long, default_value_t = 1.0)]
    cfg: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which weights of the generator files (as `generate --weights`).
    #[arg(long, value_enum, default_value = "auto")]
    weights: WeightsChoice,
    /// Token cache of train-generator (held-out reconstructions for --references; --layouts training).
    #[arg(long, value_name = "FILE")]
    token_cache: Option<PathBuf>,
    /// The tokenizer [default: $GPSTOKEN_MODEL, else models/tiny64.safetensors].
    #[arg(long, value_name = "MODEL")]
    tokenizer: Option<PathBuf>,
    /// Also score the training images and (with --token-cache) the held-out reconstructions.
    #[arg(long)]
    references: bool,
    /// PNG of the first samples of every class, one class per row.
    #[arg(long, value_name = "OUT.png")]
    grid: Option<PathBuf>,
    /// Columns of --grid.
    #[arg(long, default_value_t = 8)]
    grid_columns: usize,
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    if args.per_class < 2 || args.per_class > 1024 || args.steps < 1 || args.layout_steps < 2 {
        bail!("--per-class must be 2..=1024, --steps at least 1 and --layout-steps at least 2");
    }
    if !(args.cfg.is_finite() && args.cfg >= 1.0) {
        bail!("--cfg must be at least 1, got {}", args.cfg);
    }
    if args.model.is_none() && !args.references {
        bail!("nothing to evaluate: pass --model and/or --references");
    }
    if let Some(g) = &args.grid {
        gpstoken_cli::outputs::check(&[&args.classifier, &args.data], &[("--grid", g)])?;
    }
    let classifier = read_classifier(&args.classifier)?;
    let images = load_labelled(&args.data, classifier.config.image, classifier.hold_out)?;
    if images.classes != classifier.classes {
        bail!("data folder '{}' has other classes than the classifier", args.data.display());
    }
    let (mut held, mut train) = (Vec::new(), Vec::new());
    for img in &images.images {
        let both = [(img.image.clone(), img.class), (mirrored(&img.image), img.class)];
        if img.held_out {
            held.extend(both)
        } else if args.references {
            train.extend(both)
        }
    }
    if held.len() < 2 {
        bail!("fewer than 2 held-out images in '{}'", args.data.display());
    }
    let tok_path = match &args.tokenizer {
        Some(p) => p.clone(),
        None => model_io::default_model_path()?,
    };
    let tokenizer = model_io::read_model(&tok_path, model_io::Which::Raw, None)?;
    let token_set = match &args.token_cache {
        Some(path) => {
            let patch = tokenizer.1.square_patch().map_err(|e| anyhow::anyhow!("eval-generator: tokenizer {}", e.0))?;
            let key = tokens::cache_key(&tokenizer.0, &images, patch, tokenizer.1.gps.gps_num);
            match tokens::load_cache(path, &key)? {
                Some(set) => Some(set),
                None => bail!("token cache '{}' does not belong to this tokenizer, data and hold-out", path.display()),
            }
        }
        None => None,
    };
    let generator = match &args.model {
        None => None,
        Some(path) => {
            let mut file = read_generator(path)?;
            file.select(args.weights, path)?;
            let info = &file.info;
            if info.class_names != classifier.classes || info.patch != classifier.config.image {
                bail!("generator '{}' was trained on other classes or patch sizes than the classifier", path.display());
            }
            let layouts = match (info.stage, args.layouts) {
                (Stage::Layout, _) => bail!("'{}' is a layout generator; pass it as --layout-model", path.display()),
                (Stage::OneStage, _) => None,
                (Stage::Texture, LayoutChoice::Training) if token_set.is_none() => {
                    bail!("--layouts training needs --token-cache")
                }
                (Stage::Texture, LayoutChoice::Training) => Some(EvalLayouts::Training),
                (Stage::Texture, LayoutChoice::Model) => {
                    let Some(lp) = &args.layout_model else { bail!("a texture generator needs --layout-model") };
                    let mut lf = read_generator(lp)?;
                    lf.select(args.weights, lp)?;
                    if lf.info.stage != Stage::Layout
                        || lf.info.class_names != info.class_names
                        || lf.info.config.tokens != info.config.tokens
                    {
                        bail!(
                            "--layout-model '{}' is not a layout generator of the same classes and tokens",
                            lp.display()
                        );
                    }
                    Some(EvalLayouts::Model(Box::new(lf), args.layout_steps, args.repair_duplicates))
                }
            };
            Some((file, layouts))
        }
    };
    let task = EvalTask {
        classifier,
        held,
        train,
        tokens: if args.references || args.layouts == LayoutChoice::Training { token_set } else { None },
        tokenizer,
        generator,
        per_class: args.per_class,
        steps: args.steps,
        cfg: args.cfg,
        seed: args.seed,
        grid_columns: if args.grid.is_some() { args.grid_columns.max(1) } else { 0 },
        quiet: args.quiet,
    };
    let report = with_backend(backend, task)?;
    if let (Some(path), Some(img)) = (&args.grid, &report.grid) {
        gpstoken_cli::imageio::save_png(path, img)?;
    }
    if args.json {
        outln!("{}", report.to_json());
    } else {
        print_report(&report)?;
    }
    Ok(())
}

fn print_report(r: &EvalReport) -> Result<()> {
    outln!(
        "reference: {} held-out real images (with mirrors); classifier accuracy on them {:.1}%",
        r.reference_images,
        r.real_accuracy * 100.0
    );
    let line = |what: &str, s: &SetScore| {
        format!(
            "{what:<26} {:>5} images  FD {:>8.3}  KID {:>8.4}  accuracy {:>5.1}%",
            s.images,
            s.fd,
            s.kid,
            s.accuracy * 100.0
        )
    };
    for (what, s) in [
        ("training images", &r.training_images),
        ("held-out reconstructions", &r.reconstructions),
        ("generated samples", &r.samples),
    ] {
        if let Some(s) = s {
            outln!("{}", line(what, s));
        }
    }
    if let Some(s) = &r.samples {
        let per: Vec<String> = s.per_class.iter().map(|(k, a)| format!("{k} {:.0}%", a * 100.0)).collect();
        outln!("per class: {}", per.join(", "));
    }
    outln!("{:.1} s", r.seconds);
    Ok(())
}
