//! Seconds per tokenizer training step (forward, MSE, backward, Adam) on the CPU backend, for
//! `scripts/compare/train_step.sh`: `train_step CONFIG BATCH THREADS REPS [INPUTS.f32]` takes
//! 2 warm-up steps, then times REPS steps and prints one JSON line with the median wall seconds
//! and the process CPU seconds per step. With INPUTS it also writes the synthetic batch there
//! (image, g_init, regions as little-endian f32, one after the other) so the official model can
//! be run on the same inputs. REPS 0 only writes INPUTS (the GPU check's official step reads them).

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_benches::tokenizer::{TrainBatch, Trainer};
use gpstoken_core::model::ModelConfig;
use std::time::Instant;

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after_name.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    // Fields 14 and 15 of stat(5); `after_name` starts at field 3.
    f.get(11).zip(f.get(12)).map_or(f64::NAN, |(u, s)| (u + s) / 100.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        panic!("usage: train_step CONFIG BATCH THREADS REPS [INPUTS.f32]");
    }
    let cfg = ModelConfig::builtin(&args[0]).expect("a built-in config name");
    let (batch, threads, reps): (usize, usize, usize) =
        (args[1].parse().unwrap(), args[2].parse().unwrap(), args[3].parse().unwrap());
    let be = CpuBackend::with_threads(threads).expect("thread pool");
    let inputs = TrainBatch::synthetic(&cfg, batch);
    if let Some(path) = args.get(4) {
        let all: Vec<u8> = [&inputs.image, &inputs.g_init, &inputs.boxes]
            .iter()
            .flat_map(|v| v.iter())
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(path, all).expect("writing the inputs");
    }
    if reps == 0 {
        return;
    }
    let mut trainer = Trainer::new(&be, cfg.clone(), batch).expect("model");
    for _ in 0..2 {
        trainer.step(&be, &inputs).expect("step");
    }
    let (mut wall, c0) = (Vec::with_capacity(reps), cpu_seconds());
    let mut loss = 0.0;
    for _ in 0..reps {
        let t = Instant::now();
        loss = trainer.step(&be, &inputs).expect("step");
        wall.push(t.elapsed().as_secs_f64());
    }
    let cpu = (cpu_seconds() - c0) / reps as f64;
    wall.sort_by(f64::total_cmp);
    println!(
        "{{\"config\":\"{}\",\"batch\":{batch},\"threads\":{threads},\"seconds\":{:.4},\"cpu_seconds\":{cpu:.4},\"loss\":{loss:.6}}}",
        cfg.name,
        wall[reps / 2]
    );
}
