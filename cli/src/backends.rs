//! `--backend`, `--device`, `--threads`: which device runs the tensor work, chosen in one place.
//!
//! Every command that touches tensors is written once, generic over [`Backend`], as a
//! [`BackendTask`]; [`with_backend`] opens the selected backend and runs the task with it. Only
//! the CPU backend is built so far; the others are recognised so that scripts written for them
//! get a clear one-line message, not a parse error.
//!
//! Adding a backend: an optional dependency behind a cargo feature (as `vulkan` in `cli/Cargo.toml`),
//! one arm in [`with_backend`] that opens it, one in [`crate::devices`] that lists its devices, and
//! one line in [`compiled`].

use crate::train::parallel::{GradientSync, RankPlan};
use anyhow::{anyhow, bail, Result};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{Backend, Buffers};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Multi-threaded CPU; bit-reproducible for any thread count.
    #[default]
    Cpu,
    /// Vulkan compute (any Vulkan 1.2 device; lavapipe on a machine without a GPU).
    Vulkan,
    /// NVIDIA CUDA (cuBLAS GEMMs; needs the NVIDIA driver at run time).
    Cuda,
}

impl BackendKind {
    /// Every backend, in the order `info` lists them.
    pub const ALL: [BackendKind; 3] = [BackendKind::Cpu, BackendKind::Vulkan, BackendKind::Cuda];

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
    match kind {
        BackendKind::Cpu => true,
        BackendKind::Vulkan => cfg!(feature = "vulkan"),
        BackendKind::Cuda => cfg!(feature = "cuda"),
    }
}

/// Why a backend cannot be used by this binary (`None` when it is compiled in).
pub fn not_built_reason(kind: BackendKind) -> Option<String> {
    let how = match kind {
        _ if compiled(kind) => return None,
        _ => "rebuild without `--no-default-features`",
    };
    Some(format!("the {} backend is not built into this gpstoken ({how}); use --backend cpu", kind.name()))
}

/// The global options that choose a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendSelection {
    pub kind: BackendKind,
    /// Device index among the backend's devices (`gpstoken info` lists them); the CPU has one, 0.
    pub device: usize,
    /// CPU worker threads (all cores when `None`); GPU backends ignore it.
    pub threads: Option<usize>,
    /// `--tf32`: let cuBLAS use TF32 tensor cores for the f32 GEMMs (cuda only).
    pub tf32: bool,
}

/// `--tf32` is a CUDA option: elsewhere it would silently change nothing.
fn check_tf32(selection: &BackendSelection) -> Result<()> {
    if selection.tf32 && selection.kind != BackendKind::Cuda {
        bail!(
            "--tf32 applies to --backend cuda only (cuBLAS on tensor cores), not to --backend {}",
            selection.kind.name()
        );
    }
    Ok(())
}

/// Work that runs on whichever backend the user selected. A trait rather than a closure because
/// the work is generic over the backend type, which only [`with_backend`] knows.
pub trait BackendTask {
    type Output;
    fn run<B: Backend>(self, be: &B) -> Result<Self::Output>;
}

/// Opens the selected backend and runs `task` with it.
pub fn with_backend<T: BackendTask>(selection: &BackendSelection, task: T) -> Result<T::Output> {
    check_tf32(selection)?;
    match selection.kind {
        BackendKind::Cpu => task.run(&cpu(selection)?),
        #[cfg(feature = "vulkan")]
        BackendKind::Vulkan => task.run(&vulkan(selection)?),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => task.run(&cuda(selection)?),
        // Backends not compiled in (unreachable when every backend is built in).
        #[allow(unreachable_patterns)]
        kind => Err(not_opened(kind)),
    }
}

/// Work of one rank of a data-parallel run (`train --devices`, see [`crate::train::parallel`]):
/// like [`BackendTask`], with what makes its gradients the mean over the ranks.
pub trait RankTask {
    type Output;
    fn run<B: Backend>(self, be: &B, sync: &mut dyn GradientSync<B>) -> Result<Self::Output>;
}

/// Opens the selected backend and runs one rank of a data-parallel run with it: NCCL on cuda,
/// the host on the other backends (ranks in this process only).
pub fn with_backend_rank<T: RankTask>(selection: &BackendSelection, plan: &RankPlan, task: T) -> Result<T::Output> {
    check_tf32(selection)?;
    match selection.kind {
        BackendKind::Cpu => task.run(&cpu(selection)?, plan.host_sync()?.as_mut()),
        #[cfg(feature = "vulkan")]
        BackendKind::Vulkan => task.run(&vulkan(selection)?, plan.host_sync()?.as_mut()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let be = cuda(selection)?;
            let mut sync = plan.cuda_sync(&be)?;
            task.run(&be, sync.as_mut())
        }
        #[allow(unreachable_patterns)]
        kind => Err(not_opened(kind)),
    }
}

fn not_opened(kind: BackendKind) -> anyhow::Error {
    anyhow!(not_built_reason(kind).unwrap_or_else(|| format!(
        "internal error: the {} backend is built in but not opened in backends::with_backend",
        kind.name()
    )))
}

#[cfg(feature = "vulkan")]
fn vulkan(selection: &BackendSelection) -> Result<gpstoken_backend_vulkan::VulkanBackend> {
    gpstoken_backend_vulkan::VulkanBackend::new(selection.device)
        .map_err(|e| anyhow!("cannot open Vulkan device {} (`gpstoken info` lists them): {e}", selection.device))
}

#[cfg(feature = "cuda")]
fn cuda(selection: &BackendSelection) -> Result<gpstoken_backend_cuda::CudaBackend> {
    let options = gpstoken_backend_cuda::CudaOptions { tf32: selection.tf32 };
    gpstoken_backend_cuda::CudaBackend::with_options(selection.device, options)
        .map_err(|e| anyhow!("cannot open CUDA device {} (`gpstoken info` lists them): {e}", selection.device))
}

/// The CPU backend of `selection` (its thread count; the CPU is device 0).
pub fn cpu(selection: &BackendSelection) -> Result<CpuBackend> {
    if selection.device != 0 {
        bail!("--device {}: the cpu backend has one device, 0", selection.device);
    }
    match selection.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => CpuBackend::with_threads(n).map_err(|e| anyhow!("cannot start {n} CPU threads: {e}")),
        None => Ok(CpuBackend::new()),
    }
}

/// Turns a backend's error into an error that names the backend: `cpu backend: ...`.
pub fn device_error<B: Buffers + ?Sized>(be: &B) -> impl Fn(B::Error) -> anyhow::Error + Copy {
    let name = be.name();
    move |e| anyhow!("{name} backend: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports which backend it ran on.
    struct Name;

    impl BackendTask for Name {
        type Output = &'static str;
        fn run<B: Backend>(self, be: &B) -> Result<&'static str> {
            Ok(be.name())
        }
    }

    fn error(selection: BackendSelection) -> String {
        let e = with_backend(&selection, Name).expect_err("an error");
        let text = format!("{e:#}");
        assert!(!text.contains('\n'), "not one line: {text}");
        text
    }

    #[test]
    fn the_selection_opens_its_backend_or_says_in_one_line_why_not() {
        let cpu = BackendSelection { threads: Some(2), ..BackendSelection::default() };
        assert_eq!(with_backend(&cpu, Name).unwrap(), "cpu");
        for kind in [BackendKind::Vulkan, BackendKind::Cuda] {
            if !compiled(kind) {
                let text = error(BackendSelection { kind, ..BackendSelection::default() });
                let want = format!("the {} backend is not built into this gpstoken (", kind.name());
                assert!(text.starts_with(&want), "{text}");
            }
        }
        assert!(error(BackendSelection { device: 1, ..cpu }).contains("--device 1"));
        assert!(error(BackendSelection { threads: Some(0), ..cpu }).contains("--threads must be at least 1"));
        let tf32 = error(BackendSelection { tf32: true, ..cpu });
        assert!(tf32.starts_with("--tf32 applies to --backend cuda only"), "{tf32}");
    }
}
