//! The backend conformance suite on the CPU backend, with rayon's global pool and with one
//! thread. The CPU backend must give the core reference's exact bits.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_tests::conformance::splat::{self as conformance, Tolerance};

fn backends() -> [CpuBackend; 2] {
    [CpuBackend::new(), CpuBackend::with_threads(1).expect("one-thread pool")]
}

#[test]
fn splat_forward_matches_reference() {
    for backend in backends() {
        conformance::splat_forward_matches_reference(&backend, Tolerance::EXACT);
    }
}

#[test]
fn splat_backward_matches_reference() {
    for backend in backends() {
        conformance::splat_backward_matches_reference(&backend, Tolerance::EXACT);
    }
}

#[test]
fn splat_gradients_match_finite_differences() {
    for backend in backends() {
        conformance::splat_gradients_match_finite_differences(&backend, Tolerance::EXACT);
    }
}

#[test]
fn splat_rejects_bad_shapes() {
    for backend in backends() {
        conformance::splat_rejects_bad_shapes(&backend);
    }
}
