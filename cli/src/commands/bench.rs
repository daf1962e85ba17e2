//! `gpstoken bench`: the CPU's speed on the five rows of issue 12, measured on this machine:
//! Algorithm 1, the splat forward + backward at two sizes, a tokenizer training step and the
//! f32 GEMM of the linear layers. Each row is the median of repeated calls after warm-up calls
//! (wall time); one table with the CPU model and the vector extensions it has.

use anyhow::{bail, Result};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_cli::backends::{BackendKind, BackendSelection};
use gpstoken_cli::json;
use gpstoken_core::backend::{AdamConfig, Buffers, LinearDesc, LinearOps, OptimOps, SplatOps};
use gpstoken_core::model::{GpsToken, ModelConfig};
use gpstoken_core::partition::{partition_patch_with, region_box, region_gaussian, PartitionParams, Region};
use gpstoken_core::render::SplatDesc;
use gpstoken_core::rng::SplitMix64;
use std::path::PathBuf;
use std::time::Instant;

pub const EXAMPLES: &str = "\
Examples:
  gpstoken bench
  gpstoken bench --quick --json
  gpstoken bench --image samples/astronaut.png

Rows: Algorithm 1 (256x256, N = 128, 1 thread), splat forward + backward (64x64x16 with 128
Gaussians and 256x256x16 with 4096, 1 thread), one tokenizer training step (batch 8, 2 threads),
f32 GEMM through the linear layer (n = 512, 1024, 2048; 1 and 2 threads, GFLOP/s). Timings are
wall time: on a shared machine they include other programs' load (printed with the table).";

#[derive(clap::Args)]
pub struct Args {
    /// Fewer repeats and warm-up calls: a quick look, rougher numbers.
    #[arg(long)]
    quick: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Photo for the Algorithm 1 row (official preprocessing: 256x256 centre crop); default: a
    /// generated textured image.
    #[arg(long, value_name = "IMAGE")]
    image: Option<PathBuf>,
}

/// The training row's config: the official-format small config where this build has it.
const TRAIN_CONFIGS: [&str; 2] = ["cpu-tiny", "tiny64"];
const TRAIN_BATCH: usize = 8;
const TRAIN_THREADS: usize = 2;
const GEMM_SIZES: [usize; 3] = [512, 1024, 2048];

/// One measured row.
struct Row {
    id: String,
    what: String,
    threads: usize,
    reps: usize,
    median_ms: f64,
    /// GFLOP/s for the GEMM rows.
    gflops: Option<f64>,
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    if backend.kind != BackendKind::Cpu {
        bail!("gpstoken bench measures the CPU backend; leave out --backend (or use --backend cpu)");
    }
    let grey = match &args.image {
        Some(path) => photo_grey(path)?,
        None => generated_grey(),
    };
    // (warm-up calls, repeats) for fast rows and for slow ones.
    let (fast, slow) = if args.quick { ((1, 3), (0, 1)) } else { ((3, 30), (1, 5)) };
    let one = cpu(1)?;
    let two = cpu(TRAIN_THREADS)?;
    let mut rows = Vec::new();

    let params = PartitionParams::new(128);
    let math = gpstoken_cli::partition_math();
    let mut regions = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; params.tokens];
    let source = if args.image.is_some() { "photo" } else { "generated image" };
    rows.push(measure("algorithm1", format!("Algorithm 1, 256x256 {source}, N = 128"), 1, fast, || {
        partition_patch_with(&grey, 256, 256, &params, None, &math, &mut regions)
            .map_err(|e| anyhow::anyhow!("Algorithm 1 failed: {e}"))
    })?);

    for (size, gaussians, reps) in [(64, 128, fast), (256, 4096, if args.quick { (1, 2) } else { (2, 10) })] {
        let (desc, tokens, grad_out) = splat_case(size, 16, gaussians);
        let (mut out, mut grad) = (one.zeros(desc.image_len())?, one.zeros(desc.tokens_len())?);
        let what = format!("splat forward + backward, {size}x{size}x16, {gaussians} Gaussians");
        rows.push(measure(&format!("splat_{size}"), what, 1, reps, || {
            one.splat_forward(&desc, &tokens, &mut out)?;
            one.splat_backward(&desc, &tokens, &grad_out, &mut grad)?;
            Ok(())
        })?);
    }

    let (name, cfg) = train_config()?;
    let mut trainer = Trainer::new(&two, cfg, TRAIN_BATCH)?;
    let what = format!("tokenizer training step, config {name}, batch {TRAIN_BATCH}");
    rows.push(measure("train_step", what, TRAIN_THREADS, slow, || trainer.step(&two))?);

    for n in GEMM_SIZES {
        let desc = LinearDesc { rows: n, in_features: n, out_features: n };
        let mut rng = SplitMix64::new(7);
        let x: Vec<f32> = (0..n * n).map(|_| rng.unit_f32() - 0.5).collect();
        let w: Vec<f32> = (0..n * n).map(|_| rng.unit_f32() - 0.5).collect();
        let mut y = one.zeros(n * n)?;
        for (threads, be) in [(1, &one), (TRAIN_THREADS, &two)] {
            let reps = if n >= 2048 { slow } else { fast };
            let mut row =
                measure(&format!("gemm_{n}"), format!("f32 GEMM (linear forward), n = {n}"), threads, reps, || {
                    Ok(be.linear_forward(&desc, &x, &w, None, &mut y)?)
                })?;
            row.gflops = Some(2.0 * (n as f64).powi(3) / (row.median_ms * 1e-3) / 1e9);
            rows.push(row);
        }
    }
    report(&rows, &args)
}

fn cpu(threads: usize) -> Result<CpuBackend> {
    CpuBackend::with_threads(threads).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `warmup` untimed calls, then the median wall time of `reps` calls.
fn measure(
    id: &str,
    what: String,
    threads: usize,
    (warmup, reps): (usize, usize),
    mut call: impl FnMut() -> Result<()>,
) -> Result<Row> {
    for _ in 0..warmup {
        call()?;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        call()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(Row { id: id.to_string(), what, threads, reps, median_ms: times[times.len() / 2], gflops: None })
}

/// The 256x256 grey input of Algorithm 1 from a photo, as `partition` makes it.
fn photo_grey(path: &std::path::Path) -> Result<Vec<f32>> {
    use gpstoken_cli::imageio;
    let photo = imageio::load_rgb8(path)?;
    let framed = imageio::frame(&photo, imageio::Framing::CentreCrop, 256)?;
    let mut grey = vec![0.0f32; framed.width * framed.height];
    gpstoken_core::preprocess::grey(&imageio::to_unit(&framed), &mut grey);
    Ok(grey)
}

/// A 256x256 grey image with smooth gradients and a hashed texture of varying strength (the
/// partition bench's synthetic input), values in [-1, 1].
fn generated_grey() -> Vec<f32> {
    let mut g = Vec::with_capacity(256 * 256);
    for y in 0..256usize {
        for x in 0..256usize {
            let hash = ((x * 7919 + y * 104_729) ^ (x * y)) % 97;
            let tex = if (x / 64 + y / 32) % 3 == 0 { hash } else { hash / 8 };
            g.push(((x + 2 * y + tex) % 256) as f32 / 127.5 - 1.0);
        }
    }
    g
}

/// Random Gaussians shaped like an adaptive partition's (sigma around a third of a cell of a
/// `sqrt(N) x sqrt(N)` grid, x0.5 to x2; anisotropy up to 2; |rho| <= 0.6), random features and
/// output gradient; batch 1, kappa 3.
fn splat_case(size: usize, channels: usize, gaussians: usize) -> (SplatDesc, Vec<f32>, Vec<f32>) {
    let desc = SplatDesc { batch: 1, gaussians, channels, height: size, width: size, kappa: 3.0 };
    let mut rng = SplitMix64::new(0xbe7c);
    let mut uniform = |lo: f32, hi: f32| lo + (hi - lo) * rng.unit_f32();
    let sigma = 2.0 / (gaussians as f32).sqrt() / 3.0;
    let mut tokens = Vec::with_capacity(desc.tokens_len());
    for _ in 0..gaussians {
        let s = sigma * uniform(0.5, 2.0);
        let a = uniform(0.5, 2.0).sqrt();
        tokens.extend([s * a, s / a, uniform(-0.6, 0.6), uniform(-1.0, 1.0), uniform(-1.0, 1.0)]);
        tokens.extend((0..channels).map(|_| uniform(-1.0, 1.0)));
    }
    let grad_out = (0..desc.image_len()).map(|_| uniform(-1.0, 1.0)).collect();
    (desc, tokens, grad_out)
}

fn train_config() -> Result<(&'static str, ModelConfig)> {
    for name in TRAIN_CONFIGS {
        if let Ok(cfg) = gpstoken_cli::config::load_config(name) {
            return Ok((name, cfg));
        }
    }
    bail!("no training config among {TRAIN_CONFIGS:?}")
}

/// A freshly initialised model, its activations, Adam moments and one synthetic batch.
struct Trainer {
    model: GpsToken<CpuBackend>,
    acts: gpstoken_core::model::Activations<CpuBackend>,
    moments: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    batch: (Vec<f32>, Vec<f32>, Vec<f32>),
    step: u32,
}

impl Trainer {
    fn new(be: &CpuBackend, cfg: ModelConfig, batch: usize) -> Result<Trainer> {
        let err = |e: gpstoken_core::model::ModelError<_>| anyhow::anyhow!("{e}");
        let images = synthetic_batch(&cfg, batch);
        let mut model = GpsToken::new(be, cfg).map_err(err)?;
        model.init(be, 1)?;
        let acts = model.activations(be, batch, 1)?;
        let mut moments = Vec::with_capacity(model.params.len());
        for id in 0..model.params.len() {
            let n = model.params.spec(id).numel();
            moments.push(match model.params.grad(id) {
                Some(_) => Some((be.zeros(n)?, be.zeros(n)?)),
                None => None,
            });
        }
        Ok(Trainer { model, acts, moments, batch: images, step: 0 })
    }

    /// Forward, MSE, backward, then Adam on every parameter with a gradient.
    fn step(&mut self, be: &CpuBackend) -> Result<()> {
        let (image, g_init, boxes) = &self.batch;
        self.model.forward(be, &mut self.acts, image, g_init, boxes)?;
        self.model.mse_backward(be, &mut self.acts)?;
        self.step += 1;
        let (adam, step, moments) = (AdamConfig::official(5e-5), self.step, &mut self.moments);
        let mut tensors = self.model.params.adam_tensors(moments.iter_mut().map(|mv| mv.as_mut().map(|(m, v)| (m, v))));
        let res = be.adam_step_many(&adam, step, &mut tensors);
        Ok(res?)
    }
}

/// `batch` smooth synthetic images of the config's size with Algorithm 1's initial Gaussians
/// and boxes: `(images [B, 3, S, S], g_init [B, N, 5], boxes [B, N, 4])`.
fn synthetic_batch(cfg: &ModelConfig, batch: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // The bench runs built-in configs, all with square patches.
    let (s, n) = (cfg.image_hw.0, cfg.gps.gps_num);
    let mut image = vec![0.0f32; batch * 3 * s * s];
    let (mut g_init, mut boxes) = (Vec::new(), Vec::new());
    for (b, img) in image.chunks_exact_mut(3 * s * s).enumerate() {
        for (i, v) in img.iter_mut().enumerate() {
            let (c, y, x) = (i / (s * s), (i / s) % s, i % s);
            let t = (x * (c + 1) + y * (b + 2)) as f32 * 0.07;
            *v = (t.sin() * (y as f32 * 0.05).cos()).clamp(-1.0, 1.0);
        }
        let grey: Vec<f32> =
            (0..s * s).map(|i| 0.299 * img[i] + 0.587 * img[s * s + i] + 0.114 * img[2 * s * s + i]).collect();
        let mut regions = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; n];
        if partition_patch_with(
            &grey,
            s,
            s,
            &PartitionParams::new(n),
            None,
            &gpstoken_cli::partition_math(),
            &mut regions,
        )
        .is_ok()
        {
            for r in &regions {
                g_init.extend_from_slice(&region_gaussian(r, s, s));
                boxes.extend_from_slice(&region_box(r, s, s));
            }
        }
    }
    (image, g_init, boxes)
}

/// The vector extensions this CPU has, among those the kernels use.
fn simd_flags() -> Vec<&'static str> {
    let mut flags = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! have {
            ($($f:tt),*) => {$(if std::arch::is_x86_feature_detected!($f) { flags.push($f); })*};
        }
        have!("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512vnni");
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            flags.push("neon");
        }
    }
    flags
}

fn report(rows: &[Row], args: &Args) -> Result<()> {
    let model = gpstoken_cli::devices::cpu_model_name().unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| {
        let v: Vec<f64> = l.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
        (v.len() == 3).then_some(v)
    });
    let flags = simd_flags();
    if args.json {
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"id\":{},\"what\":{},\"threads\":{},\"reps\":{},\"median_ms\":{},\"gflops\":{}}}",
                    json::string(&r.id),
                    json::string(&r.what),
                    r.threads,
                    r.reps,
                    json::num(r.median_ms),
                    r.gflops.map_or("null".to_string(), json::num)
                )
            })
            .collect();
        let flags: Vec<String> = flags.iter().map(|f| json::string(f)).collect();
        outln!(
            "{{\"cpu\":{{\"model\":{},\"arch\":{},\"logical_cpus\":{cpus},\"flags\":[{}]}},\"load_average\":{},\"quick\":{},\"rows\":[{}]}}",
            json::string(&model),
            json::string(std::env::consts::ARCH),
            flags.join(","),
            load.as_deref().map_or("null".to_string(), json::array),
            args.quick,
            rows.join(",")
        );
        return Ok(());
    }
    outln!("CPU: {model} ({}, {cpus} logical CPUs; {})", std::env::consts::ARCH, flags.join(" "));
    if let Some(l) = &load {
        outln!("load average: {:.2} {:.2} {:.2}{}", l[0], l[1], l[2], if args.quick { " (--quick)" } else { "" });
    }
    outln!();
    outln!("| what | threads | median | rate |");
    outln!("|---|---|---|---|");
    for r in rows {
        let rate = r.gflops.map_or(String::new(), |g| format!("{g:.1} GFLOP/s"));
        let calls = if r.reps == 1 { "1 call".to_string() } else { format!("median of {} calls", r.reps) };
        outln!("| {} | {} | {} ({calls}) | {rate} |", r.what, r.threads, duration(r.median_ms));
    }
    Ok(())
}

fn duration(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.0} µs", ms * 1e3)
    }
}
