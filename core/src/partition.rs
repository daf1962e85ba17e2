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

use core::fmt;

/// Side of the square image every region is resized to before the Sobel filter (spec 3.2 step 2).
pub const RS: usize = 64;
/// Number of histogram bins (spec 3.2 step 5).
pub const BINS: usize = 512;
/// Histogram range `(-5.5, 5.5)`.
const HIST_LO: f64 = -5.5;
const HIST_HI: f64 = 5.5;

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

/// `log2` and `pow` as glibc returns them (NumPy calls the C library, spec 3.2 steps 7-8).
///
/// glibc's `log2` and `pow` are accurate to about 0.502 and 0.52 ulp, i.e. they return the
/// correctly rounded result except in rare cases. The `libm` crate (FreeBSD code) is not: on the
/// golden call log its `pow(E, 2.5)` differs from glibc in about 10% of the calls and its `log2`
/// in 220 of 264k arguments. So both are computed here in double-double arithmetic (about 100
/// bits) and rounded once, which is correctly rounded except for arguments within ~2^-45 ulp of
/// a rounding midpoint; the golden tests check every value against glibc's.
mod fmath {
    /// A double-double `hi + lo` with `|lo| <= ulp(hi)/2`.
    #[derive(Clone, Copy)]
    struct Dd(f64, f64);

    #[inline]
    fn two_sum(a: f64, b: f64) -> Dd {
        let s = a + b;
        let bb = s - a;
        Dd(s, (a - (s - bb)) + (b - bb))
    }
    #[inline]
    fn fast_two_sum(a: f64, b: f64) -> Dd {
        let s = a + b;
        Dd(s, b - (s - a))
    }
    /// Dekker's split (no FMA needed, so the result does not depend on the target).
    #[inline]
    fn split(a: f64) -> (f64, f64) {
        let t = 134_217_729.0 * a; // 2^27 + 1
        let hi = t - (t - a);
        (hi, a - hi)
    }
    #[inline]
    fn two_prod(a: f64, b: f64) -> Dd {
        let p = a * b;
        let (ah, al) = split(a);
        let (bh, bl) = split(b);
        Dd(p, ((ah * bh - p) + ah * bl + al * bh) + al * bl)
    }
    #[inline]
    fn add(a: Dd, b: Dd) -> Dd {
        let s = two_sum(a.0, b.0);
        let t = two_sum(a.1, b.1);
        let s = fast_two_sum(s.0, s.1 + t.0);
        fast_two_sum(s.0, s.1 + t.1)
    }
    #[inline]
    fn mul(a: Dd, b: Dd) -> Dd {
        let p = two_prod(a.0, b.0);
        fast_two_sum(p.0, p.1 + (a.0 * b.1 + a.1 * b.0))
    }
    #[inline]
    fn div(a: Dd, b: Dd) -> Dd {
        let q1 = a.0 / b.0;
        let r = add(a, mul(b, Dd(-q1, 0.0)));
        let q2 = r.0 / b.0;
        let r = add(r, mul(b, Dd(-q2, 0.0)));
        let q3 = r.0 / b.0;
        let q = fast_two_sum(q1, q2);
        add(q, Dd(q3, 0.0))
    }
    /// `1 / ln 2` as a double-double.
    const INV_LN2: Dd = Dd(core::f64::consts::LOG2_E, 2.035_527_374_093_103_3e-17);

    /// `log2(x)`, correctly rounded for positive normal `x` (barring midpoint cases closer than
    /// about 2^-85 relative); other inputs go to `libm`.
    pub fn log2(x: f64) -> f64 {
        if !(x.is_finite() && x >= f64::MIN_POSITIVE) {
            return libm::log2(x);
        }
        let bits = x.to_bits();
        let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
        let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
        if m > core::f64::consts::SQRT_2 {
            m *= 0.5;
            e += 1;
        }
        // ln m = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), s = (m-1)/(m+1), |s| < 0.1716.
        let s = div(Dd(m - 1.0, 0.0), two_sum(m, 1.0));
        let s2 = mul(s, s);
        // Tail (k = 6..=17) in f64: it is below 2^-34 of the sum, so f64 is accurate enough.
        let mut tail = 0.0;
        for k in (6..=17).rev() {
            tail = tail * s2.0 + 1.0 / (2 * k + 1) as f64;
        }
        let mut acc = Dd(tail, 0.0);
        for k in (0..6).rev() {
            let d = (2 * k + 1) as f64;
            acc = add(mul(acc, s2), div(Dd(1.0, 0.0), Dd(d, 0.0)));
        }
        let ln_m = mul(mul(Dd(2.0 * s.0, 2.0 * s.1), acc), INV_LN2);
        let r = add(Dd(e as f64, 0.0), ln_m);
        r.0 + r.1
    }

    /// `x^y`, correctly rounded (barring near-midpoint cases) when `x >= 0` and `y` is a
    /// non-negative multiple of 1/2 up to 64, which covers every released weight (2.5); other
    /// cases go to `libm::pow`, which may differ from glibc by an ulp.
    pub fn pow(x: f64, y: f64) -> f64 {
        let twice = y * 2.0;
        if !(x.is_finite() && x > 0.0 && (0.0..=128.0).contains(&twice) && libm::floor(twice) == twice) {
            return libm::pow(x, y);
        }
        let mut k = (twice as u32) / 2;
        let mut r = Dd(1.0, 0.0);
        let mut b = Dd(x, 0.0);
        while k > 0 {
            if k & 1 == 1 {
                r = mul(r, b);
            }
            b = mul(b, b);
            k >>= 1;
        }
        if (twice as u32) % 2 == 1 {
            // sqrt(x) as a double-double: one Newton correction of the rounded root.
            let h = libm::sqrt(x);
            let p = two_prod(h, h);
            let l = ((x - p.0) - p.1) / (2.0 * h);
            r = mul(r, fast_two_sum(h, l));
        }
        r.0 + r.1
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn exact_cases() {
            assert_eq!(super::log2(1.0), 0.0);
            assert_eq!(super::log2(0.25), -2.0);
            assert_eq!(super::log2(1024.0), 10.0);
            assert_eq!(super::pow(4.0, 2.5), 32.0);
            assert_eq!(super::pow(9.0, 0.5), 3.0);
            assert_eq!(super::pow(3.0, 3.0), 27.0);
            assert_eq!(super::log2(0.0), f64::NEG_INFINITY);
        }
    }
}

/// The two C-library functions the official score calls through NumPy (spec 3.2 steps 7-8).
///
/// [`MathFns::PORTABLE`], the default, computes both correctly rounded (in double-double, see
/// below); this is what glibc returns for every `log2` argument of the golden data (264k
/// values) but not for 9 of the 6148 `pow(E, 2.5)` calls, where glibc's `pow` (0.52 ulp) is off
/// by one ulp near a rounding midpoint. A `std` caller on glibc can pass
/// `MathFns { log2: f64::log2, pow: f64::powf }` to reproduce the official scores bit for bit
/// (that is what the golden test does); the partitions are identical either way on the golden data.
#[derive(Clone, Copy, Debug)]
pub struct MathFns {
    /// `log2(x)`.
    pub log2: fn(f64) -> f64,
    /// `pow(x, y)`.
    pub pow: fn(f64, f64) -> f64,
}

impl MathFns {
    /// Correctly rounded `log2` and `pow` (for weights that are multiples of 1/2), platform
    /// independent.
    pub const PORTABLE: MathFns = MathFns { log2: fmath::log2, pow: fmath::pow };
}

impl Default for MathFns {
    fn default() -> Self {
        MathFns::PORTABLE
    }
}

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

fn complexity_cached(
    grey: &[f32],
    stride: usize,
    region: (usize, usize, usize, usize),
    weight: f64,
    math: &MathFns,
    cache: &mut TermCache,
) -> f64 {
    let (y0, y1, x0, x1) = region;
    assert!(y1 >= y0 && x1 >= x0 && x1 < stride, "bad region {region:?}");
    let mut img = [0.0f32; RS * RS];
    let (h, w) = (y1 - y0 + 1, x1 - x0 + 1);
    resize64(grey, stride, y0, h, x0, w, &mut img);
    let hist = sobel_histogram(&img);
    let e = entropy_cached(&hist, math, cache);
    // `entropy ** weight * h * w`: f64 pow, then two multiplications left to right.
    (math.pow)(e, weight) * h as f64 * w as f64
}

/// `(v + 1) / 2` in f32, the first line of `calculate_complexity_degree`.
#[inline]
fn unit(v: f32) -> f32 {
    (v + 1.0) / 2.0
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
    resize64(grey, stride, y0, y1 - y0 + 1, x0, x1 - x0 + 1, out);
}

fn resize64(grey: &[f32], stride: usize, y0: usize, h: usize, x0: usize, w: usize, out: &mut [f32; RS * RS]) {
    let src = |r: usize, c: usize| unit(grey[(y0 + r) * stride + x0 + c]);
    if w == RS && h == RS {
        // dsize == ssize: cv::resize copies.
        for r in 0..RS {
            for c in 0..RS {
                out[r * RS + c] = src(r, c);
            }
        }
        return;
    }
    if w == 2 * RS && h == 2 * RS {
        // Both scales exactly 2: OpenCV switches INTER_LINEAR to the INTER_AREA fast path.
        for i in 0..RS {
            for j in 0..RS {
                let (r, c) = (2 * i, 2 * j);
                out[i * RS + j] = ((src(r, c) + src(r, c + 1)) + (src(r + 1, c) + src(r + 1, c + 1))) * 0.25;
            }
        }
        return;
    }
    // Generic separable bilinear (resizeGeneric_ with HResizeLinear / VResizeLinear).
    // Column taps: `xofs`, `alpha`; `copy` marks the columns at or beyond `xmax`, which take the
    // last source pixel unweighted.
    let scale_x = 1.0 / (RS as f64 / w as f64);
    let mut kx = [0usize; RS];
    let mut ax = [0.0f32; RS];
    let mut copy = [false; RS];
    for j in 0..RS {
        let f = ((j as f64 + 0.5) * scale_x - 0.5) as f32;
        let mut k = libm::floorf(f) as i64;
        let mut frac = f - k as f32;
        if k < 0 {
            k = 0;
            frac = 0.0;
        }
        if k + 1 >= w as i64 {
            k = w as i64 - 1;
            frac = 0.0;
            copy[j] = true;
        }
        kx[j] = k as usize;
        ax[j] = frac;
    }
    let hrow = |r: usize, dst: &mut [f32; RS]| {
        for j in 0..RS {
            let k = kx[j];
            dst[j] = if copy[j] {
                src(r, k)
            } else {
                let fx = ax[j];
                src(r, k) * (1.0 - fx) + src(r, k + 1) * fx
            };
        }
    };
    let scale_y = 1.0 / (RS as f64 / h as f64);
    // Two horizontally resampled rows, cached by source row like OpenCV's ring of rows.
    let mut rows = [[0.0f32; RS]; 2];
    let mut have = [usize::MAX; 2];
    for i in 0..RS {
        let f = ((i as f64 + 0.5) * scale_y - 0.5) as f32;
        let k = libm::floorf(f) as i64;
        let fy = f - k as f32;
        let clip = |v: i64| v.clamp(0, h as i64 - 1) as usize;
        let (r0, r1) = (clip(k), clip(k + 1));
        if have[0] != r0 {
            if have[1] == r0 {
                rows[0] = rows[1];
                have[0] = r0;
            } else {
                hrow(r0, &mut rows[0]);
                have[0] = r0;
            }
        }
        if have[1] != r1 {
            hrow(r1, &mut rows[1]);
            have[1] = r1;
        }
        let (b0, b1) = (1.0 - fy, fy);
        for j in 0..RS {
            out[i * RS + j] = rows[0][j] * b0 + rows[1][j] * b1;
        }
    }
}

/// Steps 3-5 of [`complexity`]: the Sobel (3x3, f64, BORDER_REPLICATE) gradient magnitude of
/// the 64x64 image binned like `np.histogram(m, bins=512, range=(-5.5, 5.5))`.
pub fn sobel_histogram(img: &[f32; RS * RS]) -> [u32; BINS] {
    let mut hist = [0u32; BINS];
    // NumPy: norm = bins / (last - first); edges e_k = k * (11/512) - 5.5 are exact dyadics.
    let norm = BINS as f64 / (HIST_HI - HIST_LO);
    let edge = |k: usize| k as f64 * ((HIST_HI - HIST_LO) / BINS as f64) + HIST_LO;
    // The image with a one-pixel replicated border (BORDER_REPLICATE), as f64.
    const P: usize = RS + 2;
    let mut pad = [0.0f64; P * P];
    for r in 0..P {
        let sr = r.saturating_sub(1).min(RS - 1);
        for c in 0..P {
            pad[r * P + c] = f64::from(img[sr * RS + c.saturating_sub(1).min(RS - 1)]);
        }
    }
    for i in 0..RS {
        let (up, mid, dn) = (&pad[i * P..][..P], &pad[(i + 1) * P..][..P], &pad[(i + 2) * P..][..P]);
        for j in 0..RS {
            let (lf, c, rt) = (j, j + 1, j + 2);
            // Every term is exact in f64 (sums of a few f32 values), so the order is irrelevant.
            let gx = (up[rt] - up[lf]) + 2.0 * (mid[rt] - mid[lf]) + (dn[rt] - dn[lf]);
            let gy = (dn[lf] - up[lf]) + 2.0 * (dn[c] - up[c]) + (dn[rt] - up[rt]);
            let m = libm::sqrt(gx * gx + gy * gy);
            // Kept only inside [first, last] edge: magnitudes above 5.5 are dropped (quirk).
            if !(HIST_LO..=HIST_HI).contains(&m) {
                continue;
            }
            // numpy.histogram's uniform-bin path: truncate, clamp the last edge, then correct by
            // one bin against the exact edges.
            let mut k = ((m - HIST_LO) * norm) as usize;
            if k == BINS {
                k -= 1;
            }
            if m < edge(k) {
                k -= 1;
            } else if k != BINS - 1 && m >= edge(k + 1) {
                k += 1;
            }
            hist[k] += 1;
        }
    }
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
/// and one `log2`. Nearly every region gives `n = 4096` (a magnitude above 5.5 is rare), so a
/// partition evaluates each distinct term once instead of ~200 logarithms per score.
struct TermCache {
    n: u64,
    /// Term for count `c`, NaN while not computed.
    terms: [f64; RS * RS + 1],
}

impl TermCache {
    fn new() -> Self {
        TermCache { n: u64::MAX, terms: [f64::NAN; RS * RS + 1] }
    }
}

fn entropy_cached(hist: &[u32; BINS], math: &MathFns, cache: &mut TermCache) -> f64 {
    let n: u64 = hist.iter().map(|&c| u64::from(c)).sum();
    if cache.n != n {
        cache.n = n;
        cache.terms.fill(f64::NAN);
    }
    let denom = n as f64 + 1e-5;
    let mut term = |c: u32| {
        if c == 0 {
            // 0 * log2(1e-10) = -0.0: skip the logarithm, keep the sign.
            return -0.0;
        }
        let slot = &mut cache.terms[c as usize];
        if slot.is_nan() {
            let p = f64::from(c) / denom;
            *slot = p * (math.log2)(p + 1e-10);
        }
        *slot
    };
    let mut block = |b: &[u32]| {
        let mut r = [0.0f64; 8];
        for (m, acc) in r.iter_mut().enumerate() {
            *acc = term(b[m]);
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

    /// Algorithm 1 on this patch (spec 3.3), writing the final list into `out`.
    fn partition(&self, params: &PartitionParams, out: &mut [Region]) -> Result<(), PartitionError> {
        let n = params.tokens;
        let min = params.min_size;
        // `out` doubles as the candidate list: it grows by one per iteration and ends at N.
        let cache = &mut TermCache::new();
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

/// `cdbias[y0:y1+1, x0:x1+1].sum()` as NumPy computes it on a float32 2-D view (region in
/// image coordinates): a pairwise sum along each row, accumulated row by row in f32 (spec 3.5).
/// Exact for integer-valued biases whose partial sums stay below 2^24, which is the case the
/// golden data checks; for other biases this is our best reading of NumPy's reduction order.
fn bias_sum(bias: &[f32], stride: usize, region: (usize, usize, usize, usize)) -> f64 {
    let (y0, y1, x0, x1) = region;
    let mut acc = 0.0f32;
    for y in y0..=y1 {
        acc += pairwise_sum_f32(&bias[y * stride + x0..=y * stride + x1]);
    }
    f64::from(acc)
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
        if width == 0 || height == 0 || width % patch != 0 || height % patch != 0 || grey.len() != width * height {
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
mod tests {
    use super::*;

    fn blank() -> [Region; 4] {
        [Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; 4]
    }

    #[test]
    fn region_limits() {
        assert_eq!(max_regions(256, 256, 8), MAX_REGIONS);
        assert_eq!(max_regions(64, 64, 8), 64);
        assert_eq!(max_regions(9, 9, 8), 1);
        assert_eq!(max_regions(10, 9, 8), 2);
    }

    #[test]
    fn errors_not_panics() {
        let g = [0.0f32; 16 * 16];
        let mut out = blank();
        let p = |tokens| PartitionParams::new(tokens);
        assert_eq!(partition_patch(&g, 16, 16, &p(0), None, &mut out[..0]), Err(PartitionError::ZeroTokens));
        assert_eq!(
            partition_patch(&g, 16, 16, &p(5), None, &mut out),
            Err(PartitionError::TooManyTokens { requested: 5, max: 4 })
        );
        assert!(matches!(
            partition_patch(&g[1..], 16, 16, &p(4), None, &mut out),
            Err(PartitionError::PatchShape { .. })
        ));
        assert!(matches!(
            partition_patch(&g, 16, 16, &p(4), Some(&g[1..]), &mut out),
            Err(PartitionError::BiasShape { .. })
        ));
        assert!(matches!(
            partition_patch(&g, 16, 16, &p(4), None, &mut out[..3]),
            Err(PartitionError::PatchShape { .. })
        ));
        // A flat patch: every key ties, so the stable order and the Y-first tie rule decide.
        partition_patch(&g, 16, 16, &p(4), None, &mut out).unwrap();
        let r: [(u16, u16, u16, u16); 4] = out.map(|r| (r.y0, r.y1, r.x0, r.x1));
        // Root square: the four halves tie, so the Y split wins (top, bottom); the top half (a
        // 2:1 rectangle) splits into columns and its halves go to the end; the bottom half, now
        // the highest key, splits next.
        assert_eq!(r, [(0, 7, 0, 7), (0, 7, 8, 15), (8, 15, 0, 7), (8, 15, 8, 15)]);
        assert!(out[0].score > 0.0 && out[0].score < 1e-15);
    }

    #[test]
    fn gaussian_and_box() {
        let r = Region { y0: 0, y1: 255, x0: 0, x1: 127, score: 0.0 };
        let g = region_gaussian(&r, 256, 256);
        assert_eq!(
            g,
            [
                (127.0f64 / 256.0 * 2.0 / 3.0) as f32,
                (255.0f64 / 256.0 * 2.0 / 3.0) as f32,
                0.0,
                ((63.5f64 / 255.0 - 0.5) * 2.0) as f32,
                0.0
            ]
        );
        assert_eq!(region_box(&r, 256, 256), [-1.0, -1.0, ((127.0f64 / 255.0 - 0.5) * 2.0) as f32, 1.0]);
    }
}
