//! The training and evaluation data path: a recursive folder of PNG/JPEG photos, the official
//! preprocessing (spec 3.7) scaled to the config's image size, Algorithm 1 per sample, and a
//! small seeded PRNG so that a run's batches depend only on its seed and the step number.
//!
//! Training samples (see [`Dataset::sample`]):
//!
//! 1. At load time every photo whose shorter side is above `4 · S` (S = the config's image size)
//!    is shrunk with a triangle (area-like) filter so that its shorter side is `4 · S`; photos
//!    whose shorter side is below S are enlarged to S with the official bilinear resize. This
//!    bounds memory (some training photos are 12 MP) and the zoom range below.
//! 2. **Scale jitter** (not in the official loader, which only crops after resizing the shorter
//!    side to S): a square crop of random side `c` uniform in `[S, min(w, h)]` at a uniform random
//!    position, resized to `S x S` with `resize_u8_bilinear` (the official OpenCV resize). With
//!    `c = min(w, h)` this is the official `SmallestMaxSize(S)` + random crop; smaller `c` zooms
//!    in, up to 4x. The training pool is small (55 photos), so this multiplies the distinct crops.
//! 3. Horizontal flip with p = 0.5, **before** Algorithm 1 (spec 3.7), then u8 to [-1, 1].
//! 4. Algorithm 1 on the crop with N = gps_num, lambda = gps_adaptive_w, minhw = 8 (or a uniform
//!    grid of N cells with `--init grid`), giving `g_init` and the normalised RoI boxes.
//!
//! Randomness: sample `b` of step `t` draws from its own [`Rng`] seeded with
//! `mix(seed, t, b)`. A step's batch is therefore a pure function of `(seed, t)`: the prefetch
//! thread may run ahead, and `--resume` at step `t` needs only the seed and `t` (both in the
//! checkpoint) to continue with exactly the batches an uninterrupted run would have seen.

use crate::fit::{self, FitOptions};
use crate::imageio::{self, Framing, Rgb8};
use anyhow::{bail, Result};
use gpstoken_core::partition::{region_box, region_gaussian};
use gpstoken_core::preprocess;
use gpstoken_core::rng::SplitMix64;
use std::path::{Path, PathBuf};

/// The data path's random source: the core's SplitMix64 with the draws the data path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        self.0.unit_f64()
    }

    /// Uniform integer in `[0, n)` (`n > 0`; the modulo bias is below 2^-40 for our n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// The generator for sample `index` of step `step` of a run seeded with `seed`.
    pub fn for_sample(seed: u64, step: u64, index: u64) -> Rng {
        let mut r = Rng::new(seed ^ 0xD1B5_4A32_D192_ED03);
        let a = r.next_u64();
        let mut r = Rng::new(a ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = r.next_u64();
        Rng::new(b ^ index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
    }
}

/// How the initial Gaussians are placed.
pub use crate::fit::Init;

/// Every `.png`, `.jpg`, `.jpeg` below `dir` (any case), sorted by path so that the order does
/// not depend on the file system. Errors read "'DIR' ...", for the caller to name the flag.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("'{}' does not exist or is not a folder", dir.display());
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| anyhow::anyhow!("cannot list '{}': {e}", d.display()))?;
        for e in entries {
            let path = e.map_err(|e| anyhow::anyhow!("cannot list '{}': {e}", d.display()))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("'{}' holds no PNG or JPEG images", dir.display());
    }
    Ok(out)
}

/// Loads every image of `dir`; unreadable ones are skipped with a warning on stderr and counted.
/// Returns the images (with their paths) and the number skipped. Errors (one line) if none is
/// readable. `flag` is the option that named the folder (`--data`, `--eval`), for messages.
pub fn load_folder(
    flag: &str,
    dir: &Path,
    mut prepare: impl FnMut(Rgb8) -> Result<Rgb8>,
) -> Result<(Vec<(PathBuf, Rgb8)>, usize)> {
    let paths = list_images(dir).map_err(|e| anyhow::anyhow!("{flag} folder {e}"))?;
    let mut images = Vec::with_capacity(paths.len());
    let mut failures = Vec::new();
    for p in paths {
        match imageio::load_rgb8(&p).and_then(&mut prepare) {
            Ok(img) => images.push((p, img)),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let skipped = failures.len();
    if images.is_empty() {
        bail!(
            "{flag} folder '{}': none of its {skipped} image(s) could be read (first: {})",
            dir.display(),
            failures.first().map_or("", String::as_str)
        );
    }
    for f in &failures {
        eprintln!("gpstoken: warning: skipping {f}");
    }
    Ok((images, skipped))
}

/// One batch on the host, in the layout `GpsToken::forward` takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The training step this batch is for (1-based).
    pub step: u64,
    /// `[B, 3, S, S]` in [-1, 1].
    pub image: Vec<f32>,
    /// `[B, N, 5]` initial Gaussians.
    pub g_init: Vec<f32>,
    /// `[B, N, 4]` normalised RoI boxes.
    pub regions: Vec<f32>,
}

/// What a sample needs besides its pixels.
#[derive(Clone, Copy, Debug)]
pub struct SampleSpec {
    /// Image side S.
    pub size: usize,
    /// Tokens N.
    pub tokens: usize,
    /// Algorithm 1's lambda.
    pub weight: f64,
    pub init: Init,
}

/// Appends one prepared `S x S` RGB crop to a batch: CHW pixels, then its layout ([`push_layout`]).
/// `bias` is an optional cdbias map of the crop (spec 3.5).
pub fn push_sample(crop: &Rgb8, spec: &SampleSpec, bias: Option<&[f32]>, batch: &mut Batch) -> Result<()> {
    debug_assert_eq!((crop.width, crop.height), (spec.size, spec.size));
    let hwc = imageio::to_unit(crop);
    push_layout(&hwc, spec, bias, batch)?;
    batch.image.extend_from_slice(&imageio::hwc_to_chw(&hwc, 3));
    Ok(())
}

/// Appends the initial Gaussians and RoI boxes of one `S x S` patch (`hwc` in [-1, 1]):
/// Algorithm 1 (or the grid), coordinates local to the patch.
pub fn push_layout(hwc: &[f32], spec: &SampleSpec, bias: Option<&[f32]>, batch: &mut Batch) -> Result<()> {
    let s = spec.size;
    let mut opts = FitOptions::new(spec.tokens, 0, spec.init);
    opts.weight = spec.weight;
    let regions = fit::initial_regions(hwc, s, s, &opts, bias)?;
    for r in &regions {
        batch.g_init.extend_from_slice(&region_gaussian(r, s, s));
        batch.regions.extend_from_slice(&region_box(r, s, s));
    }
    Ok(())
}

/// The training pool in memory.
pub struct Dataset {
    pub images: Vec<(PathBuf, Rgb8)>,
    pub skipped: usize,
    pub spec: SampleSpec,
}

/// Shrinks (triangle filter) or enlarges (official bilinear) `img` so that its shorter side
/// lies in `[lo, hi]`.
fn fit_shorter_side(img: Rgb8, lo: usize, hi: usize) -> Result<Rgb8> {
    let m = img.width.min(img.height);
    if m > hi {
        let (w, h) = preprocess::shortest_side_size(img.width, img.height, hi);
        let buf = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
            .ok_or_else(|| anyhow::anyhow!("internal error: image buffer size"))?;
        let small = image::imageops::resize(&buf, w as u32, h as u32, image::imageops::FilterType::Triangle);
        Ok(Rgb8 { width: w, height: h, data: small.into_raw() })
    } else if m < lo {
        let (w, h) = preprocess::shortest_side_size(img.width, img.height, lo);
        let mut data = vec![0u8; w * h * 3];
        preprocess::resize_u8_bilinear(&img.data, img.width, img.height, 3, &mut data, w, h);
        Ok(Rgb8 { width: w, height: h, data })
    } else {
        Ok(img)
    }
}

/// Largest zoom-in of the scale jitter: photos are kept with their shorter side at most this
/// many times the image size.
pub const MAX_ZOOM: usize = 4;

impl Dataset {
    /// Loads the training folder (see the module docs for what happens to each photo).
    pub fn load(dir: &Path, spec: SampleSpec) -> Result<Dataset> {
        let s = spec.size;
        let (images, skipped) = load_folder("--data", dir, |img| fit_shorter_side(img, s, MAX_ZOOM * s))?;
        Ok(Dataset { images, skipped, spec })
    }

    /// One augmented `S x S` crop drawn with `rng` (module docs, steps 2-3).
    pub fn crop(&self, rng: &mut Rng) -> Rgb8 {
        let s = self.spec.size;
        let (_, img) = &self.images[rng.below(self.images.len())];
        let m = img.width.min(img.height);
        let c = s + rng.below(m - s + 1);
        let x0 = rng.below(img.width - c + 1);
        let y0 = rng.below(img.height - c + 1);
        let flip = rng.uniform() < 0.5;
        let mut square = vec![0u8; c * c * 3];
        for y in 0..c {
            let src = ((y0 + y) * img.width + x0) * 3;
            square[y * c * 3..(y + 1) * c * 3].copy_from_slice(&img.data[src..src + c * 3]);
        }
        let mut data = vec![0u8; s * s * 3];
        preprocess::resize_u8_bilinear(&square, c, c, 3, &mut data, s, s);
        if flip {
            for row in data.chunks_exact_mut(s * 3) {
                for x in 0..s / 2 {
                    for ch in 0..3 {
                        row.swap(x * 3 + ch, (s - 1 - x) * 3 + ch);
                    }
                }
            }
        }
        Rgb8 { width: s, height: s, data }
    }

    /// The batch of step `step` for a run seeded with `seed`: a pure function of both.
    pub fn batch(&self, seed: u64, step: u64, batch: usize) -> Result<Batch> {
        self.batch_part(seed, step, 0..batch)
    }

    /// Samples `part` of step `step`'s batch, exactly as [`Dataset::batch`] makes them (each
    /// sample has its own random stream): a data-parallel rank's share.
    pub fn batch_part(&self, seed: u64, step: u64, part: std::ops::Range<usize>) -> Result<Batch> {
        let mut out = Batch { step, image: Vec::new(), g_init: Vec::new(), regions: Vec::new() };
        for b in part {
            let mut rng = Rng::for_sample(seed, step, b as u64);
            let crop = self.crop(&mut rng);
            push_sample(&crop, &self.spec, None, &mut out)?;
        }
        Ok(out)
    }
}

/// An evaluation folder: the official preprocessing (shorter side to S, centre crop), no
/// augmentation.
pub struct EvalSet {
    pub images: Vec<(PathBuf, Rgb8)>,
    pub skipped: usize,
}

impl EvalSet {
    /// The folder of `--data` (as `gpstoken eval` calls it), centre-cropped to `size`.
    pub fn load(dir: &Path, size: usize) -> Result<EvalSet> {
        EvalSet::load_flag("--data", dir, size)
    }

    /// The folder that option `flag` names, for messages (`train --eval`).
    pub fn load_flag(flag: &str, dir: &Path, size: usize) -> Result<EvalSet> {
        let (images, skipped) = load_folder(flag, dir, |img| imageio::frame(&img, Framing::CentreCrop, size))?;
        Ok(EvalSet { images, skipped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_uniformish() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut r = Rng::new(1);
        let mean: f64 = (0..10000).map(|_| r.uniform()).sum::<f64>() / 10000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert_ne!(Rng::for_sample(1, 2, 3), Rng::for_sample(1, 3, 2));
    }
}
