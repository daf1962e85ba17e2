//! Splat forward and backward timings: CUDA (device time between two events, median of
//! `GPSTOKEN_BENCH_REPS` runs after a warm-up, default 20) and the CPU backend (wall time,
//! median of 5) on the shapes of `benches/benches/splat.rs`, batched as the tokenizer renders
//! (batch 8 on the small shapes), and how far the CUDA times are from the floor the device's peak
//! memory bandwidth sets for the bytes each pass must read and write (the goal: within
//! 2x). Prints one markdown table; without a GPU, one SKIPPED line.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_backend_cuda::CudaBackend;
use gpstoken_core::backend::{Buffers, SplatOps};
use gpstoken_core::render::SplatDesc;
use gpstoken_tests::conformance::splat::{random_case, GaussianRanges, SplatCase};
use gpstoken_tests::TestRng;
use std::time::Instant;

/// (name, batch, size, channels, Gaussians).
const SHAPES: [(&str, usize, usize, usize, usize); 4] = [
    ("64x64x16_n128_b8", 8, 64, 16, 128),
    ("256x256x3_n1024", 1, 256, 3, 1024),
    ("256x256x3_n1024_b8", 8, 256, 3, 1024),
    ("1024x1024x16_n4096", 1, 1024, 16, 4096),
];

fn make_case(batch: usize, size: usize, channels: usize, gaussians: usize) -> SplatCase {
    let desc = SplatDesc { batch, gaussians, channels, height: size, width: size, kappa: 3.0 };
    let sigma = 2.0 / (gaussians as f64).sqrt() / 3.0;
    let ranges =
        GaussianRanges { sigma: (0.5 * sigma, 2.0 * sigma), anisotropy: 2.0, rho_abs: (0.0, 0.6), mean: (-1.0, 1.0) };
    random_case(&mut TestRng::new(0xbe7c), desc, &ranges, None)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test` passes harness flags such as `--nocapture`; none apply here.
    let cuda = match CudaBackend::for_tests() {
        Ok(b) => b,
        Err(e) => {
            println!("SKIPPED: {e} (splat_bench)");
            return;
        }
    };
    let reps: usize = std::env::var("GPSTOKEN_BENCH_REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(20).max(1);
    let cpu = CpuBackend::new();
    println!("Splat on {} (cuBLAS: {}), CPU: {} threads\n", cuda.device_info(), cuda.has_cublas(), cpu.threads());
    println!(
        "| shape | CUDA forward ms | CUDA backward ms | x bandwidth floor fwd / bwd | CPU forward ms | CPU backward ms | max abs diff fwd / bwd |"
    );
    println!("|---|---|---|---|---|---|---|");
    let bandwidth = cuda.device_info().memory_bandwidth;
    for (name, batch, size, channels, gaussians) in SHAPES {
        let case = make_case(batch, size, channels, gaussians);
        let desc = case.desc;
        let run = || -> Result<String, gpstoken_backend_cuda::CudaError> {
            let tokens = cuda.upload(&case.tokens)?;
            let grad_out = cuda.upload(&case.grad_out)?;
            let mut out = cuda.zeros(desc.image_len())?;
            let mut grad = cuda.zeros(desc.tokens_len())?;
            cuda.splat_forward(&desc, &tokens, &mut out)?;
            cuda.splat_backward(&desc, &tokens, &grad_out, &mut grad)?;
            let mut fwd = Vec::new();
            let mut bwd = Vec::new();
            for _ in 0..reps {
                fwd.push(f64::from(cuda.time_ms(|| cuda.splat_forward(&desc, &tokens, &mut out))?));
                bwd.push(f64::from(cuda.time_ms(|| cuda.splat_backward(&desc, &tokens, &grad_out, &mut grad))?));
            }
            let mut out_host = vec![0.0f32; desc.image_len()];
            let mut grad_host = vec![0.0f32; desc.tokens_len()];
            cuda.download(&out, &mut out_host)?;
            cuda.download(&grad, &mut grad_host)?;
            let mut cpu_out = vec![0.0f32; desc.image_len()];
            let mut cpu_grad = vec![0.0f32; desc.tokens_len()];
            let (mut cf, mut cb) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let t = Instant::now();
                cpu.splat_forward(&desc, &case.tokens, &mut cpu_out).expect("cpu forward");
                cf.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                cpu.splat_backward(&desc, &case.tokens, &case.grad_out, &mut cpu_grad).expect("cpu backward");
                cb.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let diff = gpstoken_tests::max_abs_diff::<f32>;
            let (fwd, bwd) = (median(fwd), median(bwd));
            // The least each pass must move through memory: the forward reads the tokens and
            // writes the image; the backward reads the tokens and the image's gradient and
            // writes the tokens' gradient. Time at peak bandwidth vs the time measured.
            let (tokens, image) = ((desc.tokens_len() * 4) as f64, (desc.image_len() * 4) as f64);
            let over_floor = |ms: f64, bytes: f64| match bandwidth {
                Some(b) => format!("{:.1}", ms / (bytes / b as f64 * 1e3)),
                None => "?".into(),
            };
            Ok(format!(
                "| {name} | {fwd:.3} | {bwd:.3} | {} / {} | {:.1} | {:.1} | {:.1e} / {:.1e} |",
                over_floor(fwd, tokens + image),
                over_floor(bwd, 2.0 * tokens + image),
                median(cf),
                median(cb),
                diff(&out_host, &cpu_out),
                diff(&grad_host, &cpu_grad)
            ))
        };
        match run() {
            Ok(row) => println!("{row}"),
            Err(e) => println!("| {name} | error: {e} | | | | | |"),
        }
    }
}
