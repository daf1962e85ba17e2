//! Every backend side by side, with the same benchmark ids:
//!
//! * `splat_forward/<backend>/<HxWxC_N>` and `splat_backward/<backend>/<HxWxC_N>` on
//!   `64x64x16_128`, `256x256x16_4096` and `1024x1024x16_4096` (throughput in output pixels);
//! * `train_step/<backend>/tiny64_b2`: one tokenizer training step of the `tiny64` config on a
//!   batch of two 64x64 images (forward, MSE, backward, Adam; throughput in estimated FLOPs).
//!
//! `<backend>` is `cpu`, `vulkan` (device 0) or `cuda` (device 0). A GPU backend that cannot be
//! opened is skipped with one printed line and registers no benchmark. `GPSTOKEN_BENCH_BACKENDS`
//! (comma-separated, default `cpu,vulkan,cuda`) selects backends, e.g.
//! `GPSTOKEN_BENCH_BACKENDS=cpu,cuda cargo bench -p gpstoken-benches --bench backends`.
//!
//! Every timed iteration ends with the backend's sync, so queued GPU work is not mistaken for done
//! work. Inputs are uploaded once, outside the timed loop.
//!
//! On a CPU-type Vulkan device (Mesa's lavapipe, ~1 GFLOP/s) the largest splat shape is skipped
//! with a printed line and the rest runs with 1 s measurements of 10 samples: there the point
//! is that the code runs, not the numbers.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_backend_cuda::CudaBackend;
use gpstoken_backend_vulkan::{DeviceType, VulkanBackend};
use gpstoken_benches::splat_cases::{splat_case, SplatShape};
use gpstoken_benches::tokenizer::{step_flops, TrainBatch, Trainer};
use gpstoken_benches::Completion;
use gpstoken_core::backend::Backend;
use gpstoken_core::model::ModelConfig;
use std::time::Duration;

const SHAPES: [SplatShape; 3] = [
    SplatShape { size: 64, channels: 16, gaussians: 128 },
    SplatShape { size: 256, channels: 16, gaussians: 4096 },
    SplatShape { size: 1024, channels: 16, gaussians: 4096 },
];

const TRAIN_BATCH: usize = 2;

/// How long to measure one backend, and which splat shapes it can afford.
#[derive(Clone, Copy)]
struct Settings {
    samples: usize,
    warm_up: Duration,
    measurement: Duration,
    /// Largest canvas side to splat; larger shapes are skipped.
    max_splat_size: usize,
}

impl Settings {
    /// A real device (CPU backend or GPU): enough samples for a stable estimate.
    const NORMAL: Settings = Settings {
        samples: 10,
        warm_up: Duration::from_millis(500),
        measurement: Duration::from_secs(3),
        max_splat_size: usize::MAX,
    };
    /// A software Vulkan driver: criterion's minimum of 10 samples in a short measurement (it runs
    /// over when one call is slower), and no 1024x1024 case (seconds per call).
    const SOFTWARE: Settings = Settings {
        samples: 10,
        warm_up: Duration::from_millis(100),
        measurement: Duration::from_secs(1),
        max_splat_size: 256,
    };

    fn apply(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        group.sample_size(self.samples).warm_up_time(self.warm_up).measurement_time(self.measurement);
    }
}

/// The backends that opened, with their settings.
struct Opened {
    cpu: Option<CpuBackend>,
    vulkan: Option<(VulkanBackend, Settings)>,
    cuda: Option<CudaBackend>,
}

/// Opens the backends `GPSTOKEN_BENCH_BACKENDS` selects, printing why any selected one is skipped.
fn open_backends() -> Opened {
    let list = std::env::var("GPSTOKEN_BENCH_BACKENDS").unwrap_or_else(|_| "cpu,vulkan,cuda".into());
    let selected: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    for name in &selected {
        if !["cpu", "vulkan", "cuda"].contains(name) {
            println!("GPSTOKEN_BENCH_BACKENDS: unknown backend `{name}` ignored (cpu, vulkan, cuda)");
        }
    }
    let cpu = selected.contains(&"cpu").then(CpuBackend::new);
    let vulkan = if selected.contains(&"vulkan") {
        match VulkanBackend::new(0) {
            Ok(be) => {
                let info = be.device_info();
                let software = info.device_type == DeviceType::Cpu;
                println!("vulkan: {} ({})", info.name, info.device_type.as_str());
                if software {
                    println!(
                        "vulkan: CPU-type device (software driver): 1024x1024x16_4096 skipped, 1 s measurements; \
                         its timings say nothing about GPU speed"
                    );
                }
                Some((be, if software { Settings::SOFTWARE } else { Settings::NORMAL }))
            }
            Err(e) => {
                println!("vulkan skipped: no device opens ({e})");
                None
            }
        }
    } else {
        None
    };
    let cuda = if selected.contains(&"cuda") {
        match CudaBackend::new(0) {
            Ok(be) => Some(be),
            Err(e) => {
                println!("cuda skipped: no device opens ({e})");
                None
            }
        }
    } else {
        None
    };
    Opened { cpu, vulkan, cuda }
}

/// Registers `splat_forward/<backend>/<shape>` or `splat_backward/...` for every affordable shape.
fn splat<B: Backend + Completion>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    be: &B,
    settings: Settings,
    backward: bool,
) {
    settings.apply(group);
    for shape in SHAPES.iter().filter(|s| s.size <= settings.max_splat_size) {
        let case = splat_case(shape);
        let desc = case.desc;
        let tokens = be.upload(&case.tokens).expect("upload tokens");
        group.throughput(Throughput::Elements((desc.batch * desc.height * desc.width) as u64));
        let id = BenchmarkId::new(be.name(), shape.id());
        if backward {
            let grad_out = be.upload(&case.grad_out).expect("upload grad_out");
            let mut grad = be.zeros(desc.tokens_len()).expect("grad buffer");
            group.bench_function(id, |b| {
                b.iter(|| {
                    be.splat_backward(&desc, &tokens, &grad_out, &mut grad).expect("splat_backward");
                    be.wait();
                })
            });
        } else {
            let mut out = be.zeros(desc.image_len()).expect("image buffer");
            group.bench_function(id, |b| {
                b.iter(|| {
                    be.splat_forward(&desc, &tokens, &mut out).expect("splat_forward");
                    be.wait();
                })
            });
        }
    }
}

/// Registers `train_step/<backend>/tiny64_b2`.
fn train_step<B: Backend + Completion>(group: &mut BenchmarkGroup<'_, WallTime>, be: &B, settings: Settings) {
    let cfg = ModelConfig::tiny64();
    settings.apply(group);
    group.throughput(Throughput::Elements(step_flops(&cfg, TRAIN_BATCH) as u64));
    let batch = TrainBatch::synthetic(&cfg, TRAIN_BATCH);
    let mut trainer = Trainer::new(be, cfg, TRAIN_BATCH).expect("model");
    group.bench_function(BenchmarkId::new(be.name(), format!("tiny64_b{TRAIN_BATCH}")), |b| {
        b.iter(|| {
            trainer.step(be, &batch).expect("training step");
            be.wait();
        })
    });
}

fn backends_side_by_side(c: &mut Criterion) {
    let opened = open_backends();
    for backward in [false, true] {
        let mut group = c.benchmark_group(if backward { "splat_backward" } else { "splat_forward" });
        // One call can take longer than criterion's linear ramp assumes (1024x1024, software Vulkan).
        group.sampling_mode(SamplingMode::Flat);
        if let Some(be) = &opened.cpu {
            splat(&mut group, be, Settings::NORMAL, backward);
        }
        if let Some((be, settings)) = &opened.vulkan {
            splat(&mut group, be, *settings, backward);
        }
        if let Some(be) = &opened.cuda {
            splat(&mut group, be, Settings::NORMAL, backward);
        }
        group.finish();
    }
    let mut group = c.benchmark_group("train_step");
    group.sampling_mode(SamplingMode::Flat);
    if let Some(be) = &opened.cpu {
        train_step(&mut group, be, Settings::NORMAL);
    }
    if let Some((be, settings)) = &opened.vulkan {
        train_step(&mut group, be, *settings);
    }
    if let Some(be) = &opened.cuda {
        train_step(&mut group, be, Settings::NORMAL);
    }
    group.finish();
}

criterion_group!(benches, backends_side_by_side);
criterion_main!(benches);
