//! The complexity score of one region (spec 3.2): resize to 64x64, Sobel magnitude histogram,
//! entropy, `E^weight * h * w`; and the cdbias sums (spec 3.5).

use super::resize::{resize64, Source, Taps};
use super::{MathFns, BINS, RS};

/// `calculate_complexity_degree` of the official code (spec 3.2) on the region
/// `grey[y0..=y1][x0..=x1]` of a row-major image with row stride `stride`:
/// `E^weight * h * w` with `E` the entropy (bits) of the Sobel magnitude histogram of the region
/// resized to 64x64.
///
/// # Panics
/// If the region is empty or reaches outside `grey`.
pub fn complexity(grey: &[f32], stride: usize, region: (usize, usize, usize, usize), weight: f64) -> f64 {
    complexity_with(grey, stride, region, weight, &MathFns::PORTABLE)
}

/// [`complexity`] with caller-chosen `log2` and `pow`.
///
/// # Panics
/// If the region is empty or reaches outside `grey`.
pub fn complexity_with(
    grey: &[f32],
    stride: usize,
    region: (usize, usize, usize, usize),
    weight: f64,
    math: &MathFns,
) -> f64 {
    complexity_cached(grey, stride, region, weight, math, &mut TermCache::new())
}

pub(super) fn complexity_cached(
    grey: &[f32],
    stride: usize,
    region: (usize, usize, usize, usize),
    weight: f64,
    math: &MathFns,
    cache: &mut TermCache,
) -> f64 {
    let (y0, y1, x0, x1) = region;
    assert!(y1 >= y0 && x1 >= x0 && x1 < stride, "bad region {region:?}");
    let (h, w) = (y1 - y0 + 1, x1 - x0 + 1);
    // The buffer is reused from score to score: the resize writes every pixel.
    resize64(&Source { grey, stride, y0, h, x0, w }, &mut cache.img, &mut cache.taps);
    let mut hist = [0u32; BINS];
    if cache.resized_within_unit_range {
        super::sobel::sobel_histogram_unit_into(&cache.img, &mut hist);
    } else {
        super::sobel::sobel_histogram_into(&cache.img, &mut hist);
    }
    let e = entropy_cached(&hist, math, cache);
    // `entropy ** weight * h * w`: f64 pow, then two multiplications left to right.
    (math.pow)(e, weight) * h as f64 * w as f64
}

/// Step 1-2 of [`complexity`]: `u = (R + 1) / 2` resized to 64x64 (row-major into `out`) as
/// `cv2.resize(u, (64, 64))` does with INTER_LINEAR on f32 in OpenCV 4.9 without IPP
/// (spec 3.2 step 2). Region as in [`complexity`].
///
/// # Panics
/// If the region is empty or reaches outside `grey`.
pub fn resize_region64(grey: &[f32], stride: usize, region: (usize, usize, usize, usize), out: &mut [f32; RS * RS]) {
    let (y0, y1, x0, x1) = region;
    assert!(y1 >= y0 && x1 >= x0 && x1 < stride, "bad region {region:?}");
    resize64(&Source { grey, stride, y0, h: y1 - y0 + 1, x0, w: x1 - x0 + 1 }, out, &mut Taps::new());
}

/// Steps 3-5 of [`complexity`]: the Sobel (3x3, f64, BORDER_REPLICATE) gradient magnitude of
/// the 64x64 image binned like `np.histogram(m, bins=512, range=(-5.5, 5.5))`. Magnitudes above
/// 5.5 are dropped (spec 3.2 step 5 quirk).
pub fn sobel_histogram(img: &[f32; RS * RS]) -> [u32; BINS] {
    let mut hist = [0u32; BINS];
    super::sobel::sobel_histogram_into(img, &mut hist);
    hist
}

/// Steps 6-7 of [`complexity`]: `-sum(p * log2(p + 1e-10))` with `p = hist / (hist.sum() + 1e-5)`, summed in NumPy's pairwise
/// order (spec 3.2 steps 6-7): four blocks of 128, each with 8 strided accumulators.
pub fn entropy(hist: &[u32; BINS]) -> f64 {
    entropy_with(hist, &MathFns::PORTABLE)
}

/// [`entropy`] with a caller-chosen `log2`.
pub fn entropy_with(hist: &[u32; BINS], math: &MathFns) -> f64 {
    entropy_cached(hist, math, &mut TermCache::new())
}

/// Memo of the entropy terms `p * log2(p + 1e-10)` by bin count, valid for one sample total `n`
/// and one `log2`, the resize buffer and its tap tables, all reused from score to score. Nearly every region
/// gives `n = 4096` (a magnitude above 5.5 is rare), so a partition evaluates each distinct term
/// once instead of ~200 logarithms per score.
pub(super) struct TermCache {
    n: u64,
    /// Term for count `c`, NaN while not computed; count 0 holds -0.0, the term of an empty bin
    /// as far as the sums go (see [`entropy_cached`]).
    terms: [f64; RS * RS + 1],
    img: [f32; RS * RS],
    taps: Taps,
    /// Whether every image the resize makes is known to lie within `[-1, 1]`, so that the Sobel
    /// kernel need not check it: true when every grey value it reads is in `[-3, 1]` (see
    /// [`GREY_BOUND`]). False by default.
    pub(super) resized_within_unit_range: bool,
}

/// Grey values in `GREY_BOUND.0..=GREY_BOUND.1` give resized images within `[-1, 1]`.
///
/// Why: `u = (g + 1) / 2` is then in `[-1, 1]` (the roundings are monotone and the bounds -2,
/// 2, -1, 1 are representable). Every resized value is `u` itself (the copy at 64x64), the area
/// average `((a + b) + (c + d)) * 0.25` of four such values (at most 4 before the exact scaling),
/// or a two-tap blend `p * (1 - f) + q * f` of such values with `f` in `[0, 1)`, applied twice
/// (columns, then rows). In a blend `|fl(p * a0)| <= a0` and `|fl(q * f)| <= f`, with
/// `a0 = fl(1 - f) <= 1 - f + 2^-25` (half an ulp of a value below 1); a sum of magnitude at most
/// `1 + 2^-25` rounds to at most 1. A test checks it on extreme inputs
/// (`resize::tests::grey_bound_keeps_resized_images_in_the_unit_range`).
pub(super) const GREY_BOUND: (f32, f32) = (-3.0, 1.0);

impl TermCache {
    pub(super) fn new() -> Self {
        let mut c = TermCache {
            n: u64::MAX,
            terms: [f64::NAN; RS * RS + 1],
            img: [0.0; RS * RS],
            taps: Taps::new(),
            resized_within_unit_range: false,
        };
        c.terms[0] = -0.0;
        c
    }
}

fn entropy_cached(hist: &[u32; BINS], math: &MathFns, cache: &mut TermCache) -> f64 {
    let n: u64 = hist.iter().map(|&c| u64::from(c)).sum();
    if cache.n != n {
        cache.n = n;
        cache.terms.fill(f64::NAN);
        cache.terms[0] = -0.0;
    }
    let denom = n as f64 + 1e-5;
    let mut term = |c: u32| {
        let slot = &mut cache.terms[c as usize];
        if slot.is_nan() {
            let p = f64::from(c) / denom;
            *slot = p * (math.log2)(p + 1e-10);
        }
        *slot
    };
    // NumPy's pairwise order: 8 accumulators per block of 128, `r_m = t_m + t_{m+8} + ...`,
    // combined as `((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))`. The real term of an empty bin is
    // `0 * log2(1e-10) = -0.0`; the memo gives -0.0 for count 0 without a logarithm. A block of
    // empty bins sums to -0.0 (the negative half of the histogram always is one).
    let mut block = |b: &[u32]| {
        if b.iter().all(|&c| c == 0) {
            return -0.0;
        }
        let mut r = [0.0f64; 8];
        for (acc, &c) in r.iter_mut().zip(&b[..8]) {
            *acc = term(c);
        }
        for chunk in b[8..].chunks_exact(8) {
            for (acc, &c) in r.iter_mut().zip(chunk) {
                *acc += term(c);
            }
        }
        ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    };
    let (b0, b1, b2, b3) =
        (block(&hist[0..128]), block(&hist[128..256]), block(&hist[256..384]), block(&hist[384..512]));
    -((b0 + b1) + (b2 + b3))
}

/// NumPy's float32 pairwise sum of a contiguous run (`pairwise_sum` in `loops_utils.h`).
fn pairwise_sum_f32(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        // NumPy starts from -0.0 here, which keeps the sign of an all-(-0.0) run.
        let mut res = -0.0f32;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f32; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for m in 0..8 {
                r[m] += a[i + m];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum_f32(&a[..n2]) + pairwise_sum_f32(&a[n2..])
    }
}

/// `cdbias[y0:y1+1, x0:x1+1].sum()` as NumPy computes it on a float32 2-D view (region in
/// image coordinates): a pairwise sum along each row, accumulated row by row in f32 (spec 3.5).
/// Exact for integer-valued biases whose partial sums stay below 2^24, which is the case the
/// golden data checks; for other biases this is our best reading of NumPy's reduction order.
pub(super) fn bias_sum(bias: &[f32], stride: usize, region: (usize, usize, usize, usize)) -> f64 {
    let (y0, y1, x0, x1) = region;
    let mut acc = 0.0f32;
    for y in y0..=y1 {
        acc += pairwise_sum_f32(&bias[y * stride + x0..=y * stride + x1]);
    }
    f64::from(acc)
}
