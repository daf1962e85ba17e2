//! A whole training step (forward, MSE, backward) is bit-identical for 1 and 2 CPU threads, is
//! repeatable on reused activations, and reuses its buffers (no reallocation across steps).

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::Buffers;
use gpstoken_core::model::{Activations, GpsToken, ModelConfig};
use gpstoken_core::partition::{partition_patch, region_box, region_gaussian, PartitionParams, Region};
use gpstoken_tests::TestRng;

const BATCH: usize = 4;

/// Smooth random images with Algorithm 1's g_init and regions, as the training data path makes.
fn inputs(cfg: &ModelConfig, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let s = cfg.image_hw.0;
    let n = cfg.gps.gps_num;
    let mut rng = TestRng::new(seed);
    let mut image = vec![0.0f32; BATCH * 3 * s * s];
    let mut g_init = Vec::new();
    let mut regions = Vec::new();
    for (b, img) in image.chunks_exact_mut(3 * s * s).enumerate() {
        // a few random blobs so that the partition is not uniform
        let blobs: Vec<[f64; 6]> = (0..6)
            .map(|_| {
                let mut v = [0.0; 6];
                for x in v.iter_mut() {
                    *x = rng.uniform(0.0, 1.0);
                }
                v
            })
            .collect();
        for c in 0..3 {
            for y in 0..s {
                for x in 0..s {
                    let (fx, fy) = (x as f64 / s as f64, y as f64 / s as f64);
                    let mut v = 0.0;
                    for bl in &blobs {
                        let d2 = (fx - bl[0]).powi(2) + (fy - bl[1]).powi(2);
                        v += (bl[2 + c] - 0.5) * (-d2 / (0.02 + 0.05 * bl[5])).exp();
                    }
                    v += 0.05 * rng.uniform(-1.0, 1.0) * (b as f64 + 1.0);
                    img[(c * s + y) * s + x] = v.clamp(-1.0, 1.0) as f32;
                }
            }
        }
        let grey: Vec<f32> =
            (0..s * s).map(|i| 0.299 * img[i] + 0.587 * img[s * s + i] + 0.114 * img[2 * s * s + i]).collect();
        let mut out = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; n];
        partition_patch(&grey, s, s, &PartitionParams::new(n), None, &mut out).unwrap();
        for r in &out {
            g_init.extend_from_slice(&region_gaussian(r, s, s));
            regions.extend_from_slice(&region_box(r, s, s));
        }
    }
    (image, g_init, regions)
}

/// Everything a step produces, on the host.
#[derive(PartialEq, Debug)]
struct StepOut {
    loss: f64,
    decoded: Vec<f32>,
    tokens: Vec<f32>,
    d_image: Vec<f32>,
    d_g_init: Vec<f32>,
    grads: Vec<(String, Vec<f32>)>,
}

fn host(be: &CpuBackend, b: &Vec<f32>) -> Vec<f32> {
    let mut v = vec![0.0; be.len(b)];
    be.download(b, &mut v).unwrap();
    v
}

fn step(
    be: &CpuBackend,
    m: &mut GpsToken<CpuBackend>,
    a: &mut Activations<CpuBackend>,
    inp: &(Vec<f32>, Vec<f32>, Vec<f32>),
) -> StepOut {
    m.forward(be, a, &inp.0, &inp.1, &inp.2).unwrap();
    let loss = m.mse_backward(be, a).unwrap();
    let mut grads = Vec::new();
    m.params.for_each(|_, spec, _, g| {
        if let Some(g) = g {
            grads.push((spec.name.clone(), host(be, g)));
        }
    });
    StepOut {
        loss,
        decoded: host(be, a.decoded()),
        tokens: host(be, a.tokens()),
        d_image: host(be, a.d_image()),
        d_g_init: host(be, a.d_g_init()),
        grads,
    }
}

/// Addresses and lengths of the buffers a step writes: unchanged means nothing was reallocated.
fn buffer_ids(m: &GpsToken<CpuBackend>, a: &Activations<CpuBackend>) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = [
        a.image(),
        a.x_preprocess(),
        a.roi_conds(),
        a.tokens(),
        a.rendered(),
        a.decoded(),
        a.d_decoded(),
        a.d_rendered(),
        a.d_tokens(),
        a.d_g_init(),
        a.d_image(),
    ]
    .iter()
    .map(|b| (b.as_ptr() as usize, b.len()))
    .collect();
    m.params.for_each(|_, _, val, g| {
        v.push((val.as_ptr() as usize, val.len()));
        if let Some(g) = g {
            v.push((g.as_ptr() as usize, g.len()));
        }
    });
    v
}

fn run(cfg: &ModelConfig, threads: usize) -> (StepOut, StepOut, f64) {
    let be = CpuBackend::with_threads(threads).unwrap();
    let mut m = GpsToken::new(&be, cfg.clone()).unwrap();
    m.init(&be, 42).unwrap();
    let mut a = m.activations(&be, BATCH, 1).unwrap();
    let inp = inputs(cfg, 9);
    let first = step(&be, &mut m, &mut a, &inp);
    let ids = buffer_ids(&m, &a);
    let t = std::time::Instant::now();
    let second = step(&be, &mut m, &mut a, &inp);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(ids, buffer_ids(&m, &a), "a step reallocated a buffer");
    (first, second, secs)
}

#[test]
fn tiny64_step_is_bit_identical_across_threads_and_steps() {
    let cfg = ModelConfig::tiny64();
    let (one_a, one_b, _) = run(&cfg, 1);
    let (two_a, two_b, secs) = run(&cfg, 2);
    println!("tiny64 batch {BATCH}: forward + MSE + backward on 2 threads {secs:.3} s, loss {}", one_a.loss);
    assert!(one_a.loss.is_finite() && one_a.loss > 0.0);
    assert_eq!(one_a.grads.len(), cfg.param_specs().unwrap().len() - 4, "every used parameter has a gradient");
    // Gradients are not all zero (to_gps.0 starts at zero but receives a gradient).
    for (name, g) in &one_a.grads {
        if name == "to_gps.0.weight" || name.ends_with(".weight") && name.contains("conv") {
            assert!(g.iter().any(|&x| x != 0.0), "{name}: zero gradient");
        }
    }
    assert!(one_a == two_a, "1 vs 2 threads differ");
    assert!(one_a == one_b, "a second step on the same activations differs (stale state)");
    assert!(two_a == two_b);
}

/// The 2x2 patches of one `2s x 2s` image, batch-major (`k = i·2 + j`), as `[4, 3, s, s]`.
fn tiles(image: &[f32], s: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(image.len());
    for i in 0..2 {
        for j in 0..2 {
            for c in 0..3 {
                for y in 0..s {
                    let row = (c * 2 * s + i * s + y) * 2 * s + j * s;
                    out.extend_from_slice(&image[row..row + s]);
                }
            }
        }
    }
    out
}

/// np = 2 (spec 2.4): the encoder sees each patch on its own, and the merged render and
/// DecoderNP give gradients that agree with finite differences of the loss.
#[test]
fn two_by_two_patches_encode_per_patch_and_backprop_through_the_merge() {
    let cfg = ModelConfig::tiny64();
    let s = cfg.image_hw.0;
    let be = CpuBackend::new();
    let mut m = GpsToken::new(&be, cfg.clone()).unwrap();
    m.init(&be, 5).unwrap();
    // BATCH patches of tiny64 = one 128² image cut in 2x2.
    let (patches, g_init, regions) = inputs(&cfg, 11);
    let mut image = vec![0.0f32; 3 * 4 * s * s];
    for k in 0..4 {
        let (i, j) = (k / 2, k % 2);
        for c in 0..3 {
            for y in 0..s {
                let dst = (c * 2 * s + i * s + y) * 2 * s + j * s;
                let src = ((k * 3 + c) * s + y) * s;
                image[dst..dst + s].copy_from_slice(&patches[src..src + s]);
            }
        }
    }
    assert_eq!(tiles(&image, s), patches);

    let mut a2 = m.activations(&be, 1, 2).unwrap();
    m.forward(&be, &mut a2, &image, &g_init, &regions).unwrap();
    let mut a1 = m.activations(&be, 4, 1).unwrap();
    m.forward(&be, &mut a1, &patches, &g_init, &regions).unwrap();
    let (t2, t1) = (host(&be, a2.tokens()), host(&be, a1.tokens()));
    let scale = gpstoken_tests::nan_max(t1.iter().map(|v| f64::from(v.abs())));
    let err = gpstoken_tests::max_abs_diff(&t1, &t2);
    assert!(err <= 1e-6 * scale, "per-patch tokens differ by {err}");
    assert_eq!(be.len(a2.decoded()), 3 * 4 * s * s);
    assert_eq!(be.len(a2.rendered()), cfg.gps.gps_c * 4 * cfg.gps.gps_rs.0 * cfg.gps.gps_rs.1);

    // Directional derivative along a random g_init perturbation (means and sigmas only, where
    // the merge acts): <dL/dg, v> vs a central difference of the f64 loss.
    let mut loss_at = |g: &[f32], a: &mut Activations<CpuBackend>| {
        m.forward(&be, a, &image, g, &regions).unwrap();
        m.mse_backward(&be, a).unwrap()
    };
    loss_at(&g_init, &mut a2);
    let grad = host(&be, a2.d_g_init());
    let mut rng = TestRng::new(3);
    let v: Vec<f32> = (0..g_init.len()).map(|i| if i % 5 == 2 { 0.0 } else { rng.uniform(-1.0, 1.0) as f32 }).collect();
    let analytic: f64 = grad.iter().zip(&v).map(|(g, v)| f64::from(*g) * f64::from(*v)).sum();
    let eps = 1e-3f32;
    let shifted = |sign: f32| -> Vec<f32> { g_init.iter().zip(&v).map(|(g, v)| g + sign * eps * v).collect() };
    let numeric = (loss_at(&shifted(1.0), &mut a2) - loss_at(&shifted(-1.0), &mut a2)) / (2.0 * f64::from(eps));
    println!("np=2 directional derivative: analytic {analytic:.6e}, central difference {numeric:.6e}");
    assert!((analytic - numeric).abs() <= 0.03 * analytic.abs().max(numeric.abs()), "{analytic} vs {numeric}");
}

/// The inference set (no gradient buffers, reused norm/swish buffers) computes the forward pass
/// bit for bit like the training set, for single patches and a merged 2x2 canvas, and a backward
/// pass over it is an error, not a panic or a silent write.
#[test]
fn inference_activations_give_the_same_bits_and_refuse_a_backward() {
    use gpstoken_core::model::Gradients;
    let cfg = ModelConfig::tiny64();
    let be = CpuBackend::with_threads(2).unwrap();
    let (image, g_init, regions) = inputs(&cfg, 11);
    let mut train = GpsToken::new(&be, cfg.clone()).unwrap();
    train.init(&be, 3).unwrap();
    let mut infer = GpsToken::with_gradients(&be, cfg.clone(), Gradients::No).unwrap();
    let weights = gpstoken_core::model::save_safetensors(&be, &train.params).unwrap();
    gpstoken_core::model::load_safetensors(&be, &mut infer.params, &weights).unwrap();
    let merged_image = tiles_inverse(&image, cfg.image_hw.0);
    for (batch, patches, img) in [(BATCH, 1, &image), (1, 2, &merged_image)] {
        let mut a = train.activations(&be, batch, patches).unwrap();
        let mut b = infer.activations_with(&be, batch, patches, Gradients::No).unwrap();
        train.forward(&be, &mut a, img, &g_init, &regions).unwrap();
        infer.forward(&be, &mut b, img, &g_init, &regions).unwrap();
        assert_eq!(host(&be, a.decoded()), host(&be, b.decoded()), "{batch}x{patches}");
        assert_eq!(host(&be, a.tokens()), host(&be, b.tokens()), "{batch}x{patches}");
        assert!(infer.mse_backward(&be, &mut b).is_err(), "a backward without gradient buffers must fail");
        let mut c = train.activations_with(&be, batch, patches, Gradients::No).unwrap();
        train.forward(&be, &mut c, img, &g_init, &regions).unwrap();
        assert!(train.mse_backward(&be, &mut c).is_err(), "inference activations must refuse a backward");
    }
}

/// BATCH = 4 patches of side S put together as one 2S x 2S image (patch k at row k/2, column k%2).
fn tiles_inverse(patches: &[f32], s: usize) -> Vec<f32> {
    let side = 2 * s;
    let mut out = vec![0.0f32; 3 * side * side];
    for k in 0..4 {
        let (x0, y0) = ((k % 2) * s, (k / 2) * s);
        for c in 0..3 {
            for y in 0..s {
                let src = ((k * 3 + c) * s + y) * s;
                let dst = (c * side + y0 + y) * side + x0;
                out[dst..dst + s].copy_from_slice(&patches[src..src + s]);
            }
        }
    }
    out
}
