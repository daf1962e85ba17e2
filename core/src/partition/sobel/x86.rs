//! The x86-64 side of the Sobel + histogram: CPU feature detection (CPUID and XGETBV, cached,
//! without `std`), the dispatch to the fastest kernel, and the SSE2 and AVX2 f64 kernels.
#![allow(unsafe_code)] // CPUID, `core::arch` intrinsics and the calls of the AVX2/AVX-512 kernels only.

use super::{drive, BINS, BIN_W, HALF, HIST_HI, HIST_LO, NORM, P, RS};
use core::arch::x86_64::*;
use core::sync::atomic::{AtomicU8, Ordering};

/// `detect()`, run once and kept in `state` (0: not yet, 1: no, 2: yes); no `std` needed.
fn cached(state: &AtomicU8, detect: fn() -> bool) -> bool {
    match state.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = detect();
            state.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Does this CPU (and OS) run AVX2? CPUID and XGETBV, cached.
pub fn has_avx2() -> bool {
    static STATE: AtomicU8 = AtomicU8::new(0);
    cached(&STATE, detect_avx2)
}

#[allow(unused_unsafe)] // `__cpuid` is a safe function in newer Rust.
fn detect_avx2() -> bool {
    if cfg!(target_feature = "avx2") {
        return true;
    }
    // SAFETY: CPUID exists on every x86-64 CPU.
    let (max, l1) = unsafe { (__cpuid(0).eax, __cpuid(1)) };
    let (osxsave, avx) = (l1.ecx & (1 << 27) != 0, l1.ecx & (1 << 28) != 0);
    if max < 7 || !osxsave || !avx {
        return false;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is available; XCR0 bits 1-2: the OS saves XMM/YMM.
    let xcr0 = unsafe { _xgetbv(0) };
    // SAFETY: leaf 7 exists (max >= 7).
    let l7 = unsafe { __cpuid_count(7, 0) };
    xcr0 & 6 == 6 && l7.ebx & (1 << 5) != 0
}

/// Does this CPU (and OS) run AVX-512 F, DQ, BW and VL (and POPCNT and FMA, which every such
/// CPU has)? CPUID and XGETBV, cached.
pub fn has_avx512() -> bool {
    static STATE: AtomicU8 = AtomicU8::new(0);
    cached(&STATE, detect_avx512)
}

#[allow(unused_unsafe)] // `__cpuid` is a safe function in newer Rust.
fn detect_avx512() -> bool {
    if !has_avx2() {
        return false;
    }
    // SAFETY: AVX2 implies leaf 7 and XGETBV (checked in `detect_avx2`).
    let (xcr0, l7) = unsafe { (_xgetbv(0), __cpuid_count(7, 0)) };
    // XCR0 bits 5-7: the OS saves the opmask and ZMM registers. Leaf 7 EBX: F (16), DQ (17),
    // BW (30), VL (31).
    let want = (1 << 16) | (1 << 17) | (1 << 30) | (1 << 31);
    // Leaf 1 ECX bits 23 (POPCNT) and 12 (FMA).
    let (popcnt, fma) = ((1u32 << 23), (1u32 << 12));
    // SAFETY: CPUID exists on every x86-64 CPU.
    let l1 = unsafe { __cpuid(1) }.ecx;
    xcr0 & 0xe6 == 0xe6 && l7.ebx & want == want && l1 & (popcnt | fma) == popcnt | fma
}

/// AVX-512 where the CPU has it, else AVX2 (each in f32 for images within `[-1, 1]`, else
/// in f64), else SSE2.
pub fn sobel_histogram(img: &[f32; RS * RS], hist: &mut [u32; BINS]) {
    sobel_histogram_known(img, hist, false)
}

/// [`sobel_histogram`]; `unit_range`: the caller knows that every value of `img` is in
/// `[-1, 1]`, so the f32 kernel skips its check.
pub fn sobel_histogram_known(img: &[f32; RS * RS], hist: &mut [u32; BINS], unit_range: bool) {
    debug_assert!(!unit_range || img.iter().all(|v| v.abs() <= 1.0));
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512 F/DQ/BW/VL (checked just above).
        unsafe {
            if !super::avx512_f32::sobel_histogram(img, hist, unit_range) {
                super::avx512::sobel_histogram(img, hist)
            }
        }
    } else if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe {
            if !super::avx2_f32::sobel_histogram(img, hist, unit_range) {
                sobel_avx2(img, hist)
            }
        }
    } else {
        sobel_sse2(img, hist)
    }
}

/// SSE2 (x86-64 baseline), two pixels per step.
pub fn sobel_sse2(img: &[f32; RS * RS], hist: &mut [u32; BINS]) {
    drive(img, hist, |up, mid, dn, idx| {
        // SAFETY: SSE2 is part of x86-64; every load reads `j + 0..=3 < P`.
        unsafe { row_sse2(up, mid, dn, idx) }
    });
}

/// One output row, two pixels per step. The binning is `numpy.histogram`'s in a form with
/// fewer operations that gives the same bin: for `0 <= m <= 5.5` NumPy's bin is exactly
/// `256 + floor(m / w)` (`w = 11/512`; its estimate is corrected against the exact edges),
/// clamped to the last bin at 5.5. Here the estimate is `trunc(m * 512/11)`, corrected the
/// same way against `j * w` and `(j + 1) * w` (exact dyadics), clamped to 255; a magnitude
/// that is not `<= 5.5` (above it, or NaN) gets the drop slot 256.
#[inline(always)]
unsafe fn row_sse2(up: &[f64; P], mid: &[f64; P], dn: &[f64; P], idx: &mut [u32; RS]) {
    let c = |v: f64| _mm_set1_pd(v);
    let (one, hi, norm, width, last, drop) =
        (c(1.0), c(HIST_HI), c(NORM), c(BIN_W), c((HALF - 1) as f64), c(HALF as f64));
    let mut j = 0;
    while j < RS {
        let ld = |r: &[f64; P], o: usize| _mm_loadu_pd(r.as_ptr().add(j + o));
        let (ul, uc, ur) = (ld(up, 0), ld(up, 1), ld(up, 2));
        let (ml, mr) = (ld(mid, 0), ld(mid, 2));
        let (dl, dc, dr) = (ld(dn, 0), ld(dn, 1), ld(dn, 2));
        // `2 * x` as `x + x`: the same value.
        let (dm, dd) = (_mm_sub_pd(mr, ml), _mm_sub_pd(dc, uc));
        let gx = _mm_add_pd(_mm_add_pd(_mm_sub_pd(ur, ul), _mm_add_pd(dm, dm)), _mm_sub_pd(dr, dl));
        let gy = _mm_add_pd(_mm_add_pd(_mm_sub_pd(dl, ul), _mm_add_pd(dd, dd)), _mm_sub_pd(dr, ur));
        let m = _mm_sqrt_pd(_mm_add_pd(_mm_mul_pd(gx, gx), _mm_mul_pd(gy, gy)));
        let keep = _mm_cmple_pd(m, hi);
        let mut k = _mm_cvtepi32_pd(_mm_cvttpd_epi32(_mm_mul_pd(m, norm)));
        let e0 = _mm_mul_pd(k, width);
        let below = _mm_cmplt_pd(m, e0);
        let above = _mm_cmpge_pd(m, _mm_add_pd(e0, width));
        k = _mm_add_pd(_mm_sub_pd(k, _mm_and_pd(below, one)), _mm_and_pd(above, one));
        k = _mm_min_pd(k, last);
        k = _mm_or_pd(_mm_and_pd(keep, k), _mm_andnot_pd(keep, drop));
        _mm_storel_epi64(idx.as_mut_ptr().add(j).cast(), _mm_cvttpd_epi32(k));
        j += 2;
    }
}

/// AVX2, four pixels per step.
///
/// # Safety
/// The CPU must support AVX2 ([`has_avx2`]).
#[target_feature(enable = "avx2")]
pub unsafe fn sobel_avx2(img: &[f32; RS * RS], hist: &mut [u32; BINS]) {
    drive(img, hist, |up, mid, dn, idx| {
        // SAFETY: the caller checked AVX2; every load reads `j + 0..=5 < P`.
        unsafe { row_avx2(up, mid, dn, idx) }
    });
}

/// One output row with AVX2: the squared magnitudes `s = gx*gx + gy*gy` in f64 (exactly the
/// scalar expression), then [`bins_avx2`].
#[target_feature(enable = "avx2")]
unsafe fn row_avx2(up: &[f64; P], mid: &[f64; P], dn: &[f64; P], idx: &mut [u32; RS]) {
    let mut sq = [0.0f64; RS];
    let mut j = 0;
    while j < RS {
        let ld = |r: &[f64; P], o: usize| _mm256_loadu_pd(r.as_ptr().add(j + o));
        let (ul, uc, ur) = (ld(up, 0), ld(up, 1), ld(up, 2));
        let (ml, mr) = (ld(mid, 0), ld(mid, 2));
        let (dl, dc, dr) = (ld(dn, 0), ld(dn, 1), ld(dn, 2));
        let (dm, dd) = (_mm256_sub_pd(mr, ml), _mm256_sub_pd(dc, uc));
        let gx = _mm256_add_pd(_mm256_add_pd(_mm256_sub_pd(ur, ul), _mm256_add_pd(dm, dm)), _mm256_sub_pd(dr, dl));
        let gy = _mm256_add_pd(_mm256_add_pd(_mm256_sub_pd(dl, ul), _mm256_add_pd(dd, dd)), _mm256_sub_pd(dr, ur));
        _mm256_storeu_pd(sq.as_mut_ptr().add(j), _mm256_add_pd(_mm256_mul_pd(gx, gx), _mm256_mul_pd(gy, gy)));
        j += 4;
    }
    bins_avx2(&sq, idx);
}

/// The bins (`k - 256`, 256 = dropped) of 64 squared magnitudes, without the f64 `sqrt`
/// (whose 4-lane throughput bounded the kernel) for nearly every pixel.
///
/// `x = f32(sqrt(f32(s)) * f32(512/11))` estimates `X = sqrt_rn(s) / (11/512)`, the magnitude in
/// bin widths: NumPy's bin is `256 + floor(X)` while `X <= 256` (5.5 goes to the last bin) and
/// dropped above. Four f32 roundings and the constant's put `x` within `X * 2^-22 < 6.3e-5` of
/// `X` (`X <= 264`; `s` below f32's normal range only occurs with `x < 1`). So where the
/// fractional part of `x` is at least `2^-12` from an integer, `floor(X) = floor(x)` and the
/// lane is decided here: `min(floor(x), 256)` (256 = dropped); `x < 1 - 2^-12` is bin 0 for
/// any fraction. Every other lane (a magnitude within `2^-12` of a bin edge, of 5.5, or NaN) is
/// redone exactly: `sqrt` in f64 and NumPy's binning, [`super::bin_of`].
#[target_feature(enable = "avx2")]
pub(super) unsafe fn bins_avx2(sq: &[f64; RS], idx: &mut [u32; RS]) {
    const DELTA: f32 = 1.0 / 4096.0;
    let scale = _mm256_set1_ps((BINS as f64 / (HIST_HI - HIST_LO)) as f32);
    let (lo, hi, small) = (_mm256_set1_ps(DELTA), _mm256_set1_ps(1.0 - DELTA), _mm256_set1_ps(1.0 - DELTA));
    let drop = _mm256_set1_epi32(HALF as i32);
    let mut j = 0;
    while j < RS {
        let s0 = _mm256_cvtpd_ps(_mm256_loadu_pd(sq.as_ptr().add(j)));
        let s1 = _mm256_cvtpd_ps(_mm256_loadu_pd(sq.as_ptr().add(j + 4)));
        let x = _mm256_mul_ps(_mm256_sqrt_ps(_mm256_set_m128(s1, s0)), scale);
        let k = _mm256_cvttps_epi32(x);
        let frac = _mm256_sub_ps(x, _mm256_cvtepi32_ps(k));
        let safe = _mm256_or_ps(
            _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, lo), _mm256_cmp_ps::<_CMP_LE_OQ>(frac, hi)),
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, small),
        );
        _mm256_storeu_si256(idx.as_mut_ptr().add(j).cast(), _mm256_min_epi32(k, drop));
        let mut unsafe_lanes = !_mm256_movemask_ps(safe) & 0xff;
        while unsafe_lanes != 0 {
            let l = unsafe_lanes.trailing_zeros() as usize;
            idx[j + l] = super::bin_of(libm::sqrt(sq[j + l])).wrapping_sub(HALF) as u32;
            unsafe_lanes &= unsafe_lanes - 1;
        }
        j += 8;
    }
}
