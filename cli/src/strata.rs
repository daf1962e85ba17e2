//! Reconstruction error split by local image complexity (`gpstoken eval --by-complexity`).
//!
//! GPSToken's claim for Algorithm 1 is that it moves Gaussians "from simple regions to complex
//! ones, capturing finer details in texture-rich regions" (paper, Appendix E). A single PSNR over
//! the whole image hides that trade, so this splits every crop into 8x8 blocks (Algorithm 1's
//! smallest region), ranks the blocks by Algorithm 1's own complexity score (the entropy of the
//! Sobel-magnitude histogram, spec 3.2; every block has the same area, so the ranking is by
//! entropy), and measures the reconstruction on the most complex quarter ("texture-rich") and the
//! least complex quarter ("flat") separately:
//!
//! * PSNR over the pixels of those blocks (on [0, 1], the decoder output clamped, as `eval`);
//! * detail (texture-rich quarter only): the gradient energy of the reconstruction over that of
//!   the photo on those blocks (`sum |grad x_hat|^2 / sum |grad x|^2`, forward differences inside
//!   each block, summed over RGB). 1 keeps the photo's contrast of fine structure; below 1 is
//!   smoothed. (On flat blocks the photo's gradient energy is near 0 and the ratio means little.)

use crate::imageio::{self, Rgb8};
use anyhow::{bail, Result};
use gpstoken_core::metrics;
use gpstoken_core::partition;

/// Side of a block: Algorithm 1's minimum region (minhw 8).
pub const BLOCK: usize = 8;

/// One image's (or the mean of several images') stratified scores.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Strata {
    pub rich_psnr: f64,
    pub flat_psnr: f64,
    pub rich_detail: f64,
}

impl Strata {
    /// The mean of per-image scores.
    pub fn mean(all: &[Strata]) -> Strata {
        let k = all.len().max(1) as f64;
        let sum = |f: fn(&Strata) -> f64| all.iter().map(f).sum::<f64>() / k;
        Strata { rich_psnr: sum(|s| s.rich_psnr), flat_psnr: sum(|s| s.flat_psnr), rich_detail: sum(|s| s.rich_detail) }
    }
}

/// Algorithm 1's complexity of every whole 8x8 block of an image, row-major blocks (a partial
/// block at the right or bottom edge is left out).
pub fn block_scores(crop: &Rgb8, weight: f64) -> Vec<f64> {
    let (w, h) = (crop.width, crop.height);
    let mut grey = vec![0.0f32; w * h];
    gpstoken_core::preprocess::grey(&imageio::to_unit(crop), &mut grey);
    let (nbx, nby) = (w / BLOCK, h / BLOCK);
    let math = crate::partition_math();
    let mut scores = Vec::with_capacity(nbx * nby);
    for by in 0..nby {
        for bx in 0..nbx {
            let region = (by * BLOCK, by * BLOCK + BLOCK - 1, bx * BLOCK, bx * BLOCK + BLOCK - 1);
            scores.push(partition::complexity_with(&grey, w, region, weight, &math));
        }
    }
    scores
}

/// Stratified scores of a `[3, H, W]` reconstruction in [-1, 1] against the `W x H` image,
/// with the block ranking `scores` (from [`block_scores`]).
pub fn stratify(decoded: &[f32], crop: &Rgb8, scores: &[f64]) -> Result<Strata> {
    let (w, h) = (crop.width, crop.height);
    if decoded.len() != 3 * w * h {
        bail!("internal error: a reconstruction of {} values for a {w}x{h} image", decoded.len());
    }
    let nb = w / BLOCK;
    if scores.len() != nb * (h / BLOCK) || scores.len() < 4 {
        bail!("--by-complexity needs an image of at least four 8x8 blocks; this one is {w}x{h}");
    }
    let target: Vec<f32> =
        imageio::hwc_to_chw(&imageio::to_unit(crop), 3).iter().map(|&v| metrics::unit_from_signed(v)).collect();
    let pred: Vec<f32> = decoded.iter().map(|&v| metrics::unit_from_signed(v)).collect();
    // Ties broken by block index, so the split is deterministic.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let quarter = scores.len() / 4;
    let measure = |blocks: &[usize]| -> (f64, f64) {
        let (mut se, mut n, mut g_pred, mut g_target) = (0.0f64, 0usize, 0.0f64, 0.0f64);
        for &b in blocks {
            let (y0, x0) = ((b / nb) * BLOCK, (b % nb) * BLOCK);
            for c in 0..3 {
                let at = |y: usize, x: usize| (c * h + y) * w + x;
                for y in y0..y0 + BLOCK {
                    for x in x0..x0 + BLOCK {
                        let d = f64::from(pred[at(y, x)]) - f64::from(target[at(y, x)]);
                        se += d * d;
                        n += 1;
                        if x + 1 < x0 + BLOCK {
                            g_pred += (f64::from(pred[at(y, x + 1)]) - f64::from(pred[at(y, x)])).powi(2);
                            g_target += (f64::from(target[at(y, x + 1)]) - f64::from(target[at(y, x)])).powi(2);
                        }
                        if y + 1 < y0 + BLOCK {
                            g_pred += (f64::from(pred[at(y + 1, x)]) - f64::from(pred[at(y, x)])).powi(2);
                            g_target += (f64::from(target[at(y + 1, x)]) - f64::from(target[at(y, x)])).powi(2);
                        }
                    }
                }
            }
        }
        let psnr = 10.0 * (1.0 / (se / n as f64)).log10();
        // A perfectly flat photo block set has no detail to keep: report 1.
        let detail = if g_target > 0.0 { g_pred / g_target } else { 1.0 };
        (psnr, detail)
    };
    let (flat_psnr, _) = measure(&order[..quarter]);
    let (rich_psnr, rich_detail) = measure(&order[order.len() - quarter..]);
    Ok(Strata { rich_psnr, flat_psnr, rich_detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crop whose left half is a fine checkerboard and right half flat grey: the rich quarter
    /// lies in the checkerboard, the flat quarter in the grey half.
    fn half_textured() -> Rgb8 {
        let side = 32;
        let mut data = Vec::with_capacity(side * side * 3);
        for y in 0..side {
            for x in 0..side {
                let v = if x < side / 2 {
                    if (x + y) % 2 == 0 {
                        200
                    } else {
                        40
                    }
                } else {
                    128
                };
                data.extend_from_slice(&[v, v, v]);
            }
        }
        Rgb8 { width: side, height: side, data }
    }

    fn chw(img: &Rgb8) -> Vec<f32> {
        imageio::hwc_to_chw(&imageio::to_unit(img), 3)
    }

    #[test]
    fn the_texture_is_ranked_rich_and_blurring_it_loses_detail_there_only() {
        let crop = half_textured();
        let scores = block_scores(&crop, 2.5);
        let nb = crop.width / BLOCK;
        for (b, s) in scores.iter().enumerate() {
            let textured = (b % nb) < nb / 2;
            // A flat block's entropy is not exactly 0 (the histogram's 1e-5 and 1e-10 guards).
            assert_eq!(*s > 1e-6, textured, "block {b}: score {s}");
        }
        // Perfect reconstruction: infinite PSNR, detail 1 everywhere.
        let perfect = stratify(&chw(&crop), &crop, &scores).unwrap();
        assert!(perfect.rich_psnr.is_infinite() && perfect.flat_psnr.is_infinite());
        assert_eq!(perfect.rich_detail, 1.0);
        // Replace the checkerboard by its mean: the rich blocks lose all detail and PSNR, the
        // flat blocks are untouched.
        let mut blurred = crop.clone();
        for px in blurred.data.chunks_exact_mut(3).enumerate().filter(|(i, _)| i % crop.width < crop.width / 2) {
            px.1.copy_from_slice(&[120, 120, 120]);
        }
        let s = stratify(&chw(&blurred), &crop, &scores).unwrap();
        assert_eq!(s.rich_detail, 0.0);
        assert!(s.rich_psnr < 12.0, "{s:?}");
        assert!(s.flat_psnr.is_infinite(), "{s:?}");
    }
}
