//! The PatchGAN discriminator (`core/src/model/discriminator.rs`): official names and count,
//! logit sizes, init, BatchNorm state, and its gradients (input and parameters) against finite
//! differences of its own f32 forward, on a small `ndf` so the check is fast.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::Buffers;
use gpstoken_core::model::{DiscActs, DiscGradients, Discriminator, DiscriminatorConfig};
use gpstoken_tests::{max_rel_error, TestRng};

fn download(be: &CpuBackend, b: &Vec<f32>) -> Vec<f32> {
    let mut h = vec![0.0; be.len(b)];
    be.download(b, &mut h).unwrap();
    h
}

#[test]
fn official_names_count_and_logit_sizes() {
    let cfg = DiscriminatorConfig::OFFICIAL;
    let names: Vec<String> = cfg.param_specs().unwrap().into_iter().map(|s| s.name).collect();
    let want = [
        "main.0.weight",
        "main.0.bias",
        "main.2.weight",
        "main.3.weight",
        "main.3.bias",
        "main.5.weight",
        "main.6.weight",
        "main.6.bias",
        "main.8.weight",
        "main.9.weight",
        "main.9.bias",
        "main.11.weight",
        "main.11.bias",
    ];
    assert_eq!(names, want);
    // By hand from the layer list (4x4 kernels): 64·3·16 + 64, 128·64·16, 2·128, 256·128·16,
    // 2·256, 512·256·16, 2·512, 1·512·16 + 1.
    let by_hand = (64 * 3 * 16 + 64)
        + 128 * 64 * 16
        + 2 * 128
        + 256 * 128 * 16
        + 2 * 256
        + 512 * 256 * 16
        + 2 * 512
        + (512 * 16 + 1);
    assert_eq!(by_hand, 2_765_633);
    assert_eq!(cfg.parameter_count().unwrap(), by_hand);
    // 256 -> 128 -> 64 -> 32 -> 31 -> 30 (spec 8: 30x30 logits); 64 -> 6x6.
    assert_eq!(cfg.logits_size(256, 256), Some((30, 30)));
    assert_eq!(cfg.logits_size(64, 64), Some((6, 6)));
    assert_eq!(cfg.logits_size(16, 16), None, "16 -> 8 -> 4 -> 2 -> 1 -> 0");

    let be = CpuBackend::with_threads(1).unwrap();
    let d = Discriminator::new(&be, cfg).unwrap();
    let prefixes: Vec<&str> = d.norm_states().iter().map(|s| s.prefix.as_str()).collect();
    assert_eq!(prefixes, ["main.3", "main.6", "main.9"]);
    assert!(d.activations(&be, 1, 16, 16).is_err(), "too small an image is an error");
    assert!(Discriminator::new(&be, DiscriminatorConfig { ndf: 0, ..cfg }).is_err(), "ndf 0 is an error");
}

#[test]
fn init_is_tamings_weights_init_and_seeded() {
    let be = CpuBackend::with_threads(1).unwrap();
    let make = |seed| {
        let mut d = Discriminator::new(&be, DiscriminatorConfig::OFFICIAL).unwrap();
        d.init(&be, seed).unwrap();
        let mut out = Vec::new();
        d.params.for_each(|_, spec, v, _| out.push((spec.name.clone(), download(&be, v))));
        out
    };
    let (a, b, c) = (make(5), make(5), make(6));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let stats = |v: &[f32]| {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    };
    for (name, v) in &a {
        let (mean, std) = stats(v);
        if name == "main.0.bias" || name == "main.11.bias" {
            // PyTorch's default conv bias U(±1/√fan_in), fan_in = cin·16.
            let bound = if name == "main.0.bias" { 1.0 / 48f32.sqrt() } else { 1.0 / 8192f32.sqrt() };
            assert!(v.iter().all(|x| x.abs() <= bound), "{name}");
        } else if name.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}: BatchNorm bias 0");
        } else if ["main.3.weight", "main.6.weight", "main.9.weight"].contains(&name.as_str()) {
            assert!((mean - 1.0).abs() < 0.01 && (std - 0.02).abs() < 0.005, "{name}: mean {mean} std {std}");
        } else {
            assert!(mean.abs() < 0.002 && (std - 0.02).abs() < 0.002, "{name}: mean {mean} std {std}");
        }
    }
}

/// A small discriminator (ndf 4, 3 layers) on 2 images of 32x32: logits 2x2.
fn small(be: &CpuBackend) -> (Discriminator<CpuBackend>, DiscActs<CpuBackend>) {
    let cfg = DiscriminatorConfig { in_channels: 3, ndf: 4, n_layers: 3 };
    assert_eq!(cfg.logits_size(32, 32), Some((2, 2)));
    let mut d = Discriminator::new(be, cfg).unwrap();
    d.init(be, 11).unwrap();
    // Larger weights than the 0.02 init, so every layer matters for the gradients.
    let ids: Vec<usize> = (0..d.params.len()).collect();
    let mut rng = TestRng::new(0xd15c_0001);
    for id in ids {
        let n = d.params.spec(id).numel();
        let fan_in = d.params.spec(id).shape.iter().skip(1).product::<usize>().max(1) as f64;
        let name = d.params.spec(id).name.clone();
        let is_norm = d.norm_states().iter().any(|s| name.starts_with(&format!("{}.", s.prefix)));
        let v: Vec<f32> = (0..n)
            .map(|_| {
                if is_norm && name.ends_with("weight") {
                    (1.0 + 0.3 * rng.normal()) as f32
                } else if is_norm {
                    (0.3 * rng.normal()) as f32
                } else {
                    (rng.normal() / fan_in.sqrt()) as f32
                }
            })
            .collect();
        be.write(d.params.value_mut(id), &v).unwrap();
    }
    let acts = d.activations(be, 2, 32, 32).unwrap();
    (d, acts)
}

/// `Σ r·D(x)` in f64.
fn weighted_logits(
    be: &CpuBackend,
    d: &mut Discriminator<CpuBackend>,
    a: &mut DiscActs<CpuBackend>,
    x: &[f32],
    r: &[f32],
) -> f64 {
    let xb = be.upload(x).unwrap();
    d.forward(be, &xb, a).unwrap();
    download(be, a.logits()).iter().zip(r).map(|(&l, &r)| f64::from(l) * f64::from(r)).sum()
}

/// Central differences in f32 need a step well above f32 rounding; the relative error is
/// measured against the largest gradient of the checked set.
const STEP: f32 = 2e-3;
const TOLERANCE: f64 = 2e-2;

#[test]
fn input_and_parameter_gradients_match_finite_differences() {
    let be = CpuBackend::with_threads(2).unwrap();
    let (mut d, mut a) = small(&be);
    let mut rng = TestRng::new(0xd15c_0002);
    let x: Vec<f32> = (0..2 * 3 * 32 * 32).map(|_| rng.normal() as f32).collect();
    let r: Vec<f32> = (0..2 * 4).map(|_| rng.normal() as f32).collect();
    let (xb, rb) = (be.upload(&x).unwrap(), be.upload(&r).unwrap());
    d.forward(&be, &xb, &mut a).unwrap();
    d.backward(&be, &xb, &rb, &mut a, DiscGradients { params: true, input: true }).unwrap();
    let dx = download(&be, a.d_input());
    let grads: Vec<Vec<f32>> = (0..d.params.len()).map(|id| download(&be, d.params.grad(id).unwrap())).collect();

    // The input: 300 random pixels.
    let mut xp = x.clone();
    let (mut got, mut fd) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let i = (rng.next_u64() % x.len() as u64) as usize;
        xp[i] = x[i] + STEP;
        let plus = weighted_logits(&be, &mut d, &mut a, &xp, &r);
        xp[i] = x[i] - STEP;
        let minus = weighted_logits(&be, &mut d, &mut a, &xp, &r);
        xp[i] = x[i];
        fd.push((plus - minus) / (2.0 * f64::from(STEP)));
        got.push(f64::from(dx[i]));
    }
    let err = max_rel_error(&got, &fd);
    println!("discriminator input gradient: max_rel_error {err:.2e}");
    assert!(fd.iter().any(|&v| v != 0.0) && err < TOLERANCE, "input gradient: {err:.3e}");

    // Every parameter tensor: 6 random entries each.
    for (id, grad) in grads.iter().enumerate() {
        let name = d.params.spec(id).name.clone();
        let base = download(&be, d.params.value(id));
        let (mut got, mut fd) = (Vec::new(), Vec::new());
        for _ in 0..6 {
            let k = (rng.next_u64() % base.len() as u64) as usize;
            let mut v = base.clone();
            v[k] = base[k] + STEP;
            be.write(d.params.value_mut(id), &v).unwrap();
            let plus = weighted_logits(&be, &mut d, &mut a, &x, &r);
            v[k] = base[k] - STEP;
            be.write(d.params.value_mut(id), &v).unwrap();
            let minus = weighted_logits(&be, &mut d, &mut a, &x, &r);
            be.write(d.params.value_mut(id), &base).unwrap();
            fd.push((plus - minus) / (2.0 * f64::from(STEP)));
            got.push(f64::from(grad[k]));
        }
        let err = max_rel_error(&got, &fd);
        println!("discriminator {name} gradient: max_rel_error {err:.2e}");
        assert!(fd.iter().any(|&v| v != 0.0) && err < TOLERANCE, "{name}: {err:.3e}");
    }
}

#[test]
fn backward_options_and_thread_counts_give_the_same_bits() {
    let mut rng = TestRng::new(0xd15c_0003);
    let x: Vec<f32> = (0..2 * 3 * 32 * 32).map(|_| rng.normal() as f32).collect();
    let r: Vec<f32> = (0..2 * 4).map(|_| rng.normal() as f32).collect();
    let run = |threads: usize| {
        let be = CpuBackend::with_threads(threads).unwrap();
        let (mut d, mut a) = small(&be);
        let (xb, rb) = (be.upload(&x).unwrap(), be.upload(&r).unwrap());
        d.forward(&be, &xb, &mut a).unwrap();
        let logits = download(&be, a.logits());
        d.backward(&be, &xb, &rb, &mut a, DiscGradients { params: true, input: true }).unwrap();
        let dx_all = download(&be, a.d_input());
        let mut grads = Vec::new();
        d.params.for_each(|_, _, _, g| grads.push(download(&be, g.unwrap())));
        // Input only: the same input gradient, parameter gradients untouched.
        d.backward(&be, &xb, &rb, &mut a, DiscGradients { params: false, input: true }).unwrap();
        assert_eq!(download(&be, a.d_input()), dx_all, "input-only backward");
        let mut again = Vec::new();
        d.params.for_each(|_, _, _, g| again.push(download(&be, g.unwrap())));
        assert_eq!(again, grads, "an input-only backward must leave the parameter gradients alone");
        let running: Vec<(Vec<f32>, Vec<f32>, u64)> = d
            .norm_states()
            .iter()
            .map(|s| (download(&be, &s.running_mean), download(&be, &s.running_var), s.num_batches_tracked))
            .collect();
        (logits, dx_all, grads, running)
    };
    let (one, two) = (run(1), run(2));
    assert!(one.0.iter().chain(&one.1).all(|v| v.is_finite()));
    assert_eq!(
        one.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        two.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(one.1, two.1);
    assert_eq!(one.2, two.2);
    assert_eq!(one.3, two.3);
    // One forward: each BatchNorm counted one batch and moved its running statistics off (0, 1).
    for (mean, var, tracked) in &one.3 {
        assert_eq!(*tracked, 1);
        assert!(mean.iter().any(|&m| m != 0.0) && var.iter().any(|&v| v != 1.0));
    }
}
