//! The AVX-512 Sobel + histogram kernel in f32, sixteen pixels per vector, for images whose
//! values all lie in `[-1, 1]` (Algorithm 1 scores `(grey + 1) / 2` of images in `[-1, 1]`, so
//! every image it makes). Any other image (a larger value, NaN, infinity) is left to the f64
//! kernel: [`sobel_histogram`] returns `false` without touching the histogram.
//!
//! Why f32 gives NumPy's bins. With `|v| <= 1`, each difference `a - b` (`|a - b| <= 2`) is
//! rounded by at most `2^-24`; `d0 + (d1 + d1)` (`<= 6`) by `2^-22`, and adding `d2` (`< 8`, or
//! exactly 8) by `2^-22`. So each of `gx` and `gy` is within `4 * 2^-24 + 2 * 2^-22 = 3 * 2^-22` of
//! its exact value, and the magnitude `hypot(gx, gy)` within `sqrt(2) * 3 * 2^-22 < 1.02e-6`, i.e.
//! `4.8e-5` bin widths (`11/512`). The estimate `x = sqrt(fma(gx, gx, gy^2)) * 512/11` then adds
//! four f32 roundings (`gy^2` and the FMA make `s` within `2^-23` relative, the square root halves
//! that and rounds, and the product rounds) and the constant's: `x * 2^-22 < 6.3e-5` for `x <= 264`. The f64 reference is
//! exact up to `2^-50` relative (spec 3.2 step 3). In all, `x` is within `1.2e-4 < 2^-12` bin
//! widths of NumPy's `X`, so the same rule as the f64 kernel's binning decides a lane where the
//! fraction of `x` is at least `2^-12` from an integer (or `x < 1 - 2^-12`), and the few other
//! lanes are recomputed exactly from the image in f64 ([`exact_bin`]).
//!
//! Pixels of the first bin above zero (`k = 256`, magnitudes below `11/512`: flat areas, which
//! upsampled small regions are full of) are counted with a population count; only the others are
//! compressed into a list and counted one by one.
#![allow(unsafe_code)] // `core::arch` intrinsics; only called after `has_avx512()`.

use super::{bin_of, SubHistograms, BINS, HALF, HIST_HI, HIST_LO, RS};
use core::arch::x86_64::*;

/// Sixteen-lane blocks per row.
const BLOCKS: usize = RS / 16;

/// The histogram of the Sobel magnitudes of `img` if every value of `img` is in `[-1, 1]`
/// (then `true`); otherwise `false` and `hist` is unchanged. With `known_unit_range` the caller
/// vouches for the range and the check is skipped (an image outside it would then get wrong
/// bins, never an access outside the histogram).
///
/// # Safety
/// The CPU must support AVX-512 F, DQ, BW, VL, POPCNT and FMA ([`super::x86::has_avx512`]).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,popcnt,fma")]
pub unsafe fn sobel_histogram(img: &[f32; RS * RS], hist: &mut [u32; BINS], known_unit_range: bool) -> bool {
    if !known_unit_range && !within_unit_range(img) {
        return false;
    }
    let mut sub = SubHistograms::new();
    // Bins of one row's pixels outside the first bin, with room for a full vector store after
    // the last one. Two lists: a row's list is counted while the next row is computed, because
    // reading entries right after the overlapping compressed stores that wrote them would stall
    // on store forwarding.
    let (mut list_a, mut list_b) = ([0u32; RS + 16], [0u32; RS + 16]);
    let (mut list, mut previous) = (&mut list_a, &mut list_b);
    let mut previously_listed = 0usize;
    let mut first_bin = 0u32;
    // The rows above, at and below the output row (replicated at the ends), rotated through
    // local variables so that they stay in registers.
    let mut up = Row::load(img, 0);
    let mut mid = up;
    let mut dn = Row::load(img, 1);
    for i in 0..RS {
        let mut w = [_mm512_setzero_ps(); BLOCKS];
        for (b, w) in w.iter_mut().enumerate() {
            *w = _mm512_sub_ps(dn.v[b], up.v[b]);
        }
        let mut listed = 0usize;
        // One 16-pixel block; a macro so that each block's neighbours are fixed at compile time.
        macro_rules! block {
            ($b:literal) => {{
                let left = if $b == 0 { first_left(w[0]) } else { shift_right(w[$b], w[($b + 3) % 4]) };
                let right = if $b == 3 { last_right(w[$b]) } else { shift_left(w[($b + 1) % 4], w[$b]) };
                let gy = _mm512_add_ps(_mm512_add_ps(left, _mm512_add_ps(w[$b], w[$b])), right);
                let m = mid.hd[$b];
                let gx = _mm512_add_ps(_mm512_add_ps(up.hd[$b], _mm512_add_ps(m, m)), dn.hd[$b]);
                let s = _mm512_fmadd_ps(gx, gx, _mm512_mul_ps(gy, gy));
                let k = bins(s, img, i, 16 * $b);
                let counted = _mm512_cmpneq_epi32_mask(k, _mm512_setzero_si512());
                first_bin += 16 - counted.count_ones();
                _mm512_storeu_si512(list.as_mut_ptr().add(listed).cast(), _mm512_maskz_compress_epi32(counted, k));
                listed += counted.count_ones() as usize;
            }};
        }
        const _: () = assert!(BLOCKS == 4);
        block!(0);
        block!(1);
        block!(2);
        block!(3);
        sub.count(&previous[..previously_listed]);
        core::mem::swap(&mut list, &mut previous);
        previously_listed = listed;
        up = mid;
        mid = dn;
        if i + 2 < RS {
            dn = Row::load(img, i + 2);
        }
    }
    sub.count(&previous[..previously_listed]);
    sub.write(hist);
    hist[HALF] += first_bin;
    true
}

/// Is every value of `img` in `[-1, 1]`? (False for NaN.)
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn within_unit_range(img: &[f32; RS * RS]) -> bool {
    let one = _mm512_set1_ps(1.0);
    let mut inside: __mmask16 = 0xffff;
    for j in (0..RS * RS).step_by(16) {
        let v = _mm512_abs_ps(_mm512_loadu_ps(img.as_ptr().add(j)));
        inside &= _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, one);
    }
    inside == 0xffff
}

/// Bins (`k - 256`, 256 = dropped) of the sixteen squared magnitudes `s` of pixels
/// `(i, j0..j0 + 16)`: the estimate of the module doc where it decides, [`exact_bin`] elsewhere.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn bins(s: __m512, img: &[f32; RS * RS], i: usize, j0: usize) -> __m512i {
    const DELTA: f32 = 1.0 / 4096.0;
    let scale = _mm512_set1_ps((BINS as f64 / (HIST_HI - HIST_LO)) as f32);
    let (lo, hi) = (_mm512_set1_ps(DELTA), _mm512_set1_ps(1.0 - DELTA));
    let x = _mm512_mul_ps(_mm512_sqrt_ps(s), scale);
    let k = _mm512_cvttps_epi32(x);
    // `x - trunc(x)`, exact.
    let frac = _mm512_reduce_ps::<0x0b>(x);
    let safe = (_mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, lo) & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(frac, hi))
        | _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, hi);
    let k = _mm512_min_epu32(k, _mm512_set1_epi32(HALF as i32));
    let redo = !safe;
    if redo == 0 {
        return k;
    }
    let mut lanes = [0u32; 16];
    _mm512_storeu_si512(lanes.as_mut_ptr().cast(), k);
    redo_lanes(&mut lanes, redo, img, i, j0);
    _mm512_loadu_si512(lanes.as_ptr().cast())
}

/// Replaces the lanes set in `redo` by their [`exact_bin`]s: rare, so kept out of the loop.
#[cold]
#[inline(never)]
fn redo_lanes(lanes: &mut [u32; 16], mut redo: u16, img: &[f32; RS * RS], i: usize, j0: usize) {
    while redo != 0 {
        let l = redo.trailing_zeros() as usize;
        lanes[l] = exact_bin(img, i, j0 + l);
        redo &= redo - 1;
    }
}

/// The bin (`k - 256`, 256 = dropped) of pixel `(i, j)` exactly as the scalar reference computes
/// it: the f64 Sobel with replicated borders, `sqrt`, NumPy's binning.
pub(super) fn exact_bin(img: &[f32; RS * RS], i: usize, j: usize) -> u32 {
    let p = |r: usize, c: usize| f64::from(img[r * RS + c]);
    let (up, dn) = (i.saturating_sub(1), (i + 1).min(RS - 1));
    let (lf, rt) = (j.saturating_sub(1), (j + 1).min(RS - 1));
    let gx = (p(up, rt) - p(up, lf)) + 2.0 * (p(i, rt) - p(i, lf)) + (p(dn, rt) - p(dn, lf));
    let gy = (p(dn, lf) - p(up, lf)) + 2.0 * (p(dn, j) - p(up, j)) + (p(dn, rt) - p(up, rt));
    bin_of(libm::sqrt(gx * gx + gy * gy)).wrapping_sub(HALF) as u32
}

/// Lanes `j - 1` of the block `cur` (lane 0 from the block before, `prev`).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn shift_right(cur: __m512, prev: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(_mm512_castps_si512(cur), _mm512_castps_si512(prev)))
}

/// Lanes `j + 1` of the block `cur` (lane 15 from the block after, `next`).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn shift_left(next: __m512, cur: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(_mm512_castps_si512(next), _mm512_castps_si512(cur)))
}

/// [`shift_right`] of the first block: column -1 replicates column 0 (BORDER_REPLICATE).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn first_left(cur: __m512) -> __m512 {
    shift_right(cur, _mm512_permutexvar_ps(_mm512_setzero_si512(), cur))
}

/// [`shift_left`] of the last block: column 64 replicates column 63.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn last_right(cur: __m512) -> __m512 {
    shift_left(_mm512_permutexvar_ps(_mm512_set1_epi32(15), cur), cur)
}

/// One row of the image and its differences `v[j+1] - v[j-1]` (ends replicated).
#[derive(Clone, Copy)]
struct Row {
    v: [__m512; BLOCKS],
    hd: [__m512; BLOCKS],
}

impl Row {
    /// Row `r` of `img`.
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
    #[inline]
    unsafe fn load(img: &[f32; RS * RS], r: usize) -> Row {
        let src = img.as_ptr().add(r * RS);
        let mut row = Row { v: [_mm512_setzero_ps(); BLOCKS], hd: [_mm512_setzero_ps(); BLOCKS] };
        for (b, v) in row.v.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(src.add(16 * b));
        }
        let v = &row.v;
        for b in 0..BLOCKS {
            let left = if b == 0 { first_left(v[0]) } else { shift_right(v[b], v[b - 1]) };
            let right = if b == BLOCKS - 1 { last_right(v[b]) } else { shift_left(v[b + 1], v[b]) };
            row.hd[b] = _mm512_sub_ps(right, left);
        }
        row
    }
}
