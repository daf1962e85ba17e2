//! What every Vulkan test file shares: getting a device (or skipping), the tolerance.

use gpstoken_backend_vulkan::{VulkanBackend, VulkanOptions};
use gpstoken_tests::conformance::tensor::DenseTolerance;

/// The Vulkan backend's tolerance against the f64 references (`max_rel_error`): f32 kernels
/// with f32 accumulation (fixed order), the GLSL `exp`/division, and the `erfc` fit of GELU.
/// The largest errors measured on lavapipe are printed by `versus_cpu.rs` and listed in the
/// crate README; these bounds leave about 10x room for other devices' `exp` and `sqrt`.
#[allow(dead_code)]
pub const VULKAN: DenseTolerance = DenseTolerance { forward: 5e-5, gradient: 1e-4 };

/// The backend on device `GPSTOKEN_VULKAN_DEVICE` (default 0) with `options`, or `None` after
/// printing one `SKIPPED:` line, unless `GPSTOKEN_REQUIRE_VULKAN=1` (CI), which fails instead.
pub fn vulkan_with(options: VulkanOptions) -> Option<VulkanBackend> {
    let index = std::env::var("GPSTOKEN_VULKAN_DEVICE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    match VulkanBackend::with_options(index, options) {
        Ok(backend) => Some(backend),
        Err(e) => {
            if std::env::var("GPSTOKEN_REQUIRE_VULKAN").is_ok_and(|v| v == "1") {
                panic!("GPSTOKEN_REQUIRE_VULKAN=1 but the Vulkan backend is unavailable: {e}");
            }
            println!("SKIPPED: {e}");
            None
        }
    }
}

/// [`vulkan_with`] the default options.
pub fn vulkan() -> Option<VulkanBackend> {
    vulkan_with(VulkanOptions::default())
}
