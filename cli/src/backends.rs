//! `--backend`: which device runs the tensor work. Only the CPU backend is built so far; the
//! others are recognised so that scripts written for them get a clear message, not a parse error.

use anyhow::{bail, Result};
use gpstoken_backend_cpu::CpuBackend;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Multi-threaded CPU; bit-reproducible for any thread count.
    #[default]
    Cpu,
    /// Vulkan compute (not built yet).
    Vulkan,
    /// NVIDIA CUDA (not built yet).
    Cuda,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Vulkan => "vulkan",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// Whether each backend is compiled into this binary.
pub fn compiled(kind: BackendKind) -> bool {
    matches!(kind, BackendKind::Cpu)
}

/// The CPU backend with `threads` worker threads (all cores when `None`), or the reason the
/// requested backend cannot be used.
pub fn cpu(kind: BackendKind, threads: Option<usize>) -> Result<CpuBackend> {
    if kind != BackendKind::Cpu {
        bail!("the {} backend is not built into this gpstoken yet; use --backend cpu", kind.name());
    }
    match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => CpuBackend::with_threads(n).map_err(|e| anyhow::anyhow!("cannot start {n} CPU threads: {e}")),
        None => Ok(CpuBackend::new()),
    }
}
