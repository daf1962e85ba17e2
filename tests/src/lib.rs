//! Shared helpers for the workspace-level tests and benches:
//! locating `../shared` (the golden vectors and photos), reading safetensors files,
//! the brute-force reference splat, the backend conformance suite with its cross-backend check,
//! and the golden parity tests (the last two generic over the backend).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `shared/` folder: `$GPSTOKEN_SHARED`, else `../shared` next to the workspace.
///
/// Returns `None` (after printing one line saying what is skipped) when it is absent, so a test
/// can `return` early. With `GPSTOKEN_REQUIRE_SHARED=1` (set by `.ci/run`) an absent folder
/// fails the test instead: CI never passes by skipping.
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("GPSTOKEN_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    if dir.join("golden").is_dir() {
        return Some(dir);
    }
    let msg = format!("SKIPPED {test}: shared folder not found at {} (set GPSTOKEN_SHARED)", dir.display());
    if std::env::var("GPSTOKEN_REQUIRE_SHARED").is_ok_and(|v| v == "1") {
        panic!("{msg}, and GPSTOKEN_REQUIRE_SHARED=1 forbids skipping");
    }
    eprintln!("{msg}");
    None
}

/// One tensor of a safetensors file, converted to f64 (exact for f32, f64 and the integer types
/// the golden files use), with its original dtype name.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    /// The values as f32 (exact when the file stored f32).
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
}

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> HashMap<String, Tensor> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("bad safetensors {}: {e}", path.display()));
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f64> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::I32 => raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            other => panic!("{}: tensor {name} has unsupported dtype {other:?}", path.display()),
        };
        out.insert(name.clone(), Tensor { dtype: format!("{:?}", view.dtype()), shape: view.shape().to_vec(), data });
    }
    out
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON {}: {e}", path.display()))
}

/// `max_i |a_i - b_i| / max_i |b_i|` (the golden README's error measure; 0/0 counts as 0).
pub fn max_rel_error(actual: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(actual.len(), reference.len(), "length mismatch");
    let scale = nan_max(reference.iter().map(|v| v.abs()));
    let err = max_abs_diff(actual, reference);
    if scale == 0.0 {
        err
    } else {
        err / scale
    }
}

/// The largest of `values` (0 when empty), NaN as soon as one of them is NaN. A fold with
/// `f64::max` skips a NaN, and an output full of NaN would pass every tolerance check.
pub fn nan_max(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().fold(0.0, |m, v| if m.is_nan() || v.is_nan() { f64::NAN } else { m.max(v) })
}

/// `max |a - b|` over the pairs (f32 or f64), NaN when a pair holds a NaN (see [`nan_max`]).
pub fn max_abs_diff<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    nan_max(a.iter().zip(b).map(|(&x, &y)| (x.into() - y.into()).abs()))
}

/// A small deterministic random source for tests: the core's SplitMix64, same numbers
/// everywhere.
pub struct TestRng(gpstoken_core::rng::SplitMix64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(gpstoken_core::rng::SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.0.unit_f64()
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform(f64::MIN_POSITIVE, 1.0);
        let u2 = self.uniform(0.0, 1.0);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

pub mod alloc_count;
pub mod brute_force;
pub mod conformance;
pub mod golden;
pub mod sit;

#[cfg(test)]
mod error_measures {
    use super::{max_abs_diff, max_rel_error, nan_max};

    #[test]
    fn a_nan_output_fails_every_tolerance() {
        // f64::max(0.0, NaN) is 0.0: a fold with it measured these as exact.
        let err = max_rel_error(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]);
        let within_tolerance = err <= 1e-3;
        assert!(!within_tolerance, "a NaN output measured as {err}");
        assert!(max_abs_diff(&[f32::NAN], &[0.0f32]).is_nan());
        assert!(nan_max([1.0, f64::NAN, 2.0]).is_nan() && nan_max([f64::NAN, 2.0]).is_nan());
    }

    #[test]
    fn finite_values_measure_as_before() {
        assert_eq!(nan_max([]), 0.0);
        assert_eq!(max_abs_diff(&[1.0f32, -2.0], &[1.5, 1.0]), 3.0);
        assert_eq!(max_rel_error(&[1.0, 2.0], &[1.0, 4.0]), 0.5);
    }
}
