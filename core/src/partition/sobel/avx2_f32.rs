//! The AVX2 Sobel + histogram kernel in f32, eight pixels per vector, for images within
//! `[-1, 1]`: the f32 arithmetic, error bound and exact fall-back of [`super::avx512_f32`] (its
//! module doc), for CPUs without AVX-512. Any other image is left to the f64 AVX2 kernel.
//!
//! AVX2 has no lane shift across the two halves of a register, so the neighbours `j - 1` and
//! `j + 1` are unaligned loads from the image row (a permute at the two ends replicates the
//! border), and every pixel's bin is counted, in pixel order.
#![allow(unsafe_code)] // `core::arch` intrinsics; only called after `has_avx2()`.

use super::avx512_f32::exact_bin;
use super::{SubHistograms, BINS, HALF, HIST_HI, HIST_LO, RS};
use core::arch::x86_64::*;

/// The histogram of the Sobel magnitudes of `img` if every value of `img` is in `[-1, 1]`
/// (then `true`); otherwise `false` and `hist` is unchanged. With `known_unit_range` the caller
/// vouches for the range and the check is skipped (an image outside it would then get wrong
/// bins, never an access outside the histogram).
///
/// # Safety
/// The CPU must support AVX2 ([`super::x86::has_avx2`]).
#[target_feature(enable = "avx2")]
pub unsafe fn sobel_histogram(img: &[f32; RS * RS], hist: &mut [u32; BINS], known_unit_range: bool) -> bool {
    if !known_unit_range && !within_unit_range(img) {
        return false;
    }
    let mut sub = SubHistograms::new();
    let mut idx = [0u32; RS];
    for i in 0..RS {
        let (up, dn) = (i.saturating_sub(1), (i + 1).min(RS - 1));
        let rows = [img.as_ptr().add(up * RS), img.as_ptr().add(i * RS), img.as_ptr().add(dn * RS)];
        for b in 0..RS / 8 {
            // Columns `j - 1`, `j`, `j + 1` of each row for the 8 pixels of block `b`.
            let [u, m, d] = rows.map(|r| taps(r, b));
            let hd = |t: [__m256; 3]| _mm256_sub_ps(t[2], t[0]);
            let (hu, hm, hdn) = (hd(u), hd(m), hd(d));
            let gx = _mm256_add_ps(_mm256_add_ps(hu, _mm256_add_ps(hm, hm)), hdn);
            let (wl, wc, wr) = (_mm256_sub_ps(d[0], u[0]), _mm256_sub_ps(d[1], u[1]), _mm256_sub_ps(d[2], u[2]));
            let gy = _mm256_add_ps(_mm256_add_ps(wl, _mm256_add_ps(wc, wc)), wr);
            let s = _mm256_add_ps(_mm256_mul_ps(gx, gx), _mm256_mul_ps(gy, gy));
            bins(s, img, i, 8 * b, &mut idx);
        }
        sub.count(&idx);
    }
    sub.write(hist);
    true
}

/// Columns `j - 1`, `j` and `j + 1` of the row at `row` for the pixels `j` of block `b`, with
/// the ends replicated (BORDER_REPLICATE).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn taps(row: *const f32, b: usize) -> [__m256; 3] {
    let p = row.add(8 * b);
    let mid = _mm256_loadu_ps(p);
    let left = if b == 0 {
        _mm256_permutevar8x32_ps(mid, _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6))
    } else {
        _mm256_loadu_ps(p.sub(1))
    };
    let right = if b == RS / 8 - 1 {
        _mm256_permutevar8x32_ps(mid, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7))
    } else {
        _mm256_loadu_ps(p.add(1))
    };
    [left, mid, right]
}

/// Is every value of `img` in `[-1, 1]`? (False for NaN.)
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn within_unit_range(img: &[f32; RS * RS]) -> bool {
    let (one, abs) = (_mm256_set1_ps(1.0), _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX)));
    let mut inside = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for j in (0..RS * RS).step_by(8) {
        let v = _mm256_and_ps(_mm256_loadu_ps(img.as_ptr().add(j)), abs);
        inside = _mm256_and_ps(inside, _mm256_cmp_ps::<_CMP_LE_OQ>(v, one));
    }
    _mm256_movemask_ps(inside) == 0xff
}

/// Bins (`k - 256`, 256 = dropped) of the eight squared magnitudes `s` of pixels
/// `(i, j0..j0 + 8)` into `idx[j0..j0 + 8]`: the estimate of [`super::avx512_f32`] where it
/// decides, [`exact_bin`] elsewhere.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn bins(s: __m256, img: &[f32; RS * RS], i: usize, j0: usize, idx: &mut [u32; RS]) {
    const DELTA: f32 = 1.0 / 4096.0;
    let scale = _mm256_set1_ps((BINS as f64 / (HIST_HI - HIST_LO)) as f32);
    let (lo, hi) = (_mm256_set1_ps(DELTA), _mm256_set1_ps(1.0 - DELTA));
    let x = _mm256_mul_ps(_mm256_sqrt_ps(s), scale);
    let k = _mm256_cvttps_epi32(x);
    let frac = _mm256_sub_ps(x, _mm256_cvtepi32_ps(k));
    let safe = _mm256_or_ps(
        _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, lo), _mm256_cmp_ps::<_CMP_LE_OQ>(frac, hi)),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, hi),
    );
    _mm256_storeu_si256(idx.as_mut_ptr().add(j0).cast(), _mm256_min_epi32(k, _mm256_set1_epi32(HALF as i32)));
    let mut redo = !_mm256_movemask_ps(safe) & 0xff;
    while redo != 0 {
        let l = redo.trailing_zeros() as usize;
        idx[j0 + l] = exact_bin(img, i, j0 + l);
        redo &= redo - 1;
    }
}
