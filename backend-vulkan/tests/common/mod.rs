//! What every Vulkan test file shares: getting a device (or skipping), the tolerances.

use gpstoken_backend_vulkan::{VulkanBackend, VulkanError, VulkanOptions};
use gpstoken_tests::conformance::{attention, norm, roi, splat, DenseTolerance, Tolerances};

/// The Vulkan backend's accuracy, stated once: the conformance suite's (`conformance.rs`) and
/// `versus_cpu.rs`'s tolerances. f32 kernels with f32 accumulation in fixed orders, the GLSL
/// `exp`/`sqrt`/division, the `erfc` fit of GELU; losses are compensated sums (within an ulp of
/// the CPU's f64 mean). Tightened from `Tolerances::GPU` to about 10x the largest error measured
/// on lavapipe (Mesa 22.3.6, both memory paths; the measured maxima are noted per field), which
/// leaves room for other devices' `exp`, `sqrt` and division (Vulkan allows 2.5 ulp for `/`).
#[allow(dead_code)]
pub const VULKAN_TOLERANCES: Tolerances = Tolerances {
    // vs f64: forward 7.2e-7 (conv), gradients 2.3e-6 (conv on large inputs), 1.0e-6 (GELU
    // tanh backward); vs the CPU (`versus_cpu.rs`): 4.6e-6 (LayerNorm of 3 features, f32
    // statistics), 1.0e-6 (register-blocked conv dx).
    dense: DenseTolerance { forward: 2e-5, gradient: 5e-5 },
    // forward 1.6e-7, finite differences 2.3e-7.
    norm: norm::Tolerance { forward: 5e-6, finite_difference: 1e-5 },
    // forward 2.9e-7 (4.2e-7 on a 300-key row), finite differences 3.6e-7.
    attention: attention::Tolerance { forward: 3e-6, finite_difference: 2e-5 },
    // forward 8.1e-7 (golden roi_conds 3.9e-7), finite differences 6.1e-7.
    roi: roi::Tolerance { forward: 5e-6, finite_difference: 5e-6 },
    // vs the core reference (= the CPU): forward 2.9e-7, backward 2.7e-7 (9.0e-7 on the edge
    // cases); finite differences 2.1e-6 (hard Gaussians); golden: out 7.5e-7, gradients 1.0e-6
    // vs f64.
    splat: splat::Tolerance { forward: 2e-6, backward: 5e-6, finite_difference: 2e-5 },
    // Largest error over tolerance in the cross-backend check: 0.46 (activations, a few
    // roundings), 0.40 (Gaussian reparameterisation); sums at most 0.08 of theirs.
    cross: 1.0,
};

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
