//! Non-square patches and render sizes through the whole model (issue 11). A tiny config whose
//! every shape-dependent setting differs from the golden one: 48x32 (width x height) patches,
//! render 24x16, RoIAlign 4x4, kappa 2.5, ch_mult [1, 2] with one ResnetBlock per level. The
//! shape-dependent pieces inside the model (RoI box conversion per axis, RoIAlign on the
//! non-square feature map, the splat at the non-square render size, the multi-patch merge per
//! axis) are compared with f64 references written here from the spec; the whole model, single
//! patches and a merged 2x2 canvas, with central finite differences of its loss.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{Buffers, RoiAlignDesc};
use gpstoken_core::model::config::PREPROCESS_CHANNELS;
use gpstoken_core::model::{Activations, DecoderConfig, GpsConfig, GpsToken, ModelConfig};
use gpstoken_core::partition::{partition_patch, region_box, region_gaussian, PartitionParams, Region};
use gpstoken_core::render::{axis_range, merge_patches};
use gpstoken_tests::conformance::roi::roi_align_reference;
use gpstoken_tests::TestRng;

/// The tiny non-square config, `(height, width)` of a patch given.
fn config((h, w): (usize, usize)) -> ModelConfig {
    ModelConfig {
        name: "nonsquare".into(),
        gps: GpsConfig {
            rois: 4,
            gpsenc_n: 2,
            gpsenc_c: 32,
            gps_c: 4,
            gps_num: 12,
            gps_dmax: 2.5,
            gps_adaptive_w: 2.5,
            gps_rs: (h / 2, w / 2),
        },
        decoder: DecoderConfig {
            z_channels: 4,
            resolution: h,
            in_channels: 3,
            out_ch: 3,
            ch: 32,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![],
            dropout: 0.0,
        },
        image_hw: (h, w),
    }
}

/// `images` smooth random `[3, h, w]` images (CHW, concatenated) with Algorithm 1's g_init and
/// regions of every `(ph, pw)` patch of each, patches row-major (spec 3.6).
fn inputs(images: usize, (h, w): (usize, usize), (ph, pw): (usize, usize), n: usize, seed: u64) -> [Vec<f32>; 3] {
    let mut rng = TestRng::new(seed);
    let mut image = vec![0.0f32; images * 3 * h * w];
    let (mut g_init, mut regions) = (Vec::new(), Vec::new());
    for (b, img) in image.chunks_exact_mut(3 * h * w).enumerate() {
        let blobs: Vec<[f64; 6]> = (0..8).map(|_| core::array::from_fn(|_| rng.uniform(0.0, 1.0))).collect();
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
                    let mut v = 0.0;
                    for bl in &blobs {
                        let d2 = (fx - bl[0]).powi(2) + (fy - bl[1]).powi(2);
                        v += (bl[2 + c] - 0.5) * (-d2 / (0.01 + 0.03 * bl[5])).exp();
                    }
                    v += 0.05 * rng.uniform(-1.0, 1.0) * (b as f64 + 1.0);
                    img[(c * h + y) * w + x] = v.clamp(-1.0, 1.0) as f32;
                }
            }
        }
        for k in 0..(h / ph) * (w / pw) {
            let (y0, x0) = ((k / (w / pw)) * ph, (k % (w / pw)) * pw);
            let grey: Vec<f32> = (0..ph * pw)
                .map(|i| {
                    let at = (y0 + i / pw) * w + x0 + i % pw;
                    0.299 * img[at] + 0.587 * img[h * w + at] + 0.114 * img[2 * h * w + at]
                })
                .collect();
            let mut out = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; n];
            partition_patch(&grey, pw, ph, &PartitionParams::new(n), None, &mut out).unwrap();
            for r in &out {
                g_init.extend_from_slice(&region_gaussian(r, pw, ph));
                regions.extend_from_slice(&region_box(r, pw, ph));
            }
        }
    }
    [image, g_init, regions]
}

fn host(be: &CpuBackend, b: &Vec<f32>) -> Vec<f32> {
    let mut v = vec![0.0; be.len(b)];
    be.download(b, &mut v).unwrap();
    v
}

/// `max |a - ref| / max |ref|`.
fn rel_err(a: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(a.len(), reference.len());
    let scale = gpstoken_tests::nan_max(reference.iter().map(|v| v.abs())).max(1e-30);
    gpstoken_tests::nan_max(a.iter().zip(reference).map(|(a, r)| (f64::from(*a) - r).abs())) / scale
}

/// The splat of spec 2.1 in f64 on an `h x w` canvas: `tokens [B, S, 5+C]` to `[B, C, h, w]`.
/// The support box is tested in f32 as the official kernel does (so the same pixels count);
/// everything else is f64.
fn splat_f64(tokens: &[f32], batch: usize, channels: usize, (h, w): (usize, usize), kappa: f32) -> Vec<f64> {
    let stride = 5 + channels;
    let per_image = tokens.len() / batch / stride;
    let mut out = vec![0.0f64; batch * channels * h * w];
    for b in 0..batch {
        for t in tokens[b * per_image * stride..(b + 1) * per_image * stride].chunks_exact(stride) {
            let (sx, sy, rho, mx, my) = (t[0], t[1], t[2], t[3], t[4]);
            for i in 0..h {
                let yf = (2.0 * i as f64 / (h - 1) as f64 - 1.0) as f32;
                for j in 0..w {
                    let xf = (2.0 * j as f64 / (w - 1) as f64 - 1.0) as f32;
                    let (dxf, dyf) = (xf - mx, yf - my);
                    if dxf > kappa * sx || dxf < -kappa * sx || dyf > kappa * sy || dyf < -kappa * sy {
                        continue;
                    }
                    let (dx, dy) = (f64::from(xf) - f64::from(mx), f64::from(yf) - f64::from(my));
                    let (sx, sy, rho) = (f64::from(sx), f64::from(sy), f64::from(rho));
                    let q = dx * dx / (sx * sx) - 2.0 * rho * dx * dy / (sx * sy) + dy * dy / (sy * sy);
                    let v = (-q / (2.0 * (1.0 - rho * rho))).exp();
                    for c in 0..channels {
                        out[((b * channels + c) * h + i) * w + j] += v * f64::from(t[5 + c]);
                    }
                }
            }
        }
    }
    out
}

/// One batch of single non-square patches: every shape-dependent piece against its f64 reference.
fn single_patches_match_the_f64_references(hw: (usize, usize)) {
    let cfg = config(hw);
    let (h, w) = hw;
    let (n, e, r, c) = (cfg.gps.gps_num, cfg.gps.gpsenc_c, cfg.gps.rois, cfg.gps.gps_c);
    let be = CpuBackend::new();
    let mut m = GpsToken::new(&be, cfg.clone()).unwrap();
    m.init(&be, 7).unwrap();
    let batch = 2;
    let [image, g_init, regions] = inputs(batch, hw, hw, n, 21);
    let mut a = m.activations(&be, batch, 1).unwrap();
    m.forward(&be, &mut a, &image, &g_init, &regions).unwrap();
    assert_eq!(be.len(a.decoded()), batch * 3 * h * w);
    assert_eq!(be.len(a.rendered()), batch * c * (h / 2) * (w / 2));
    assert_eq!(be.len(a.x_preprocess()), batch * PREPROCESS_CHANNELS * h * w);

    // RoI boxes: x scaled by the width, y by the height: X = (W-1)(Xn+1)/2, Y = (H-1)(Yn+1)/2.
    let boxes = host(&be, a.roi_boxes());
    let mut want = Vec::new();
    for (k, reg) in regions.chunks_exact(4).enumerate() {
        want.push((k / n) as f64);
        for (i, &v) in reg.iter().enumerate() {
            let side = if i % 2 == 0 { w } else { h };
            want.push((side - 1) as f64 * (f64::from(v) + 1.0) / 2.0);
        }
    }
    let box_err = gpstoken_tests::nan_max(boxes.iter().zip(&want).map(|(a, b)| (f64::from(*a) - b).abs()));
    assert!(box_err <= 1e-4, "{h}x{w}: RoI boxes off by {box_err} pixels");
    // The last corner of a whole-patch region is the last pixel centre of each axis.
    let last = boxes.chunks_exact(5).fold((0.0f32, 0.0f32), |m, b| (m.0.max(b[3]), m.1.max(b[4])));
    assert_eq!(last, ((w - 1) as f32, (h - 1) as f32), "{h}x{w}: regions span the patch");

    // roi_conds = roialign_layer (1x1 conv) of RoIAlign(x_preprocess) on the h x w map, in f64.
    let xp: Vec<f64> = host(&be, a.x_preprocess()).iter().map(|&v| f64::from(v)).collect();
    let desc = RoiAlignDesc {
        batch,
        channels: PREPROCESS_CHANNELS,
        height: h,
        width: w,
        rois: batch * n,
        pooled: r,
        spatial_scale: 1.0,
        sampling_ratio: -1,
        aligned: true,
    };
    let rf = roi_align_reference(&desc, &xp, &boxes);
    let param = |name: &str| host(&be, m.params.value(m.params.find(name).unwrap()));
    let (wt, bias) = (param("roialign_layer.weight"), param("roialign_layer.bias"));
    let (pc, rr) = (PREPROCESS_CHANNELS, r * r);
    let mut rc = vec![0.0f64; batch * n * e * rr];
    for k in 0..batch * n {
        for o in 0..e {
            for p in 0..rr {
                let dot: f64 = (0..pc).map(|i| f64::from(wt[o * pc + i]) * rf[(k * pc + i) * rr + p]).sum();
                rc[(k * e + o) * rr + p] = dot + f64::from(bias[o]);
            }
        }
    }
    let rc_err = rel_err(&host(&be, a.roi_conds()), &rc);
    // The splat of the encoder's tokens at the non-square render size.
    let tokens = host(&be, a.tokens());
    let rendered = splat_f64(&tokens, batch, c, (h / 2, w / 2), cfg.gps.gps_dmax);
    let splat_err = rel_err(&host(&be, a.rendered()), &rendered);
    println!("{h}x{w}: roi boxes {box_err:.1e} px, roi_conds {rc_err:.1e}, rendered {splat_err:.1e}");
    assert!(rc_err <= 1e-5, "{h}x{w}: roi_conds differ from the f64 RoIAlign by {rc_err}");
    assert!(splat_err <= 1e-5, "{h}x{w}: rendered differs from the f64 splat by {splat_err}");
}

#[test]
fn wide_patches_match_the_f64_references() {
    single_patches_match_the_f64_references((32, 48));
}

#[test]
fn tall_patches_match_the_f64_references() {
    single_patches_match_the_f64_references((48, 32));
}

/// A 2x2 grid of 48x32 patches (one 96x64 image): each patch is encoded on its own, and the
/// merged render is the f64 splat of the tokens moved onto the canvas per axis (spec 2.4).
#[test]
fn merged_canvas_of_non_square_patches_matches_the_f64_merge_and_splat() {
    let (h, w) = (32, 48);
    let cfg = config((h, w));
    let (n, c) = (cfg.gps.gps_num, cfg.gps.gps_c);
    let be = CpuBackend::new();
    let mut m = GpsToken::new(&be, cfg.clone()).unwrap();
    m.init(&be, 9).unwrap();
    let [image, g_init, regions] = inputs(1, (2 * h, 2 * w), (h, w), n, 5);
    let mut a2 = m.activations(&be, 1, 2).unwrap();
    m.forward(&be, &mut a2, &image, &g_init, &regions).unwrap();
    assert_eq!(be.len(a2.decoded()), 3 * 2 * h * 2 * w);

    // The same four patches as a batch of single patches give the same tokens.
    let mut patches = Vec::new();
    for k in 0..4 {
        let (y0, x0) = ((k / 2) * h, (k % 2) * w);
        for ch in 0..3 {
            for y in 0..h {
                let at = (ch * 2 * h + y0 + y) * 2 * w + x0;
                patches.extend_from_slice(&image[at..at + w]);
            }
        }
    }
    let mut a1 = m.activations(&be, 4, 1).unwrap();
    m.forward(&be, &mut a1, &patches, &g_init, &regions).unwrap();
    let (t2, t1) = (host(&be, a2.tokens()), host(&be, a1.tokens()));
    let scale = gpstoken_tests::nan_max(t1.iter().map(|v| f64::from(v.abs())));
    let err = gpstoken_tests::max_abs_diff(&t1, &t2);
    assert!(err <= 1e-6 * scale, "per-patch tokens differ by {err}");

    // adjust_gpstoken per axis in f64: sigma / np, centre -1 + (2 j + x + 1) / np (j the column
    // for x, the row for y); then the splat on the (2 rs_h) x (2 rs_w) canvas.
    let stride = 5 + c;
    let mut merged = t2.clone();
    for (i, t) in merged.chunks_exact_mut(stride).enumerate() {
        let k = i / n;
        let (row, col) = ((k / 2) as f64, (k % 2) as f64);
        let src = &t2[i * stride..(i + 1) * stride];
        t[0] = (f64::from(src[0]) / 2.0) as f32;
        t[1] = (f64::from(src[1]) / 2.0) as f32;
        t[3] = (-1.0 + (2.0 * col + f64::from(src[3]) + 1.0) / 2.0) as f32;
        t[4] = (-1.0 + (2.0 * row + f64::from(src[4]) + 1.0) / 2.0) as f32;
    }
    let rendered = splat_f64(&merged, 1, c, (h, w), cfg.gps.gps_dmax);
    let splat_err = rel_err(&host(&be, a2.rendered()), &rendered);
    println!("merged 2x2 of 48x32: rendered {splat_err:.1e} of the f64 merge + splat");
    assert!(splat_err <= 1e-5, "merged render differs from the f64 merge + splat by {splat_err}");
}

/// The loss `mean((decoded - image)^2)` of a forward pass, and which pixels the support box of
/// every rendered Gaussian covers (column and row ranges, on the merged canvas when np > 1).
fn loss(
    be: &CpuBackend,
    m: &GpsToken<CpuBackend>,
    a: &mut Activations<CpuBackend>,
    inp: &[Vec<f32>; 3],
) -> (f64, Vec<[usize; 4]>) {
    m.forward(be, a, &inp[0], &inp[1], &inp[2]).unwrap();
    let loss = m.mse_loss_grad(be, a).unwrap();
    let g = &m.config().gps;
    let (np, stride) = (a.patches(), 5 + g.gps_c);
    let mut tokens = host(be, a.tokens());
    if np > 1 {
        let mut merged = vec![0.0; tokens.len()];
        merge_patches(np, np, g.gps_num, g.gps_c, &tokens, &mut merged).unwrap();
        tokens = merged;
    }
    let (h, w) = (g.gps_rs.0 * np, g.gps_rs.1 * np);
    let boxes = tokens
        .chunks_exact(stride)
        .map(|t| {
            let (x, y) = (axis_range(t[3], g.gps_dmax * t[0], w), axis_range(t[4], g.gps_dmax * t[1], h));
            [x.start, x.end, y.start, y.end]
        })
        .collect();
    (loss, boxes)
}

/// Central difference of the loss along `shift(delta)` (which evaluates the loss with the input
/// moved by `delta`). The backward pass differentiates the splat with its support boxes fixed
/// (spec 2.2: no gradient from pixels entering or leaving a box, where the truncated Gaussian
/// jumps by exp(-kappa²/2)), so the step is shrunk until no box gains or loses a pixel.
fn central_difference(base: &[[usize; 4]], mut shift: impl FnMut(f32) -> (f64, Vec<[usize; 4]>)) -> (f64, f32) {
    let mut eps = 1e-3f32;
    for _ in 0..6 {
        let ((plus, sp), (minus, sm)) = (shift(eps), shift(-eps));
        if sp == base && sm == base {
            return ((plus - minus) / (2.0 * f64::from(eps)), eps);
        }
        eps /= 4.0;
    }
    panic!("a support box changes for every step down to {eps}");
}

/// Central differences of the loss against the backward pass, for the two entries of largest
/// gradient in a parameter of every part of the model, in the image and in g_init.
fn gradients_match_finite_differences(batch: usize, np: usize) {
    let (h, w) = (32, 48);
    let cfg = config((h, w));
    let n = cfg.gps.gps_num;
    let be = CpuBackend::new();
    let mut m = GpsToken::new(&be, cfg.clone()).unwrap();
    m.init(&be, 13).unwrap();
    // to_gps.0 starts at zero; a random value lets the refinement move the Gaussians.
    let to_gps0 = m.params.find("to_gps.0.weight").unwrap();
    let mut rng = TestRng::new(77);
    let v: Vec<f32> = (0..be.len(m.params.value(to_gps0))).map(|_| rng.uniform(-0.05, 0.05) as f32).collect();
    be.write(m.params.value_mut(to_gps0), &v).unwrap();
    let inp = inputs(batch, (np * h, np * w), (h, w), n, 31 + np as u64);
    let mut a = m.activations(&be, batch, np).unwrap();
    let (l0, base) = loss(&be, &m, &mut a, &inp);
    m.backward(&be, &mut a).unwrap();
    let mut d_image = vec![0.0f32; inp[0].len()];
    a.d_image_with_target(&be, &mut d_image).unwrap();
    let d_image = host(&be, &d_image);
    let d_g_init = host(&be, a.d_g_init());

    let largest = |g: &[f32], k: usize| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&i, &j| g[j].abs().total_cmp(&g[i].abs()));
        idx.truncate(k);
        idx
    };
    let (mut worst, mut checked, mut smallest_eps) = (0.0f64, 0, 1.0f32);
    let mut check = |what: String, analytic: f32, (numeric, eps): (f64, f32)| {
        let err = (f64::from(analytic) - numeric).abs() / f64::from(analytic).abs().max(1e-12);
        (worst, checked, smallest_eps) = (worst.max(err), checked + 1, smallest_eps.min(eps));
        assert!(err <= 0.02, "np={np}: {what}: backward {analytic:.6e}, central difference {numeric:.6e} (step {eps})");
    };
    let names = [
        "decoder.conv_in.weight",
        "decoder.mid.block_1.norm1.weight",
        "decoder.mid.attn_1.q.weight",
        "decoder.up.1.block.0.conv1.weight",
        "decoder.up.0.block.1.norm2.bias",
        "decoder.norm_out.weight",
        "decoder.conv_out.bias",
        "preprocess_img.0.weight",
        "preprocess_img.2.conv2.weight",
        "roialign_layer.weight",
        "gps_embed.weight",
        "attnblocks.0.roimlp.weight",
        "attnblocks.1.attn1.in_proj_weight",
        "to_gps.0.weight",
        "to_gps.1.weight",
    ];
    for name in names {
        let id = m.params.find(name).unwrap_or_else(|| panic!("no parameter {name}"));
        let grad = host(&be, m.params.grad(id).unwrap());
        let value = host(&be, m.params.value(id));
        for i in largest(&grad, 2) {
            let fd = central_difference(&base, |delta| {
                let mut p = value.clone();
                p[i] += delta;
                be.write(m.params.value_mut(id), &p).unwrap();
                loss(&be, &m, &mut a, &inp)
            });
            be.write(m.params.value_mut(id), &value).unwrap();
            check(format!("{name}[{i}]"), grad[i], fd);
        }
    }
    for (input, grad, what) in [(0, &d_image, "image"), (1, &d_g_init, "g_init")] {
        for i in largest(grad, 3) {
            let fd = central_difference(&base, |delta| {
                let mut x = inp.clone();
                x[input][i] += delta;
                loss(&be, &m, &mut a, &x)
            });
            check(format!("{what}[{i}]"), grad[i], fd);
        }
    }
    println!(
        "np={np}, batch {batch}: loss {l0:.6}, {checked} gradients, worst relative error {worst:.2e} (smallest step \
         {smallest_eps:.1e})"
    );
}

#[test]
fn single_non_square_patches_backprop_like_finite_differences() {
    gradients_match_finite_differences(2, 1);
}

#[test]
fn merged_non_square_patches_backprop_like_finite_differences() {
    gradients_match_finite_differences(1, 2);
}

/// The CPU backend gives the same bits for one and two threads on non-square shapes too
/// (forward, loss and every gradient; a merged 2x2 canvas of 48x32 patches).
#[test]
fn non_square_training_step_is_bit_identical_across_thread_counts() {
    let (h, w) = (32, 48);
    let cfg = config((h, w));
    let inp = inputs(1, (2 * h, 2 * w), (h, w), cfg.gps.gps_num, 3);
    let run = |threads: usize| {
        let be = CpuBackend::with_threads(threads).unwrap();
        let mut m = GpsToken::new(&be, cfg.clone()).unwrap();
        m.init(&be, 4).unwrap();
        let mut a = m.activations(&be, 1, 2).unwrap();
        m.forward(&be, &mut a, &inp[0], &inp[1], &inp[2]).unwrap();
        let loss = m.mse_backward(&be, &mut a).unwrap();
        let mut grads = Vec::new();
        m.params.for_each(|_, spec, _, g| {
            if let Some(g) = g {
                grads.push((spec.name.clone(), host(&be, g)));
            }
        });
        (loss.to_bits(), host(&be, a.decoded()), host(&be, a.d_g_init()), grads)
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one.0, two.0, "loss");
    assert_eq!(one.1, two.1, "decoded");
    assert_eq!(one.2, two.2, "d_g_init");
    assert_eq!(one.3, two.3, "parameter gradients");
}

/// The golden model test takes its config from the folder's `model.json` (`gpsconfig`,
/// `decoderconfig`, `image_hw`), so a folder the official code made at a non-square size gives
/// a non-square config, and that config builds.
#[test]
fn golden_config_is_read_from_model_json_whatever_its_shape() {
    use gpstoken_tests::golden::config_of;
    let Some(shared) = gpstoken_tests::shared_dir("golden_config_non_square") else { return };
    let mut json = gpstoken_tests::read_json(&shared.join("golden/model/model.json"));
    assert_eq!(config_of(&json), ModelConfig { name: "golden (model.json)".into(), ..ModelConfig::golden() });
    json["image_hw"] = serde_json::json!([64, 96]);
    json["gpsconfig"]["gps_rs"] = serde_json::json!([32, 48]);
    let cfg = config_of(&json);
    assert_eq!((cfg.image_hw, cfg.gps.gps_rs), ((64, 96), (32, 48)));
    assert!(GpsToken::new(&CpuBackend::new(), cfg).is_ok());
}
