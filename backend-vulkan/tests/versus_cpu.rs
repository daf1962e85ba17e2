//! What the conformance suite's cross-backend check (`gpstoken_tests::conformance::cross`,
//! every op against the CPU once) does not cover, on the Vulkan backend: every op of that check
//! run twice (identical bits), and edge cases against `CpuBackend` (and twice): NaN parameters,
//! empty shapes, shapes spanning several dispatches or batches, the register-blocked GEMM,
//! splat tiles with many Gaussians and channels, GELU's `erfc` fit on a dense grid, and the
//! recorder's RAW/WAR/WAW ordering. The largest relative errors are printed
//! (`cargo test ... -- --nocapture`).

mod common;

use common::{vulkan, VULKAN};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_backend_vulkan::VulkanBackend;
use gpstoken_core::backend::{
    Activation, AttentionDesc, AttentionOps, Buffers, Conv2dDesc, ConvOps, GroupNormDesc, LayerNormDesc, LossOps,
    NormKind, NormOps, RoiAlignDesc, RoiOps, SplatOps, TensorOps,
};
use gpstoken_core::render::SplatDesc;
use gpstoken_tests::conformance::cross;
use gpstoken_tests::conformance::roi::roi_descs;
use gpstoken_tests::conformance::splat::{random_case, GaussianRanges};
use gpstoken_tests::conformance::tensor::activation_f64;
use gpstoken_tests::{max_rel_error, TestRng};

/// Named outputs of one family's ops, each with the tolerance it is held to.
#[derive(Default)]
struct Outputs(Vec<(String, Vec<f64>, f64)>);

impl Outputs {
    fn values<B: Buffers>(&mut self, backend: &B, name: &str, buffer: &B::Buffer, tol: f64) {
        let mut host = vec![0.0f32; backend.len(buffer)];
        backend.download(buffer, &mut host).expect("download");
        self.0.push((name.to_string(), host.iter().map(|&v| f64::from(v)).collect(), tol));
    }
}

fn normal(rng: &mut TestRng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

fn up<B: Buffers>(backend: &B, host: &[f32]) -> B::Buffer {
    backend.upload(host).expect("upload")
}

/// Compares the Vulkan outputs with the CPU's, and the two Vulkan runs bit for bit.
fn check(family: &str, cpu: Outputs, first: Outputs, second: Outputs) {
    assert_eq!(cpu.0.len(), first.0.len());
    for (((name, want, tol), (_, got, _)), (_, again, _)) in cpu.0.iter().zip(&first.0).zip(&second.0) {
        let err = max_rel_error(got, want);
        println!("{family} {name}: max_rel_error vs CPU {err:.2e}");
        assert!(err <= *tol, "{family} {name}: max_rel_error vs CPU {err:.3e} > {tol:.1e}");
        let differ = got.iter().zip(again).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{family} {name}: {differ} values differ between two runs");
    }
}

/// Runs a family's ops on the CPU and twice on Vulkan (the same function, instantiated for each).
fn compare(family: &str, on_cpu: fn(&CpuBackend) -> Outputs, on_vulkan: fn(&VulkanBackend) -> Outputs) {
    let Some(vk) = vulkan() else { return };
    check(family, on_cpu(&CpuBackend::new()), on_vulkan(&vk), on_vulkan(&vk));
}

/// Outputs that started as NaN were all written (`max_rel_error` skips NaN).
fn assert_all_written<B: Buffers>(backend: &B, out: &Outputs) {
    for (name, values, _) in &out.0 {
        let unwritten = values.iter().filter(|v| v.is_nan()).count();
        assert_eq!(unwritten, 0, "{} {name}: {unwritten} values left NaN", backend.name());
    }
}

/// One test per family of the cross-backend check: its ops run twice, the same bits.
macro_rules! same_bits_twice {
    ($($test:ident => $family:literal;)*) => {
        $(
            #[test]
            fn $test() {
                let Some(vk) = vulkan() else { return };
                cross::same_bits_twice(&vk, $family);
            }
        )*
        #[test]
        fn every_family_of_the_cross_check_runs_twice() {
            let mut tested = [$($family),*];
            let mut all = cross::FAMILIES;
            tested.sort_unstable();
            all.sort_unstable();
            assert_eq!(tested, all);
        }
    };
}

same_bits_twice! {
    tensor_ops_repeat_bit_for_bit => "tensor";
    linear_ops_repeat_bit_for_bit => "linear";
    conv_ops_repeat_bit_for_bit => "conv";
    norm_ops_repeat_bit_for_bit => "norm";
    attention_ops_repeat_bit_for_bit => "attention";
    roi_ops_repeat_bit_for_bit => "roi";
    splat_ops_repeat_bit_for_bit => "splat";
    gaussian_ops_repeat_bit_for_bit => "gaussian";
    loss_ops_repeat_bit_for_bit => "loss";
    optim_ops_repeat_bit_for_bit => "optim";
}

/// 3000 dependent ops (with scratch buffers made and dropped on the way) recorded without a
/// download: on Vulkan they span several batches, submitted while recording goes on.
fn long_recording_outputs<B: TensorOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0007);
    let mut out = Outputs::default();
    let (rows, cols) = (100, 50);
    let x = up(b, &normal(&mut rng, rows * cols, 1.0));
    let mut acc = b.zeros(rows * cols).unwrap();
    let mut sums = b.zeros(cols).unwrap();
    let mut total = b.zeros(cols).unwrap();
    for i in 0..1000 {
        b.add_assign(&mut acc, &x).unwrap();
        b.scale(&mut acc, 0.99).unwrap();
        if i % 10 == 0 {
            // Two chunks of rows: a scratch buffer of partial sums, dropped at once.
            b.sum_rows(rows, cols, &acc, &mut sums).unwrap();
            b.add_assign(&mut total, &sums).unwrap();
        }
    }
    out.values(b, "accumulated", &acc, VULKAN.forward);
    out.values(b, "sums of row sums", &total, VULKAN.forward);
    out
}

#[test]
fn long_recordings_span_batches_and_match_cpu() {
    compare("long recording", long_recording_outputs, long_recording_outputs);
}

/// Losses long enough for three reduction passes on the device (over 65 536 partial pairs),
/// with values of very different sizes: the compensated sums against the CPU's f64 sums.
fn long_loss_outputs<B: LossOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0009);
    let mut out = Outputs::default();
    let n = 1_100_000;
    let p: Vec<f32> =
        normal(&mut rng, n, 1.0).iter().enumerate().map(|(i, v)| if i % 1000 == 0 { v * 1e4 } else { *v }).collect();
    let (p, t) = (up(b, &p), up(b, &normal(&mut rng, n, 1.0)));
    let (mut grad, mut loss) = (b.zeros(n).unwrap(), b.zeros(1).unwrap());
    b.mse_loss_into(&p, &t, Some(&mut grad), &mut loss).unwrap();
    out.values(b, "mse", &loss, VULKAN.forward);
    out.values(b, "mse gradient", &grad, 0.0);
    b.mean_loss_into(&p, None, &mut loss).unwrap();
    out.values(b, "mean", &loss, VULKAN.forward);
    b.hinge_loss_into(&t, false, None, &mut loss).unwrap();
    out.values(b, "hinge fake", &loss, VULKAN.forward);
    out
}

#[test]
fn long_losses_match_cpu_and_repeat_bit_for_bit() {
    compare("loss", long_loss_outputs, long_loss_outputs);
}

#[test]
fn wide_conv_matches_cpu_and_repeats_bit_for_bit() {
    compare("conv", wide_conv_outputs, wide_conv_outputs);
}

#[test]
fn attention_edge_shapes_match_cpu_and_repeat_bit_for_bit() {
    compare("attention", attention_edge_outputs, attention_edge_outputs);
}

#[test]
fn roi_edge_cases_match_cpu_and_repeat_bit_for_bit() {
    compare("roi", roi_edge_outputs, roi_edge_outputs);
}

/// The convolution on the register-blocked GEMM (4 x 4 values per invocation: both sides of
/// every product at least 64), which the cross-backend check's shapes do not reach.
fn wide_conv_outputs<B: ConvOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0006);
    let (f, g) = (VULKAN.forward, VULKAN.gradient);
    let mut out = Outputs::default();
    let d = Conv2dDesc::same(2, 66, 70, 9, 9, 3);
    let x = up(b, &normal(&mut rng, d.input_len(), 1.0));
    let w = up(b, &normal(&mut rng, d.weight_len(), 0.3));
    let bias = up(b, &normal(&mut rng, d.out_channels, 1.0));
    let dy = up(b, &normal(&mut rng, d.output_len(), 1.0));
    let mut y = b.zeros(d.output_len()).unwrap();
    b.conv2d_forward(&d, &x, &w, Some(&bias), &mut y).unwrap();
    out.values(b, &format!("conv forward {d:?}"), &y, f);
    let (mut dx, mut dw, mut db) =
        (b.zeros(d.input_len()).unwrap(), b.zeros(d.weight_len()).unwrap(), b.zeros(d.out_channels).unwrap());
    b.conv2d_backward(&d, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).unwrap();
    out.values(b, &format!("conv dx {d:?}"), &dx, g);
    out.values(b, &format!("conv dW {d:?}"), &dw, g);
    out.values(b, &format!("conv db {d:?}"), &db, g);
    out
}

/// Attention's edge shapes: a row of 300 keys (longer than a workgroup), one key, no query, an
/// empty head; outputs start as NaN.
fn attention_edge_outputs<B: AttentionOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0007);
    let (f, g) = (VULKAN.forward, VULKAN.gradient);
    let mut out = Outputs::default();
    for (batch, heads, seq_q, seq_k, head_dim) in
        [(1, 2, 20, 300, 8), (2, 2, 5, 1, 4), (1, 2, 0, 3, 4), (1, 1, 3, 4, 0)]
    {
        let d = AttentionDesc { batch, heads, seq_q, seq_k, head_dim, scale: 1.0 / (head_dim as f32).sqrt() };
        let (q, k) = (up(b, &normal(&mut rng, d.q_len(), 1.0)), up(b, &normal(&mut rng, d.kv_len(), 1.0)));
        let (v, dout) = (up(b, &normal(&mut rng, d.kv_len(), 1.0)), up(b, &normal(&mut rng, d.q_len(), 1.0)));
        // Outputs start as NaN: every value must be written.
        let nan = |len: usize| up(b, &vec![f32::NAN; len]);
        let (mut o, mut probs) = (nan(d.q_len()), nan(d.probs_len()));
        b.attention_forward(&d, &q, &k, &v, &mut o, &mut probs).unwrap();
        let (mut dq, mut dk, mut dv) = (nan(d.q_len()), nan(d.kv_len()), nan(d.kv_len()));
        b.attention_backward(&d, &q, &k, &v, &probs, &dout, &mut dq, &mut dk, &mut dv).unwrap();
        let shape = format!("B={batch} H={heads} Lq={seq_q} Lk={seq_k} D={head_dim}");
        out.values(b, &format!("out {shape}"), &o, f);
        out.values(b, &format!("probs {shape}"), &probs, f);
        out.values(b, &format!("dq {shape}"), &dq, g);
        out.values(b, &format!("dk {shape}"), &dk, g);
        out.values(b, &format!("dv {shape}"), &dv, g);
    }
    assert_all_written(b, &out);
    out
}

/// RoIAlign's edge cases: an empty map (every sample outside: zeros) and no boxes (a zero
/// gradient); outputs start as NaN.
fn roi_edge_outputs<B: RoiOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0008);
    let mut out = Outputs::default();
    let base = RoiAlignDesc { batch: 2, channels: 2, height: 0, width: 5, rois: 2, pooled: 2, ..roi_descs()[0] };
    for d in [base, RoiAlignDesc { height: 4, rois: 0, ..base }] {
        let boxes = up(b, &[0.0, 0.5, 0.5, 3.0, 2.0, 1.0, 1.0, -1.0, 4.0, 3.0][..5 * d.rois]);
        let (features, dout) =
            (up(b, &normal(&mut rng, d.features_len(), 1.0)), up(b, &normal(&mut rng, d.out_len(), 1.0)));
        let (mut y, mut dfeatures) = (up(b, &vec![f32::NAN; d.out_len()]), up(b, &vec![f32::NAN; d.features_len()]));
        b.roi_align_forward(&d, &features, &boxes, &mut y).unwrap();
        b.roi_align_backward(&d, &boxes, &dout, &mut dfeatures).unwrap();
        out.values(b, &format!("forward {}x{} with {} boxes", d.height, d.width, d.rois), &y, 0.0);
        out.values(b, &format!("dfeatures {}x{} with {} boxes", d.height, d.width, d.rois), &dfeatures, 0.0);
    }
    assert_all_written(b, &out);
    out
}

/// Splat forward and backward: many Gaussians per tile (several shared-memory batches per
/// tile on lavapipe), more channels than one pass holds, canvases that are not whole tiles.
fn splat_outputs<B: SplatOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0006);
    let mut out = Outputs::default();
    let small = GaussianRanges { sigma: (0.02, 0.2), ..GaussianRanges::DEFAULT };
    for (desc, ranges) in [
        (SplatDesc { batch: 3, gaussians: 600, channels: 40, height: 37, width: 45, kappa: 3.0 }, small),
        (
            SplatDesc { batch: 2, gaussians: 256, channels: 8, height: 64, width: 64, kappa: 3.0 },
            GaussianRanges::DEFAULT,
        ),
        (
            SplatDesc { batch: 2, gaussians: 50, channels: 3, height: 20, width: 70, kappa: 5.0 },
            GaussianRanges::DEFAULT,
        ),
    ] {
        let case = random_case(&mut rng, desc, &ranges, None);
        let tokens = up(b, &case.tokens);
        let mut image = b.zeros(desc.image_len()).unwrap();
        b.splat_forward(&desc, &tokens, &mut image).unwrap();
        out.values(b, &format!("splat_forward {desc:?}"), &image, SPLAT_FORWARD);
        let mut grad = b.zeros(desc.tokens_len()).unwrap();
        b.splat_backward(&desc, &tokens, &up(b, &case.grad_out), &mut grad).unwrap();
        let mut host = vec![0.0f32; desc.tokens_len()];
        b.download(&grad, &mut host).unwrap();
        // Each group against its own largest value (the colour gradients are much smaller).
        let stride = desc.token_stride();
        for (name, cols) in [("sigmas/rho", 0..3), ("means", 3..5), ("features", 5..stride)] {
            let part = host.chunks_exact(stride).flat_map(|t| t[cols.clone()].iter().map(|&v| f64::from(v))).collect();
            out.0.push((format!("splat_backward {name} {desc:?}"), part, SPLAT_GRADIENT));
        }
    }
    out
}

/// Splat tolerances against the CPU: [`common::VULKAN_TOLERANCES`]'s splat forward and backward.
const SPLAT_FORWARD: f64 = common::VULKAN_TOLERANCES.splat.forward;
const SPLAT_GRADIENT: f64 = common::VULKAN_TOLERANCES.splat.backward;

#[test]
fn splat_ops_match_cpu_and_repeat_bit_for_bit() {
    let Some(vk) = vulkan() else { return };
    check("splat", splat_outputs(&CpuBackend::new()), splat_outputs(&vk), splat_outputs(&vk));
}

/// A batch of two copies of one image gives the same bits for both (the batch is one dispatch
/// chain: the images must not see each other's tiles or Gaussians).
#[test]
fn splat_batch_images_are_independent() {
    let Some(vk) = vulkan() else { return };
    let one = SplatDesc { batch: 1, gaussians: 200, channels: 5, height: 30, width: 41, kappa: 3.0 };
    let case = random_case(&mut TestRng::new(0x5c01_000a), one, &GaussianRanges::DEFAULT, None);
    let twice = |v: &[f32]| [v, v].concat();
    let desc = SplatDesc { batch: 2, ..one };
    let tokens = up(&vk, &twice(&case.tokens));
    let (mut out, mut grad) = (vk.zeros(desc.image_len()).unwrap(), vk.zeros(desc.tokens_len()).unwrap());
    vk.splat_forward(&desc, &tokens, &mut out).unwrap();
    vk.splat_backward(&desc, &tokens, &up(&vk, &twice(&case.grad_out)), &mut grad).unwrap();
    for (what, buffer, half) in [("forward", &out, one.image_len()), ("backward", &grad, one.tokens_len())] {
        let mut host = vec![0.0f32; 2 * half];
        vk.download(buffer, &mut host).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&host[..half]), bits(&host[half..]), "splat {what}: the two images of the batch differ");
    }
}

/// Gaussians the box test never draws (negative sigma, means far off the canvas), huge and
/// nearly degenerate ones, and NaN parameters (the box test then accepts every pixel, as in
/// gs.cu: NaN must reach the same outputs as on the CPU). Outputs start as garbage.
#[test]
fn splat_edge_cases_match_cpu() {
    let Some(vk) = vulkan() else { return };
    let desc = SplatDesc { batch: 2, gaussians: 6, channels: 2, height: 9, width: 11, kappa: 3.0 };
    #[rustfmt::skip]
    let gaussians: [[f32; 5]; 12] = [
        [-0.2, 0.3, 0.0, 0.0, 0.0], [0.1, 0.1, 0.0, 5.0, 0.0], [1e3, 1e3, 0.5, 0.1, 0.1],
        [0.3, 0.05, 0.99, -0.2, 0.3], [0.2, 0.2, -0.99, 0.9, -0.9], [1e-4, 1e-4, 0.0, 0.2, 0.25],
        [0.2, 0.2, 0.0, 0.0, 0.0], [0.1, 0.4, 0.3, 1.0, 1.0], [0.05, 0.3, 0.0, -1.0, 0.0],
        [0.3, 0.3, 0.2, 0.0, -1.3], [0.3, -0.3, 0.0, 0.0, 0.0], [0.25, 0.1, -0.5, -0.7, 0.6],
    ];
    let mut tokens: Vec<f32> =
        gaussians.iter().enumerate().flat_map(|(k, g)| g.iter().copied().chain([1.0 + k as f32, -0.5])).collect();
    let run = |tokens: &[f32]| {
        let (cpu, t) = (CpuBackend::new(), up(&vk, tokens));
        let grad_out: Vec<f32> = (0..desc.image_len()).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
        let mut out = up(&vk, &vec![f32::NAN; desc.image_len()]);
        vk.splat_forward(&desc, &t, &mut out).unwrap();
        let mut grad = up(&vk, &vec![f32::NAN; desc.tokens_len()]);
        vk.splat_backward(&desc, &t, &up(&vk, &grad_out), &mut grad).unwrap();
        let (mut want_out, mut want_grad) = (vec![0.0; desc.image_len()], vec![0.0; desc.tokens_len()]);
        cpu.splat_forward(&desc, &tokens.to_vec(), &mut want_out).unwrap();
        cpu.splat_backward(&desc, &tokens.to_vec(), &grad_out, &mut want_grad).unwrap();
        let (mut got_out, mut got_grad) = (vec![0.0; desc.image_len()], vec![0.0; desc.tokens_len()]);
        vk.download(&out, &mut got_out).unwrap();
        vk.download(&grad, &mut got_grad).unwrap();
        [(got_out, want_out), (got_grad, want_grad)]
    };
    for (what, (got, want)) in ["forward", "backward"].iter().zip(run(&tokens)) {
        let (got, want): (Vec<f64>, Vec<f64>) =
            got.iter().zip(&want).map(|(&g, &w)| (f64::from(g), f64::from(w))).unzip();
        let err = max_rel_error(&got, &want);
        println!("splat edge cases {what}: max_rel_error vs CPU {err:.2e}");
        assert!(err <= SPLAT_GRADIENT, "splat edge cases {what}: {err:.3e}");
    }
    // No Gaussians: zeros over the garbage. No channels, no images: nothing to do.
    let none = SplatDesc { gaussians: 0, ..desc };
    let mut out = up(&vk, &vec![f32::NAN; none.image_len()]);
    let empty = vk.zeros(0).unwrap();
    vk.splat_forward(&none, &empty, &mut out).unwrap();
    let mut host = vec![1.0f32; none.image_len()];
    vk.download(&out, &mut host).unwrap();
    assert!(host.iter().all(|&v| v == 0.0), "no Gaussians: the image is zero");
    vk.splat_backward(&none, &empty, &out, &mut vk.zeros(0).unwrap()).unwrap();
    let no_channels = SplatDesc { channels: 0, ..desc };
    let geometry_only = up(&vk, &vec![0.1; no_channels.tokens_len()]);
    vk.splat_forward(&no_channels, &geometry_only, &mut vk.zeros(0).unwrap()).unwrap();
    let mut grad = up(&vk, &vec![f32::NAN; no_channels.tokens_len()]);
    vk.splat_backward(&no_channels, &geometry_only, &empty, &mut grad).unwrap();
    let mut host = vec![1.0f32; no_channels.tokens_len()];
    vk.download(&grad, &mut host).unwrap();
    assert!(host.iter().all(|&v| v == 0.0), "no channels: no gradient");
    let no_images = SplatDesc { batch: 0, ..desc };
    vk.splat_forward(&no_images, &empty, &mut vk.zeros(0).unwrap()).unwrap();
    vk.splat_backward(&no_images, &empty, &empty, &mut vk.zeros(0).unwrap()).unwrap();
    // NaN sigma and NaN mean: the same values are NaN as on the CPU.
    tokens[0] = f32::NAN;
    tokens[7 * 9 + 4] = f32::NAN;
    for (what, (got, want)) in ["forward", "backward"].iter().zip(run(&tokens)) {
        let nan_differs = got.iter().zip(&want).filter(|(g, w)| g.is_nan() != w.is_nan()).count();
        assert!(want.iter().any(|w| w.is_nan()), "the NaN case draws no NaN");
        assert_eq!(nan_differs, 0, "splat NaN {what}: {nan_differs} values are NaN on one backend only");
    }
}

/// The GELU (erf) forward on a dense grid of [-10, 10] against the f64 reference: the error of
/// the shader's `erfc` fit as the model sees it (stated in the README).
#[test]
fn gelu_erf_error_on_a_dense_grid() {
    let Some(vk) = vulkan() else { return };
    let xs: Vec<f32> = (0..=200_000).map(|i| -10.0 + i as f32 * 1e-4).collect();
    let mut y = vk.zeros(xs.len()).unwrap();
    vk.activation_forward(Activation::GeluErf, &up(&vk, &xs), &mut y).unwrap();
    let mut got = vec![0.0f32; xs.len()];
    vk.download(&y, &mut got).unwrap();
    let (mut abs_err, mut rel_err) = (0.0f64, 0.0f64);
    for (&x, &g) in xs.iter().zip(&got) {
        let want = activation_f64(Activation::GeluErf, f64::from(x));
        let e = (f64::from(g) - want).abs();
        abs_err = abs_err.max(e);
        if want.abs() > 1e-30 {
            rel_err = rel_err.max(e / want.abs());
        }
    }
    println!("GELU erf on [-10, 10]: max absolute error {abs_err:.2e}, max relative error {rel_err:.2e}");
    assert!(abs_err < 1e-6, "GELU erf absolute error {abs_err:e}");
    assert!(rel_err < 1e-4, "GELU erf relative error {rel_err:e}");
}

/// A write after a read must wait for the read (WAR), a read after a write for the write (RAW).
#[test]
fn dependent_ops_see_each_others_results() {
    let Some(vk) = vulkan() else { return };
    let mut rng = TestRng::new(0x5c01_0005);
    let host = normal(&mut rng, 100_000, 1.0);
    let mut a = up(&vk, &host);
    let mut b = vk.zeros(host.len()).unwrap();
    vk.copy(&a, &mut b).unwrap(); // reads a
    vk.fill(&mut a, 7.0).unwrap(); // writes a (WAR)
    vk.add_assign(&mut b, &a).unwrap(); // reads a, writes b (RAW)
    vk.scale(&mut b, 2.0).unwrap(); // WAW
    let mut got = vec![0.0f32; host.len()];
    vk.download(&b, &mut got).unwrap();
    let bad = got.iter().zip(&host).filter(|(g, h)| **g != (**h + 7.0) * 2.0).count();
    assert_eq!(bad, 0, "{bad} values missed a dependency");
}

/// Norm ops on empty groups and rows (no pixel, no feature): the CPU's saved statistics (mean 0,
/// `1/sqrt(eps)` or std 0) and zero dgamma/dbeta.
fn norm_degenerate_outputs<B: NormOps>(b: &B) -> Outputs {
    let mut out = Outputs::default();
    for (kind, patches) in [(NormKind::Standard, 1), (NormKind::StdPlusEps, 1), (NormKind::StdPlusEps, 2)] {
        let d = GroupNormDesc { batch: 2, channels: 4, height: 0, width: 0, groups: 2, eps: 1e-6, kind, patches };
        let (x, gamma) = (b.zeros(0).unwrap(), up(b, &[1.0, 2.0, 3.0, 4.0]));
        let (mut y, mut stats) = (b.zeros(0).unwrap(), up(b, &vec![f32::NAN; d.stats_len()]));
        b.group_norm_forward(&d, &x, &gamma, &gamma, &mut y, &mut stats).unwrap();
        // 1/sqrt(eps) in f32 arithmetic, where the CPU rounds the f64 value once.
        out.values(b, &format!("empty group_norm {kind:?} np={patches} stats"), &stats, VULKAN.forward);
        let (mut dx, mut dgamma, mut dbeta) = (b.zeros(0).unwrap(), up(b, &[f32::NAN; 4]), up(b, &[f32::NAN; 4]));
        b.group_norm_backward(&d, &x, &gamma, &stats, &x, &mut dx, &mut dgamma, &mut dbeta).unwrap();
        out.values(b, &format!("empty group_norm {kind:?} np={patches} dgamma"), &dgamma, 0.0);
        out.values(b, &format!("empty group_norm {kind:?} np={patches} dbeta"), &dbeta, 0.0);
    }
    let d = LayerNormDesc { rows: 3, features: 0, eps: 1e-5 };
    let (mut y, mut stats) = (b.zeros(0).unwrap(), up(b, &[f32::NAN; 6]));
    b.layer_norm_forward(&d, &b.zeros(0).unwrap(), None, &mut y, &mut stats).unwrap();
    out.values(b, "empty layer_norm stats", &stats, VULKAN.forward);
    out
}

#[test]
fn norm_ops_on_empty_groups_match_cpu() {
    let Some(vk) = vulkan() else { return };
    check(
        "norm",
        norm_degenerate_outputs(&CpuBackend::new()),
        norm_degenerate_outputs(&vk),
        norm_degenerate_outputs(&vk),
    );
}

/// LayerNorm over more rows than one dispatch has workgroups (65 535 on most devices): the
/// workgroups stride over the rows.
fn layer_norm_many_rows_outputs<B: NormOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0007);
    let mut out = Outputs::default();
    let d = LayerNormDesc { rows: 70_000, features: 3, eps: 1e-5 };
    let n = d.rows * d.features;
    let (x, dy) = (up(b, &normal(&mut rng, n, 1.0)), up(b, &normal(&mut rng, n, 1.0)));
    let (gamma, beta) = (up(b, &normal(&mut rng, 3, 1.0)), up(b, &normal(&mut rng, 3, 1.0)));
    let (mut y, mut stats, mut dx) = (b.zeros(n).unwrap(), b.zeros(d.stats_len()).unwrap(), b.zeros(n).unwrap());
    b.layer_norm_forward(&d, &x, Some((&gamma, &beta)), &mut y, &mut stats).unwrap();
    let (mut dgamma, mut dbeta) = (b.zeros(3).unwrap(), b.zeros(3).unwrap());
    b.layer_norm_backward(&d, &x, Some(&gamma), &stats, &dy, &mut dx, Some((&mut dgamma, &mut dbeta))).unwrap();
    out.values(b, "layer_norm 70000 rows y", &y, VULKAN.forward);
    out.values(b, "layer_norm 70000 rows dx", &dx, VULKAN.gradient);
    out.values(b, "layer_norm 70000 rows dgamma", &dgamma, VULKAN.gradient);
    out.values(b, "layer_norm 70000 rows dbeta", &dbeta, VULKAN.gradient);
    out
}

#[test]
fn layer_norm_over_more_rows_than_workgroups_matches_cpu() {
    let Some(vk) = vulkan() else { return };
    let cpu = layer_norm_many_rows_outputs(&CpuBackend::new());
    check("norm", cpu, layer_norm_many_rows_outputs(&vk), layer_norm_many_rows_outputs(&vk));
}
