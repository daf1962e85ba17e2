//! The generic conformance suites of `gpstoken-tests` on the Vulkan backend, with tensors in
//! host-visible memory (what lavapipe and unified-memory devices use) and through staging
//! copies (what discrete GPUs without resizable BAR use).

mod common;

use common::{vulkan, vulkan_with, VULKAN};
use gpstoken_backend_vulkan::{VulkanBackend, VulkanOptions};
use gpstoken_tests::conformance::{attention, roi};
use gpstoken_tests::conformance::{conv, linear, loss, optim, tensor};

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
