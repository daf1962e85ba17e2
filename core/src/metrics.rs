//! Image quality metrics: PSNR and SSIM on planar `[C, H, W]` f32 images with values in `[0, 1]`.
//!
//! SSIM is the definition of Wang et al. 2004 as `tf.image.ssim` and pytorch-msssim compute it:
//! an 11x11 Gaussian window (sigma 1.5, normalised to sum 1), `K1 = 0.01`, `K2 = 0.03`, data
//! range `L = 1`, population (biased) local variances, the map evaluated only where the window
//! fits entirely inside the image (`(H-10) x (W-10)` positions, no padding), averaged over the
//! map and then over the channels. `docs/METRICS.md` states exactly how this relates to
//! scikit-image and holds the NumPy script the reference test was produced with.
//!
//! Everything accumulates in f64 and nothing allocates: SSIM runs the separable window over
//! column tiles with a fixed ring buffer on the stack.

use core::fmt;

/// Side of the SSIM window.
pub const SSIM_WINDOW: usize = 11;
/// Standard deviation (pixels) of the SSIM window's Gaussian.
pub const SSIM_SIGMA: f64 = 1.5;
/// SSIM stabiliser constants for data range 1: `C1 = (0.01 L)^2`, `C2 = (0.03 L)^2`.
pub const SSIM_C1: f64 = 0.01 * 0.01;
pub const SSIM_C2: f64 = 0.03 * 0.03;

/// Why SSIM cannot be computed on the given slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsError {
    /// The two images do not have the same number of values.
    LengthMismatch { a: usize, b: usize },
    /// The slices do not hold `channels * height * width` values.
    ShapeMismatch { channels: usize, height: usize, width: usize, len: usize },
    /// The image is smaller than the 11x11 window in at least one direction.
    TooSmall { height: usize, width: usize },
    /// `channels` is 0: there is nothing to average.
    NoChannels,
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MetricsError::LengthMismatch { a, b } => {
                write!(f, "images differ in size ({a} vs {b} values)")
            }
            MetricsError::ShapeMismatch { channels, height, width, len } => {
                write!(f, "{len} values do not form a [{channels}, {height}, {width}] image")
            }
            MetricsError::TooSmall { height, width } => {
                write!(f, "a {height}x{width} image is smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window")
            }
            MetricsError::NoChannels => f.write_str("an image needs at least one channel"),
        }
    }
}

impl core::error::Error for MetricsError {}

/// Maps a model value in `[-1, 1]` to the `[0, 1]` range the metrics expect, clamping whatever
/// the decoder put outside (it has no final tanh).
pub fn unit_from_signed(v: f32) -> f32 {
    ((v + 1.0) * 0.5).clamp(0.0, 1.0)
}

/// Mean squared error over all values, accumulated in f64.
///
/// # Panics
/// If the slices differ in length or are empty (a programming error, not a data error).
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "mse: images differ in size");
    assert!(!a.is_empty(), "mse: empty images");
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum();
    sum / a.len() as f64
}

/// PSNR in dB for peak value 1: `10 log10(1 / MSE)`. Identical images give `f64::INFINITY`.
///
/// # Panics
/// As [`mse`].
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    // 1/0 = inf and log10(inf) = inf, so identical images need no special case.
    10.0 * libm::log10(1.0 / mse(a, b))
}

/// The 1-D window: `exp(-d^2 / (2 sigma^2))` for `d = -5..=5`, normalised to sum 1. The 2-D
/// window is its outer product, which therefore also sums to 1.
fn gaussian_window() -> [f64; SSIM_WINDOW] {
    let mut g = [0.0; SSIM_WINDOW];
    let half = (SSIM_WINDOW / 2) as f64;
    for (i, w) in g.iter_mut().enumerate() {
        let d = i as f64 - half;
        *w = libm::exp(-(d * d) / (2.0 * SSIM_SIGMA * SSIM_SIGMA));
    }
    let sum: f64 = g.iter().sum();
    g.map(|w| w / sum)
}

/// Output columns processed per tile. The ring buffer holds `11 rows x 5 moments x TILE` f64
/// (14 KiB), independent of the image width, which is what lets SSIM run without allocation.
const TILE: usize = 32;

/// The local moments the SSIM formula needs: `E[a]`, `E[b]`, `E[a^2]`, `E[b^2]`, `E[ab]`.
const MOMENTS: usize = 5;

/// Mean SSIM of two `[channels, height, width]` images with values in `[0, 1]` (see the module
/// documentation for the exact definition). Returns 1 for identical images.
pub fn ssim(a: &[f32], b: &[f32], channels: usize, height: usize, width: usize) -> Result<f64, MetricsError> {
    if a.len() != b.len() {
        return Err(MetricsError::LengthMismatch { a: a.len(), b: b.len() });
    }
    if channels == 0 {
        return Err(MetricsError::NoChannels);
    }
    let plane = height.checked_mul(width);
    if plane.and_then(|p| p.checked_mul(channels)) != Some(a.len()) {
        return Err(MetricsError::ShapeMismatch { channels, height, width, len: a.len() });
    }
    if height < SSIM_WINDOW || width < SSIM_WINDOW {
        return Err(MetricsError::TooSmall { height, width });
    }
    let plane = height * width;
    let g = gaussian_window();
    let mut total = 0.0;
    for (pa, pb) in a.chunks_exact(plane).zip(b.chunks_exact(plane)) {
        total += ssim_plane(pa, pb, height, width, &g);
    }
    Ok(total / channels as f64)
}

/// Mean SSIM of one channel. Separable filtering: a horizontal 11-tap pass per input row into a
/// ring buffer of the last 11 rows, then a vertical 11-tap pass per output row, tile by tile.
fn ssim_plane(a: &[f32], b: &[f32], height: usize, width: usize, g: &[f64; SSIM_WINDOW]) -> f64 {
    let out_h = height - (SSIM_WINDOW - 1);
    let out_w = width - (SSIM_WINDOW - 1);
    let mut ring = [[[0.0f64; TILE]; MOMENTS]; SSIM_WINDOW];
    let mut sum = 0.0;
    for x0 in (0..out_w).step_by(TILE) {
        let tile = TILE.min(out_w - x0);
        for y in 0..height {
            let row_a = &a[y * width + x0..][..tile + SSIM_WINDOW - 1];
            let row_b = &b[y * width + x0..][..tile + SSIM_WINDOW - 1];
            let slot = &mut ring[y % SSIM_WINDOW];
            for j in 0..tile {
                let mut m = [0.0f64; MOMENTS];
                for (k, &w) in g.iter().enumerate() {
                    let va = f64::from(row_a[j + k]);
                    let vb = f64::from(row_b[j + k]);
                    m[0] += w * va;
                    m[1] += w * vb;
                    m[2] += w * va * va;
                    m[3] += w * vb * vb;
                    m[4] += w * va * vb;
                }
                for (q, &v) in m.iter().enumerate() {
                    slot[q][j] = v;
                }
            }
            if y + 1 < SSIM_WINDOW {
                continue;
            }
            // Rows y-10..=y are all in the ring; row y-10+k sits in slot (y+1+k) mod 11.
            for j in 0..tile {
                let mut m = [0.0f64; MOMENTS];
                for (k, &w) in g.iter().enumerate() {
                    let slot = &ring[(y + 1 + k) % SSIM_WINDOW];
                    for (q, acc) in m.iter_mut().enumerate() {
                        *acc += w * slot[q][j];
                    }
                }
                sum += ssim_from_moments(m);
            }
        }
    }
    sum / (out_h * out_w) as f64
}

/// The SSIM formula from the five local moments, with population variances
/// `sigma^2 = E[a^2] - E[a]^2` (no `n/(n-1)` correction).
fn ssim_from_moments([mu_a, mu_b, e_aa, e_bb, e_ab]: [f64; MOMENTS]) -> f64 {
    let var_a = e_aa - mu_a * mu_a;
    let var_b = e_bb - mu_b * mu_b;
    let cov = e_ab - mu_a * mu_b;
    let luminance = (2.0 * mu_a * mu_b + SSIM_C1) / (mu_a * mu_a + mu_b * mu_b + SSIM_C1);
    let structure = (2.0 * cov + SSIM_C2) / (var_a + var_b + SSIM_C2);
    luminance * structure
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pattern with values in [0, 1], varying in both directions.
    fn pattern(h: usize, w: usize, phase: f64) -> impl Fn(usize) -> f32 {
        move |i| {
            let (ch, y, x) = (i / (h * w), (i / w) % h, i % w);
            let v = libm::sin(0.3 * x as f64 + 0.17 * y as f64 + phase + ch as f64) * libm::cos(0.05 * (x * y) as f64);
            (0.5 + 0.45 * v) as f32
        }
    }

    /// Direct 121-tap evaluation, the definition written out literally.
    fn ssim_direct(a: &[f32], b: &[f32], c: usize, h: usize, w: usize) -> f64 {
        let g = gaussian_window();
        let mut total = 0.0;
        for ch in 0..c {
            let mut sum = 0.0;
            for oy in 0..h - 10 {
                for ox in 0..w - 10 {
                    let mut m = [0.0; MOMENTS];
                    for ky in 0..SSIM_WINDOW {
                        for kx in 0..SSIM_WINDOW {
                            let wgt = g[ky] * g[kx];
                            let idx = ch * h * w + (oy + ky) * w + ox + kx;
                            let (va, vb) = (f64::from(a[idx]), f64::from(b[idx]));
                            m[0] += wgt * va;
                            m[1] += wgt * vb;
                            m[2] += wgt * va * va;
                            m[3] += wgt * vb * vb;
                            m[4] += wgt * va * vb;
                        }
                    }
                    sum += ssim_from_moments(m);
                }
            }
            total += sum / ((h - 10) * (w - 10)) as f64;
        }
        total / c as f64
    }

    #[test]
    fn separable_tiles_match_the_direct_sum() {
        // Widths that give a partial last tile, exactly one tile, and several tiles.
        for (c, h, w) in [(2, 13, 11), (1, 11, 42), (3, 20, 75), (1, 40, 12)] {
            let n = c * h * w;
            let fa = pattern(h, w, 0.0);
            let fb = pattern(h, w, 0.4);
            let a: [f32; 4500] = core::array::from_fn(|i| if i < n { fa(i) } else { 0.0 });
            let b: [f32; 4500] = core::array::from_fn(|i| if i < n { fb(i) } else { 0.0 });
            let fast = ssim(&a[..n], &b[..n], c, h, w).unwrap();
            let direct = ssim_direct(&a[..n], &b[..n], c, h, w);
            assert!((fast - direct).abs() < 1e-12, "{c}x{h}x{w}: {fast} vs {direct}");
            assert!(fast < 0.99, "the test images must differ ({fast})");
        }
    }

    #[test]
    fn window_is_normalised_and_symmetric() {
        let g = gaussian_window();
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for k in 0..SSIM_WINDOW {
            assert_eq!(g[k], g[SSIM_WINDOW - 1 - k]);
        }
        assert!(g[5] > g[4] && g[0] > 0.0);
    }

    #[test]
    fn errors() {
        let a = [0.5f32; 3 * 11 * 12];
        assert_eq!(ssim(&a, &a[1..], 3, 11, 12), Err(MetricsError::LengthMismatch { a: 396, b: 395 }));
        assert_eq!(
            ssim(&a, &a, 3, 12, 12),
            Err(MetricsError::ShapeMismatch { channels: 3, height: 12, width: 12, len: 396 })
        );
        assert_eq!(ssim(&a, &a, 3, 12, 11), Ok(1.0));
        assert_eq!(ssim(&a, &a, 36, 1, 11), Err(MetricsError::TooSmall { height: 1, width: 11 }));
        assert_eq!(ssim(&a, &a, 36, 11, 1), Err(MetricsError::TooSmall { height: 11, width: 1 }));
        assert_eq!(ssim(&a, &a, 0, 11, 12), Err(MetricsError::NoChannels));
        assert!(matches!(ssim(&a, &a, usize::MAX, 2, 2), Err(MetricsError::ShapeMismatch { .. })));
    }

    #[test]
    fn psnr_of_identical_and_offset_images() {
        let a = [0.25f32, 0.5, 0.75, 1.0];
        assert_eq!(psnr(&a, &a), f64::INFINITY);
        let b = a.map(|v| v - 0.25);
        // Every difference is exactly 0.25 in f32, so MSE = 1/16 and PSNR = 20 log10 4.
        assert!((psnr(&a, &b) - 20.0 * libm::log10(4.0)).abs() < 1e-12);
        assert_eq!(mse(&a, &b), 0.0625);
    }

    #[test]
    fn unit_range_conversion_clamps() {
        assert_eq!(unit_from_signed(-1.0), 0.0);
        assert_eq!(unit_from_signed(0.0), 0.5);
        assert_eq!(unit_from_signed(1.0), 1.0);
        assert_eq!(unit_from_signed(1.7), 1.0);
        assert_eq!(unit_from_signed(-3.0), 0.0);
    }
}
