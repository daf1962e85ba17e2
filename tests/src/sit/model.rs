//! The models' forward, loss and every gradient; guidance inside and outside its interval.

use std::path::Path;

use gpstoken_core::model::sit::linear_path;
use gpstoken_core::Backend;

use super::{f64s, golden_file, golden_json, golden_model, guidance_from_json, host, labels, Report};
use super::{FWD_TOL, GRAD_TOL};

/// `which` (`texture` or `layout`): parameter count, the Linear path, `pred`, `loss`, the input
/// gradients and every stored parameter gradient; parameters without a stored gradient must be
/// exactly the ones the model marks unused.
pub fn check_model<B: Backend>(be: &B, dir: &Path, which: &str) -> Report {
    let json = golden_json(dir);
    let mut model = golden_model(be, dir, which);
    let mut rep = Report::default();
    let count = model.params.count() as u64;
    if Some(count) != json[which]["params"].as_u64() {
        rep.failures.push(format!("{which}: {count} parameters, sit.json says {}", json[which]["params"]));
    }
    if Some(count as usize) != model.config().parameter_count().ok() {
        rep.failures.push(format!("{which}: the backend-free count differs from the store"));
    }
    let io = golden_file(dir, &format!("{which}/io.safetensors"));
    let grads = golden_file(dir, &format!("{which}/grads.safetensors"));
    let (x1, x0, t) = (io["x1"].f32(), io["x0"].f32(), io["t"].f32());
    let (mut xt, mut ut) = (vec![0.0; x1.len()], vec![0.0; x1.len()]);
    linear_path(&t, &x0, &x1, &mut xt, &mut ut).expect("linear path");
    rep.check(&format!("{which}/xt"), &f64s(&xt), &io["xt"], 0.0);
    rep.check(&format!("{which}/ut"), &f64s(&ut), &io["ut"], 0.0);

    let y = labels(&io["y"]);
    let cond = io.get("cond").map(|c| c.f32());
    let mut acts = model.activations(be, t.len()).expect("activations");
    model.forward(be, &mut acts, &io["xt"].f32(), &t, &y, cond.as_deref()).expect("forward");
    rep.check(&format!("{which}/pred"), &host(be, acts.pred()), &io["pred"], FWD_TOL);
    let loss = model.velocity_loss_backward(be, &mut acts, &io["ut"].f32()).expect("loss");
    rep.check(&format!("{which}/loss"), &[loss], &io["loss"], FWD_TOL);
    rep.check(&format!("{which}/grad_xt"), &host(be, acts.d_x()), &io["grad_xt"], GRAD_TOL);
    if let Some(g) = io.get("grad_cond") {
        match acts.d_cond() {
            Some(d) => rep.check(&format!("{which}/grad_cond"), &host(be, d), g, GRAD_TOL),
            None => rep.failures.push(format!("{which}: golden grad_cond but the model has no condition")),
        }
    }
    let mut names: Vec<&String> = grads.keys().collect();
    names.sort();
    for name in names {
        match model.params.find(name).and_then(|id| model.params.grad(id)) {
            Some(g) => rep.check(&format!("{which}/grad/{name}"), &host(be, g), &grads[name], GRAD_TOL),
            None => rep.failures.push(format!("{which}: golden gradient for {name}, none in the model")),
        }
    }
    model.params.for_each(|_, spec, _, grad| {
        if !grads.contains_key(&spec.name) && (grad.is_some() || spec.used) {
            rep.failures.push(format!("{which}: {} has a gradient but the golden files have none", spec.name));
        }
    });
    rep
}

/// `forward_with_cfg` on `[xt; xt]`, `[y; null]`, `[cond; cond]` at `cfg_in_t` (inside the
/// guidance interval) and `cfg_out_t` (outside it), with the guidance of the SDE sampler entry.
pub fn check_guidance<B: Backend>(be: &B, dir: &Path, which: &str) -> Report {
    let json = golden_json(dir);
    let guidance = guidance_from_json(&json["sampler"]["sde_euler_sbdm_cfg"]);
    let model = golden_model(be, dir, which);
    let io = golden_file(dir, &format!("{which}/io.safetensors"));
    let null = model.config().null_label().expect("a guided model has the null label");
    let xt = io["xt"].f32();
    let doubled = |v: &[f32]| [v, v].concat();
    let y = labels(&io["y"]);
    let y2: Vec<u32> = y.iter().copied().chain(y.iter().map(|_| null)).collect();
    let cond = io.get("cond").map(|c| doubled(&c.f32()));
    let mut rep = Report::default();
    let mut acts = model.activations(be, 2 * y.len()).expect("activations");
    for case in ["cfg_in", "cfg_out"] {
        let t = io[&format!("{case}_t")].f32();
        let inside = guidance.active_at(t[0]);
        if inside != (case == "cfg_in") {
            rep.failures.push(format!(
                "{which}/{case}: t = {} is {} the interval",
                t[0],
                if inside { "inside" } else { "outside" }
            ));
        }
        let mut v = vec![0.0; 2 * xt.len()];
        let mut half = Vec::new();
        model
            .velocity_with_cfg(be, &mut acts, &doubled(&xt), &t, &y2, cond.as_deref(), &guidance, &mut v, &mut half)
            .expect("forward_with_cfg");
        rep.check(&format!("{which}/{case}_out"), &f64s(&v), &io[&format!("{case}_out")], FWD_TOL);
    }
    rep
}
