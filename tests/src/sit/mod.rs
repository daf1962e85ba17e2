//! Parity of the generator (SiT, flow matching, guidance, samplers) with the official code's
//! golden vectors (`shared/golden/sit/`), written once for any backend: each check takes the
//! backend and the golden folder, reads every configuration value from `sit.json`, iterates over
//! the stored tensor names, and returns a [`Report`]. `tests/tests/sit_golden.rs` runs them on
//! the CPU backend; the GPU backends call the same functions.

mod model;
mod samplers;

use std::collections::HashMap;
use std::path::Path;

use gpstoken_core::backend::Buffers;
use gpstoken_core::model::load_safetensors;
use gpstoken_core::model::sit::{Guidance, Sit, SitConfig};
use gpstoken_core::Backend;
use serde_json::Value;

pub use crate::Tensor;
use crate::{max_rel_error, read_safetensors};

pub use model::{check_guidance, check_model};
pub use samplers::{check_ode_dopri5, check_ode_euler, check_sde};

/// Forward tensors (predictions, losses, sampler states): `max|a − ref| ≤ tol·max|ref|`.
pub const FWD_TOL: f64 = 1e-4;
/// Gradients, per tensor, relative to its largest magnitude.
pub const GRAD_TOL: f64 = 1e-3;
/// The fixed-grid Euler ODE repeats the official operations exactly.
pub const EULER_TOL: f64 = 1e-5;

/// Errors measured by one check and the failures among them.
#[derive(Debug, Default)]
pub struct Report {
    /// `(name, relative error, tolerance)` in the order checked.
    pub errors: Vec<(String, f64, f64)>,
    pub failures: Vec<String>,
}

impl Report {
    /// Records `max_rel_error(actual, reference)` against `tol` (NaN fails).
    pub fn check(&mut self, name: &str, actual: &[f64], reference: &Tensor, tol: f64) {
        if actual.len() != reference.data.len() {
            self.failures.push(format!("{name}: {} values, golden has {}", actual.len(), reference.data.len()));
            return;
        }
        let err = max_rel_error(actual, &reference.data);
        println!("{name:<48} max_rel_err {err:.3e} (tol {tol:.0e})");
        self.errors.push((name.to_string(), err, tol));
        if err.is_nan() || err > tol {
            self.failures.push(format!("{name}: relative error {err:.3e} > {tol:.1e}"));
        }
    }

    /// The largest error recorded for names starting with `prefix`.
    pub fn worst(&self, prefix: &str) -> f64 {
        crate::nan_max(self.errors.iter().filter(|(n, ..)| n.starts_with(prefix)).map(|(_, e, _)| *e))
    }

    /// Panics with every failure listed, if there is one.
    pub fn assert_ok(&self) {
        assert!(self.failures.is_empty(), "{} failure(s):\n{}", self.failures.len(), self.failures.join("\n"));
    }
}

/// The `sit.json` of a golden folder.
pub fn golden_json(dir: &Path) -> Value {
    crate::read_json(&dir.join("sit.json"))
}

/// A [`SitConfig`] from the `config` object of one model in `sit.json` (every value from the
/// file; only patch size 1 with `input_size = [tokens, 1]` exists in the port).
pub fn config_from_json(name: &str, c: &Value) -> SitConfig {
    let int =
        |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("sit.json {name}.config.{k} is not an integer")) as usize;
    assert_eq!(int("patch_size"), 1, "{name}: only patch size 1 is supported");
    assert_eq!(c["input_size"], serde_json::json!([int("tokens"), 1]), "{name}: input_size must be [tokens, 1]");
    SitConfig {
        name: format!("golden-{name}"),
        tokens: int("tokens"),
        in_channels: int("in_channels"),
        hidden: int("hidden"),
        depth: int("depth"),
        heads: int("heads"),
        mlp_ratio: c["mlp_ratio"].as_f64().expect("mlp_ratio"),
        classes: int("classes"),
        class_dropout_prob: c["class_dropout_prob"].as_f64().expect("class_dropout_prob") as f32,
        learn_sigma: c["learn_sigma"].as_bool().expect("learn_sigma"),
        cond_channels: c["cond_channels"].as_u64().map(|v| v as usize),
    }
}

/// The guidance settings of a sampler entry of `sit.json`.
pub fn guidance_from_json(s: &Value) -> Guidance {
    Guidance {
        scale: s["cfg_scale"].as_f64().expect("cfg_scale") as f32,
        low: s["guidance_low"].as_f64().expect("guidance_low"),
        high: s["guidance_high"].as_f64().expect("guidance_high"),
    }
}

/// The golden model `which` (`texture`, `layout`) with its stored weights.
pub fn golden_model<B: Backend>(be: &B, dir: &Path, which: &str) -> Sit<B> {
    let json = golden_json(dir);
    let cfg = config_from_json(which, &json[which]["config"]);
    let mut model = Sit::new(be, cfg).unwrap_or_else(|e| panic!("{which}: {e}"));
    let bytes = std::fs::read(dir.join(which).join("weights.safetensors")).expect("weights.safetensors");
    load_safetensors(be, &mut model.params, &bytes).unwrap_or_else(|e| panic!("{which}: {e}"));
    model
}

/// A buffer's values as f64.
pub fn host<B: Buffers>(be: &B, buf: &B::Buffer) -> Vec<f64> {
    let mut v = vec![0.0f32; be.len(buf)];
    be.download(buf, &mut v).expect("download");
    v.into_iter().map(f64::from).collect()
}

/// Integer labels of a golden tensor.
pub fn labels(t: &Tensor) -> Vec<u32> {
    t.data.iter().map(|&v| u32::try_from(v as i64).expect("label")).collect()
}

/// Reads one golden safetensors file of the `sit` folder.
pub fn golden_file(dir: &Path, rel: &str) -> HashMap<String, Tensor> {
    read_safetensors(&dir.join(rel))
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}
