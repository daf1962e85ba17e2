//! The renderer: bounded Gaussian kernel and splatting, forward and backward (spec section 2),
//! and the multi-patch merge (spec 2.4).
//!
//! Layouts: tokens `[N, 5 + C]` (one image), output feature map `[C, H, W]` (CHW, what the
//! decoder consumes). Batched variants live on the [`crate::Backend`] trait. Every function here
//! works on caller slices, allocates nothing and returns shape errors instead of panicking.
//!
//! * The kernel ([`SplatKernel`]) reproduces `gs.cu`'s f32 operation order without FMA, with
//!   `libm::expf`, so every backend and the brute-force reference share one definition of a pixel.
//! * The forward restricts every Gaussian to its [`Footprint`], the exact set of pixels passing
//!   the official box test, and sums over Gaussians in index order: bit-identical to the
//!   brute-force loop over every (pixel, Gaussian), at a fraction of the cost.
//! * The backward applies the analytic formulas of spec 2.2 per Gaussian, in f64.

use crate::token::{GAUSSIAN_PARAMS, MEAN_X, MEAN_Y, SIGMA_X, SIGMA_Y};

mod backward;
mod kernel;
#[cfg(test)]
use backward::exp_f64;
pub use backward::{splat_backward, splat_backward_gaussian};
pub use kernel::{expf, pixel_coord, SplatKernel};

use core::ops::Range;

/// Shape of one splat call, per image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplatDesc {
    /// Images in the batch (backend ops); the core's slice functions take one image.
    pub batch: usize,
    /// Gaussians (tokens) per image.
    pub gaussians: usize,
    /// Feature channels per token (`C`).
    pub channels: usize,
    /// Canvas height in pixels (must be >= 2: the align-corners grid divides by `H - 1`).
    pub height: usize,
    /// Canvas width in pixels (must be >= 2).
    pub width: usize,
    /// Support factor kappa (`gps_dmax`, 3 in every released config).
    pub kappa: f32,
}

pub use crate::shape::ShapeError;

impl SplatDesc {
    /// Values per token: `5 + channels`.
    pub fn token_stride(&self) -> usize {
        crate::token::GAUSSIAN_PARAMS + self.channels
    }
    /// Values of the token buffer for the whole batch: `batch * gaussians * (5 + C)`.
    pub fn tokens_len(&self) -> usize {
        self.batch * self.gaussians * self.token_stride()
    }
    /// Values of the feature map for the whole batch: `batch * C * H * W`.
    pub fn image_len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }
    /// Checks the canvas and the lengths of a token buffer and an image buffer.
    pub fn check(&self, tokens_len: usize, image_len: usize) -> Result<(), ShapeError> {
        if self.height < 2 || self.width < 2 {
            return Err(ShapeError::CanvasTooSmall { height: self.height, width: self.width });
        }
        if tokens_len != self.tokens_len() {
            return Err(ShapeError::Length { what: "tokens", expected: self.tokens_len(), got: tokens_len });
        }
        if image_len != self.image_len() {
            return Err(ShapeError::Length { what: "feature map", expected: self.image_len(), got: image_len });
        }
        Ok(())
    }
}

/// The pixels a Gaussian can touch: half-open index ranges of rows and columns.
///
/// It is *exactly* the set of pixels that pass [`SplatKernel::inside`] (see [`axis_range`]),
/// so a loop over it gives the same result as the brute-force loop over the whole canvas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// First row inside.
    pub row_start: usize,
    /// One past the last row inside.
    pub row_end: usize,
    /// First column inside.
    pub col_start: usize,
    /// One past the last column inside.
    pub col_end: usize,
}

impl Footprint {
    /// Rows inside (half-open).
    pub fn rows(&self) -> Range<usize> {
        self.row_start..self.row_end
    }
    /// Columns inside (half-open).
    pub fn cols(&self) -> Range<usize> {
        self.col_start..self.col_end
    }
    /// True when no pixel is inside.
    pub fn is_empty(&self) -> bool {
        self.row_start >= self.row_end || self.col_start >= self.col_end
    }
    /// Number of pixels inside (the golden files' `support_count`).
    pub fn pixel_count(&self) -> usize {
        if self.is_empty() {
            0
        } else {
            (self.row_end - self.row_start) * (self.col_end - self.col_start)
        }
    }
}

/// The pixel indices `i` of an axis of `size` pixels whose offset `d = pixel_coord(i) - center`
/// passes the official one-axis test `!(d > half || d < -half)`, as a half-open range.
///
/// Why this is exact, not an estimate: the box test is separable (rows and columns are tested
/// independently), and `d` is non-decreasing in `i` (the grid formula and f32 rounding are
/// monotone), so the accepted indices form one contiguous run. Both of its ends are found by
/// searching with the exact f32 predicate, starting from a float estimate (usually 1 or 2
/// predicate evaluations). NaN in `center` or `half` accepts every index, as the official test
/// does; a negative `half` accepts none.
// `!(d < -half)` on purpose: it is the official test's NaN behaviour (NaN passes).
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub fn axis_range(center: f32, half: f32, size: usize) -> Range<usize> {
    let offset = |i: usize| pixel_coord(i, size) - center;
    // Index estimate of a coordinate; saturating casts turn NaN into 0 and clamp the rest.
    let estimate = |coord: f32| {
        let e = (f64::from(coord) + 1.0) * 0.5 * (size as f64 - 1.0);
        (e as usize).min(size)
    };
    // First index not left of the box, then first index right of it.
    let start = partition_point_from(size, estimate(center - half), |i| !(offset(i) < -half));
    let end = partition_point_from(size, estimate(center + half), |i| offset(i) > half);
    if start < end {
        start..end
    } else {
        0..0
    }
}

/// Smallest `i` in `0..=n` with `pred(i)`, for a predicate that is monotone (false, then true)
/// on `0..n`; `pred(n)` is taken as true. Gallops outwards from `hint`, then bisects, so a
/// good hint costs O(1) evaluations and a bad one O(log n).
fn partition_point_from(n: usize, hint: usize, pred: impl Fn(usize) -> bool) -> usize {
    let hint = hint.min(n);
    // Invariant: `pred` is false on `0..lo` and true on `hi..=n`.
    let (mut lo, mut hi);
    if hint == n || pred(hint) {
        hi = hint;
        let mut step = 1;
        loop {
            if hi == 0 {
                lo = 0;
                break;
            }
            let k = hi.saturating_sub(step);
            if pred(k) {
                hi = k;
                step *= 2;
            } else {
                lo = k + 1;
                break;
            }
        }
    } else {
        lo = hint + 1;
        let mut step = 1;
        loop {
            let k = lo.saturating_add(step - 1);
            if k >= n {
                hi = n;
                break;
            }
            if pred(k) {
                hi = k;
                break;
            }
            lo = k + 1;
            step *= 2;
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The footprint of a Gaussian kernel on a `height x width` canvas.
pub fn footprint(kernel: &SplatKernel, height: usize, width: usize) -> Footprint {
    let rows = axis_range(kernel.y, kernel.half_y, height);
    let cols = axis_range(kernel.x, kernel.half_x, width);
    if rows.is_empty() || cols.is_empty() {
        return Footprint::default();
    }
    Footprint { row_start: rows.start, row_end: rows.end, col_start: cols.start, col_end: cols.end }
}

/// The footprint of every token of one image (`tokens` is `[N, 5+C]`) into `out` (`N` values).
pub fn footprints(desc: &SplatDesc, tokens: &[f32], out: &mut [Footprint]) -> Result<(), ShapeError> {
    check_image(desc, tokens.len(), desc.channels * desc.height * desc.width)?;
    check_len("footprints", desc.gaussians, out.len())?;
    for (token, fp) in tokens.chunks_exact(desc.token_stride()).zip(out.iter_mut()) {
        *fp = footprint(&SplatKernel::new(token, desc.kappa), desc.height, desc.width);
    }
    Ok(())
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), ShapeError> {
    if expected == got {
        Ok(())
    } else {
        Err(ShapeError::Length { what, expected, got })
    }
}

/// Checks the buffers of ONE image: the core's slice functions ignore `desc.batch`.
fn check_image(desc: &SplatDesc, tokens_len: usize, image_len: usize) -> Result<(), ShapeError> {
    SplatDesc { batch: 1, ..*desc }.check(tokens_len, image_len)
}

// ---------------------------------------------------------------------------------------------
// Forward (spec 2.1)
// ---------------------------------------------------------------------------------------------

/// Splat forward for ONE image: tokens `[N, 5+C]` to the feature map `[C, H, W]` (overwritten).
///
/// The reference every backend is compared with: Gaussian after Gaussian in index order, each
/// adding `v*col` in f32 to the pixels of its [`Footprint`] (exactly the pixels passing the box
/// test), so every pixel sums the brute-force `gs.cu` loop's terms in the same order and gets its
/// bits. Single-threaded and untiled; `desc.batch` is ignored (the backends loop over images).
pub fn splat_forward(desc: &SplatDesc, tokens: &[f32], out: &mut [f32]) -> Result<(), ShapeError> {
    check_image(desc, tokens.len(), out.len())?;
    let (height, width) = (desc.height, desc.width);
    let plane = height * width;
    out.fill(0.0);
    for token in tokens.chunks_exact(desc.token_stride()) {
        let k = SplatKernel::new(token, desc.kappa);
        let fp = footprint(&k, height, width);
        for i in fp.rows() {
            let dy = pixel_coord(i, height) - k.y;
            for j in fp.cols() {
                let v = k.value(pixel_coord(j, width) - k.x, dy);
                for (c, &col) in token[GAUSSIAN_PARAMS..].iter().enumerate() {
                    out[c * plane + i * width + j] += v * col;
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Multi-patch merge (spec 2.4)
// ---------------------------------------------------------------------------------------------

/// Merges the tokens of the `patches_x x patches_y` patches of ONE image into one token set for
/// the whole canvas, exactly as the official `adjust_gpstoken` (f32) does for square grids
/// (`patches_x = patches_y = np`): `sigma_x' = sigma_x/np`, `rho' = rho`,
/// `x' = -1 + (2j + x + 1)/np`, `y' = -1 + (2i + y + 1)/np`, features unchanged. A rectangular
/// grid (from `--full` on a non-square photo) applies the same map per axis with its own count.
///
/// `patches` is `[px*py*N, 5+C]`, patch `k = i*px + j` (row-major, `i` = patch row) holding
/// tokens `k*N .. (k+1)*N`; `out` has the same shape and order.
pub fn merge_patches(
    patches_x: usize,
    patches_y: usize,
    tokens_per_patch: usize,
    channels: usize,
    patches: &[f32],
    out: &mut [f32],
) -> Result<(), ShapeError> {
    let stride = GAUSSIAN_PARAMS + channels;
    let expected = patches_x * patches_y * tokens_per_patch * stride;
    check_len("patch tokens", expected, patches.len())?;
    check_len("merged tokens", expected, out.len())?;
    if expected == 0 {
        return Ok(());
    }
    let (npx, npy) = (patches_x as f32, patches_y as f32);
    for (k, (src, dst)) in
        patches.chunks_exact(tokens_per_patch * stride).zip(out.chunks_exact_mut(tokens_per_patch * stride)).enumerate()
    {
        let (pi, pj) = ((k / patches_x) as f32, (k % patches_x) as f32);
        for (t, o) in src.chunks_exact(stride).zip(dst.chunks_exact_mut(stride)) {
            o.copy_from_slice(t);
            o[SIGMA_X] = t[SIGMA_X] / npx;
            o[SIGMA_Y] = t[SIGMA_Y] / npy;
            // torch: `-1 + (2*j + x + 1) / np`, left to right in f32.
            o[MEAN_X] = -1.0 + (2.0 * pj + t[MEAN_X] + 1.0) / npx;
            o[MEAN_Y] = -1.0 + (2.0 * pi + t[MEAN_Y] + 1.0) / npy;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
