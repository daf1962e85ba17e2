//! The generic conformance suites of `gpstoken-tests` on the Vulkan backend, with tensors in
//! host-visible memory (what lavapipe and unified-memory devices use) and through staging
//! copies (what discrete GPUs without resizable BAR use).

mod common;

use common::{vulkan, vulkan_with, VULKAN};
use gpstoken_backend_vulkan::{VulkanBackend, VulkanOptions};
use gpstoken_tests::conformance::{attention, conv, gaussian, linear, loss, norm, optim, roi, splat, tensor};

const STAGING: VulkanOptions = VulkanOptions { force_staging: true };

/// Runs `suite` on the backend with host-visible tensors and on one using staging copies.
fn on_both_memories(suite: impl Fn(&VulkanBackend)) {
    let Some(backend) = vulkan() else { return };
    suite(&backend);
    let Some(staged) = vulkan_with(STAGING) else { return };
    assert!(!staged.host_visible_tensors(), "force_staging keeps tensors out of host-visible memory");
    suite(&staged);
}

#[test]
fn tensor_conformance() {
    on_both_memories(|b| tensor::run_all(b, VULKAN));
}

#[test]
fn linear_conformance() {
    on_both_memories(|b| linear::run_all(b, VULKAN));
}

#[test]
fn loss_conformance() {
    on_both_memories(|b| loss::run_all(b, VULKAN));
}

#[test]
fn optim_conformance() {
    on_both_memories(|b| optim::run_all(b, VULKAN));
}

#[test]
fn conv_conformance() {
    on_both_memories(|b| conv::run_all(b, VULKAN));
}

#[test]
fn gaussian_conformance() {
    on_both_memories(|b| gaussian::run_all(b, VULKAN));
}

/// Norm statistics are f32 sums (fixed order) where the CPU sums in f64: the GPU tolerance.
#[test]
fn norm_conformance() {
    on_both_memories(|b| norm::run_all(b, norm::Tolerance::GPU));
}

/// f32 kernels: the forward sums in the CPU's order (only `exp` differs); the backward sums
/// f32 terms (per-invocation runs, then a fixed tree) where the CPU sums f64 terms.
const SPLAT: splat::Tolerance = splat::Tolerance { forward: 1e-5, backward: 2e-5, finite_difference: 1e-4 };

#[test]
fn splat_conformance() {
    on_both_memories(|b| {
        splat::splat_forward_matches_reference(b, SPLAT);
        splat::splat_backward_matches_reference(b, SPLAT);
        splat::splat_gradients_match_finite_differences(b, SPLAT);
        splat::splat_rejects_bad_shapes(b);
    });
}

/// Attention's f32 GEMMs and softmax against the f64 reference (the suite's GPU starting point).
const ATTENTION: attention::Tolerance = attention::Tolerance::GPU;

#[test]
fn attention_conformance() {
    on_both_memories(|b| attention::run_all(b, ATTENTION));
}

/// RoIAlign's f32 bilinear sums against the f64 reference (the suite's GPU starting point).
const ROI: roi::Tolerance = roi::Tolerance::GPU;

#[test]
fn roi_conformance() {
    on_both_memories(|b| roi::run_all(b, ROI));
}
