//! The cross-backend check (in the spirit of llama.cpp's `test-backend-ops`): every op of every
//! family, forward and backward, on the backend under test and on the reference
//! `CpuBackend::with_threads(1)`, from the same seeded random inputs.
//!
//! Each output states its tolerance here, next to the op (relative to the reference tensor's
//! largest magnitude, `max_rel_error`), as the spread an f32 device kernel may show: 0 for pure
//! copies and single roundings of the same f32 operation, more for transcendental functions and
//! for sums in another order. A backend's [`super::Tolerances::cross`] scales them; 0 (the CPU's)
//! demands the reference's exact bits, which is how the CPU proves its results do not depend on
//! the thread count.

use super::common::{download, normal_vec, upload};
use super::{attention, norm, roi, splat, tensor};
use crate::{max_rel_error, TestRng};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{
    AdamConfig, AttentionOps, Backend, Buffers, Conv2dDesc, ConvOps, EmaTensor, EmbeddingDesc, GaussianOps, LinearDesc,
    LinearOps, LossOps, MergeDesc, ModulateDesc, NormOps, OptimOps, PatchDesc, ReparamDesc, RoiOps, SplatOps,
    TensorOps, TransposeDesc, UpsampleDesc,
};
use gpstoken_core::render::SplatDesc;

/// Pure data movement and single f32 operations: the same on every backend. (A product followed
/// by a sum may be contracted to an FMA on a device: those outputs get [`FEW_ROUNDINGS`].)
const EXACT: f64 = 0.0;
/// A few roundings apart: transcendental functions (another `exp`/`erf`/`sqrt`), or a handful of
/// terms added in another order.
const FEW_ROUNDINGS: f64 = 1e-6;
/// Sums and products over many terms in another order (GEMMs, reductions, statistics).
const SUMS: f64 = 1e-5;

/// The outputs of one family's ops: `(name, values, tolerance)`.
type Outputs = Vec<(String, Vec<f32>, f64)>;

/// Collects the outputs of one backend's run.
struct Run<'a, B: Buffers> {
    backend: &'a B,
    rng: TestRng,
    outputs: Outputs,
}

impl<'a, B: Buffers> Run<'a, B> {
    fn new(backend: &'a B, seed: u64) -> Self {
        Run { backend, rng: TestRng::new(seed), outputs: Vec::new() }
    }
    /// A buffer of `n` standard normal values (the same on every backend for the same seed).
    fn random(&mut self, n: usize) -> B::Buffer {
        let host = normal_vec(&mut self.rng, n, 1.0);
        upload(self.backend, &host)
    }
    fn zeros(&self, n: usize) -> B::Buffer {
        self.backend.zeros(n).expect("zeros")
    }
    fn keep(&mut self, name: &str, buffer: &B::Buffer, tol: f64) {
        self.outputs.push((name.to_string(), download(self.backend, buffer), tol));
    }
}

/// The reference every backend is compared with.
fn reference() -> CpuBackend {
    CpuBackend::with_threads(1).expect("one-thread pool")
}

/// Compares one backend's outputs with the reference's, each within `scale` times its
/// tolerance (`scale == 0`: identical bits).
fn compare(family: &str, actual: Outputs, reference: Outputs, scale: f64) {
    assert_eq!(actual.len(), reference.len(), "{family}: output count");
    let mut failures = Vec::new();
    for ((name, a, tol), (_, r, _)) in actual.iter().zip(&reference) {
        assert_eq!(a.len(), r.len(), "{family} {name}: length");
        assert!(r.iter().all(|v| v.is_finite()), "{family} {name}: non-finite reference");
        if scale == 0.0 {
            if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != r[i].to_bits()) {
                failures.push(format!("{name}: value {i} is {} but the reference has {}", a[i], r[i]));
            }
            continue;
        }
        let to64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let err = max_rel_error(&to64(a), &to64(r));
        eprintln!("{family} {name}: max_rel_error {err:.2e} (tolerance {:.1e})", tol * scale);
        if err.is_nan() || err > tol * scale {
            failures.push(format!("{name}: max_rel_error {err:.3e} > {:.1e}", tol * scale));
        }
    }
    assert!(failures.is_empty(), "{family} differs from the reference CPU backend:\n{}", failures.join("\n"));
}

/// Runs `outputs` on `backend` and on the reference and compares them.
fn check<B: Buffers>(
    family: &str,
    backend: &B,
    scale: f64,
    outputs: fn(&B) -> Outputs,
    reference: fn(&CpuBackend) -> Outputs,
) {
    compare(family, outputs(backend), reference(&self::reference()), scale);
}

fn tensor_outputs<B: TensorOps>(b: &B) -> Outputs {
    let mut run = Run::new(b, 0xc805_0001);
    let (rows, cols) = (300, 70);
    let n = rows * cols;
    let (x, y) = (run.random(n), run.random(n));
    let mut out = run.zeros(n);
    b.copy(&x, &mut out).unwrap();
    run.keep("copy", &out, EXACT);
    b.fill(&mut out, 0.25).unwrap();
    run.keep("fill", &out, EXACT);
    b.copy(&x, &mut out).unwrap();
    b.scale(&mut out, -1.5).unwrap();
    run.keep("scale", &out, EXACT);
    b.add(&x, &y, &mut out).unwrap();
    run.keep("add", &out, EXACT);
    b.add_assign(&mut out, &x).unwrap();
    run.keep("add_assign", &out, EXACT);
    b.axpy(0.75, &y, &mut out).unwrap();
    run.keep("axpy", &out, FEW_ROUNDINGS);
    let row = run.random(cols);
    b.add_row_broadcast(rows, cols, &mut out, &row).unwrap();
    run.keep("add_row_broadcast", &out, EXACT);
    let mut sums = run.zeros(cols);
    b.sum_rows(rows, cols, &x, &mut sums).unwrap();
    run.keep("sum_rows", &sums, SUMS);
    for kind in tensor::ACTIVATIONS {
        b.activation_forward(kind, &x, &mut out).unwrap();
        run.keep(&format!("activation_forward {kind:?}"), &out, FEW_ROUNDINGS);
        b.activation_backward(kind, &x, &y, &mut out).unwrap();
        run.keep(&format!("activation_backward {kind:?}"), &out, FEW_ROUNDINGS);
    }
    b.transpose(&TransposeDesc { batch: 3, rows: 70, cols: 100 }, &x, &mut out).unwrap();
    run.keep("transpose", &out, EXACT);
    let (a_cols, b_cols) = (30, 40);
    let (a, c) = (run.random(rows * a_cols), run.random(rows * b_cols));
    b.concat_cols(rows, a_cols, b_cols, &a, &c, &mut out).unwrap();
    run.keep("concat_cols", &out, EXACT);
    let (mut sa, mut sb) = (run.zeros(rows * a_cols), run.zeros(rows * b_cols));
    b.split_cols(rows, a_cols, b_cols, &y, &mut sa, &mut sb).unwrap();
    run.keep("split_cols first", &sa, EXACT);
    run.keep("split_cols second", &sb, EXACT);
    let patch = PatchDesc { batch: 2, channels: 3, patches: 2, tile_height: 35, tile_width: 25 };
    b.patchify(&patch, &x, &mut out).unwrap();
    run.keep("patchify", &out, EXACT);
    b.unpatchify(&patch, &y, &mut out).unwrap();
    run.keep("unpatchify", &out, EXACT);
    let m = ModulateDesc { batch: 3, tokens: 100, dim: 70 };
    let (shift, scale, gate) = (run.random(m.vector_len()), run.random(m.vector_len()), run.random(m.vector_len()));
    b.modulate_forward(&m, &x, &shift, &scale, &mut out).unwrap();
    run.keep("modulate_forward", &out, FEW_ROUNDINGS);
    let (mut dshift, mut dscale) = (run.zeros(m.vector_len()), run.zeros(m.vector_len()));
    b.modulate_backward(&m, &x, &scale, &y, &mut out, &mut dshift, &mut dscale).unwrap();
    run.keep("modulate_backward dx", &out, FEW_ROUNDINGS);
    run.keep("modulate_backward dshift", &dshift, SUMS);
    run.keep("modulate_backward dscale", &dscale, SUMS);
    b.copy(&x, &mut out).unwrap();
    b.gated_add_forward(&m, &gate, &y, &mut out).unwrap();
    run.keep("gated_add_forward", &out, FEW_ROUNDINGS);
    let mut dgate = run.zeros(m.vector_len());
    b.gated_add_backward(&m, &gate, &y, &x, &mut dgate, &mut out).unwrap();
    run.keep("gated_add_backward dgate", &dgate, SUMS);
    run.keep("gated_add_backward df", &out, FEW_ROUNDINGS);
    run.outputs
}

fn linear_outputs<B: LinearOps>(b: &B) -> Outputs {
    let mut run = Run::new(b, 0xc805_0002);
    let d = LinearDesc { rows: 200, in_features: 96, out_features: 130 };
    let (x, w, bias) =
        (run.random(d.rows * d.in_features), run.random(d.out_features * d.in_features), run.random(d.out_features));
    let mut y = run.zeros(d.rows * d.out_features);
    b.linear_forward(&d, &x, &w, Some(&bias), &mut y).unwrap();
    run.keep("linear_forward", &y, SUMS);
    let dy = run.random(d.rows * d.out_features);
    let (mut dx, mut dw, mut db) =
        (run.zeros(d.rows * d.in_features), run.zeros(d.out_features * d.in_features), run.zeros(d.out_features));
    b.linear_backward(&d, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).unwrap();
    run.keep("linear_backward dx", &dx, SUMS);
    run.keep("linear_backward dw", &dw, SUMS);
    run.keep("linear_backward dbias", &db, SUMS);
    let e = EmbeddingDesc { rows: 90, vocab: 40, dim: 33 };
    let indices: Vec<u32> = (0..e.rows).map(|_| (run.rng.next_u64() % e.vocab as u64) as u32).collect();
    let table = run.random(e.vocab * e.dim);
    let mut rows = run.zeros(e.rows * e.dim);
    b.embedding_forward(&e, &table, &indices, &mut rows).unwrap();
    run.keep("embedding_forward", &rows, EXACT);
    let dout = run.random(e.rows * e.dim);
    let mut dtable = run.zeros(e.vocab * e.dim);
    b.embedding_backward(&e, &indices, &dout, &mut dtable).unwrap();
    run.keep("embedding_backward", &dtable, SUMS);
    run.outputs
}

fn conv_outputs<B: ConvOps>(b: &B) -> Outputs {
    let mut run = Run::new(b, 0xc805_0003);
    let strided = Conv2dDesc {
        batch: 2,
        in_channels: 12,
        out_channels: 20,
        height: 18,
        width: 14,
        kernel: 4,
        stride: 2,
        padding: 1,
    };
    for d in [Conv2dDesc::same(2, 16, 24, 20, 18, 3), Conv2dDesc::same(2, 24, 8, 12, 10, 1), strided] {
        let (x, w, bias) = (run.random(d.input_len()), run.random(d.weight_len()), run.random(d.out_channels));
        let mut y = run.zeros(d.output_len());
        b.conv2d_forward(&d, &x, &w, Some(&bias), &mut y).unwrap();
        let k = format!("conv2d k={} s={}", d.kernel, d.stride);
        run.keep(&format!("{k} forward"), &y, SUMS);
        let dy = run.random(d.output_len());
        let (mut dx, mut dw, mut db) = (run.zeros(d.input_len()), run.zeros(d.weight_len()), run.zeros(d.out_channels));
        b.conv2d_backward(&d, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).unwrap();
        run.keep(&format!("{k} dx"), &dx, SUMS);
        run.keep(&format!("{k} dw"), &dw, SUMS);
        run.keep(&format!("{k} dbias"), &db, SUMS);
    }
    let u = UpsampleDesc { batch: 2, channels: 5, height: 9, width: 7 };
    let n = u.batch * u.channels * u.height * u.width;
    let x = run.random(n);
    let mut y = run.zeros(4 * n);
    b.upsample_nearest2x_forward(&u, &x, &mut y).unwrap();
    run.keep("upsample_nearest2x_forward", &y, EXACT);
    let dy = run.random(4 * n);
    let mut dx = run.zeros(n);
    b.upsample_nearest2x_backward(&u, &dy, &mut dx).unwrap();
    run.keep("upsample_nearest2x_backward", &dx, FEW_ROUNDINGS);
    run.outputs
}

fn gaussian_outputs<B: GaussianOps>(b: &B) -> Outputs {
    let mut run = Run::new(b, 0xc805_0004);
    let d = ReparamDesc { rows: 150, channels: 6 };
    // Initial Gaussians inside the reparameterisation's domain: sigma in (0, 1), rho/x/y in (-1, 1).
    let g_init: Vec<f32> = (0..d.rows * 5)
        .map(|i| if i % 5 < 2 { run.rng.uniform(0.05, 0.9) as f32 } else { run.rng.uniform(-0.9, 0.9) as f32 })
        .collect();
    let g_init = upload(b, &g_init);
    let (delta, features) = (run.random(d.rows * 5), run.random(d.rows * d.channels));
    let mut tokens = run.zeros(d.rows * (5 + d.channels));
    b.gaussian_reparam_forward(&d, &g_init, &delta, &features, &mut tokens).unwrap();
    run.keep("gaussian_reparam_forward", &tokens, FEW_ROUNDINGS);
    let dtokens = run.random(d.rows * (5 + d.channels));
    let (mut ddelta, mut dfeatures, mut dg) =
        (run.zeros(d.rows * 5), run.zeros(d.rows * d.channels), run.zeros(d.rows * 5));
    b.gaussian_reparam_backward(&d, &g_init, &delta, &dtokens, &mut ddelta, &mut dfeatures, Some(&mut dg)).unwrap();
    run.keep("gaussian_reparam_backward ddelta", &ddelta, FEW_ROUNDINGS);
    run.keep("gaussian_reparam_backward dfeatures", &dfeatures, EXACT);
    run.keep("gaussian_reparam_backward dg_init", &dg, FEW_ROUNDINGS);
    let m = MergeDesc { batch: 2, patches: 3, tokens_per_patch: 10, channels: 4 };
    let (patches, dmerged) = (run.random(m.len()), run.random(m.len()));
    let mut merged = run.zeros(m.len());
    b.merge_patches_forward(&m, &patches, &mut merged).unwrap();
    run.keep("merge_patches_forward", &merged, EXACT);
    b.merge_patches_backward(&m, &dmerged, &mut merged).unwrap();
    run.keep("merge_patches_backward", &merged, EXACT);
    run.outputs
}

fn loss_outputs<B: LossOps>(b: &B) -> Outputs {
    let mut run = Run::new(b, 0xc805_0005);
    let n = 20_000;
    let (p, t) = (run.random(n), run.random(n));
    let (mut grad, mut loss) = (run.zeros(n), run.zeros(1));
    b.mse_loss_into(&p, &t, Some(&mut grad), &mut loss).unwrap();
    run.keep("mse_loss value", &loss, SUMS);
    run.keep("mse_loss gradient", &grad, EXACT);
    b.l1_loss_into(&p, &t, Some(&mut grad), &mut loss).unwrap();
    run.keep("l1_loss value", &loss, SUMS);
    run.keep("l1_loss gradient", &grad, EXACT);
    b.mean_loss_into(&p, Some(&mut grad), &mut loss).unwrap();
    run.keep("mean_loss value", &loss, SUMS);
    run.keep("mean_loss gradient", &grad, EXACT);
    for real in [true, false] {
        b.hinge_loss_into(&p, real, Some(&mut grad), &mut loss).unwrap();
        run.keep(&format!("hinge_loss real={real} value"), &loss, SUMS);
        run.keep(&format!("hinge_loss real={real} gradient"), &grad, EXACT);
    }
    run.outputs
}

fn optim_outputs<B: OptimOps>(b: &B) -> Outputs {
    let mut run = Run::new(b, 0xc805_0006);
    let n = 5000;
    let (mut param, grad) = (run.random(n), run.random(n));
    let (mut m, mut v) = (run.zeros(n), run.zeros(n));
    let config = AdamConfig { weight_decay: 0.01, ..AdamConfig::official(1e-3) };
    for step in 1..=3 {
        b.adam_step(&config, step, &mut param, &grad, &mut m, &mut v).unwrap();
    }
    run.keep("adam_step param", &param, FEW_ROUNDINGS);
    run.keep("adam_step m", &m, FEW_ROUNDINGS);
    run.keep("adam_step v", &v, FEW_ROUNDINGS);
    let mut ema = run.random(n);
    b.ema_update(0.999, &mut ema, &param).unwrap();
    run.keep("ema_update", &ema, FEW_ROUNDINGS);
    // The multi-tensor ops on tensors of several lengths (an empty one, one past a CPU chunk).
    let lengths = [1, 3, 1000, 0, 20_001];
    let mut params: Vec<_> = lengths.iter().map(|&n| run.random(n)).collect();
    let grads: Vec<_> = lengths.iter().map(|&n| run.random(n)).collect();
    let mut ms: Vec<_> = lengths.iter().map(|&n| run.zeros(n)).collect();
    let mut vs: Vec<_> = lengths.iter().map(|&n| run.zeros(n)).collect();
    for step in 1..=3 {
        let mut tensors = super::optim::adam_tensors(&mut params, &grads, &mut ms, &mut vs);
        b.adam_step_many(&config, step, &mut tensors).unwrap();
    }
    let mut emas: Vec<_> = lengths.iter().map(|&n| run.random(n)).collect();
    let mut tensors: Vec<EmaTensor<'_, B::Buffer>> =
        emas.iter_mut().zip(&params).map(|(ema, param)| EmaTensor { ema, param }).collect();
    // Twice, as the Adam steps above run more than once: the same tensors again (the CUDA
    // backend launches on the table it kept from the first call).
    for _ in 0..2 {
        b.ema_update_many(0.999, &mut tensors).unwrap();
    }
    for (i, ((p, m), (v, e))) in params.iter().zip(&ms).zip(vs.iter().zip(&emas)).enumerate() {
        run.keep(&format!("adam_step_many tensor {i} param"), p, FEW_ROUNDINGS);
        run.keep(&format!("adam_step_many tensor {i} m"), m, FEW_ROUNDINGS);
        run.keep(&format!("adam_step_many tensor {i} v"), v, FEW_ROUNDINGS);
        run.keep(&format!("ema_update_many tensor {i}"), e, FEW_ROUNDINGS);
    }
    run.outputs
}

fn splat_outputs<B: SplatOps>(b: &B) -> Outputs {
    let desc = SplatDesc { batch: 2, gaussians: 60, channels: 4, height: 40, width: 36, kappa: 3.0 };
    let ranges = splat::GaussianRanges { sigma: (0.03, 0.3), ..splat::GaussianRanges::DEFAULT };
    // Box edges away from pixel centres: the f32 box test cannot flip on another device.
    let case = splat::random_case(&mut TestRng::new(0xc805_0007), desc, &ranges, Some(1e-3));
    let (out, grad) = (splat::backend_forward(b, &case), splat::backend_backward(b, &case));
    vec![("splat_forward".into(), out, SUMS), ("splat_backward".into(), grad, SUMS)]
}

/// Outputs computed by a family's existing determinism shapes, all within `tol`.
fn with_tolerance(outputs: Vec<(String, Vec<f32>)>, tol: f64) -> Outputs {
    outputs.into_iter().map(|(name, values)| (name, values, tol)).collect()
}

fn norm_outputs<B: NormOps>(b: &B) -> Outputs {
    with_tolerance(norm::norm_determinism_outputs(b), SUMS)
}

fn attention_outputs<B: AttentionOps>(b: &B) -> Outputs {
    with_tolerance(attention::attention_determinism_outputs(b), SUMS)
}

fn roi_outputs<B: RoiOps>(b: &B) -> Outputs {
    with_tolerance(roi::roi_determinism_outputs(b), SUMS)
}

/// [`TensorOps`] against the reference CPU backend.
pub fn tensor<B: TensorOps>(backend: &B, scale: f64) {
    check("tensor", backend, scale, tensor_outputs::<B>, tensor_outputs::<CpuBackend>);
}
/// [`LinearOps`] against the reference CPU backend.
pub fn linear<B: LinearOps>(backend: &B, scale: f64) {
    check("linear", backend, scale, linear_outputs::<B>, linear_outputs::<CpuBackend>);
}
/// [`ConvOps`] against the reference CPU backend.
pub fn conv<B: ConvOps>(backend: &B, scale: f64) {
    check("conv", backend, scale, conv_outputs::<B>, conv_outputs::<CpuBackend>);
}
/// [`NormOps`] against the reference CPU backend.
pub fn norm<B: NormOps>(backend: &B, scale: f64) {
    check("norm", backend, scale, norm_outputs::<B>, norm_outputs::<CpuBackend>);
}
/// [`AttentionOps`] against the reference CPU backend.
pub fn attention<B: AttentionOps>(backend: &B, scale: f64) {
    check("attention", backend, scale, attention_outputs::<B>, attention_outputs::<CpuBackend>);
}
/// [`RoiOps`] against the reference CPU backend.
pub fn roi<B: RoiOps>(backend: &B, scale: f64) {
    check("roi", backend, scale, roi_outputs::<B>, roi_outputs::<CpuBackend>);
}
/// [`SplatOps`] against the reference CPU backend.
pub fn splat<B: SplatOps>(backend: &B, scale: f64) {
    check("splat", backend, scale, splat_outputs::<B>, splat_outputs::<CpuBackend>);
}
/// [`GaussianOps`] against the reference CPU backend.
pub fn gaussian<B: GaussianOps>(backend: &B, scale: f64) {
    check("gaussian", backend, scale, gaussian_outputs::<B>, gaussian_outputs::<CpuBackend>);
}
/// [`LossOps`] against the reference CPU backend.
pub fn loss<B: LossOps>(backend: &B, scale: f64) {
    check("loss", backend, scale, loss_outputs::<B>, loss_outputs::<CpuBackend>);
}
/// [`OptimOps`] against the reference CPU backend.
pub fn optim<B: OptimOps>(backend: &B, scale: f64) {
    check("optim", backend, scale, optim_outputs::<B>, optim_outputs::<CpuBackend>);
}

/// The families of this check, by name (the arguments of [`same_bits_twice`]).
pub const FAMILIES: [&str; 10] =
    ["tensor", "linear", "conv", "norm", "attention", "roi", "splat", "gaussian", "loss", "optim"];

/// Runs one family's ops of this check (see [`FAMILIES`]) twice on `backend` and demands the
/// same bits: the run-to-run determinism every backend promises (fixed summation orders, no
/// float atomics). Not in [`conformance_suite!`](crate::conformance_suite): the CPU proves more
/// (the reference's bits for any thread count); a device backend's own tests call it.
pub fn same_bits_twice<B: Backend>(backend: &B, family: &str) {
    let outputs: fn(&B) -> Outputs = match family {
        "tensor" => tensor_outputs::<B>,
        "linear" => linear_outputs::<B>,
        "conv" => conv_outputs::<B>,
        "norm" => norm_outputs::<B>,
        "attention" => attention_outputs::<B>,
        "roi" => roi_outputs::<B>,
        "splat" => splat_outputs::<B>,
        "gaussian" => gaussian_outputs::<B>,
        "loss" => loss_outputs::<B>,
        "optim" => optim_outputs::<B>,
        _ => panic!("no family {family} in the cross-backend check"),
    };
    let (first, second) = (outputs(backend), outputs(backend));
    for ((name, a, _), (_, b, _)) in first.iter().zip(&second) {
        let differ = a.iter().zip(b).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{} {family} {name}: {differ} values differ between two runs", backend.name());
    }
}

#[cfg(test)]
mod tests {
    use super::compare;

    fn one(values: Vec<f32>, tol: f64) -> super::Outputs {
        vec![("op".to_string(), values, tol)]
    }

    #[test]
    fn identical_outputs_pass() {
        compare("t", one(vec![1.0, -2.0], 0.0), one(vec![1.0, -2.0], 0.0), 0.0);
        compare("t", one(vec![1.0, -2.0], 1e-6), one(vec![1.0, -2.0 + 1e-7], 1e-6), 1.0);
    }

    #[test]
    #[should_panic(expected = "differs from the reference CPU backend")]
    fn one_ulp_fails_when_bits_are_demanded() {
        compare("t", one(vec![1.0, f32::from_bits(2.0f32.to_bits() + 1)], 0.0), one(vec![1.0, 2.0], 0.0), 0.0);
    }

    #[test]
    #[should_panic(expected = "differs from the reference CPU backend")]
    fn an_error_above_the_tolerance_fails() {
        compare("t", one(vec![1.0, 2.001], 1e-5), one(vec![1.0, 2.0], 1e-5), 1.0);
    }
}
