//! Pixel conversion, the grey image, and the official dataset preprocessing (spec 0, 3.1, 3.7).
//!
//! The official pipeline is: decode to RGB u8, albumentations `SmallestMaxSize(256)` (OpenCV 4.9
//! `cv2.resize` INTER_LINEAR on u8), `CenterCrop(256)`, then `u8 / 127.5 - 1` in f64 cast to f32.
//! [`resize_u8_bilinear`] reproduces OpenCV's u8 fixed-point bilinear path (and its switch to the
//! 2x2 area average for exact x2 downscales), so that preprocessing a photo gives the same bytes
//! as the official data loader (checked against the golden `input.png` files).

use core::fmt;

/// `f32((v as f64) / 127.5 - 1.0)`: u8 to [-1, 1] as the official code computes it (spec 0).
#[inline]
pub fn u8_to_unit(v: u8) -> f32 {
    (f64::from(v) / 127.5 - 1.0) as f32
}

/// [`u8_to_unit`] over a slice (`out.len() == src.len()`).
///
/// # Panics
/// If the lengths differ.
pub fn u8_slice_to_unit(src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), out.len(), "u8_slice_to_unit: length mismatch");
    for (o, &v) in out.iter_mut().zip(src) {
        *o = u8_to_unit(v);
    }
}

/// The grey image of an interleaved RGB image in [-1, 1] (`rgb.len() == 3 * out.len()`) with
/// NumPy f32 semantics: `(0.299f*R + 0.587f*G) + 0.114f*B`, each constant rounded to f32, f32
/// multiplies and adds left to right, no FMA (spec 3.1).
///
/// # Panics
/// If `rgb.len() != 3 * out.len()`.
pub fn grey(rgb: &[f32], out: &mut [f32]) {
    assert_eq!(rgb.len(), 3 * out.len(), "grey: rgb must hold 3 values per output pixel");
    for (o, p) in out.iter_mut().zip(rgb.chunks_exact(3)) {
        *o = (0.299f32 * p[0] + 0.587f32 * p[1]) + 0.114f32 * p[2];
    }
}

/// Why an image cannot be preprocessed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PreprocessError {
    /// A zero width, height or target size.
    Empty,
    /// The pixel slice does not hold `width * height * channels` bytes.
    BadLength { len: usize, expected: usize },
}

impl fmt::Display for PreprocessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PreprocessError::Empty => write!(f, "empty image or zero target size"),
            PreprocessError::BadLength { len, expected } => {
                write!(f, "pixel buffer holds {len} bytes, expected {expected}")
            }
        }
    }
}

impl core::error::Error for PreprocessError {}

/// The size albumentations `SmallestMaxSize(target)` resizes a `w x h` image to:
/// `scale = target / min(w, h)` (f64), each side `round_half_even(dim * scale)` (Python `round`).
/// An image whose shorter side already equals `target` keeps its size.
pub fn shortest_side_size(w: usize, h: usize, target: usize) -> (usize, usize) {
    let scale = target as f64 / w.min(h) as f64;
    if scale == 1.0 {
        return (w, h);
    }
    // libm::rint rounds ties to even in the default rounding mode, like Python's round().
    let r = |d: usize| libm::rint(d as f64 * scale) as usize;
    (r(w), r(h))
}

/// `(dim - size) / 2`: albumentations `CenterCrop` offset (spec 3.7).
#[inline]
pub fn center_crop_offset(dim: usize, size: usize) -> usize {
    dim.saturating_sub(size) / 2
}

/// OpenCV's `INTER_RESIZE_COEF_BITS`: u8 bilinear weights are 11-bit fixed point.
const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// `cv2.resize(src, (dw, dh), interpolation=INTER_LINEAR)` on an interleaved u8 image, as OpenCV
/// 4.9 computes it without IPP (`hal::resize` -> `resizeGeneric_` with `HResizeLinear` and the
/// u8 `VResizeLinear` specialisation):
///
/// * `dw == sw && dh == sh`: a copy.
/// * Both scales exactly 2: OpenCV switches to the INTER_AREA fast path, the rounded mean of each
///   2x2 block, `(a + b + c + d + 2) >> 2` (exact for 1, 3 and 4 channels, which have OpenCV's
///   vectorised path; other channel counts use the same formula here).
/// * Otherwise: source coordinate `f32((d + 0.5) * scale - 0.5)` split into `floor` and fraction,
///   weights `saturate_cast<short>((1 - f) * 2048)` and `(f * 2048)`; columns left of the image
///   clamp to column 0 with weight 0, columns at or past the last clamp to it unweighted (times
///   2048); rows clamp their two source rows but keep their weights. Horizontal pass in i32,
///   vertical pass `(((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16) + 2) >> 2`.
///
/// # Panics
/// If a size is zero or a slice has the wrong length.
pub fn resize_u8_bilinear(src: &[u8], sw: usize, sh: usize, channels: usize, dst: &mut [u8], dw: usize, dh: usize) {
    let cn = channels;
    assert!(sw > 0 && sh > 0 && dw > 0 && dh > 0 && cn > 0, "resize_u8_bilinear: empty image");
    assert_eq!(src.len(), sw * sh * cn, "resize_u8_bilinear: source length");
    assert_eq!(dst.len(), dw * dh * cn, "resize_u8_bilinear: destination length");
    if sw == dw && sh == dh {
        dst.copy_from_slice(src);
        return;
    }
    let inv_scale_x = dw as f64 / sw as f64;
    let inv_scale_y = dh as f64 / sh as f64;
    let scale_x = 1.0 / inv_scale_x;
    let scale_y = 1.0 / inv_scale_y;
    if scale_x == 2.0 && scale_y == 2.0 {
        // INTER_LINEAR with both scales exactly 2 -> resizeAreaFast_ (2x2 rounded mean).
        let row = sw * cn;
        for dy in 0..dh {
            let s0 = &src[2 * dy * row..][..row];
            let s1 = &src[(2 * dy + 1) * row..][..row];
            let d = &mut dst[dy * dw * cn..][..dw * cn];
            for dx in 0..dw {
                for k in 0..cn {
                    let i = 2 * dx * cn + k;
                    let sum = u32::from(s0[i]) + u32::from(s0[i + cn]) + u32::from(s1[i]) + u32::from(s1[i + cn]);
                    d[dx * cn + k] = ((sum + 2) >> 2) as u8;
                }
            }
        }
        return;
    }
    // Fixed-point weight as OpenCV: saturate_cast<short>(f32 * 2048) rounds to nearest even.
    let coef = |v: f32| libm::rintf(v * COEF_SCALE) as i32;
    let tap = |d: usize, scale: f64| {
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let k = libm::floorf(f);
        (k as i64, f - k)
    };
    // Horizontal tap of a destination column: source column, weights, and whether the column is
    // at/after OpenCV's `xmax` (the last source pixel, unweighted, times 2048).
    let htap = |dx: usize| -> (usize, i32, i32, bool) {
        let (mut sx, mut fx) = tap(dx, scale_x);
        if sx < 0 {
            sx = 0;
            fx = 0.0;
        }
        if sx + 1 >= sw as i64 {
            return (sw - 1, 0, 0, true);
        }
        (sx as usize, coef(1.0 - fx), coef(fx), false)
    };
    // The horizontal pass of one source row at one destination column (exact i32 arithmetic, so
    // computing it per output pixel instead of per cached row changes nothing).
    let h = |sy: usize, t: (usize, i32, i32, bool), k: usize| -> i32 {
        let (sx, a0, a1, copy) = t;
        let i = (sy * sw + sx) * cn + k;
        if copy {
            i32::from(src[i]) << COEF_BITS
        } else {
            i32::from(src[i]) * a0 + i32::from(src[i + cn]) * a1
        }
    };
    for dy in 0..dh {
        let (sy, fy) = tap(dy, scale_y);
        let clip = |v: i64| v.clamp(0, sh as i64 - 1) as usize;
        let (y0, y1) = (clip(sy), clip(sy + 1));
        let (b0, b1) = (coef(1.0 - fy), coef(fy));
        for dx in 0..dw {
            let t = htap(dx);
            for k in 0..cn {
                let (s0, s1) = (h(y0, t, k), h(y1, t, k));
                let v = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2;
                dst[(dy * dw + dx) * cn + k] = v.clamp(0, 255) as u8;
            }
        }
    }
}

#[cfg(feature = "alloc")]
pub use self::owned::{preprocess_rgb8, preprocess_rgb8_full};

#[cfg(feature = "alloc")]
mod owned {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn check(rgb: &[u8], w: usize, h: usize, size: usize) -> Result<(), PreprocessError> {
        if w == 0 || h == 0 || size == 0 {
            return Err(PreprocessError::Empty);
        }
        if rgb.len() != w * h * 3 {
            return Err(PreprocessError::BadLength { len: rgb.len(), expected: w * h * 3 });
        }
        Ok(())
    }

    /// Resizes so the shorter side is `target` (skipped when it already is).
    fn shortest_side(rgb: &[u8], w: usize, h: usize, target: usize) -> (Vec<u8>, usize, usize) {
        let (nw, nh) = shortest_side_size(w, h, target);
        if (nw, nh) == (w, h) {
            return (rgb.to_vec(), w, h);
        }
        let mut out = vec![0u8; nw * nh * 3];
        resize_u8_bilinear(rgb, w, h, 3, &mut out, nw, nh);
        (out, nw, nh)
    }

    fn crop(rgb: &[u8], w: usize, h: usize, cw: usize, ch: usize) -> Vec<u8> {
        let (ox, oy) = (center_crop_offset(w, cw), center_crop_offset(h, ch));
        let mut out = Vec::with_capacity(cw * ch * 3);
        for y in oy..oy + ch {
            out.extend_from_slice(&rgb[(y * w + ox) * 3..(y * w + ox + cw) * 3]);
        }
        out
    }

    /// The official dataset preprocessing (spec 3.7) of an interleaved RGB u8 image:
    /// `SmallestMaxSize(size)` then `CenterCrop(size)`. Returns the `size x size` RGB bytes and
    /// the size. An image whose shorter side is already `size` is only cropped.
    pub fn preprocess_rgb8(
        rgb: &[u8],
        w: usize,
        h: usize,
        size: usize,
    ) -> Result<(Vec<u8>, usize, usize), PreprocessError> {
        check(rgb, w, h, size)?;
        let (img, nw, nh) = shortest_side(rgb, w, h, size);
        Ok((crop(&img, nw, nh, size, size), size, size))
    }

    /// Preprocessing for the full-image mode (spec 3.6, our choice): keep every pixel at its
    /// resolution and pad each side by edge replication (the last row/column repeated) to the
    /// next multiple of `patch`. Returns the RGB bytes, width and height (both multiples of
    /// `patch`); the photo is the top-left `w x h` of the result.
    pub fn preprocess_rgb8_full(
        rgb: &[u8],
        w: usize,
        h: usize,
        patch: usize,
    ) -> Result<(Vec<u8>, usize, usize), PreprocessError> {
        check(rgb, w, h, patch)?;
        let (pw, ph) = (w.div_ceil(patch) * patch, h.div_ceil(patch) * patch);
        let mut out = Vec::with_capacity(pw * ph * 3);
        for y in 0..ph {
            let row = &rgb[y.min(h - 1) * w * 3..(y.min(h - 1) + 1) * w * 3];
            out.extend_from_slice(row);
            let last = &row[(w - 1) * 3..];
            for _ in w..pw {
                out.extend_from_slice(last);
            }
        }
        Ok((out, pw, ph))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_and_grey() {
        assert_eq!(u8_to_unit(0), -1.0);
        assert_eq!(u8_to_unit(255), 1.0);
        assert_eq!(u8_to_unit(128), (128.0f64 / 127.5 - 1.0) as f32);
        let mut g = [0.0f32; 1];
        grey(&[1.0, 1.0, 1.0], &mut g);
        assert_eq!(g[0], (0.299f32 + 0.587f32) + 0.114f32);
    }

    #[test]
    fn sizes() {
        assert_eq!(shortest_side_size(451, 300, 256), (385, 256));
        assert_eq!(shortest_side_size(512, 512, 256), (256, 256));
        assert_eq!(shortest_side_size(300, 256, 256), (300, 256));
        // 741 * 256 / 500 = 379.392
        assert_eq!(shortest_side_size(741, 500, 256), (379, 256));
        assert_eq!(center_crop_offset(385, 256), 64);
    }

    #[test]
    fn resize_constant_and_halving() {
        let src = [77u8; 10 * 6 * 3];
        let mut dst = [0u8; 7 * 4 * 3];
        resize_u8_bilinear(&src, 10, 6, 3, &mut dst, 7, 4);
        assert!(dst.iter().all(|&v| v == 77));
        let src = [0u8, 1, 2, 4];
        let mut dst = [0u8; 1];
        resize_u8_bilinear(&src, 2, 2, 1, &mut dst, 1, 1);
        assert_eq!(dst[0], 2); // (0 + 1 + 2 + 4 + 2) >> 2
        let mut up = [0u8; 16];
        resize_u8_bilinear(&[0, 255, 0, 255], 2, 2, 1, &mut up, 4, 4);
        assert_eq!(&up[..4], &[0, 64, 191, 255]);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn full_mode_keeps_every_pixel_and_pads_by_edge_replication() {
        // 3x2 image, patch 2: padded to 4x2, the last column repeated.
        let rgb: alloc::vec::Vec<u8> = (0..18).collect();
        let (out, w, h) = preprocess_rgb8_full(&rgb, 3, 2, 2).unwrap();
        assert_eq!((w, h), (4, 2));
        assert_eq!(&out[..12], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 6, 7, 8]);
        assert_eq!(&out[12..], &[9, 10, 11, 12, 13, 14, 15, 16, 17, 15, 16, 17]);
        // A side already a multiple is untouched; a short side is padded down.
        let (out, w, h) = preprocess_rgb8_full(&rgb, 3, 2, 3).unwrap();
        assert_eq!((w, h), (3, 3));
        assert_eq!(&out[18..], &rgb[9..18]);
    }
}
