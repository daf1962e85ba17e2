//! The tests of the f32 Sobel kernels ([`super::avx512_f32`], [`super::avx2_f32`]): one set of
//! images within `[-1, 1]` and one set of checks, run on every kernel this CPU has.
#![allow(unsafe_code)] // calls of the kernels, each only on a CPU that supports it.
extern crate std;

use super::avx512_f32::exact_bin;
use super::{reference, x86, BINS, HALF, RS};

/// An f32 kernel: the histogram of an image if it is within `[-1, 1]` (or vouched for).
type UnitKernel = unsafe fn(&[f32; RS * RS], &mut [u32; BINS], bool) -> bool;

/// The kernels this CPU runs, by name.
fn kernels() -> std::vec::Vec<(&'static str, UnitKernel)> {
    let mut all: std::vec::Vec<(&'static str, UnitKernel)> = std::vec::Vec::new();
    if x86::has_avx512() {
        all.push(("AVX-512", super::avx512_f32::sobel_histogram));
    } else {
        std::println!("AVX-512 f32 Sobel kernel not tested: this CPU has no AVX-512");
    }
    if x86::has_avx2() {
        all.push(("AVX2", super::avx2_f32::sobel_histogram));
    } else {
        std::println!("AVX2 f32 Sobel kernel not tested: this CPU has no AVX2");
    }
    all
}

/// Images within `[-1, 1]` that put magnitudes on and next to bin edges (steps of height
/// `d = k * 11/2048`, so `gx = 4d` is the edge `k * 11/512`; `k` up to 186 keeps `d <= 1`),
/// steps one f32 step below and above such heights (magnitudes a hair from an edge, which the
/// estimate alone would misplace), mixed steps, noise, coarse levels, both ends of the range,
/// a flat image and tiny values.
fn unit_images() -> impl Iterator<Item = (usize, [f32; RS * RS])> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 40) as u32
    };
    (0..96).map(move |case| {
        let mut img = [0.0f32; RS * RS];
        let (k1, k2) = (rnd() % 187, rnd() % 187);
        let edge = (1 + k1 % 186) as f32 * (11.0 / 2048.0);
        let (below, above) = (f32::from_bits(edge.to_bits() - 1), f32::from_bits(edge.to_bits() + 1));
        for (p, v) in img.iter_mut().enumerate() {
            let (r, c) = (p / RS, p % RS);
            *v = match case % 12 {
                0 => f32::from(c >= 32) * k1 as f32 * (11.0 / 2048.0),
                1 => f32::from(c >= 32) * (rnd() % 187) as f32 * (11.0 / 2048.0),
                2 => (f32::from(c >= 20) * k1 as f32 - f32::from(r >= 40) * k2 as f32) * (11.0 / 2048.0),
                3 => (rnd() % 65536) as f32 / 65535.0,
                4 => (rnd() % 65536) as f32 / 32767.5 - 1.0,
                5 => (rnd() % 5) as f32 * 0.25,
                6 => [-1.0, 1.0][(rnd() % 2) as usize],
                7 => 0.5,
                8 => (rnd() % 64) as f32 * 1e-30,
                9 => f32::from(c >= 32) * below,
                10 => f32::from(r >= 32) * above,
                _ => (((r * 7 + c * 3) % 19) as f32 / 18.0) * if (r + c) % 5 == 0 { -1.0 } else { 1.0 },
            };
        }
        (case, img)
    })
}

#[test]
fn unit_range_kernels_match_the_reference() {
    for (name, kernel) in kernels() {
        for (case, img) in unit_images() {
            let mut want = [0u32; BINS];
            reference(&img, &mut want);
            for vouched in [false, true] {
                let mut got = [7u32; BINS];
                // SAFETY: `kernels` lists only the kernels this CPU supports.
                let taken = unsafe { kernel(&img, &mut got, vouched) };
                assert!(taken, "{name}: image {case} is within [-1, 1] but the f32 kernel declined it");
                assert_eq!(got, want, "{name}: image {case}, range vouched for: {vouched}");
            }
        }
    }
}

#[test]
fn images_outside_the_unit_range_are_declined() {
    for (name, kernel) in kernels() {
        for bad in [1.000_000_1f32, -1.000_000_1, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0] {
            for at in [0, 63, 64 * 31 + 17, RS * RS - 1] {
                let mut img = [0.25f32; RS * RS];
                img[at] = bad;
                let mut hist = [7u32; BINS];
                // SAFETY: `kernels` lists only the kernels this CPU supports.
                let taken = unsafe { kernel(&img, &mut hist, false) };
                assert!(!taken && hist == [7u32; BINS], "{name}: value {bad} at {at} was not declined");
            }
        }
    }
}

/// The fall-back path ([`exact_bin`]) is exercised: some lanes of the edge images are within
/// `2^-12` bin widths of an edge, and those must be the reference's bins.
#[test]
fn exact_bin_is_the_reference_bin() {
    for (case, img) in unit_images().take(20) {
        let mut want = [0u32; BINS];
        reference(&img, &mut want);
        let mut hist = [0u32; BINS];
        for i in 0..RS {
            for j in 0..RS {
                let k = exact_bin(&img, i, j) as usize;
                if k < HALF {
                    hist[HALF + k] += 1;
                }
            }
        }
        assert_eq!(hist, want, "image {case}");
    }
}
