//! Whether the activations of a training batch fit in memory, checked before they are
//! allocated: `train --batch 1000` must be a one-line error, not `memory allocation of N bytes
//! failed` and SIGABRT (or the kernel's OOM killer).
//!
//! The need is measured, not guessed: the activations of one sample are allocated and the growth
//! of the process's data segment (`VmData` in `/proc/self/status`, which counts memory as soon
//! as it is allocated) is taken as the per-sample cost; `batch` times that must fit in the
//! memory the kernel reports as available (`MemAvailable + SwapFree` in `/proc/meminfo`).
//! Where `/proc` is missing (not Linux) the check is skipped; the CPU backend's allocations are
//! fallible anyway, so an impossible allocation is still an error rather than an abort.

use anyhow::{bail, Result};

/// A `kB` field of a `/proc` file, in bytes.
fn proc_kib(file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Memory the kernel can give this process without swapping anything out, in bytes.
pub fn available_bytes() -> Option<u64> {
    let avail = proc_kib("/proc/meminfo", "MemAvailable:")?;
    Some(avail.saturating_add(proc_kib("/proc/meminfo", "SwapFree:").unwrap_or(0)))
}

/// Checks that `batch` samples fit, given `one_sample`, which allocates (and returns) what one
/// sample needs; it is freed before this returns.
pub fn check_batch<T>(batch: usize, one_sample: impl FnOnce() -> Result<T>) -> Result<()> {
    let (Some(before), Some(available)) = (proc_kib("/proc/self/status", "VmData:"), available_bytes()) else {
        return Ok(());
    };
    let sample = one_sample()?;
    let after = proc_kib("/proc/self/status", "VmData:").unwrap_or(before);
    drop(sample);
    let per_sample = after.saturating_sub(before).max(1);
    let needed = per_sample.saturating_mul(batch as u64);
    if needed > available {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        bail!(
            "--batch {batch} needs about {:.1} GiB for its activations ({:.1} MiB per image) but {:.1} GiB of memory is available; use --batch {} or less",
            gib(needed),
            per_sample as f64 / (1u64 << 20) as f64,
            gib(available),
            (available / per_sample).max(1)
        );
    }
    Ok(())
}
