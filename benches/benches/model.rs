//! A whole training step of the small CPU config (`tiny64`): encoder + splat + DecoderNP forward,
//! MSE, and the full backward (no optimiser step), on the CPU backend with 1 and 2 threads. The
//! step with Adam on every backend is `train_step/<backend>/tiny64_b2` in the `backends` bench.
//!
//! Throughput is reported as FLOPs per second (criterion "elements" = FLOPs), estimated from the
//! config by `gpstoken_benches::tokenizer::step_flops`: a lower bound of the work actually done.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_benches::tokenizer::{step_flops, TrainBatch, Trainer};
use gpstoken_core::model::ModelConfig;
use std::time::Duration;

const BATCH: usize = 4;

fn training_step(c: &mut Criterion) {
    let cfg = ModelConfig::tiny64();
    let flops = step_flops(&cfg, BATCH);
    let batch = TrainBatch::synthetic(&cfg, BATCH);
    let mut group = c.benchmark_group("model_tiny64_step_batch4");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(flops as u64));
    for threads in [1, 2] {
        let be = CpuBackend::with_threads(threads).expect("thread pool");
        let mut trainer = Trainer::new(&be, cfg.clone(), BATCH).expect("model");
        group.bench_function(format!("{threads}_threads"), |bench| {
            bench.iter(|| trainer.forward_backward(&be, &batch).expect("forward and backward"))
        });
    }
    group.finish();
}

criterion_group!(benches, training_step);
criterion_main!(benches);
