//! Every Vulkan op against `CpuBackend` on the same random inputs (the largest relative error
//! of each output is printed: `cargo test ... -- --nocapture`), and run twice on the Vulkan
//! backend: identical bits.
//!
//! Each family's ops are recorded back to back and downloaded at the end, so the recorder's
//! barriers between dependent ops are exercised too.

mod common;

use common::{vulkan, VULKAN};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_backend_vulkan::VulkanBackend;
use gpstoken_core::backend::SplatOps;
use gpstoken_core::backend::{
    Activation, AdamConfig, Buffers, Conv2dDesc, ConvOps, EmbeddingDesc, LinearDesc, LinearOps, LossOps, ModulateDesc,
    OptimOps, PatchDesc, TensorOps, TransposeDesc, UpsampleDesc,
};
use gpstoken_core::backend::{AttentionDesc, AttentionOps, GaussianOps, GroupNormDesc, LayerNormDesc, MergeDesc, NormKind, NormOps, ReparamDesc, RoiAlignDesc, RoiOps};
use gpstoken_core::render::SplatDesc;
use gpstoken_tests::conformance::splat::{GaussianRanges, random_case};
use gpstoken_tests::conformance::roi::{roi_case, roi_descs};
use gpstoken_tests::conformance::tensor::{activation_f64, ACTIVATIONS};
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

    fn scalar(&mut self, name: &str, value: f64, tol: f64) {
        self.0.push((name.to_string(), vec![value], tol));
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

fn tensor_outputs<B: TensorOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0001);
    let (f, g) = (VULKAN.forward, VULKAN.gradient);
    let mut out = Outputs::default();
    let n = 10_001;
    let (x, y) = (up(b, &normal(&mut rng, n, 1.0)), up(b, &normal(&mut rng, n, 1.0)));
    let mut t = b.zeros(n).unwrap();
    b.copy(&x, &mut t).unwrap();
    out.values(b, "copy", &t, 0.0);
    b.add(&x, &y, &mut t).unwrap();
    b.scale(&mut t, -0.75).unwrap();
    b.add_assign(&mut t, &x).unwrap();
    b.axpy(0.3, &y, &mut t).unwrap();
    out.values(b, "add, scale, add_assign, axpy", &t, f);
    b.fill(&mut t, 1.25).unwrap();
    out.values(b, "fill", &t, 0.0);

    let (rows, cols) = (1030, 70);
    let mut m = up(b, &normal(&mut rng, rows * cols, 1.0));
    b.add_row_broadcast(rows, cols, &mut m, &up(b, &normal(&mut rng, cols, 1.0))).unwrap();
    out.values(b, "add_row_broadcast", &m, f);
    let mut sums = b.zeros(cols).unwrap();
    b.sum_rows(rows, cols, &m, &mut sums).unwrap();
    out.values(b, "sum_rows", &sums, g);

    let xs: Vec<f32> = (0..4096).map(|i| -8.0 + 16.0 * i as f32 / 4095.0).collect();
    let (xa, dy) = (up(b, &xs), up(b, &normal(&mut rng, xs.len(), 1.0)));
    for kind in ACTIVATIONS {
        let (mut ya, mut dx) = (b.zeros(xs.len()).unwrap(), b.zeros(xs.len()).unwrap());
        b.activation_forward(kind, &xa, &mut ya).unwrap();
        b.activation_backward(kind, &xa, &dy, &mut dx).unwrap();
        out.values(b, &format!("{kind:?} forward"), &ya, f);
        out.values(b, &format!("{kind:?} backward"), &dx, g);
    }

    let td = TransposeDesc { batch: 3, rows: 37, cols: 70 };
    let mut tr = b.zeros(td.len()).unwrap();
    b.transpose(&td, &up(b, &normal(&mut rng, td.len(), 1.0)), &mut tr).unwrap();
    out.values(b, "transpose", &tr, 0.0);
    let (r, ac, bc) = (300, 5, 70);
    let mut cat = b.zeros(r * (ac + bc)).unwrap();
    b.concat_cols(r, ac, bc, &up(b, &normal(&mut rng, r * ac, 1.0)), &up(b, &normal(&mut rng, r * bc, 1.0)), &mut cat)
        .unwrap();
    out.values(b, "concat_cols", &cat, 0.0);
    let (mut sa, mut sb) = (b.zeros(r * bc).unwrap(), b.zeros(r * ac).unwrap());
    b.split_cols(r, bc, ac, &cat, &mut sa, &mut sb).unwrap();
    out.values(b, "split_cols first", &sa, 0.0);
    out.values(b, "split_cols second", &sb, 0.0);
    let pd = PatchDesc { batch: 2, channels: 3, patches: 3, tile_height: 5, tile_width: 4 };
    let (mut tiles, mut back) = (b.zeros(pd.len()).unwrap(), b.zeros(pd.len()).unwrap());
    b.patchify(&pd, &up(b, &normal(&mut rng, pd.len(), 1.0)), &mut tiles).unwrap();
    b.unpatchify(&pd, &up(b, &normal(&mut rng, pd.len(), 1.0)), &mut back).unwrap();
    out.values(b, "patchify", &tiles, 0.0);
    out.values(b, "unpatchify", &back, 0.0);

    let md = ModulateDesc { batch: 3, tokens: 200, dim: 70 };
    let tokens = |rng: &mut TestRng| up(b, &normal(rng, md.len(), 1.0));
    let vector = |rng: &mut TestRng| up(b, &normal(rng, md.vector_len(), 0.5));
    let (xm, fm, dym, shift, scale, gate) =
        (tokens(&mut rng), tokens(&mut rng), tokens(&mut rng), vector(&mut rng), vector(&mut rng), vector(&mut rng));
    let mut ym = b.zeros(md.len()).unwrap();
    b.modulate_forward(&md, &xm, &shift, &scale, &mut ym).unwrap();
    out.values(b, "modulate_forward", &ym, f);
    let (mut dxm, mut dshift, mut dscale) =
        (b.zeros(md.len()).unwrap(), b.zeros(md.vector_len()).unwrap(), b.zeros(md.vector_len()).unwrap());
    b.modulate_backward(&md, &xm, &scale, &dym, &mut dxm, &mut dshift, &mut dscale).unwrap();
    out.values(b, "modulate_backward dx", &dxm, g);
    out.values(b, "modulate_backward dshift", &dshift, g);
    out.values(b, "modulate_backward dscale", &dscale, g);
    b.gated_add_forward(&md, &gate, &fm, &mut ym).unwrap();
    out.values(b, "gated_add_forward", &ym, f);
    let (mut dgate, mut df) = (b.zeros(md.vector_len()).unwrap(), b.zeros(md.len()).unwrap());
    b.gated_add_backward(&md, &gate, &fm, &dym, &mut dgate, &mut df).unwrap();
    out.values(b, "gated_add_backward dgate", &dgate, g);
    out.values(b, "gated_add_backward df", &df, g);
    out
}

fn loss_outputs<B: LossOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0002);
    let (f, g) = (VULKAN.forward, VULKAN.gradient);
    let mut out = Outputs::default();
    let n = 50_000;
    let (p, t) = (up(b, &normal(&mut rng, n, 1.0)), up(b, &normal(&mut rng, n, 1.0)));
    let mut grad = b.zeros(n).unwrap();
    let value = b.mse_loss(&p, &t, Some(&mut grad)).unwrap();
    out.scalar("mse", value, f);
    out.values(b, "mse gradient", &grad, g);
    let value = b.l1_loss(&p, &t, Some(&mut grad)).unwrap();
    out.scalar("l1", value, f);
    out.values(b, "l1 gradient", &grad, g);
    let value = b.mean_loss(&p, Some(&mut grad)).unwrap();
    out.scalar("mean", value, f);
    out.values(b, "mean gradient", &grad, g);
    for real in [true, false] {
        let value = b.hinge_loss(&p, real, Some(&mut grad)).unwrap();
        out.scalar(&format!("hinge real={real}"), value, f);
        out.values(b, &format!("hinge real={real} gradient"), &grad, g);
    }
    out
}

fn optim_outputs<B: OptimOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0003);
    let mut out = Outputs::default();
    let n = 10_000;
    for (i, config) in
        [AdamConfig::official(0.05), AdamConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 }]
            .iter()
            .enumerate()
    {
        let (mut p, mut m, mut v) = (up(b, &normal(&mut rng, n, 1.0)), b.zeros(n).unwrap(), b.zeros(n).unwrap());
        for step in 1..=3 {
            b.adam_step(config, step, &mut p, &up(b, &normal(&mut rng, n, 1.0)), &mut m, &mut v).unwrap();
        }
        out.values(b, &format!("adam config {i} param"), &p, VULKAN.forward);
        out.values(b, &format!("adam config {i} m"), &m, VULKAN.forward);
        out.values(b, &format!("adam config {i} v"), &v, VULKAN.forward);
    }
    let mut ema = up(b, &normal(&mut rng, n, 1.0));
    for decay in [0.999f32, 0.5, 0.0] {
        b.ema_update(decay, &mut ema, &up(b, &normal(&mut rng, n, 1.0))).unwrap();
    }
    out.values(b, "ema", &ema, VULKAN.forward);
    out
}

fn linear_outputs<B: LinearOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0004);
    let (f, g) = (VULKAN.forward, VULKAN.gradient);
    let mut out = Outputs::default();
    for d in [
        LinearDesc { rows: 70, in_features: 90, out_features: 50 },
        LinearDesc { rows: 300, in_features: 3, out_features: 17 },
        // Large enough for the register-blocked GEMM (4 x 4 values per invocation), ragged edges.
        LinearDesc { rows: 130, in_features: 70, out_features: 97 },
    ] {
        let x = up(b, &normal(&mut rng, d.rows * d.in_features, 1.0));
        let w = up(b, &normal(&mut rng, d.out_features * d.in_features, 0.3));
        let bias = up(b, &normal(&mut rng, d.out_features, 1.0));
        let dy = up(b, &normal(&mut rng, d.rows * d.out_features, 1.0));
        let mut y = b.zeros(d.rows * d.out_features).unwrap();
        b.linear_forward(&d, &x, &w, Some(&bias), &mut y).unwrap();
        out.values(b, &format!("linear forward {d:?}"), &y, f);
        let (mut dx, mut dw, mut db) =
            (b.zeros(d.rows * d.in_features).unwrap(), b.zeros(b.len(&w)).unwrap(), b.zeros(d.out_features).unwrap());
        b.linear_backward(&d, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).unwrap();
        out.values(b, &format!("linear dx {d:?}"), &dx, g);
        out.values(b, &format!("linear dW {d:?}"), &dw, g);
        out.values(b, &format!("linear db {d:?}"), &db, g);
    }
    let e = EmbeddingDesc { rows: 300, vocab: 101, dim: 16 };
    let indices: Vec<u32> = (0..e.rows).map(|_| (rng.next_u64() % e.vocab as u64) as u32).collect();
    let mut rows_out = b.zeros(e.rows * e.dim).unwrap();
    b.embedding_forward(&e, &up(b, &normal(&mut rng, e.vocab * e.dim, 1.0)), &indices, &mut rows_out).unwrap();
    out.values(b, "embedding forward", &rows_out, 0.0);
    let mut dtable = b.zeros(e.vocab * e.dim).unwrap();
    b.embedding_backward(&e, &indices, &up(b, &normal(&mut rng, e.rows * e.dim, 1.0)), &mut dtable).unwrap();
    out.values(b, "embedding backward", &dtable, g);
    out
}

fn conv_outputs<B: ConvOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0006);
    let (f, g) = (VULKAN.forward, VULKAN.gradient);
    let mut out = Outputs::default();
    let strided = Conv2dDesc {
        batch: 2,
        in_channels: 5,
        out_channels: 7,
        height: 11,
        width: 9,
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    // The last one uses the register-blocked GEMM for the forward, dx and dW.
    let wide = Conv2dDesc::same(2, 66, 70, 9, 9, 3);
    for d in [Conv2dDesc::same(2, 6, 20, 12, 10, 3), strided, Conv2dDesc::same(1, 9, 4, 8, 8, 1), wide] {
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
    }
    let u = UpsampleDesc { batch: 2, channels: 3, height: 7, width: 5 };
    let n = u.batch * u.channels * u.height * u.width;
    let (mut y, mut dx) = (b.zeros(4 * n).unwrap(), b.zeros(n).unwrap());
    b.upsample_nearest2x_forward(&u, &up(b, &normal(&mut rng, n, 1.0)), &mut y).unwrap();
    b.upsample_nearest2x_backward(&u, &up(b, &normal(&mut rng, 4 * n, 1.0)), &mut dx).unwrap();
    out.values(b, "upsample forward", &y, 0.0);
    out.values(b, "upsample backward", &dx, 0.0);
    out
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

fn attention_outputs<B: AttentionOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0007);
    let (f, g) = (VULKAN.forward, VULKAN.gradient);
    let mut out = Outputs::default();
    for (batch, heads, seq_q, seq_k, head_dim) in
        [(2, 1, 70, 50, 16), (1, 8, 33, 17, 8), (1, 2, 20, 300, 8), (2, 2, 5, 1, 4), (1, 2, 0, 3, 4), (1, 1, 3, 4, 0)]
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

/// Outputs that started as NaN were all written (`max_rel_error` skips NaN).
fn assert_all_written<B: Buffers>(backend: &B, out: &Outputs) {
    for (name, values, _) in &out.0 {
        let unwritten = values.iter().filter(|v| v.is_nan()).count();
        assert_eq!(unwritten, 0, "{} {name}: {unwritten} values left NaN", backend.name());
    }
}

fn roi_outputs<B: RoiOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0008);
    let (f, g) = (VULKAN.forward, VULKAN.gradient);
    let mut out = Outputs::default();
    // The conformance suite's shapes (every box kind; adaptive and fixed sampling, scales 1 and
    // 0.5, aligned or not) and a larger map with many boxes per image.
    let larger = RoiAlignDesc { batch: 2, channels: 4, height: 32, width: 32, rois: 42, pooled: 8, ..roi_descs()[0] };
    for d in roi_descs().into_iter().chain([larger]) {
        let case = roi_case(&mut rng, d);
        let (features, boxes, dout) = (up(b, &case.features), up(b, &case.boxes), up(b, &case.dout));
        // Outputs start as NaN: every value must be written.
        let (mut y, mut dfeatures) = (up(b, &vec![f32::NAN; d.out_len()]), up(b, &vec![f32::NAN; d.features_len()]));
        b.roi_align_forward(&d, &features, &boxes, &mut y).unwrap();
        b.roi_align_backward(&d, &boxes, &dout, &mut dfeatures).unwrap();
        let shape = format!(
            "{}x{} P={} scale={} sampling={} aligned={}",
            d.height, d.width, d.pooled, d.spatial_scale, d.sampling_ratio, d.aligned
        );
        out.values(b, &format!("forward {shape}"), &y, f);
        out.values(b, &format!("dfeatures {shape}"), &dfeatures, g);
    }
    // Edge cases: an empty map (every sample outside: zeros) and no boxes (a zero gradient).
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

/// Runs a family's ops on the CPU and twice on Vulkan (the same function, instantiated for each).
fn compare(family: &str, on_cpu: fn(&CpuBackend) -> Outputs, on_vulkan: fn(&VulkanBackend) -> Outputs) {
    let Some(vk) = vulkan() else { return };
    check(family, on_cpu(&CpuBackend::new()), on_vulkan(&vk), on_vulkan(&vk));
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

/// Splat tolerances (as `tests/conformance.rs`): the forward adds the CPU's f32 terms in the
/// CPU's order (only `exp` differs); the backward sums f32 terms where the CPU sums f64.
const SPLAT_FORWARD: f64 = 1e-5;
const SPLAT_GRADIENT: f64 = 2e-5;

#[test]
fn splat_ops_match_cpu_and_repeat_bit_for_bit() {
    let Some(vk) = vulkan() else { return };
    check("splat", splat_outputs(&CpuBackend::new()), splat_outputs(&vk), splat_outputs(&vk));
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

#[test]
fn tensor_ops_match_cpu_and_repeat_bit_for_bit() {
    compare("tensor", tensor_outputs, tensor_outputs);
}

#[test]
fn loss_ops_match_cpu_and_repeat_bit_for_bit() {
    compare("loss", loss_outputs, loss_outputs);
}

#[test]
fn optim_ops_match_cpu_and_repeat_bit_for_bit() {
    compare("optim", optim_outputs, optim_outputs);
}

#[test]
fn linear_ops_match_cpu_and_repeat_bit_for_bit() {
    compare("linear", linear_outputs, linear_outputs);
}

#[test]
fn conv_ops_match_cpu_and_repeat_bit_for_bit() {
    compare("conv", conv_outputs, conv_outputs);
}

#[test]
fn long_recordings_span_batches_and_match_cpu() {
    compare("long recording", long_recording_outputs, long_recording_outputs);
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

fn gaussian_outputs<B: GaussianOps>(b: &B) -> Outputs {
    let mut rng = TestRng::new(0x5c01_0006);
    let (f, g) = (VULKAN.forward, VULKAN.gradient);
    let mut out = Outputs::default();
    let d = ReparamDesc { rows: 1000, channels: 7 };
    // Valid initial Gaussians: σ in (0.05, 0.95), ρ, x, y in (-0.9, 0.9).
    let g_init: Vec<f32> = (0..d.rows * 5)
        .map(|i| if i % 5 < 2 { rng.uniform(0.05, 0.95) } else { rng.uniform(-0.9, 0.9) } as f32)
        .collect();
    let (g_init, delta) = (up(b, &g_init), up(b, &normal(&mut rng, d.rows * 5, 0.5)));
    let features = up(b, &normal(&mut rng, d.rows * d.channels, 1.0));
    let mut tokens = b.zeros(d.rows * (5 + d.channels)).unwrap();
    b.gaussian_reparam_forward(&d, &g_init, &delta, &features, &mut tokens).unwrap();
    out.values(b, "reparam forward", &tokens, f);
    let dtokens = up(b, &normal(&mut rng, d.rows * (5 + d.channels), 1.0));
    let (mut ddelta, mut dfeatures, mut dg) =
        (b.zeros(d.rows * 5).unwrap(), b.zeros(d.rows * d.channels).unwrap(), b.zeros(d.rows * 5).unwrap());
    b.gaussian_reparam_backward(&d, &g_init, &delta, &dtokens, &mut ddelta, &mut dfeatures, Some(&mut dg)).unwrap();
    out.values(b, "reparam ddelta", &ddelta, g);
    out.values(b, "reparam dfeatures", &dfeatures, 0.0);
    out.values(b, "reparam dg_init", &dg, g);
    let m = MergeDesc { batch: 2, patches: 3, tokens_per_patch: 11, channels: 4 };
    let mut merged = b.zeros(m.len()).unwrap();
    b.merge_patches_forward(&m, &up(b, &normal(&mut rng, m.len(), 0.5)), &mut merged).unwrap();
    out.values(b, "merge forward", &merged, f);
    let mut dmerge = b.zeros(m.len()).unwrap();
    b.merge_patches_backward(&m, &up(b, &normal(&mut rng, m.len(), 1.0)), &mut dmerge).unwrap();
    out.values(b, "merge backward", &dmerge, g);
    out
}

#[test]
fn gaussian_ops_match_cpu_and_repeat_bit_for_bit() {
    let Some(vk) = vulkan() else { return };
    check("gaussian", gaussian_outputs(&CpuBackend::new()), gaussian_outputs(&vk), gaussian_outputs(&vk));
}

/// Every norm op (GroupNorm both kinds with np = 1, 2, 4; LayerNorm with and without affine;
/// BatchNorm with running statistics) on the conformance suite's determinism shapes: f32 sums
/// against the CPU's f64 ones.
#[test]
fn norm_ops_match_cpu_and_repeat_bit_for_bit() {
    use gpstoken_tests::conformance::norm::norm_determinism_outputs;
    let Some(vk) = vulkan() else { return };
    let outputs = |named: Vec<(String, Vec<f32>)>| {
        Outputs(
            named
                .into_iter()
                .map(|(name, v)| (name, v.iter().map(|&v| f64::from(v)).collect(), VULKAN.gradient))
                .collect(),
        )
    };
    let cpu = outputs(norm_determinism_outputs(&CpuBackend::new()));
    check("norm", cpu, outputs(norm_determinism_outputs(&vk)), outputs(norm_determinism_outputs(&vk)));
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

#[test]
fn attention_ops_match_cpu_and_repeat_bit_for_bit() {
    compare("attention", attention_outputs, attention_outputs);
}

#[test]
fn roi_ops_match_cpu_and_repeat_bit_for_bit() {
    compare("roi", roi_outputs, roi_outputs);
}

/// The conformance suites' determinism shapes (several 64-row and 64-key blocks, 8 heads; 42
/// boxes on 16 channels of 32x32) against the CPU, and twice on Vulkan: same bits.
#[test]
fn attention_and_roi_determinism_shapes_match_cpu_and_repeat_bit_for_bit() {
    use gpstoken_tests::conformance::{attention::attention_determinism_outputs, roi::roi_determinism_outputs};
    fn outputs<B: AttentionOps + RoiOps>(b: &B) -> Outputs {
        let named = attention_determinism_outputs(b).into_iter().chain(roi_determinism_outputs(b));
        let tol = |name: &str| if name.contains(" d") { VULKAN.gradient } else { VULKAN.forward };
        Outputs(named.map(|(name, v)| (name.clone(), v.iter().map(|&x| f64::from(x)).collect(), tol(&name))).collect())
    }
    compare("determinism shapes", outputs, outputs);
}
