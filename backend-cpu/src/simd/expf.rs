//! `libm::expf` (FreeBSD's `e_expf.c`), 16 values at a time, with the same bits.
//!
//! The scalar function branches on the range of `x`; here every branch is one select, so the
//! loop vectorises (4, 8 or 16 lanes, whatever the caller's target features give; every lane
//! runs the scalar code's f32 operations in its order, without FMA, so the width does not change
//! a bit). Why it is the same function: for `|x| <= 1.5 ln2` the scalar code's `k` is `±1` or 0,
//! and with `k = 0` its reduction `hi = x - 0*ln2hi`, `lo = 0*ln2lo`, `x = hi - lo` leaves `x`,
//! `hi` and `lo` exactly as the `k = 0` branch sets them (`x - 0.0 == x`, also for -0.0);
//! `scalbnf(y, k)` is one multiplication by `2^k` for `|k| <= 124`. Lanes outside
//! `|x| < 80` (where `scalbnf` may take several steps, or over/underflow) and NaN go through
//! `libm::expf` itself. A test compares the two on every 97th f32 of the range (and, ignored by
//! default, on every f32).

pub(crate) const LANES: usize = 16;

// The constants of `e_expf.c`, by their bits.
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
const P1: f32 = f32::from_bits(0x3e2a_aa8f);
const P2: f32 = f32::from_bits(0xbb35_5215);

/// `|x|` bit patterns: above 1.5 ln2, above 0.5 ln2, at most 2^-14, and the first left to libm.
const ABOVE_1P5_LN2: u32 = 0x3f85_1592;
const ABOVE_HALF_LN2: u32 = 0x3eb1_7218;
const TINY: u32 = 0x3900_0000;
const SCALAR_FROM: u32 = 0x42a0_0000; // 80.0

/// `libm::expf` of every lane (by value, so that the lanes can stay in registers).
#[inline(always)]
pub(crate) fn expf16(input: [f32; LANES]) -> [f32; LANES] {
    let mut out = input;
    let x = &mut out;
    let mut scalar = false;
    for v in x.iter_mut() {
        let xv = *v;
        let bits = xv.to_bits();
        let hx = bits & 0x7fff_ffff;
        let negative = bits >> 31 == 1;
        let half = if negative { -0.5 } else { 0.5 };
        // `as i32` of the scalar code; the input is clamped first (lanes that reach the clamp
        // are redone by libm below) so that the unchecked conversion, which vectorises where
        // the saturating `as` does not, is always in range.
        // Not `clamp`: that keeps NaN, and NaN must become a number here.
        #[allow(clippy::manual_clamp)]
        let xc = xv.max(-100.0).min(100.0);
        // SAFETY: |INV_LN2 * xc + half| < 145, far inside i32.
        let k_far: i32 = unsafe { (INV_LN2 * xc + half).to_int_unchecked() };
        let k_near = if negative { -1 } else { 1 };
        let k = if hx > ABOVE_1P5_LN2 {
            k_far
        } else if hx > ABOVE_HALF_LN2 {
            k_near
        } else {
            0
        };
        let kf = k as f32;
        let hi = xv - kf * LN2_HI;
        let lo = kf * LN2_LO;
        let r = hi - lo;
        let rr = r * r;
        let c = r - rr * (P1 + rr * P2);
        let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
        // 2^k for |k| <= 126 (lanes with larger |k| are redone below).
        let scale = f32::from_bits(((0x7f + k.clamp(-126, 127)) as u32) << 23);
        *v = if hx <= TINY { 1.0 + xv } else { y * scale };
        scalar |= hx >= SCALAR_FROM;
    }
    if scalar {
        for (v, &xv) in x.iter_mut().zip(&input) {
            if xv.to_bits() & 0x7fff_ffff >= SCALAR_FROM {
                *v = libm::expf(xv);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_range(step: usize) {
        let mut inputs = [0.0f32; LANES];
        let mut n = 0;
        // Every `step`-th bit pattern of both signs, NaNs and infinities included.
        let patterns = (0..=u32::MAX).step_by(step).chain([0, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000]);
        for bits in patterns {
            inputs[n] = f32::from_bits(bits);
            n += 1;
            if n == LANES {
                let lanes = expf16(inputs);
                for (got, &x) in lanes.iter().zip(&inputs) {
                    let want = libm::expf(x);
                    assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "expf({x:e} = {:#x}): {got:e} vs libm {want:e}",
                        x.to_bits()
                    );
                }
                n = 0;
            }
        }
    }

    #[test]
    fn same_bits_as_libm_on_a_sample_of_every_f32() {
        check_range(97);
    }

    /// Every f32 (about a minute in release): `cargo test --release -p gpstoken-backend-cpu
    /// expf -- --ignored`.
    #[test]
    #[ignore]
    fn same_bits_as_libm_on_every_f32() {
        check_range(1);
    }
}
