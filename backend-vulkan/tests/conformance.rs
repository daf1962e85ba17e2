//! The whole conformance suite of `gpstoken-tests` (every check of every family, the
//! cross-backend check against the CPU, the golden parity tests) on the Vulkan backend, with
//! tensors in host-visible memory (lavapipe, unified memory, resizable BAR) and through staging
//! copies (discrete GPUs without resizable BAR). Without a device every test prints one
//! `SKIPPED:` line, unless `GPSTOKEN_REQUIRE_VULKAN=1`.

mod common;

use common::{vulkan_backend, vulkan_backend_with, STAGING, VULKAN_TOLERANCES};

gpstoken_tests::conformance_suite!(vulkan, fallible vulkan_backend(), VULKAN_TOLERANCES);
gpstoken_tests::conformance_suite!(vulkan_staging, fallible vulkan_backend_with(STAGING), VULKAN_TOLERANCES);
