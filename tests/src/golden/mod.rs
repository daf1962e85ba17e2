//! Parity with the official implementation's golden vectors (`shared/golden/`), written once,
//! generic over the backend, and instantiated for every backend by
//! [`crate::conformance_suite!`]. Each needs the shared folder: without it a test prints one
//! `SKIPPED` line, and fails under `GPSTOKEN_REQUIRE_SHARED=1` (see [`crate::shared_dir`]).

mod model;
mod roi;
mod splat;

pub use model::{config_of, golden_model_forward_and_backward};
pub use roi::roi_align_matches_golden_roi_conds;
pub use splat::splat_matches_golden_vectors;
