//! What every Vulkan test file shares: getting a device (or skipping), the tolerances.

use gpstoken_backend_vulkan::{VulkanBackend, VulkanError, VulkanOptions};
use gpstoken_tests::conformance::{DenseTolerance, Tolerances};

/// The Vulkan backend's accuracy, stated once: the conformance suite's (`conformance.rs`) and
/// `versus_cpu.rs`'s tolerances. f32 kernels with f32 accumulation in a fixed order, the GLSL
/// `exp`/division, the `erfc` fit of GELU; losses are compensated sums (f64-like). The largest
/// errors measured on lavapipe (Mesa 22.3.6, both memory paths) are noted per field; the bounds
/// leave room for other devices' `exp`, `sqrt` and division (2.5 ulp allowed by Vulkan).
#[allow(dead_code)]
pub const VULKAN_TOLERANCES: Tolerances = Tolerances::GPU;

/// The dense part of [`VULKAN_TOLERANCES`] (`versus_cpu.rs`).
#[allow(dead_code)]
pub const VULKAN: DenseTolerance = VULKAN_TOLERANCES.dense;

/// Tensors through staging copies (the path of discrete GPUs without resizable BAR).
#[allow(dead_code)]
pub const STAGING: VulkanOptions = VulkanOptions { force_staging: true };

/// Whether a missing device must fail the tests (`GPSTOKEN_REQUIRE_VULKAN=1`, CI).
fn required() -> bool {
    std::env::var("GPSTOKEN_REQUIRE_VULKAN").is_ok_and(|v| v == "1")
}

/// The backend on device `GPSTOKEN_VULKAN_DEVICE` (default 0) with `options`; the error when
/// there is none, unless `GPSTOKEN_REQUIRE_VULKAN=1`, which panics instead. The conformance
/// suite's `fallible` expression.
pub fn vulkan_backend_with(options: VulkanOptions) -> Result<VulkanBackend, VulkanError> {
    let index = std::env::var("GPSTOKEN_VULKAN_DEVICE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let made = VulkanBackend::with_options(index, options);
    if let (Err(e), true) = (&made, required()) {
        panic!("GPSTOKEN_REQUIRE_VULKAN=1 but the Vulkan backend is unavailable: {e}");
    }
    if let Ok(backend) = &made {
        let staged = options.force_staging && backend.host_visible_tensors();
        assert!(!staged, "force_staging keeps tensors out of host-visible memory");
    }
    made
}

/// [`vulkan_backend_with`] the default options (host-visible tensors where the device has them).
#[allow(dead_code)]
pub fn vulkan_backend() -> Result<VulkanBackend, VulkanError> {
    vulkan_backend_with(VulkanOptions::default())
}

/// [`vulkan_backend_with`] for tests that take an `Option`: `None` after printing one
/// `SKIPPED:` line.
#[allow(dead_code)]
pub fn vulkan_with(options: VulkanOptions) -> Option<VulkanBackend> {
    vulkan_backend_with(options).map_err(|e| println!("SKIPPED: {e}")).ok()
}

/// [`vulkan_with`] the default options.
#[allow(dead_code)]
pub fn vulkan() -> Option<VulkanBackend> {
    vulkan_with(VulkanOptions::default())
}
