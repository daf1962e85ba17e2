//! The generic conformance suites of `gpstoken-tests` on the Vulkan backend, with tensors in
//! host-visible memory (what lavapipe and unified-memory devices use) and through staging
//! copies (what discrete GPUs without resizable BAR use).

mod common;

use common::{vulkan, vulkan_with, VULKAN};
use gpstoken_backend_vulkan::VulkanOptions;
use gpstoken_tests::conformance::tensor;

const STAGING: VulkanOptions = VulkanOptions { force_staging: true };

#[test]
fn tensor_conformance() {
    let Some(backend) = vulkan() else { return };
    tensor::run_all(&backend, VULKAN);
}

#[test]
fn tensor_conformance_through_staging() {
    let Some(backend) = vulkan_with(STAGING) else { return };
    assert!(!backend.host_visible_tensors());
    tensor::run_all(&backend, VULKAN);
}
