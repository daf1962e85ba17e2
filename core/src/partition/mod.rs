//! Algorithm 1, the entropy-driven partition (spec section 3), bit-exact with the official
//! `datasets/adaptivegps.py` run with NumPy 1.24 and OpenCV 4.9 in its non-IPP mode (spec 3.8).
//!
//! A patch (256x256 in every released config) is split recursively: at every step the candidate
//! region with the highest score is halved along its longer side (squares: along the side whose
//! halves score lower, spec 3.3) until there are `N` regions. Each region then becomes an initial
//! Gaussian and a RoI box (spec 3.4).
//!
//! The score of a region (spec 3.2, [`complexity`]) resizes the region to 64x64 with OpenCV's
//! bilinear rules, takes the Sobel gradient magnitude, and measures the entropy of its histogram:
//! `score = E^weight * h * w` (+ the summed user bias, spec 3.5).
//!
//! Everything here works on caller slices without allocation; [`partition_image`] (feature
//! `alloc`) is the multi-patch convenience of spec 3.6.
//!
//! Modules: `math` (`log2`/`pow` as glibc gives them), `score` (one region's score, the entropy
//! memo), `resize` (step 2) and `sobel` (steps 3-5). The last two have scalar code for every
//! target and, on x86-64, SIMD kernels (SSE2, AVX2; AVX-512 for the Sobel) picked at run time by
//! CPUID (no `std` needed): each gives
//! the scalar code's bits, which their tests check on edge cases (docs/BENCHMARKS.md has the speed).

use core::fmt;

mod math;
mod resize;
mod score;
mod sobel;
pub use math::MathFns;
use score::{bias_sum, complexity_cached, TermCache};
pub use score::{complexity, complexity_with, entropy, entropy_with, resize_region64, sobel_histogram};

/// Side of the square image every region is resized to before the Sobel filter (spec 3.2 step 2).
pub const RS: usize = 64;
/// Number of histogram bins (spec 3.2 step 5).
pub const BINS: usize = 512;

/// The most regions a 256x256 patch can be split into with the default `min_size` 8:
/// `(256/8)^2` (spec 3.3). Other shapes: [`max_regions`].
pub const MAX_REGIONS: usize = 1024;
/// `gps_adaptive_w` of every released config (spec 3.1).
pub const DEFAULT_WEIGHT: f64 = 2.5;
/// `minhw`, the dataset default (spec 3.1).
pub const DEFAULT_MIN_SIZE: usize = 8;
/// The largest patch side: region bounds are stored as `u16`.
pub const MAX_PATCH_SIDE: usize = 1 << 16;

/// Parameters of Algorithm 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartitionParams {
    /// `N`, the number of regions (tokens) per patch.
    pub tokens: usize,
    /// The entropy exponent lambda (`gps_adaptive_w`).
    pub weight: f64,
    /// `minhw`: a region whose sides both span at most `min_size + 1` pixels is not split.
    pub min_size: usize,
}

impl PartitionParams {
    /// `tokens` regions with the official weight 2.5 and `min_size` 8.
    pub fn new(tokens: usize) -> Self {
        PartitionParams { tokens, weight: DEFAULT_WEIGHT, min_size: DEFAULT_MIN_SIZE }
    }
}

/// A region of a patch: inclusive pixel ranges (rows `y0..=y1`, columns `x0..=x1`) local to the
/// patch, and its sort key (`score`: the complexity plus the summed bias, spec 3.3/3.5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub y0: u16,
    pub y1: u16,
    pub x0: u16,
    pub x1: u16,
    pub score: f64,
}

impl Region {
    /// Height in pixels.
    pub fn height(&self) -> usize {
        usize::from(self.y1) - usize::from(self.y0) + 1
    }
    /// Width in pixels.
    pub fn width(&self) -> usize {
        usize::from(self.x1) - usize::from(self.x0) + 1
    }
    /// `(y0, y1, x0, x1)` as `usize`, the form [`complexity`] takes.
    pub fn ranges(&self) -> (usize, usize, usize, usize) {
        (self.y0.into(), self.y1.into(), self.x0.into(), self.x1.into())
    }
}

/// Why a partition cannot be computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PartitionError {
    /// `tokens == 0`.
    ZeroTokens,
    /// More regions requested than the patch can be split into with this `min_size`.
    TooManyTokens { requested: usize, max: usize },
    /// The patch or image shape is unusable: a side below 2 or above [`MAX_PATCH_SIDE`], a grey
    /// slice of the wrong length, an image that is not a whole number of patches, or an output
    /// slice whose length is not `tokens`.
    PatchShape { width: usize, height: usize, len: usize, expected: usize },
    /// The bias map does not have one value per pixel.
    BiasShape { len: usize, expected: usize },
}

impl fmt::Display for PartitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PartitionError::ZeroTokens => write!(f, "the number of tokens per patch must be at least 1"),
            PartitionError::TooManyTokens { requested, max } => {
                write!(f, "{requested} tokens per patch requested, but the patch splits into at most {max} regions")
            }
            PartitionError::PatchShape { width, height, len, expected } => write!(
                f,
                "bad patch shape: {width}x{height} (sides 2..={MAX_PATCH_SIDE}, multiples of the patch), \
                 slice of {len} values where {expected} were expected"
            ),
            PartitionError::BiasShape { len, expected } => {
                write!(f, "the bias map has {len} values, expected {expected} (one per pixel)")
            }
        }
    }
}

impl core::error::Error for PartitionError {}

/// Is a region with these inclusive ranges splittable? Only when not both spans are `<= min`
/// (spec 3.3; note the spans are `side - 1`).
#[inline]
fn splittable(r: &Region, min_size: usize) -> bool {
    !(r.height() - 1 <= min_size && r.width() - 1 <= min_size)
}

/// The number of regions a `width x height` patch splits into when every region is split until
/// none is splittable (the largest valid `tokens`). 1024 for 256x256 with `min_size` 8.
pub fn max_regions(width: usize, height: usize, min_size: usize) -> usize {
    // Leaves of the split tree, counted up to `budget` (so the work stays O(budget) even for
    // huge patches). Squares split either way give mirror trees, so the count does not depend on
    // the score-driven choice.
    fn leaves(w: usize, h: usize, min: usize, budget: usize) -> usize {
        if budget == 0 {
            return 0;
        }
        if w == 0 || h == 0 || (w - 1 <= min && h - 1 <= min) {
            return 1;
        }
        let (a, b) = if w >= h { ((w / 2, h), (w - w / 2, h)) } else { ((w, h / 2), (w, h - h / 2)) };
        let first = leaves(a.0, a.1, min, budget);
        if first >= budget {
            return budget;
        }
        first + leaves(b.0, b.1, min, budget - first)
    }
    // A cap well above anything addressable; enough for every practical patch.
    leaves(width, height, min_size, usize::MAX / 2)
}

/// A patch inside a larger row-major image.
#[derive(Clone, Copy)]
struct PatchView<'a> {
    grey: &'a [f32],
    bias: Option<&'a [f32]>,
    stride: usize,
    /// Top-left pixel of the patch in the image.
    oy: usize,
    ox: usize,
    width: usize,
    height: usize,
    math: MathFns,
}

impl PatchView<'_> {
    /// The sort key of a region: complexity plus the summed bias.
    fn key(&self, y0: usize, y1: usize, x0: usize, x1: usize, weight: f64, cache: &mut TermCache) -> Region {
        let (oy, ox) = (self.oy, self.ox);
        let mut r = Region { y0: y0 as u16, y1: y1 as u16, x0: x0 as u16, x1: x1 as u16, score: 0.0 };
        let c =
            complexity_cached(self.grey, self.stride, (oy + y0, oy + y1, ox + x0, ox + x1), weight, &self.math, cache);
        r.score = match self.bias {
            None => c,
            Some(b) => c + bias_sum(b, self.stride, (oy + y0, oy + y1, ox + x0, ox + x1)),
        };
        r
    }

    /// Is every grey value of the patch within `lo..=hi` (false if one is NaN)?
    fn grey_within(&self, (lo, hi): (f32, f32)) -> bool {
        (0..self.height).all(|y| {
            let row = &self.grey[(self.oy + y) * self.stride + self.ox..][..self.width];
            // `&` rather than `&&` over the row, so that the loop has no branch and vectorises.
            row.iter().fold(true, |ok, &v| ok & (v >= lo) & (v <= hi))
        })
    }

    /// Algorithm 1 on this patch (spec 3.3), writing the final list into `out`.
    fn partition(&self, params: &PartitionParams, out: &mut [Region]) -> Result<(), PartitionError> {
        let n = params.tokens;
        let min = params.min_size;
        // `out` doubles as the candidate list: it grows by one per iteration and ends at N.
        let cache = &mut TermCache::new();
        cache.resized_within_unit_range = self.grey_within(score::GREY_BOUND);
        let wt = params.weight;
        out[0] = self.key(0, self.height - 1, 0, self.width - 1, wt, cache);
        let mut len = 1;
        while len < n {
            // Stable descending sort. The list is sorted except for the children appended last
            // time, so an insertion sort (stable: it moves an element only past strictly
            // smaller keys) does what Python's stable `sort(reverse=True)` does, in O(len).
            insertion_sort_desc(&mut out[..len]);
            let Some(pick) = out[..len].iter().position(|r| splittable(r, min)) else {
                // Unreachable after the max_regions check; never split a stale candidate.
                return Err(PartitionError::TooManyTokens { requested: n, max: len });
            };
            let r = out[pick];
            out.copy_within(pick + 1..len, pick);
            len -= 1;
            let (y0, y1, x0, x1) = r.ranges();
            let (h, w) = (r.height(), r.width());
            let xs = (w > min && w >= h).then(|| {
                let mid = x0 + w / 2;
                (self.key(y0, y1, x0, mid - 1, wt, cache), self.key(y0, y1, mid, x1, wt, cache))
            });
            let ys = (h > min && h >= w).then(|| {
                let mid = y0 + h / 2;
                (self.key(y0, mid - 1, x0, x1, wt, cache), self.key(mid, y1, x0, x1, wt, cache))
            });
            let (a, b) = match (xs, ys) {
                (Some(x), None) => x,
                (None, Some(y)) => y,
                (Some(x), Some(y)) => {
                    // Square: split along the axis whose halves' lower key is strictly lower;
                    // a tie goes to the Y split.
                    if x.0.score.min(x.1.score) < y.0.score.min(y.1.score) {
                        x
                    } else {
                        y
                    }
                }
                (None, None) => unreachable!("a splittable region always has a split"),
            };
            out[len] = a;
            out[len + 1] = b;
            len += 2;
        }
        Ok(())
    }
}

/// Stable insertion sort by descending `score`.
fn insertion_sort_desc(list: &mut [Region]) {
    for i in 1..list.len() {
        let cur = list[i];
        let mut j = i;
        while j > 0 && list[j - 1].score < cur.score {
            list[j] = list[j - 1];
            j -= 1;
        }
        list[j] = cur;
    }
}

fn check_side(width: usize, height: usize, len: usize, expected: usize) -> Result<(), PartitionError> {
    let ok_side = |s: usize| (2..=MAX_PATCH_SIDE).contains(&s);
    if !ok_side(width) || !ok_side(height) || len != expected {
        return Err(PartitionError::PatchShape { width, height, len, expected });
    }
    Ok(())
}

fn check_tokens(width: usize, height: usize, params: &PartitionParams) -> Result<(), PartitionError> {
    if params.tokens == 0 {
        return Err(PartitionError::ZeroTokens);
    }
    let max = max_regions(width, height, params.min_size);
    if params.tokens > max {
        return Err(PartitionError::TooManyTokens { requested: params.tokens, max });
    }
    Ok(())
}

/// Algorithm 1 on one `width x height` patch (row-major `grey`, values in [-1, 1]); writes the
/// `params.tokens` regions into `out` in the official token order (the candidate list after the
/// last split, not re-sorted; spec 3.3). `bias` is the optional per-pixel cdbias map of the
/// patch (spec 3.5). Does not allocate: the candidate list lives in `out`.
pub fn partition_patch(
    grey: &[f32],
    width: usize,
    height: usize,
    params: &PartitionParams,
    bias: Option<&[f32]>,
    out: &mut [Region],
) -> Result<(), PartitionError> {
    partition_patch_with(grey, width, height, params, bias, &MathFns::PORTABLE, out)
}

/// [`partition_patch`] with caller-chosen `log2` and `pow` (see [`MathFns`]).
pub fn partition_patch_with(
    grey: &[f32],
    width: usize,
    height: usize,
    params: &PartitionParams,
    bias: Option<&[f32]>,
    math: &MathFns,
    out: &mut [Region],
) -> Result<(), PartitionError> {
    check_side(width, height, grey.len(), width.saturating_mul(height))?;
    if let Some(b) = bias {
        if b.len() != grey.len() {
            return Err(PartitionError::BiasShape { len: b.len(), expected: grey.len() });
        }
    }
    check_tokens(width, height, params)?;
    if out.len() != params.tokens {
        return Err(PartitionError::PatchShape { width, height, len: out.len(), expected: params.tokens });
    }
    let view = PatchView { grey, bias, stride: width, oy: 0, ox: 0, width, height, math: *math };
    view.partition(params, out)
}

/// The initial Gaussian `[sigma_x, sigma_y, rho, x, y]` of a region of a `width x height` patch
/// (spec 3.4): f64 left to right as the official code writes it, then cast to f32. Sigma uses
/// `(side - 1) / W`, the centre `/ (W - 1)`.
pub fn region_gaussian(r: &Region, width: usize, height: usize) -> [f32; 5] {
    let (y0, y1, x0, x1) = r.ranges();
    let (w, h) = (width as f64, height as f64);
    let sx = (x1 - x0) as f64 / w * 2.0 / 3.0;
    let sy = (y1 - y0) as f64 / h * 2.0 / 3.0;
    let cx = (((x1 + x0) as f64 / 2.0) / (w - 1.0) - 0.5) * 2.0;
    let cy = (((y1 + y0) as f64 / 2.0) / (h - 1.0) - 0.5) * 2.0;
    [sx as f32, sy as f32, 0.0, cx as f32, cy as f32]
}

/// The RoI box `[X1, Y1, X2, Y2]` of a region in normalised coordinates (spec 3.4): the first
/// and last pixel centres of the region.
pub fn region_box(r: &Region, width: usize, height: usize) -> [f32; 4] {
    let (y0, y1, x0, x1) = r.ranges();
    let (w1, h1) = (width as f64 - 1.0, height as f64 - 1.0);
    let n = |v: usize, d: f64| ((v as f64 / d - 0.5) * 2.0) as f32;
    [n(x0, w1), n(y0, h1), n(x1, w1), n(y1, h1)]
}

#[cfg(feature = "alloc")]
pub use self::image::{partition_image, partition_image_with, Partition};

#[cfg(feature = "alloc")]
mod image {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Algorithm 1 over a whole image cut into square patches (spec 3.6).
    #[derive(Clone, Debug, PartialEq)]
    pub struct Partition {
        pub width: usize,
        pub height: usize,
        pub patch: usize,
        pub patches_x: usize,
        pub patches_y: usize,
        pub tokens_per_patch: usize,
        /// Regions local to their patch; patch `k = i / tokens_per_patch`, row-major.
        pub regions: Vec<Region>,
        /// [`region_gaussian`] of every region (patch-local coordinates).
        pub gaussians: Vec<[f32; 5]>,
        /// [`region_box`] of every region (patch-local coordinates).
        pub boxes: Vec<[f32; 4]>,
    }

    /// Cuts the `width x height` grey image (row-major, [-1, 1]) into `patch x patch` patches,
    /// row-major, and partitions each with the same parameters; `bias` is the full-image cdbias
    /// map, cut per patch (spec 3.5, 3.6). `width` and `height` must be multiples of `patch`.
    pub fn partition_image(
        grey: &[f32],
        width: usize,
        height: usize,
        patch: usize,
        params: &PartitionParams,
        bias: Option<&[f32]>,
    ) -> Result<Partition, PartitionError> {
        partition_image_with(grey, width, height, patch, params, bias, &MathFns::PORTABLE)
    }

    /// [`partition_image`] with caller-chosen `log2` and `pow` (see [`MathFns`]).
    pub fn partition_image_with(
        grey: &[f32],
        width: usize,
        height: usize,
        patch: usize,
        params: &PartitionParams,
        bias: Option<&[f32]>,
        math: &MathFns,
    ) -> Result<Partition, PartitionError> {
        let shape_err = PartitionError::PatchShape { width, height, len: grey.len(), expected: width * height };
        check_side(patch, patch, 0, 0)?;
        if width == 0
            || height == 0
            || !width.is_multiple_of(patch)
            || !height.is_multiple_of(patch)
            || grey.len() != width * height
        {
            return Err(shape_err);
        }
        if let Some(b) = bias {
            if b.len() != grey.len() {
                return Err(PartitionError::BiasShape { len: b.len(), expected: grey.len() });
            }
        }
        check_tokens(patch, patch, params)?;
        let (px, py) = (width / patch, height / patch);
        let n = params.tokens;
        let blank = Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 };
        let mut regions = vec![blank; px * py * n];
        for (k, out) in regions.chunks_exact_mut(n).enumerate() {
            let view = PatchView {
                grey,
                bias,
                stride: width,
                oy: (k / px) * patch,
                ox: (k % px) * patch,
                width: patch,
                height: patch,
                math: *math,
            };
            view.partition(params, out)?;
        }
        let gaussians = regions.iter().map(|r| region_gaussian(r, patch, patch)).collect();
        let boxes = regions.iter().map(|r| region_box(r, patch, patch)).collect();
        Ok(Partition {
            width,
            height,
            patch,
            patches_x: px,
            patches_y: py,
            tokens_per_patch: n,
            regions,
            gaussians,
            boxes,
        })
    }
}

#[cfg(test)]
mod tests;
