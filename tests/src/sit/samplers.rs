//! The samplers against the stored trajectories of the texture model (`sampler/`).

use std::path::Path;

use gpstoken_core::model::sit::{sample_ode, sample_sde, LastStep, OdeMethod, SdeConfig, SdeMethod, StoredNoise};
use gpstoken_core::Backend;
use serde_json::Value;

use super::{f64s, golden_file, golden_json, golden_model, guidance_from_json, labels, Report, Tensor};
use super::{EULER_TOL, FWD_TOL};

/// Entry `k` of a stacked golden tensor `[K, ...]`.
fn entry(t: &Tensor, k: usize) -> Tensor {
    let per = t.data.len() / t.shape[0];
    Tensor { dtype: t.dtype.clone(), shape: t.shape[1..].to_vec(), data: t.data[k * per..(k + 1) * per].to_vec() }
}

fn int(v: &Value, key: &str) -> usize {
    v[key].as_u64().unwrap_or_else(|| panic!("sit.json: {key} is not an integer")) as usize
}

/// `sample_sde` (Euler-Maruyama, SBDM, the last step of `sit.json`) with `forward_with_cfg` on
/// the doubled batch and the stored draws: every state of the trajectory and the final sample.
pub fn check_sde<B: Backend>(be: &B, dir: &Path) -> Report {
    let json = golden_json(dir);
    let s = &json["sampler"]["sde_euler_sbdm_cfg"];
    let last_step = match s["last_step"].as_str() {
        Some("Mean") => LastStep::Mean,
        Some("Euler") => LastStep::Euler,
        None => LastStep::Identity,
        Some(other) => panic!("sit.json: last_step {other} is not supported"),
    };
    let cfg = SdeConfig {
        method: SdeMethod::Euler,
        steps: int(s, "num_steps"),
        diffusion_norm: 1.0,
        last_step,
        last_step_size: s["last_step_size"].as_f64().expect("last_step_size"),
    };
    let guidance = guidance_from_json(s);
    let model = golden_model(be, dir, "texture");
    let g = golden_file(dir, "sampler/sde_euler_sbdm_cfg.safetensors");
    let y = labels(&g["y"]);
    let cond = g.get("cond").map(|c| c.f32());
    let mut rep = Report::default();
    if g["noise"].shape[0] != int(s, "noise_draws") || g["trajectory"].shape[0] != cfg.steps {
        rep.failures.push("sde: the stored noise/trajectory do not match num_steps".into());
    }
    let mut acts = model.activations(be, y.len()).expect("activations");
    let mut x = g["z"].f32();
    let noise_draws = g["noise"].f32();
    let mut noise = StoredNoise::new(&noise_draws);
    let mut states = Vec::new();
    let mut half = Vec::new();
    let velocity = |x: &[f32], t: f32, v: &mut [f32]| {
        let tv = vec![t; y.len()];
        model.velocity_with_cfg(be, &mut acts, x, &tv, &y, cond.as_deref(), &guidance, v, &mut half)
    };
    sample_sde(&cfg, &mut x, &mut noise, velocity, |_, x| states.push(f64s(x))).expect("sample_sde");
    for (k, state) in states.iter().enumerate() {
        rep.check(&format!("sde/trajectory[{k}]"), state, &entry(&g["trajectory"], k), FWD_TOL);
    }
    rep.check("sde/final", &f64s(&x), &g["final"], FWD_TOL);
    rep
}

/// Runs `sample_ode` with `method` and `SiT.forward` on the stored start; the outputs at every
/// output time.
fn run_ode<B: Backend>(be: &B, dir: &Path, file: &str, method: OdeMethod, steps: usize) -> (Vec<Vec<f64>>, Vec<f32>) {
    let model = golden_model(be, dir, "texture");
    let g = golden_file(dir, file);
    let y = labels(&g["y"]);
    let cond = g.get("cond").map(|c| c.f32());
    let mut acts = model.activations(be, y.len()).expect("activations");
    let mut x = g["z"].f32();
    let mut outputs = Vec::new();
    let velocity =
        |x: &[f32], t: f32, v: &mut [f32]| model.velocity(be, &mut acts, x, &vec![t; y.len()], &y, cond.as_deref(), v);
    sample_ode(method, steps, &mut x, velocity, |_, x| outputs.push(f64s(x))).expect("sample_ode");
    (outputs, x)
}

/// torchdiffeq's fixed-grid `euler` on `linspace(0, 1, num_steps)`: every output.
pub fn check_ode_euler<B: Backend>(be: &B, dir: &Path) -> Report {
    let json = golden_json(dir);
    let steps = int(&json["sampler"]["ode_euler"], "num_steps");
    let file = "sampler/ode_euler.safetensors";
    let (outputs, _) = run_ode(be, dir, file, OdeMethod::Euler, steps);
    let g = golden_file(dir, file);
    let mut rep = Report::default();
    for (k, out) in outputs.iter().enumerate() {
        rep.check(&format!("ode_euler/outputs[{k}]"), out, &entry(&g["outputs"], k), EULER_TOL);
    }
    if outputs.len() != g["outputs"].shape[0] {
        rep.failures.push(format!("ode_euler: {} outputs, golden has {}", outputs.len(), g["outputs"].shape[0]));
    }
    rep
}

/// torchdiffeq's `dopri5` with the `atol`, `rtol` of `sit.json`: every output and the final
/// sample within `rtol` (relative to the tensor's largest magnitude).
pub fn check_ode_dopri5<B: Backend>(be: &B, dir: &Path) -> Report {
    let json = golden_json(dir);
    let s = &json["sampler"]["ode_dopri5"];
    let (rtol, atol) = (s["rtol"].as_f64().expect("rtol"), s["atol"].as_f64().expect("atol"));
    let file = "sampler/ode_dopri5.safetensors";
    let (outputs, x) = run_ode(be, dir, file, OdeMethod::Dopri5 { rtol, atol }, int(s, "num_steps"));
    let g = golden_file(dir, file);
    let mut rep = Report::default();
    for (k, out) in outputs.iter().enumerate() {
        rep.check(&format!("ode_dopri5/outputs[{k}]"), out, &entry(&g["outputs"], k), rtol);
    }
    rep.check("ode_dopri5/final", &f64s(&x), &g["final"], rtol);
    rep
}
