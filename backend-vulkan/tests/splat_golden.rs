//! Splatting on Vulkan against the golden vectors of the official implementation
//! (`shared/golden/splat`, see its README): forward and gradients vs the f64 references, and vs
//! the CPU backend (printed and asserted). Each case runs as a batch of two copies of itself,
//! which must give the same bits per image (the batch is one dispatch chain).
//!
//! Without the shared folder the test prints `SKIPPED`, unless `GPSTOKEN_REQUIRE_SHARED=1`,
//! which makes it fail.

mod common;

use common::vulkan;
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_backend_vulkan::VulkanBackend;
use gpstoken_core::backend::SplatOps;
use gpstoken_core::render::SplatDesc;
use gpstoken_tests::{max_rel_error, read_json, read_safetensors, shared_dir, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Golden README: an f32 port is within about 1e-6 (forward) and 3e-6 (gradients) of the f64
/// references; the CPU backend's golden test holds it to the same bounds.
const FORWARD_TOL: f64 = 2e-6;
const GRADIENT_TOL: f64 = 5e-6;
/// Against the CPU backend (same inputs): the forward differs by `exp` only; the gradients by
/// f32 instead of f64 sums.
const CPU_FORWARD_TOL: f64 = 2e-6;
const CPU_GRADIENT_TOL: f64 = 5e-6;

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

/// Columns `cols` of every `[5+C]` token gradient, as f64.
fn columns(grad: &[f32], stride: usize, cols: std::ops::Range<usize>) -> Vec<f64> {
    grad.chunks_exact(stride).flat_map(|t| t[cols.clone()].iter().map(|&v| f64::from(v))).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Forward `[B, C, H, W]` and backward `[B, N, 5+C]` of `backend`, downloaded.
fn run<B: SplatOps>(backend: &B, desc: &SplatDesc, tokens: &[f32], grad_out: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let tokens = backend.upload(tokens).expect("upload tokens");
    let mut out = backend.zeros(desc.image_len()).expect("zeros");
    backend.splat_forward(desc, &tokens, &mut out).expect("splat_forward");
    let grad_out = backend.upload(grad_out).expect("upload grad_out");
    let mut grad = backend.zeros(desc.tokens_len()).expect("zeros");
    backend.splat_backward(desc, &tokens, &grad_out, &mut grad).expect("splat_backward");
    let (mut out_host, mut grad_host) = (vec![0.0; desc.image_len()], vec![0.0; desc.tokens_len()]);
    backend.download(&out, &mut out_host).expect("download");
    backend.download(&grad, &mut grad_host).expect("download");
    (out_host, grad_host)
}

/// Errors of one case, keyed by the comparison's name.
fn run_case(path: &Path, vk: &VulkanBackend, cpu: &CpuBackend) -> Vec<(String, f64)> {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let json = read_json(&path.with_extension("json"));
    let t: HashMap<String, Tensor> = read_safetensors(path);
    let get = |key: &str| json[key].as_u64().unwrap_or_else(|| panic!("JSON key {key}")) as usize;
    let (s, c, h, w) = (get("s"), get("c"), get("h"), get("w"));
    let kappa = json["dmax"].as_f64().expect("dmax") as f32;
    let one = SplatDesc { batch: 1, gaussians: s, channels: c, height: h, width: w, kappa };
    let desc = SplatDesc { batch: 2, ..one };
    let stride = one.token_stride();

    let (sigmas, coords, colors) = (t["sigmas"].f32(), t["coords"].f32(), t["colors"].f32());
    let mut tokens = Vec::with_capacity(s * stride);
    for g in 0..s {
        tokens.extend_from_slice(&sigmas[g * 3..g * 3 + 3]);
        tokens.extend_from_slice(&coords[g * 2..g * 2 + 2]);
        tokens.extend_from_slice(&colors[g * c..(g + 1) * c]);
    }
    let grad_out = hwc_to_chw(&t["grad_out"].f32(), h, w, c);
    let twice = |v: &[f32]| [v, v].concat();

    let (out, grad) = run(vk, &desc, &twice(&tokens), &twice(&grad_out));
    let (img, tok) = (one.image_len(), one.tokens_len());
    assert_eq!(bits(&out[..img]), bits(&out[img..]), "{name}: the two images of the batch differ");
    assert_eq!(bits(&grad[..tok]), bits(&grad[tok..]), "{name}: the two gradients of the batch differ");
    let (out, grad) = (&out[..img], &grad[..tok]);
    let (cpu_out, cpu_grad) = run(cpu, &one, &tokens, &grad_out);

    let hwc = chw_to_hwc(out, h, w, c);
    let mut errors = vec![
        ("out vs f64".to_string(), max_rel_error(&hwc, &t["out_f64"].data)),
        ("out vs CPU".to_string(), max_rel_error(&hwc, &chw_to_hwc(&cpu_out, h, w, c))),
    ];
    for (key, cols) in [("grad_sigmas", 0..3), ("grad_coords", 3..5), ("grad_colors", 5..stride)] {
        let ours = columns(grad, stride, cols.clone());
        errors.push((format!("{key} vs f64"), max_rel_error(&ours, &t[&format!("{key}_f64")].data)));
        errors.push((format!("{key} vs CPU"), max_rel_error(&ours, &columns(&cpu_grad, stride, cols))));
    }
    for (what, err) in &errors {
        println!("{name:<32} {what:<24} {err:.3e}");
    }
    errors
}

#[test]
fn vulkan_splat_matches_golden_vectors() {
    let Some(shared) = shared_dir("vulkan splat_golden") else { return };
    let Some(vk) = vulkan() else { return };
    let dir = shared.join("golden/splat");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no splat golden case in {}", dir.display());

    let cpu = CpuBackend::new();
    let mut worst: Vec<(String, f64)> = Vec::new();
    for path in &cases {
        for (what, err) in run_case(path, &vk, &cpu) {
            match worst.iter_mut().find(|(w, _)| *w == what) {
                Some(entry) => entry.1 = entry.1.max(err),
                None => worst.push((what, err)),
            }
        }
    }
    println!("max over {} cases:", cases.len());
    for (what, err) in &worst {
        println!("  {what:<24} {err:.3e}");
    }
    for (what, err) in &worst {
        let tol = match what.as_str() {
            "out vs f64" => FORWARD_TOL,
            "out vs CPU" => CPU_FORWARD_TOL,
            w if w.ends_with("vs f64") => GRADIENT_TOL,
            _ => CPU_GRADIENT_TOL,
        };
        assert!(*err <= tol, "{what}: max_rel_error {err:.3e} > {tol:.1e}");
    }
}
