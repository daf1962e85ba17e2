//! The AVX-512 Sobel + histogram kernel: eight f64 lanes for the gradient, sixteen f32 lanes for
//! the bin estimate. Same bits as [`super::reference`] (tested there).
//!
//! The gradient is computed separably, which is the same expression tree with its shared
//! sub-expressions computed once: `gx = (H_up + 2 H_mid) + H_dn` with `H_r[j] = r[j+2] - r[j]`
//! (one row difference per input row, used by three output rows), and
//! `gy = (V[j] + 2 V[j+1]) + V[j+2]` with `V = dn - up` (one difference per column, used by three
//! pixels). Each term is the scalar code's `(rt - lf)` / `(dn - up)`, added in the scalar code's
//! left-to-right order, and `2 * x` is `x + x` exactly, so every magnitude has the scalar bits.
#![allow(unsafe_code)] // `core::arch` intrinsics; only called after `has_avx512()`.

use super::{bin_of, SubHistograms, BINS, HALF, HIST_HI, HIST_LO, RS};
use core::arch::x86_64::*;

/// The histogram of the Sobel magnitudes of `img`.
///
/// # Safety
/// The CPU must support AVX-512 F, DQ, BW and VL ([`super::x86::has_avx512`]).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub unsafe fn sobel_histogram(img: &[f32; RS * RS], hist: &mut [u32; BINS]) {
    // A ring of three rows (f64) and their horizontal differences. Everything a later step reads
    // was stored whole and aligned, or is shifted in registers: an unaligned reload of a fresh
    // store would stall on store forwarding.
    let mut rows = [[_mm512_setzero_pd(); 8]; 3];
    let mut hd = [[_mm512_setzero_pd(); 8]; 3];
    let mut sub = SubHistograms::new();
    let mut sq = [0.0f64; RS];
    let mut idx = [0u32; RS];
    for r in 0..2 {
        load_row(img, r, &mut rows[r], &mut hd[r]);
    }
    for i in 0..RS {
        if (1..RS - 1).contains(&i) {
            let slot = (i + 1) % 3;
            load_row(img, i + 1, &mut rows[slot], &mut hd[slot]);
        }
        let (up, dn) = (i.saturating_sub(1) % 3, (i + 1).min(RS - 1) % 3);
        let mid = i % 3;
        // `dn - up` per column; `gy` takes it at the columns left of, at and right of each pixel.
        let mut w = [_mm512_setzero_pd(); 8];
        for (b, w) in w.iter_mut().enumerate() {
            *w = _mm512_sub_pd(rows[dn][b], rows[up][b]);
        }
        for b in 0..8 {
            let left = if b == 0 { first_left(w[0]) } else { shift_right(w[b], w[b - 1]) };
            let right = if b == 7 { last_right(w[7]) } else { shift_left(w[b + 1], w[b]) };
            let gy = _mm512_add_pd(_mm512_add_pd(left, _mm512_add_pd(w[b], w[b])), right);
            let m = hd[mid][b];
            let gx = _mm512_add_pd(_mm512_add_pd(hd[up][b], _mm512_add_pd(m, m)), hd[dn][b]);
            let s = _mm512_add_pd(_mm512_mul_pd(gx, gx), _mm512_mul_pd(gy, gy));
            _mm512_storeu_pd(sq.as_mut_ptr().add(8 * b), s);
        }
        bins(&sq, &mut idx);
        sub.count(&idx);
    }
    sub.write(hist);
}

/// Lanes `j - 1` of the block `cur` (lane 0 from the block before, `prev`).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn shift_right(cur: __m512d, prev: __m512d) -> __m512d {
    _mm512_castsi512_pd(_mm512_alignr_epi64::<7>(_mm512_castpd_si512(cur), _mm512_castpd_si512(prev)))
}

/// Lanes `j + 1` of the block `cur` (lane 7 from the block after, `next`).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn shift_left(next: __m512d, cur: __m512d) -> __m512d {
    _mm512_castsi512_pd(_mm512_alignr_epi64::<1>(_mm512_castpd_si512(next), _mm512_castpd_si512(cur)))
}

/// [`shift_right`] of the first block: column -1 replicates column 0 (BORDER_REPLICATE).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn first_left(cur: __m512d) -> __m512d {
    shift_right(cur, _mm512_permutexvar_pd(_mm512_setzero_si512(), cur))
}

/// [`shift_left`] of the last block: column 64 replicates column 63.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn last_right(cur: __m512d) -> __m512d {
    shift_left(_mm512_permutexvar_pd(_mm512_set1_epi64(7), cur), cur)
}

/// Row `r` of `img` in f64 and its differences `p[j+2] - p[j]` of the padded row `p`
/// (BORDER_REPLICATE), i.e. `v[j+1] - v[j-1]` with the ends replicated.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
unsafe fn load_row(img: &[f32; RS * RS], r: usize, row: &mut [__m512d; 8], hd: &mut [__m512d; 8]) {
    let src = img.as_ptr().add(r * RS);
    for (b, v) in row.iter_mut().enumerate() {
        *v = _mm512_cvtps_pd(_mm256_loadu_ps(src.add(8 * b)));
    }
    for b in 0..8 {
        let left = if b == 0 { first_left(row[0]) } else { shift_right(row[b], row[b - 1]) };
        let right = if b == 7 { last_right(row[7]) } else { shift_left(row[b + 1], row[b]) };
        hd[b] = _mm512_sub_pd(right, left);
    }
}

/// The bins (`k - 256`, 256 = dropped) of 64 squared magnitudes: the AVX2 kernel's estimate
/// ([`super::x86::bins_avx2`] explains why it is exact where it decides), 16 lanes at a time.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
#[inline]
pub(super) unsafe fn bins(sq: &[f64; RS], idx: &mut [u32; RS]) {
    const DELTA: f32 = 1.0 / 4096.0;
    let scale = _mm512_set1_ps((BINS as f64 / (HIST_HI - HIST_LO)) as f32);
    let (lo, hi) = (_mm512_set1_ps(DELTA), _mm512_set1_ps(1.0 - DELTA));
    let drop = _mm512_set1_epi32(HALF as i32);
    for j in (0..RS).step_by(16) {
        let s0 = _mm512_cvtpd_ps(_mm512_loadu_pd(sq.as_ptr().add(j)));
        let s1 = _mm512_cvtpd_ps(_mm512_loadu_pd(sq.as_ptr().add(j + 8)));
        let s = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(s0), s1);
        let x = _mm512_mul_ps(_mm512_sqrt_ps(s), scale);
        let k = _mm512_cvttps_epi32(x);
        let frac = _mm512_sub_ps(x, _mm512_cvtepi32_ps(k));
        let safe = (_mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, lo) & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(frac, hi))
            | _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, hi);
        // Unsigned: a negative `k` (NaN, overflow) becomes the drop slot too.
        let k = _mm512_min_epu32(k, drop);
        let mut redo = !safe;
        let k = if redo == 0 {
            k
        } else {
            let mut lanes = [0u32; 16];
            _mm512_storeu_si512(lanes.as_mut_ptr().cast(), k);
            while redo != 0 {
                let l = redo.trailing_zeros() as usize;
                lanes[l] = bin_of(libm::sqrt(sq[j + l])).wrapping_sub(HALF) as u32;
                redo &= redo - 1;
            }
            _mm512_loadu_si512(lanes.as_ptr().cast())
        };
        _mm512_storeu_si512(idx.as_mut_ptr().add(j).cast(), k);
    }
}
