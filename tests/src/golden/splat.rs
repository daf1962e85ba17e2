//! Splatting against the golden vectors of the official implementation (`shared/golden/splat`).
//!
//! For every case in the folder: the backend's forward and backward vs the f64 references
//! (asserted), vs gs.cu's f32 emulation (printed, loosely asserted), support counts, the
//! bit-identity of the core reference and the brute-force forward, and the backend against the
//! core reference within its [`crate::conformance::splat::Tolerance`] (the CPU: identical bits).

use crate::brute_force::{
    splat_backward_brute, splat_backward_brute_with, splat_forward_brute, splat_forward_brute_with,
};
use crate::conformance::splat::{backend_backward, backend_forward, SplatCase, Tolerance};
use crate::{max_rel_error, read_json, read_safetensors, shared_dir, Tensor};
use gpstoken_core::backend::SplatOps;
use gpstoken_core::render::{self, footprint, pixel_coord, SplatDesc, SplatKernel};
use std::collections::HashMap;
use std::path::Path;

/// Golden README: an f32 port is within about 1e-6 (forward) and 3e-6 (gradients) of f64.
const FORWARD_TOL: f64 = 2e-6;
const GRADIENT_TOL: f64 = 5e-6;

/// `[h, w, c]` to `[c, h, w]`.
fn hwc_to_chw(v: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for i in 0..h * w {
        for ch in 0..c {
            out[ch * h * w + i] = v[i * c + ch];
        }
    }
    out
}

/// `[c, h, w]` to `[h, w, c]`, widened to f64.
fn chw_to_hwc(v: &[f32], h: usize, w: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for ch in 0..c {
        for i in 0..h * w {
            out[i * c + ch] = f64::from(v[ch * h * w + i]);
        }
    }
    out
}

/// Columns `cols` of every `[5+C]` token gradient, as f64 (`[s, cols.len()]`).
fn columns(grad: &[f32], stride: usize, cols: std::ops::Range<usize>) -> Vec<f64> {
    grad.chunks_exact(stride).flat_map(|t| t[cols.clone()].iter().map(|&v| f64::from(v))).collect()
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn usize_of(json: &serde_json::Value, key: &str) -> usize {
    json[key].as_u64().unwrap_or_else(|| panic!("JSON key {key}")) as usize
}

/// Errors of one case, keyed by the comparison's name.
fn run_case<B: SplatOps>(path: &Path, backend: &B, tol: Tolerance) -> Vec<(String, f64)> {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let json = read_json(&path.with_extension("json"));
    let t: HashMap<String, Tensor> = read_safetensors(path);
    let (s, c, h, w) = (usize_of(&json, "s"), usize_of(&json, "c"), usize_of(&json, "h"), usize_of(&json, "w"));
    let kappa = json["dmax"].as_f64().expect("dmax") as f32;
    let desc = SplatDesc { batch: 1, gaussians: s, channels: c, height: h, width: w, kappa };
    let stride = desc.token_stride();

    let (sigmas, coords, colors) = (t["sigmas"].f32(), t["coords"].f32(), t["colors"].f32());
    let mut tokens = Vec::with_capacity(s * stride);
    for g in 0..s {
        tokens.extend_from_slice(&sigmas[g * 3..g * 3 + 3]);
        tokens.extend_from_slice(&coords[g * 2..g * 2 + 2]);
        tokens.extend_from_slice(&colors[g * c..(g + 1) * c]);
    }
    let grad_out = hwc_to_chw(&t["grad_out"].f32(), h, w, c);

    // The backend.
    let case = SplatCase { desc, tokens: tokens.clone(), grad_out: grad_out.clone() };
    let (out, grad) = (backend_forward(backend, &case), backend_backward(backend, &case));

    // The core reference and the brute force give the same forward bits; the backend matches
    // the core reference within its tolerance (0: the same bits).
    let mut core_out = vec![0.0; out.len()];
    render::splat_forward(&desc, &tokens, &mut core_out).unwrap();
    let mut brute_out = vec![0.0; out.len()];
    splat_forward_brute(&desc, &tokens, &mut brute_out).unwrap();
    assert_eq!(bits(&brute_out), bits(&core_out), "{name}: core splat_forward differs from the brute force");
    let mut core_grad = vec![0.0; grad.len()];
    render::splat_backward(&desc, &tokens, &grad_out, &mut core_grad).unwrap();
    for (what, ours, core, tol) in
        [("forward", &out, &core_out, tol.forward), ("backward", &grad, &core_grad, tol.backward)]
    {
        if tol == 0.0 {
            assert_eq!(bits(core), bits(ours), "{name}: the backend's {what} differs from the core reference");
        } else {
            let err = max_rel_error(&to64(ours), &to64(core));
            assert!(err <= tol, "{name}: the backend's {what} vs the core reference: {err:.3e} > {tol:.1e}");
        }
    }

    // Support counts: footprint, and an exhaustive box test, vs the file.
    let support = &t["support_count"].data;
    for (g, token) in tokens.chunks_exact(stride).enumerate() {
        let k = SplatKernel::new(token, kappa);
        let exhaustive = (0..h)
            .flat_map(|i| (0..w).map(move |j| (i, j)))
            .filter(|&(i, j)| k.inside(pixel_coord(j, w) - k.x, pixel_coord(i, h) - k.y))
            .count();
        let fp = footprint(&k, h, w).pixel_count();
        assert_eq!(fp, exhaustive, "{name}: gaussian {g} footprint vs exhaustive box test");
        assert_eq!(fp as f64, support[g], "{name}: gaussian {g} support_count");
    }

    // The brute-force port with a correctly rounded exp is gs.cu itself: the golden f32
    // tensors' exact bits (they were made that way, without FMA).
    let exact_exp = |x: f32| f64::from(x).exp() as f32;
    let mut gs_out = vec![0.0; out.len()];
    splat_forward_brute_with(&desc, &tokens, &mut gs_out, exact_exp).unwrap();
    assert_eq!(chw_to_hwc(&gs_out, h, w, c), t["out_f32"].data, "{name}: gs.cu port vs out_f32");
    let mut gs_grad = vec![0.0; grad.len()];
    splat_backward_brute_with(&desc, &tokens, &grad_out, &mut gs_grad, exact_exp).unwrap();
    let golden_f32: Vec<f64> = (0..s)
        .flat_map(|g| {
            let sig = &t["grad_sigmas_f32"].data[g * 3..g * 3 + 3];
            let crd = &t["grad_coords_f32"].data[g * 2..g * 2 + 2];
            let col = &t["grad_colors_f32"].data[g * c..(g + 1) * c];
            sig.iter().chain(crd).chain(col).copied().collect::<Vec<_>>()
        })
        .collect();
    let gs_grad: Vec<f64> = gs_grad.iter().map(|&v| f64::from(v)).collect();
    assert_eq!(gs_grad, golden_f32, "{name}: gs.cu port vs grad_*_f32");

    let ours_out = chw_to_hwc(&out, h, w, c);
    let ours_grads = [
        ("grad_sigmas", columns(&grad, stride, 0..3)),
        ("grad_coords", columns(&grad, stride, 3..5)),
        ("grad_colors", columns(&grad, stride, 5..stride)),
    ];
    let mut errors = vec![("out vs f64".to_string(), max_rel_error(&ours_out, &t["out_f64"].data))];
    for (key, ours) in &ours_grads {
        errors.push((format!("{key} vs f64"), max_rel_error(ours, &t[&format!("{key}_f64")].data)));
    }
    // Against gs.cu's f32 emulation: the forward, and the f32 brute-force backward.
    errors.push(("out vs f32 (gs.cu)".into(), max_rel_error(&ours_out, &t["out_f32"].data)));
    let mut brute_grad = vec![0.0; grad.len()];
    splat_backward_brute(&desc, &tokens, &grad_out, &mut brute_grad).unwrap();
    let brute_grads = [
        ("grad_sigmas", columns(&brute_grad, stride, 0..3)),
        ("grad_coords", columns(&brute_grad, stride, 3..5)),
        ("grad_colors", columns(&brute_grad, stride, 5..stride)),
    ];
    for ((key, ours), (_, brute)) in ours_grads.iter().zip(&brute_grads) {
        let f32_ref = &t[&format!("{key}_f32")].data;
        errors.push((format!("{key} vs f32 (gs.cu)"), max_rel_error(ours, f32_ref)));
        errors.push((format!("{key} brute-force f32 vs f32 (gs.cu)"), max_rel_error(brute, f32_ref)));
    }

    for (what, err) in &errors {
        println!("{name:<32} {what:<42} {err:.3e}");
    }
    errors
}

/// Every case of `shared/golden/splat` on `backend` (fails when the folder is missing and
/// `GPSTOKEN_REQUIRE_SHARED=1`).
pub fn splat_matches_golden_vectors<B: SplatOps>(backend: &B, tol: Tolerance) {
    let Some(shared) = shared_dir("splat_golden") else { return };
    let dir = shared.join("golden/splat");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no splat golden case in {}", dir.display());

    let mut worst: Vec<(String, f64)> = Vec::new();
    for path in &cases {
        for (what, err) in run_case(path, backend, tol) {
            match worst.iter_mut().find(|(w, _)| *w == what) {
                Some(entry) => entry.1 = entry.1.max(err),
                None => worst.push((what, err)),
            }
        }
    }
    println!("max over {} cases:", cases.len());
    for (what, err) in &worst {
        println!("  {what:<42} {err:.3e}");
    }
    for (what, err) in &worst {
        let tol = match what.as_str() {
            "out vs f64" => FORWARD_TOL,
            w if w.ends_with("vs f64") => GRADIENT_TOL,
            // gs.cu's own f32 arithmetic: our forward uses the same operation order (libm expf
            // vs a correctly rounded exp may differ by an ulp); the f32 accumulations differ more.
            "out vs f32 (gs.cu)" => 1e-6,
            _ => 1e-5,
        };
        assert!(*err <= tol, "{what}: max_rel_error {err:.3e} > {tol:.1e}");
    }
}
