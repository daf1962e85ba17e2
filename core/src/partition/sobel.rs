//! Steps 3-5 of the score (spec 3.2): the Sobel gradient magnitude of the 64x64 image, binned
//! like `np.histogram(m, bins=512, range=(-5.5, 5.5))`.
//!
//! Several implementations give the same bits: [`reference`] (scalar, the plain reading of the
//! spec, used on targets other than x86-64 and by the tests), and on x86-64 an SSE2 kernel
//! (baseline, 2 lanes), AVX2 kernels (4 lanes in f64, 8 in f32) and AVX-512 kernels (8 lanes in
//! f64, 16 in f32), chosen at run time with CPUID, which works without `std`. The f32 kernels
//! take images within `[-1, 1]`, i.e. every image Algorithm 1 scores, with an error bound that
//! decides which pixels need the f64 expression (`sobel/avx512_f32.rs`). Every lane computes exactly the scalar expression: the same operations in the
//! same order, IEEE `sqrt` (correctly rounded, so the instruction and `libm` agree), no FMA
//! (Rust never contracts `a * b + c`, and only `avx2` is enabled).

use super::{BINS, RS};

/// Histogram range `(-5.5, 5.5)`.
const HIST_LO: f64 = -5.5;
const HIST_HI: f64 = 5.5;
/// NumPy's `norm = bins / (last - first)`.
const NORM: f64 = BINS as f64 / (HIST_HI - HIST_LO);
/// Bin width `11/512` (exact): edges `e_k = k * BIN_W + HIST_LO` are exact dyadics.
const BIN_W: f64 = (HIST_HI - HIST_LO) / BINS as f64;
/// A padded row: the 64 pixels with one replicated pixel each side (BORDER_REPLICATE).
const P: usize = RS + 2;
/// Bin index of a magnitude outside `[-5.5, 5.5]` (dropped, spec 3.2 step 5 quirk).
const DROP: usize = BINS;
/// The first bin of magnitude 0: bins below it (negative magnitudes) are always empty.
const HALF: usize = BINS / 2;
/// Interleaved sub-histograms: pixel `j` of a row counts into `j % SUBS`.
const SUBS: usize = 8;

/// The bin of one magnitude as `numpy.histogram`'s uniform-bin path computes it: truncate, clamp
/// the last edge, then correct by one bin against the exact edges. [`DROP`] outside the range.
#[inline]
fn bin_of(m: f64) -> usize {
    if !(HIST_LO..=HIST_HI).contains(&m) {
        return DROP;
    }
    let edge = |k: usize| k as f64 * BIN_W + HIST_LO;
    let mut k = ((m - HIST_LO) * NORM) as usize;
    if k == BINS {
        k -= 1;
    }
    if m < edge(k) {
        k -= 1;
    } else if k != BINS - 1 && m >= edge(k + 1) {
        k += 1;
    }
    k
}

/// The histogram of the Sobel magnitudes of `img`, by the fastest kernel this CPU runs.
pub(super) fn sobel_histogram_into(img: &[f32; RS * RS], hist: &mut [u32; BINS]) {
    #[cfg(target_arch = "x86_64")]
    x86::sobel_histogram(img, hist);
    #[cfg(not(target_arch = "x86_64"))]
    reference(img, hist)
}

/// [`sobel_histogram_into`] for an image known to lie within `[-1, 1]` (so the f32 kernel
/// need not check it; see `score::GREY_BOUND`).
pub(super) fn sobel_histogram_unit_into(img: &[f32; RS * RS], hist: &mut [u32; BINS]) {
    #[cfg(target_arch = "x86_64")]
    x86::sobel_histogram_known(img, hist, true);
    #[cfg(not(target_arch = "x86_64"))]
    reference(img, hist)
}

/// The scalar kernel: per pixel the spec's formula, one `sqrt`, [`bin_of`].
#[cfg(any(test, not(target_arch = "x86_64")))]
pub(super) fn reference(img: &[f32; RS * RS], hist: &mut [u32; BINS]) {
    drive(img, hist, |up, mid, dn, idx| {
        for (j, out) in idx.iter_mut().enumerate() {
            let (lf, c, rt) = (j, j + 1, j + 2);
            // Every term is exact in f64 (sums of a few f32 values) for the images Algorithm 1
            // makes; the order is the port's (left to right) all the same, in every kernel.
            let gx = (up[rt] - up[lf]) + 2.0 * (mid[rt] - mid[lf]) + (dn[rt] - dn[lf]);
            let gy = (dn[lf] - up[lf]) + 2.0 * (dn[c] - up[c]) + (dn[rt] - up[rt]);
            *out = bin_of(libm::sqrt(gx * gx + gy * gy)).wrapping_sub(HALF) as u32;
        }
    });
}

/// Counters of the upper half of the histogram (magnitudes are >= 0), indexed by `k - 256`
/// (slot 256 takes the dropped magnitudes), interleaved: the `e`-th counted value goes to
/// sub-histogram `e % SUBS`, so that runs of one bin do not serialise on a single counter.
pub(super) struct SubHistograms([[u16; HALF * 2]; SUBS]);

impl SubHistograms {
    pub(super) fn new() -> Self {
        SubHistograms([[0; HALF * 2]; SUBS])
    }

    /// Counts `bins` (each `k - 256`, at most 256) in order. The mask keeps every index in
    /// range, so the compiler needs no bounds check.
    #[inline(always)]
    pub(super) fn count(&mut self, bins: &[u32]) {
        let mut chunks = bins.chunks_exact(SUBS);
        for chunk in &mut chunks {
            for (s, &k) in self.0.iter_mut().zip(chunk) {
                s[k as usize & (HALF * 2 - 1)] += 1;
            }
        }
        for (s, &k) in self.0.iter_mut().zip(chunks.remainder()) {
            s[k as usize & (HALF * 2 - 1)] += 1;
        }
    }

    /// The histogram: the sum of the sub-histograms, dropped magnitudes left out.
    #[inline(always)]
    pub(super) fn write(&self, hist: &mut [u32; BINS]) {
        hist.fill(0);
        for s in &self.0 {
            for (h, &c) in hist[HALF..].iter_mut().zip(&s[..HALF]) {
                *h += u32::from(c);
            }
        }
    }
}

/// The frame shared by the kernels: converts the rows to padded f64 (a ring of three), lets
/// `row` compute the 64 bin indices of one output row from the rows above, at and below it, and
/// counts them into [`SubHistograms`]. The indices are `k - 256` (bin `k`), 256 for a dropped
/// magnitude.
#[inline(always)]
fn drive(
    img: &[f32; RS * RS],
    hist: &mut [u32; BINS],
    mut row: impl FnMut(&[f64; P], &[f64; P], &[f64; P], &mut [u32; RS]),
) {
    let mut ring = [[0.0f64; P]; 3];
    let load = |ring: &mut [[f64; P]; 3], r: usize| {
        let src = &img[r * RS..][..RS];
        let dst = &mut ring[r % 3];
        for (d, &s) in dst[1..=RS].iter_mut().zip(src) {
            *d = f64::from(s);
        }
        dst[0] = dst[1];
        dst[P - 1] = dst[P - 2];
    };
    load(&mut ring, 0);
    load(&mut ring, 1);
    let mut sub = SubHistograms::new();
    let mut idx = [0u32; RS];
    for i in 0..RS {
        if i + 1 < RS && i >= 1 {
            load(&mut ring, i + 1);
        }
        let (up, dn) = (i.saturating_sub(1), (i + 1).min(RS - 1));
        row(&ring[up % 3], &ring[i % 3], &ring[dn % 3], &mut idx);
        sub.count(&idx);
    }
    sub.write(hist);
}

#[cfg(target_arch = "x86_64")]
mod avx2_f32;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_f32;
#[cfg(all(test, target_arch = "x86_64"))]
mod unit_range_tests;

#[cfg(target_arch = "x86_64")]
pub(super) mod x86;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// Images that hit the binning's edge cases: magnitudes exactly on bin edges, at 5.5, just
    /// above it (dropped), zero, NaN; plus pseudo-random ones.
    fn images() -> impl Iterator<Item = [f32; RS * RS]> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as u32
        };
        (0..64).map(move |case| {
            let mut img = [0.0f32; RS * RS];
            for (p, v) in img.iter_mut().enumerate() {
                let (r, c) = (p / RS, p % RS);
                *v = match case % 8 {
                    // A vertical step of height d: gx = 4d on the two step columns, m = 4d = a bin
                    // edge k * 11/512 (and 5.5 for k = 256, above it for k > 256).
                    0 => f32::from(c >= 32) * (rnd() % 270) as f32 * (11.0 / 2048.0),
                    // Steps in both directions with edge-valued heights.
                    1 => {
                        (f32::from(c >= 20) * (rnd() % 300) as f32 + f32::from(r >= 40) * (case as f32))
                            * (11.0 / 2048.0)
                    }
                    // Uniform noise in [0, 1] and in [0, 1.6] (some magnitudes above 5.5).
                    2 => (rnd() % 65536) as f32 / 65535.0,
                    3 => (rnd() % 65536) as f32 / 40000.0,
                    // Coarse levels (many ties).
                    4 => (rnd() % 5) as f32 * 0.25,
                    // Flat.
                    5 => 0.5,
                    // Non-finite pixels.
                    6 if p % 97 == 0 => f32::NAN,
                    6 if p % 101 == 0 => f32::INFINITY,
                    _ => (rnd() % 1024) as f32 / 1023.0 * if (r + c) % 7 == 0 { 1.3 } else { 1.0 },
                };
            }
            img
        })
    }

    #[test]
    fn kernels_agree_with_reference() {
        for (n, img) in images().enumerate() {
            let mut want = [0u32; BINS];
            reference(&img, &mut want);
            let mut got = [0u32; BINS];
            x86_or_ref(&img, &mut got, false);
            assert_eq!(got, want, "image {n}: SSE2 / baseline kernel");
            if x86_or_ref(&img, &mut got, true) {
                assert_eq!(got, want, "image {n}: AVX2 kernel");
            }
            #[cfg(target_arch = "x86_64")]
            if x86::has_avx512() {
                #[allow(unsafe_code)]
                // SAFETY: AVX-512 checked just above.
                unsafe {
                    avx512::sobel_histogram(&img, &mut got)
                };
                assert_eq!(got, want, "image {n}: AVX-512 kernel");
            }
            let mut d = [0u32; BINS];
            sobel_histogram_into(&img, &mut d);
            assert_eq!(d, want, "image {n}: dispatched kernel");
        }
    }

    /// Runs the SSE2 (or AVX2) kernel where there is one; false if AVX2 was asked for and this
    /// CPU lacks it.
    fn x86_or_ref(img: &[f32; RS * RS], hist: &mut [u32; BINS], avx2: bool) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            if !avx2 {
                x86::sobel_sse2(img, hist);
                return true;
            }
            if !x86::has_avx2() {
                return false;
            }
            #[allow(unsafe_code)]
            // SAFETY: AVX2 checked just above.
            unsafe {
                x86::sobel_avx2(img, hist)
            };
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            reference(img, hist);
            !avx2
        }
    }

    /// Squared magnitudes at and around every bin edge as `sqrt` rounds it (the smallest `s` with
    /// `sqrt(s) >= e_k`, found by stepping), around 5.5, special values and random ones: the
    /// AVX2 binning must agree with `bin_of(sqrt(s))` on each.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_bins_match_numpy_on_edges() {
        if !x86::has_avx2() {
            return;
        }
        let step = |v: f64, d: i64| f64::from_bits((v.to_bits() as i64 + d) as u64);
        let mut vals = std::vec![0.0, -0.0, f64::NAN, f64::INFINITY, 1e-300, 5e-324, 1e-10, 33.0, 1e300];
        for k in 1..=HALF {
            let e = k as f64 * BIN_W;
            let mut t = e * e;
            while libm::sqrt(step(t, -1)) >= e {
                t = step(t, -1);
            }
            vals.extend((-3..=3).map(|d| step(t, d)));
            vals.extend((-3..=3).map(|d| step(e * e, d)));
            // Where the f32 estimate's fraction is near the 2^-12 margins.
            for f in [1.0 / 4096.0, 1.0 - 1.0 / 4096.0, 0.5] {
                let m = (k as f64 - 1.0 + f) * BIN_W;
                vals.extend((-2..=2).map(|d| step(m * m, d * 1000)));
            }
        }
        let mut state = 1u64;
        for _ in 0..20_000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            vals.push((state >> 11) as f64 / (1u64 << 53) as f64 * 33.0);
        }
        vals.resize(vals.len().div_ceil(RS) * RS, 0.25);
        for chunk in vals.chunks_exact(RS) {
            let sq: [f64; RS] = chunk.try_into().unwrap();
            let mut got = [0u32; RS];
            #[allow(unsafe_code)]
            // SAFETY: AVX2 checked above.
            unsafe {
                x86::bins_avx2(&sq, &mut got)
            };
            let mut got512 = got;
            if x86::has_avx512() {
                #[allow(unsafe_code)]
                // SAFETY: AVX-512 checked just above.
                unsafe {
                    avx512::bins(&sq, &mut got512)
                };
            }
            for (j, ((s, g), g512)) in sq.iter().zip(got).zip(got512).enumerate() {
                let g512 = if x86::has_avx512() { g512 - (j % SUBS) as u32 * 2 * HALF as u32 } else { g512 };
                let want = bin_of(libm::sqrt(*s)).wrapping_sub(HALF) as u32;
                assert_eq!(g & (2 * HALF as u32 - 1), want, "s = {s:e} ({:#x})", s.to_bits());
                assert_eq!(g512 & (2 * HALF as u32 - 1), want, "AVX-512: s = {s:e} ({:#x})", s.to_bits());
            }
        }
    }

    #[test]
    fn edges_are_binned_like_numpy() {
        // e_k itself goes to bin k; 5.5 to the last bin; just above 5.5 and NaN are dropped.
        for k in 256..BINS {
            assert_eq!(bin_of(k as f64 * BIN_W + HIST_LO), k);
        }
        assert_eq!(bin_of(5.5), BINS - 1);
        assert_eq!(bin_of(f64::from_bits(5.5f64.to_bits() + 1)), DROP);
        assert_eq!(bin_of(f64::NAN), DROP);
    }
}
