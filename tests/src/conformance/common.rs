//! Helpers every conformance family uses: moving test data in and out of a backend, f64
//! conversions, finite differences and the closeness assertions.

use crate::{max_rel_error, TestRng};
use gpstoken_core::backend::Buffers;

/// Central finite-difference step (inputs are O(1); the references are smooth or linear).
pub(crate) const FD_STEP: f64 = 1e-4;

pub(crate) fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// `n` standard normal values times `scale`.
pub(crate) fn normal_vec(rng: &mut TestRng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

pub(crate) fn upload<B: Buffers>(backend: &B, host: &[f32]) -> B::Buffer {
    backend.upload(host).expect("upload")
}

/// A buffer of `n` NaNs: an op writing it must overwrite every value.
pub(crate) fn garbage<B: Buffers>(backend: &B, n: usize) -> B::Buffer {
    backend.upload(&vec![f32::NAN; n]).expect("upload")
}

pub(crate) fn download<B: Buffers>(backend: &B, buffer: &B::Buffer) -> Vec<f32> {
    let mut host = vec![0.0; backend.len(buffer)];
    backend.download(buffer, &mut host).expect("download");
    host
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Central finite differences of `loss` at `x`, one coordinate at a time.
pub(crate) fn finite_difference(x: &[f64], mut loss: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + FD_STEP;
            let plus = loss(&xp);
            xp[i] = orig - FD_STEP;
            let minus = loss(&xp);
            xp[i] = orig;
            (plus - minus) / (2.0 * FD_STEP)
        })
        .collect()
}

/// Asserts `max_rel_error(actual, reference) <= tol` (and that the reference is not all zeros,
/// so the check cannot pass vacuously); prints and returns the error.
pub(crate) fn assert_close(what: &str, actual: &[f32], reference: &[f64], tol: f64) -> f64 {
    assert_eq!(actual.len(), reference.len(), "{what}: length");
    assert!(reference.iter().any(|&v| v != 0.0), "{what}: degenerate (all-zero) reference");
    assert!(actual.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    let err = max_rel_error(&to_f64(actual), reference);
    eprintln!("{what}: max_rel_error {err:.2e}");
    assert!(err <= tol, "{what}: max_rel_error {err:.3e} > {tol:.1e}");
    err
}

/// Asserts identical values (layout changes are exact copies on every backend).
pub(crate) fn assert_exact(what: &str, actual: &[f32], reference: &[f32]) {
    assert_eq!(actual.len(), reference.len(), "{what}: length");
    if let Some(i) = (0..actual.len()).find(|&i| actual[i].to_bits() != reference[i].to_bits()) {
        panic!("{what}: value {i} is {} but the reference is {}", actual[i], reference[i]);
    }
}
