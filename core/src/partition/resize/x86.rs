//! The x86-64 kernels of the resize: the horizontal pass gathers its taps with in-register
//! permutes (8 columns at a time with AVX2, 16 with AVX-512) for regions at most 64 wide, and
//! with AVX-512 gathers for wider ones (AVX2 leaves those to the scalar pass); the vertical
//! pass is [`super::resize_impl`] compiled for the instruction set (the same expressions
//! without FMA, so the same bits).
#![allow(unsafe_code)] // `core::arch` intrinsics and the calls of the kernels after CPUID checks.

use super::{resize_impl, unit, Cols, Source, Taps, RS};
use core::arch::x86_64::*;

/// [`super::resize64`] on a CPU with AVX2.
pub fn resize64_x86(src: &Source, out: &mut [f32; RS * RS], taps: &mut Taps) {
    if crate::partition::sobel::x86::has_avx512() {
        // SAFETY: the CPU supports AVX-512 F/DQ/BW/VL (checked just above).
        return unsafe { resize_avx512(src, out, taps) };
    }
    if src.w > RS {
        return resize_impl(src, out, taps, &mut |row, cols, dst| super::hrow(row, cols, dst));
    }
    // SAFETY: only called after `has_avx2()`.
    unsafe { resize_avx2(src, out, taps) }
}

/// [`resize_avx2`] with the vertical pass (and the copy and area paths) compiled for
/// AVX-512: sixteen lanes, the same expressions (no FMA), so the same bits.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
unsafe fn resize_avx512(src: &Source, out: &mut [f32; RS * RS], taps: &mut Taps) {
    let wide = src.w > RS;
    resize_impl(src, out, taps, &mut |row, cols, dst| {
        // SAFETY: the caller checked AVX-512.
        unsafe {
            if wide {
                hrow_gather_avx512(row, cols, dst)
            } else {
                hrow_avx512(row, cols, dst)
            }
        }
    });
}

#[target_feature(enable = "avx2")]
pub(super) unsafe fn resize_avx2(src: &Source, out: &mut [f32; RS * RS], taps: &mut Taps) {
    resize_impl(src, out, taps, &mut |row, cols, dst| {
        // SAFETY: the caller checked AVX2.
        unsafe { hrow_avx2(row, cols, dst) }
    });
}

#[target_feature(enable = "avx2")]
unsafe fn hrow_avx2(row: &[f32], cols: &Cols, dst: &mut [f32; RS]) {
    // With w <= 64 the taps advance by at most one per column, so a block of 8 columns spans
    // at most 8 + 1 source pixels: two unaligned loads and one permute each.
    let (base, rel) = (&cols.base, &cols.rel);
    let w = row.len();
    // `u` of the row, zero padded so that every block may read 9 values past its first tap.
    let mut u = [0.0f32; RS + 16];
    for (d, &s) in u.iter_mut().zip(row) {
        *d = unit(s);
    }
    for (b, &first) in base.iter().enumerate() {
        let p = u.as_ptr().add(first);
        let idx = _mm256_loadu_si256(rel.as_ptr().add(8 * b).cast());
        let left = _mm256_permutevar8x32_ps(_mm256_loadu_ps(p), idx);
        let right = _mm256_permutevar8x32_ps(_mm256_loadu_ps(p.add(1)), idx);
        let a0 = _mm256_loadu_ps(cols.a0.as_ptr().add(8 * b));
        let a1 = _mm256_loadu_ps(cols.a1.as_ptr().add(8 * b));
        let v = _mm256_add_ps(_mm256_mul_ps(left, a0), _mm256_mul_ps(right, a1));
        _mm256_storeu_ps(dst.as_mut_ptr().add(8 * b), v);
    }
    let last = u[w - 1];
    for d in &mut dst[cols.copy_from..] {
        *d = last;
    }
}

/// [`hrow_avx2`] sixteen columns at a time: a block spans at most 16 + 1 source pixels. The
/// taps are gathered straight from the source row (masked loads never read past it) and turned
/// into `u` after the permute: a `u` row stored just before would be reloaded at unaligned
/// offsets, which stalls on store forwarding.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
unsafe fn hrow_avx512(row: &[f32], cols: &Cols, dst: &mut [f32; RS]) {
    let w = row.len();
    let (one, two) = (_mm512_set1_ps(1.0), _mm512_set1_ps(2.0));
    // The first `n` lanes (at most 16).
    let lanes = |n: usize| if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
    for (b, &first) in cols.base16.iter().enumerate() {
        let p = row.as_ptr().add(first);
        let idx = _mm512_loadu_si512(cols.rel16.as_ptr().add(16 * b).cast());
        // `first <= w - 1`, so the masks cover `row[first..w]` and `row[first + 1..w]`.
        let here = _mm512_maskz_loadu_ps(lanes(w - first), p);
        let next = _mm512_maskz_loadu_ps(lanes(w - first - 1), p.add(1));
        // `unit` of each tap: `(v + 1) / 2`, the same operations.
        let left = _mm512_div_ps(_mm512_add_ps(_mm512_permutexvar_ps(idx, here), one), two);
        let right = _mm512_div_ps(_mm512_add_ps(_mm512_permutexvar_ps(idx, next), one), two);
        let a0 = _mm512_loadu_ps(cols.a0.as_ptr().add(16 * b));
        let a1 = _mm512_loadu_ps(cols.a1.as_ptr().add(16 * b));
        let v = _mm512_add_ps(_mm512_mul_ps(left, a0), _mm512_mul_ps(right, a1));
        _mm512_storeu_ps(dst.as_mut_ptr().add(16 * b), v);
    }
    let last = super::unit(row[w - 1]);
    for d in &mut dst[cols.copy_from..] {
        *d = last;
    }
}

/// The horizontal pass of a row wider than 64 (downsampling), sixteen columns at a time with
/// gathers of both taps straight from the source row; columns from `copy_from` on, whose right
/// tap would lie past the row, are masked out and then copy the last pixel.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
unsafe fn hrow_gather_avx512(row: &[f32], cols: &Cols, dst: &mut [f32; RS]) {
    let w = row.len();
    debug_assert!(cols.k[..cols.copy_from].iter().all(|&k| (k as usize) + 1 < w));
    let (one, two) = (_mm512_set1_ps(1.0), _mm512_set1_ps(2.0));
    for b in 0..RS / 16 {
        let j0 = 16 * b;
        // Columns `j0..copy_from` of this block: their taps `k` and `k + 1` are within the row.
        let live = match cols.copy_from.saturating_sub(j0) {
            0 => 0,
            n if n >= 16 => 0xffff,
            n => (1u16 << n) - 1,
        };
        let k = _mm512_loadu_si512(cols.k.as_ptr().add(j0).cast());
        let k1 = _mm512_add_epi32(k, _mm512_set1_epi32(1));
        let zero = _mm512_setzero_ps();
        let here = _mm512_mask_i32gather_ps::<4>(zero, live, k, row.as_ptr());
        let next = _mm512_mask_i32gather_ps::<4>(zero, live, k1, row.as_ptr());
        // `unit` of each tap: `(v + 1) / 2`, the same operations.
        let left = _mm512_div_ps(_mm512_add_ps(here, one), two);
        let right = _mm512_div_ps(_mm512_add_ps(next, one), two);
        let a0 = _mm512_loadu_ps(cols.a0.as_ptr().add(j0));
        let a1 = _mm512_loadu_ps(cols.a1.as_ptr().add(j0));
        let v = _mm512_add_ps(_mm512_mul_ps(left, a0), _mm512_mul_ps(right, a1));
        _mm512_storeu_ps(dst.as_mut_ptr().add(j0), v);
    }
    let last = super::unit(row[w - 1]);
    for d in &mut dst[cols.copy_from..] {
        *d = last;
    }
}
