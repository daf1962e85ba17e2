//! Parity of the whole tokenizer with the official PyTorch model on the tiny golden config
//! (`shared/golden/model/`): every stored intermediate of the forward pass, the MSE loss, and the
//! gradient of every parameter and of every stored input/intermediate.

use std::collections::HashMap;

use crate::{max_rel_error, read_json, read_safetensors, shared_dir, Tensor};
use gpstoken_core::backend::{Backend, Buffers};
use gpstoken_core::model::{load_safetensors, DecoderConfig, GpsConfig, GpsToken, ModelConfig};
use serde_json::Value;

/// Forward tensors: `max|a - ref| <= FWD_TOL * max|ref|` (the golden README measures 3e-6 for
/// the f32-vs-f64 spread of the decoder output).
const FWD_TOL: f64 = 1e-4;
/// Gradients: per tensor, relative to its largest magnitude.
const GRAD_TOL: f64 = 1e-3;
/// Gradients that are exactly zero in exact arithmetic (golden README): absolute tolerance.
const ZERO_GRAD_ABS_TOL: f64 = 1e-6;
const ZERO_IN_THEORY: [&str; 6] = [
    "decoder.mid.attn_1.k.bias",
    "decoder.up.0.block.0.conv1.bias",
    "decoder.up.0.block.0.conv2.bias",
    "decoder.up.0.block.0.nin_shortcut.bias",
    "decoder.up.0.block.1.conv1.bias",
    "decoder.up.0.block.1.conv2.bias",
];

fn host<B: Buffers>(be: &B, buf: &B::Buffer) -> Vec<f64> {
    let mut v = vec![0.0f32; be.len(buf)];
    be.download(buf, &mut v).unwrap();
    v.into_iter().map(f64::from).collect()
}

struct Report {
    failures: Vec<String>,
    worst_fwd: f64,
    worst_grad: f64,
}

impl Report {
    fn check(&mut self, name: &str, actual: &[f64], reference: &Tensor, tol: f64, grad: bool) {
        assert_eq!(actual.len(), reference.data.len(), "{name}: length");
        let err = max_rel_error(actual, &reference.data);
        println!("{name:<52} max_rel_err {err:.3e}");
        if grad {
            self.worst_grad = self.worst_grad.max(err);
        } else {
            self.worst_fwd = self.worst_fwd.max(err);
        }
        if err.is_nan() || err > tol {
            self.failures.push(format!("{name}: relative error {err:.3e} > {tol:.1e}"));
        }
    }

    fn check_abs(&mut self, name: &str, actual: &[f64], reference: &Tensor, tol: f64) {
        let err = crate::max_abs_diff(actual, &reference.data);
        println!("{name:<52} max_abs_err {err:.3e} (zero in exact arithmetic)");
        if err.is_nan() || err > tol {
            self.failures.push(format!("{name}: absolute error {err:.3e} > {tol:.1e}"));
        }
    }
}

/// The model config the golden files were made with: `gpsconfig`, `decoderconfig` and the
/// image size `image_hw` of `model.json`, as the official constructor takes them.
pub fn config_of(json: &Value) -> ModelConfig {
    let num = |v: &Value, key: &str| -> f64 {
        v[key].as_f64().unwrap_or_else(|| panic!("model.json: {key} is not a number"))
    };
    let int = |v: &Value, key: &str| num(v, key) as usize;
    let ints = |v: &Value, key: &str| -> Vec<usize> {
        let list = v[key].as_array().unwrap_or_else(|| panic!("model.json: {key} is not a list"));
        list.iter()
            .map(|x| x.as_u64().unwrap_or_else(|| panic!("model.json: {key} holds a non-integer")) as usize)
            .collect()
    };
    let (g, d) = (&json["gpsconfig"], &json["decoderconfig"]);
    let rs = ints(g, "gps_rs");
    let hw = ints(json, "image_hw");
    assert!(rs.len() == 2 && hw.len() == 2, "model.json: gps_rs and image_hw must be [h, w]");
    let cfg = ModelConfig {
        name: "golden (model.json)".into(),
        gps: GpsConfig {
            rois: int(g, "rois"),
            gpsenc_n: int(g, "gpsenc_n"),
            gpsenc_c: int(g, "gpsenc_c"),
            gps_c: int(g, "gps_c"),
            gps_num: int(g, "gps_num"),
            gps_dmax: num(g, "gps_dmax") as f32,
            gps_adaptive_w: num(g, "gps_adaptive_w"),
            gps_rs: (rs[0], rs[1]),
        },
        decoder: DecoderConfig {
            z_channels: int(d, "z_channels"),
            resolution: int(d, "resolution"),
            in_channels: int(d, "in_channels"),
            out_ch: int(d, "out_ch"),
            ch: int(d, "ch"),
            ch_mult: ints(d, "ch_mult"),
            num_res_blocks: int(d, "num_res_blocks"),
            attn_resolutions: ints(d, "attn_resolutions"),
            dropout: num(d, "dropout") as f32,
        },
        image_hw: (hw[0], hw[1]),
    };
    cfg.validate().unwrap_or_else(|e| panic!("model.json: {e}"));
    cfg
}

/// The official tiny model's forward and backward on `backend` (fails when the folder is
/// missing and `GPSTOKEN_REQUIRE_SHARED=1`).
pub fn golden_model_forward_and_backward<B: Backend>(be: &B) {
    let Some(shared) = shared_dir("model_golden") else { return };
    let dir = shared.join("golden/model");
    let io: HashMap<String, Tensor> = read_safetensors(&dir.join("io.safetensors"));
    let grads: HashMap<String, Tensor> = read_safetensors(&dir.join("grads.safetensors"));
    let mut model = GpsToken::new(be, config_of(&read_json(&dir.join("model.json")))).unwrap();
    let bytes = std::fs::read(dir.join("weights.safetensors")).unwrap();
    load_safetensors(be, &mut model.params, &bytes).unwrap();

    let batch = io["image"].shape[0];
    let mut acts = model.activations(be, batch, 1).unwrap();
    let t0 = std::time::Instant::now();
    model.forward(be, &mut acts, &io["image"].f32(), &io["init_gpscodes"].f32(), &io["regions"].f32()).unwrap();
    let t_fwd = t0.elapsed();

    let mut rep = Report { failures: Vec::new(), worst_fwd: 0.0, worst_grad: 0.0 };
    // The RoI boxes come from the official in-place f32 conversion: bit-exact.
    let roi = host(be, acts.roi_boxes());
    assert_eq!(roi, io["roi"].data, "RoI boxes differ from the official regions_px conversion");
    rep.check("x_preprocess", &host(be, acts.x_preprocess()), &io["x_preprocess"], FWD_TOL, false);
    rep.check("roi_conds", &host(be, acts.roi_conds()), &io["roi_conds"], FWD_TOL, false);
    rep.check("tokens", &host(be, acts.tokens()), &io["tokens"], FWD_TOL, false);
    rep.check("rendered", &host(be, acts.rendered()), &io["rendered"], FWD_TOL, false);
    rep.check("decoded", &host(be, acts.decoded()), &io["decoded"], FWD_TOL, false);

    let t1 = std::time::Instant::now();
    let loss = model.mse_backward(be, &mut acts).unwrap();
    let t_bwd = t1.elapsed();
    rep.check("loss", &[loss], &io["loss"], FWD_TOL, false);

    // Input and intermediate gradients.
    let mut with_target = be.zeros(be.len(acts.d_image())).unwrap();
    acts.d_image_with_target(be, &mut with_target).unwrap();
    rep.check("grad_image", &host(be, &with_target), &io["grad_image"], GRAD_TOL, true);
    rep.check(
        "grad_image_target_detached",
        &host(be, acts.d_image()),
        &io["grad_image_target_detached"],
        GRAD_TOL,
        true,
    );
    rep.check("grad_init_gpscodes", &host(be, acts.d_g_init()), &io["grad_init_gpscodes"], GRAD_TOL, true);
    rep.check("grad_tokens", &host(be, acts.d_tokens()), &io["grad_tokens"], GRAD_TOL, true);
    rep.check("grad_rendered", &host(be, acts.d_rendered()), &io["grad_rendered"], GRAD_TOL, true);

    // Every parameter gradient stored by the official run, by name (a missing one fails).
    let mut names: Vec<&String> = grads.keys().collect();
    names.sort();
    for name in names {
        let reference = &grads[name];
        let Some(id) = model.params.find(name) else {
            rep.failures.push(format!("{name}: stored gradient for a parameter the model lacks"));
            continue;
        };
        assert_eq!(model.params.spec(id).shape, reference.shape, "{name}: shape");
        let Some(g) = model.params.grad(id) else {
            rep.failures.push(format!("{name}: the model computes no gradient for it"));
            continue;
        };
        let g = host(be, g);
        if ZERO_IN_THEORY.contains(&name.as_str()) {
            rep.check_abs(name, &g, reference, ZERO_GRAD_ABS_TOL);
        } else {
            rep.check(name, &g, reference, GRAD_TOL, true);
        }
    }
    // The parameters without a stored gradient are exactly the unused temb_proj ones, and the
    // model reports them as gradient-free.
    let mut no_grad = Vec::new();
    model.params.for_each(|_, spec, _, grad| {
        if !grads.contains_key(&spec.name) {
            no_grad.push(spec.name.clone());
            assert!(grad.is_none(), "{}: has no official gradient but the model allocates one", spec.name);
            assert!(!spec.used, "{}: marked used", spec.name);
        } else {
            assert!(spec.used && grad.is_some(), "{}: official gradient but none in the model", spec.name);
        }
    });
    no_grad.sort();
    assert_eq!(
        no_grad,
        [
            "preprocess_img.1.temb_proj.bias",
            "preprocess_img.1.temb_proj.weight",
            "preprocess_img.2.temb_proj.bias",
            "preprocess_img.2.temb_proj.weight"
        ]
    );

    println!(
        "worst forward error {:.3e}, worst gradient error {:.3e}; forward {t_fwd:?}, loss+backward {t_bwd:?}",
        rep.worst_fwd, rep.worst_grad
    );
    assert!(rep.failures.is_empty(), "{} failure(s):\n{}", rep.failures.len(), rep.failures.join("\n"));
}
