//! GFLOP/s of `linear_forward` on square matrices (`y [n, n] = x [n, n] · Wᵀ`), for the GEMM
//! comparison of `scripts/compare/gemm.sh`: `linear_rate N THREADS REPS` prints one JSON line
//! with the median seconds and GFLOP/s over REPS calls (after 100 ms of warm-up calls).

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{Buffers, LinearDesc, LinearOps};
use std::time::{Duration, Instant};

/// How long the warm-up calls last (see `main`).
const WARM_UP: Duration = Duration::from_millis(100);

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("N THREADS REPS")).collect();
    let [n, threads, reps] = args[..] else { panic!("usage: linear_rate N THREADS REPS") };
    let be = CpuBackend::with_threads(threads).expect("thread pool");
    let host: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let x = be.upload(&host).unwrap();
    let w = be.upload(&host).unwrap();
    let mut y = be.zeros(n * n).unwrap();
    let desc = LinearDesc { rows: n, in_features: n, out_features: n };
    // Warm-up: calls for at least WARM_UP, not one call. A fresh process starts the pool's threads
    // on the CPU of the thread that spawned them, and the scheduler spreads them over the cores only
    // after some milliseconds; a 512 x 512 product takes under 1 ms on two threads, so timing right
    // after one call measured that placement (one core's rate in about half the processes) rather
    // than the GEMM. numpy's threads are started and placed during its import.
    let warm_up = Instant::now();
    while warm_up.elapsed() < WARM_UP {
        be.linear_forward(&desc, &x, &w, None, &mut y).unwrap();
    }
    let mut secs: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            be.linear_forward(&desc, &x, &w, None, &mut y).unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    let med = secs[reps / 2];
    let gflops = 2.0 * (n as f64).powi(3) / med / 1e9;
    println!("{{\"n\":{n},\"threads\":{threads},\"seconds\":{med:e},\"gflops\":{gflops:.1}}}");
}
