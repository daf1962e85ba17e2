//! Tests of the renderer: pixel grid, footprints, forward, backward, merge.

use super::*;
use crate::token::RHO;

struct Rng(crate::rng::SplitMix64);
impl Rng {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.0.unit_f32()
    }
}

fn desc(gaussians: usize, channels: usize, height: usize, width: usize) -> SplatDesc {
    SplatDesc { batch: 1, gaussians, channels, height, width, kappa: 3.0 }
}

fn random_tokens(rng: &mut Rng, n: usize, channels: usize) -> [f32; 512] {
    let mut t = [0.0f32; 512];
    let stride = GAUSSIAN_PARAMS + channels;
    assert!(n * stride <= t.len());
    for token in t[..n * stride].chunks_exact_mut(stride) {
        token[SIGMA_X] = rng.uniform(0.02, 0.4);
        token[SIGMA_Y] = rng.uniform(0.02, 0.4);
        token[RHO] = rng.uniform(-0.95, 0.95);
        token[MEAN_X] = rng.uniform(-1.2, 1.2);
        token[MEAN_Y] = rng.uniform(-1.2, 1.2);
        for f in &mut token[GAUSSIAN_PARAMS..] {
            *f = rng.uniform(-1.0, 1.0);
        }
    }
    t
}

#[test]
fn pixel_coord_is_the_align_corners_grid() {
    assert_eq!(pixel_coord(0, 64), -1.0);
    assert_eq!(pixel_coord(63, 64), 1.0);
    assert_eq!(pixel_coord(8, 17), 0.0);
    assert_eq!(pixel_coord(1, 2), 1.0);
    // Rounded once from f64: 2/63 - 1 is not representable, the f32 nearest to it is expected.
    assert_eq!(pixel_coord(1, 64), (2.0f64 / 63.0 - 1.0) as f32);
    // Monotone, which the footprint search relies on.
    for size in [2usize, 3, 31, 64, 1000] {
        for i in 1..size {
            assert!(pixel_coord(i, size) > pixel_coord(i - 1, size));
        }
    }
}

/// The footprint must be exactly the set of pixels passing the official box test.
fn assert_footprint_exact(k: &SplatKernel, height: usize, width: usize) {
    let fp = footprint(k, height, width);
    let mut count = 0;
    for i in 0..height {
        for j in 0..width {
            let inside = k.inside(pixel_coord(j, width) - k.x, pixel_coord(i, height) - k.y);
            let in_fp = fp.rows().contains(&i) && fp.cols().contains(&j);
            assert_eq!(inside, in_fp, "pixel ({i},{j}) kernel {k:?} footprint {fp:?}");
            count += usize::from(inside);
        }
    }
    assert_eq!(fp.pixel_count(), count);
}

#[test]
fn footprint_equals_exhaustive_box_test() {
    let mut rng = Rng(crate::rng::SplitMix64::new(7));
    for case in 0..3000 {
        let height = 2 + (rng.0.next_u64() % 40) as usize;
        let width = 2 + (rng.0.next_u64() % 40) as usize;
        let mut token = [
            rng.uniform(0.0, 0.5),
            rng.uniform(0.0, 0.5),
            rng.uniform(-0.9, 0.9),
            rng.uniform(-1.5, 1.5),
            rng.uniform(-1.5, 1.5),
        ];
        match case % 10 {
            // Means exactly on pixel centres, boxes ending exactly on pixel centres.
            0 => {
                token[MEAN_X] = pixel_coord((rng.0.next_u64() as usize) % width, width);
                token[MEAN_Y] = pixel_coord((rng.0.next_u64() as usize) % height, height);
            }
            1 => token[SIGMA_X] = (pixel_coord(3, width) - pixel_coord(0, width)) / 3.0,
            2 => token[SIGMA_X] = -token[SIGMA_X],
            3 => token[SIGMA_Y] = 0.0,
            4 => token[SIGMA_X] = rng.uniform(0.0, 1e-4),
            5 => token[SIGMA_Y] = 1e30,
            _ => {}
        }
        assert_footprint_exact(&SplatKernel::new(&token, 3.0), height, width);
    }
    // Zero sigma exactly on a pixel centre: the official test accepts that one pixel.
    let on_pixel = [0.0, 0.0, 0.0, pixel_coord(3, 9), pixel_coord(4, 11)];
    let k = SplatKernel::new(&on_pixel, 3.0);
    assert_eq!(footprint(&k, 11, 9), Footprint { row_start: 4, row_end: 5, col_start: 3, col_end: 4 });
    // Non-finite parameters: NaN accepts everything (as gs.cu), infinite means nothing.
    for bad in [[f32::NAN, 0.1, 0.0, 0.0, 0.0], [0.1, 0.1, 0.0, f32::NAN, 0.0], [0.1, 0.1, 0.0, f32::INFINITY, 0.0]] {
        assert_footprint_exact(&SplatKernel::new(&bad, 3.0), 7, 5);
    }
    assert_eq!(footprint(&SplatKernel::new(&[f32::NAN, f32::NAN, 0.0, 0.0, 0.0], 3.0), 7, 5).pixel_count(), 35);
    assert!(footprint(&SplatKernel::new(&[0.1, 0.1, 0.0, f32::INFINITY, 0.0], 3.0), 7, 5).is_empty());
}

#[test]
fn partition_point_from_any_hint() {
    for n in 0..20usize {
        for boundary in 0..=n {
            for hint in 0..=n + 2 {
                assert_eq!(partition_point_from(n, hint, |i| i >= boundary), boundary);
            }
        }
    }
}

/// The plain gs.cu loop: every pixel, every Gaussian.
fn naive_forward(desc: &SplatDesc, tokens: &[f32], out: &mut [f32]) {
    let (h, w, c) = (desc.height, desc.width, desc.channels);
    out.fill(0.0);
    for i in 0..h {
        for j in 0..w {
            for token in tokens.chunks_exact(desc.token_stride()) {
                let k = SplatKernel::new(token, desc.kappa);
                let (dx, dy) = (pixel_coord(j, w) - k.x, pixel_coord(i, h) - k.y);
                if k.inside(dx, dy) {
                    let v = k.value(dx, dy);
                    for ch in 0..c {
                        out[(ch * h + i) * w + j] += v * token[GAUSSIAN_PARAMS + ch];
                    }
                }
            }
        }
    }
}

#[test]
fn forward_is_bit_identical_to_the_naive_loop() {
    let mut rng = Rng(crate::rng::SplitMix64::new(11));
    let d = desc(20, 3, 23, 70); // 70 columns: boxes wider than one CHUNK occur
    let tokens = random_tokens(&mut rng, d.gaussians, d.channels);
    let tokens = &tokens[..d.gaussians * d.token_stride()];
    let mut naive = [0.0f32; 3 * 23 * 70];
    naive_forward(&d, tokens, &mut naive);
    let mut fast = [1.0f32; 3 * 23 * 70];
    splat_forward(&d, tokens, &mut fast).unwrap();
    assert!(naive.iter().zip(&fast).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(naive.iter().any(|&v| v != 0.0));
}

#[test]
fn shapes_are_checked() {
    let d = desc(2, 1, 4, 5);
    let tokens = [0.1f32; 12];
    let mut out = [0.0f32; 20];
    assert_eq!(splat_forward(&d, &tokens, &mut out), Ok(()));
    assert!(matches!(splat_forward(&d, &tokens[..11], &mut out), Err(ShapeError::Length { .. })));
    assert!(matches!(splat_forward(&d, &tokens, &mut out[..19]), Err(ShapeError::Length { .. })));
    let tiny = desc(2, 1, 1, 5);
    assert!(matches!(splat_forward(&tiny, &tokens, &mut out[..5]), Err(ShapeError::CanvasTooSmall { .. })));
    let mut g = [0.0f32; 6];
    assert!(splat_backward_gaussian(&d, &tokens, 2, &out, &mut g).is_err());
    assert!(splat_backward_gaussian(&d, &tokens, 1, &out, &mut g[..5]).is_err());
    assert_eq!(splat_backward_gaussian(&d, &tokens, 1, &out, &mut g), Ok(()));
    let mut gt = [0.0f32; 12];
    assert!(splat_backward(&d, &tokens, &out[..19], &mut gt).is_err());
    assert!(splat_backward(&d, &tokens, &out, &mut gt[..11]).is_err());
}

#[test]
fn backward_per_gaussian_matches_whole_and_channel_groups_are_exact() {
    let mut rng = Rng(crate::rng::SplitMix64::new(5));
    // C = 70 > CHANNEL_GROUP: the colour gradients take two passes.
    let channels = 70;
    let d = desc(2, channels, 9, 8);
    let mut tokens = random_tokens(&mut rng, 2, channels);
    // Keep Gaussian 1 on the canvas so that its gradients are not all zero.
    tokens[75 + MEAN_X] = 0.1;
    tokens[75 + MEAN_Y] = -0.2;
    let tokens = &tokens[..2 * d.token_stride()];
    let mut grad_out = [0.0f32; 70 * 9 * 8];
    for g in grad_out.iter_mut() {
        *g = rng.uniform(-1.0, 1.0);
    }
    let mut all = [0.0f32; 2 * 75];
    splat_backward(&d, tokens, &grad_out, &mut all).unwrap();
    let mut one = [0.0f32; 75];
    splat_backward_gaussian(&d, tokens, 1, &grad_out, &mut one).unwrap();
    assert_eq!(&all[75..], &one[..]);
    // Channel 66 alone (C = 1) gives the same colour gradient bits.
    let single = desc(1, 1, 9, 8);
    let mut token1 = [0.0f32; 6];
    token1[..5].copy_from_slice(&tokens[75..80]);
    token1[5] = tokens[75 + 5 + 66];
    let mut g1 = [0.0f32; 6];
    splat_backward(&single, &token1, &grad_out[66 * 72..67 * 72], &mut g1).unwrap();
    assert_eq!(g1[5].to_bits(), one[5 + 66].to_bits());
    assert!(one.iter().any(|&g| g != 0.0));
}

#[test]
fn invisible_and_nan_gaussians_do_not_panic() {
    let d1 = desc(1, 1, 6, 6);
    let negative = [-0.2, 0.3, 0.0, 0.0, 0.0, 1.0];
    let mut out = [1.0f32; 36];
    splat_forward(&d1, &negative, &mut out).unwrap();
    assert!(out.iter().all(|&v| v == 0.0));
    let mut g = [1.0f32; 6];
    splat_backward(&d1, &negative, &[1.0; 36], &mut g).unwrap();
    assert_eq!(g, [0.0; 6]);
    // NaN sigma is inside everywhere (as in gs.cu) and poisons the canvas; rho = 1 gives
    // inf/NaN. Neither may panic.
    let d2 = desc(2, 1, 6, 6);
    let bad = [f32::NAN, f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.2, 0.2, 1.0, 0.0, 0.0, 1.0];
    splat_forward(&d2, &bad, &mut out).unwrap();
    assert!(out.iter().all(|v| v.is_nan()));
    let mut g2 = [0.0f32; 12];
    splat_backward(&d2, &bad, &[1.0; 36], &mut g2).unwrap();
    assert!(g2[5].is_nan());
}

#[test]
fn backward_exp_is_accurate() {
    let mut worst = 0.0f64;
    let mut x = -700.0f64;
    while x < 700.0 {
        let (ours, want) = (exp_f64(x), libm::exp(x));
        worst = worst.max(((ours - want) / want).abs());
        x += 0.012_345_678_9;
    }
    assert!(worst < 1e-15, "max relative error {worst:e}");
    assert_eq!(exp_f64(0.0), 1.0);
    assert!(exp_f64(f64::NAN).is_nan());
    assert!(exp_f64(-1e6) < 1e-307 && exp_f64(-1e6) >= 0.0);
}

#[test]
fn merge_patches_follows_adjust_gpstoken() {
    // np = 2, one token per patch, one channel.
    let patches = [
        0.4, 0.2, 0.5, -1.0, -1.0, 7.0, // patch (0,0)
        0.4, 0.2, 0.5, 1.0, 0.0, 8.0, // patch (0,1)
        0.4, 0.2, -0.5, 0.0, 1.0, 9.0, // patch (1,0)
        0.4, 0.2, 0.0, 0.5, -0.5, 10.0, // patch (1,1)
    ];
    let mut out = [0.0f32; 24];
    merge_patches(2, 2, 1, 1, &patches, &mut out).unwrap();
    let want = [
        0.2, 0.1, 0.5, -1.0, -1.0, 7.0, //
        0.2, 0.1, 0.5, 1.0, -0.5, 8.0, //
        0.2, 0.1, -0.5, -0.5, 1.0, 9.0, //
        0.2, 0.1, 0.0, 0.75, 0.25, 10.0,
    ];
    assert_eq!(out, want);
    // The f32 formula, operation by operation, for an inexact case.
    let p = [0.3f32, 0.3, 0.1, 0.123_456_7, -0.987_654_3];
    let mut o = [0.0f32; 5 * 9];
    let mut all = [0.0f32; 5 * 9];
    for k in 0..9 {
        all[k * 5..k * 5 + 5].copy_from_slice(&p);
    }
    merge_patches(3, 3, 1, 0, &all, &mut o).unwrap();
    let (i, j) = (2.0f32, 1.0f32);
    assert_eq!(o[7 * 5 + MEAN_X], -1.0 + (2.0 * j + p[MEAN_X] + 1.0) / 3.0);
    assert_eq!(o[7 * 5 + MEAN_Y], -1.0 + (2.0 * i + p[MEAN_Y] + 1.0) / 3.0);
    assert_eq!(o[7 * 5 + SIGMA_X], 0.3 / 3.0);
    // np = 1 is the identity; wrong lengths are errors.
    let mut same = [0.0f32; 6];
    merge_patches(1, 1, 1, 1, &patches[..6], &mut same).unwrap();
    assert_eq!(same, patches[..6]);
    assert!(merge_patches(2, 2, 1, 1, &patches[..18], &mut out).is_err());
    assert!(merge_patches(2, 2, 1, 1, &patches, &mut out[..18]).is_err());
}
