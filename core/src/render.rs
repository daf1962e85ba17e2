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

use crate::token::{GAUSSIAN_PARAMS, MEAN_X, MEAN_Y, RHO, SIGMA_X, SIGMA_Y};

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

// ---------------------------------------------------------------------------------------------
// Pixel grid and the bounded Gaussian kernel (spec 2.1)
// ---------------------------------------------------------------------------------------------

/// Normalised coordinate of pixel `index` on an axis of `size` pixels (align-corners grid):
/// `f32(2.0*index/(size-1) - 1.0)`, evaluated in f64 and rounded once, as `gs.cu` does.
///
/// Pixel 0 maps to exactly -1 and pixel `size-1` to exactly +1. `size` must be at least 2
/// (`size == 1` divides by zero and gives NaN or infinity, like the official code).
#[inline]
pub fn pixel_coord(index: usize, size: usize) -> f32 {
    // `size as f64 - 1.0` equals `(size - 1) as f64` for every size >= 1 and cannot underflow.
    (2.0 * index as f64 / (size as f64 - 1.0) - 1.0) as f32
}

/// The `exp` of the reference kernel: `libm::expf`, the same on every platform. Exposed so that
/// independent references (the brute-force port in the tests) evaluate the very same function.
#[inline]
pub fn expf(x: f32) -> f32 {
    libm::expf(x)
}

/// Per-Gaussian constants of the forward kernel, computed once per Gaussian with `gs.cu`'s f32
/// operations so that [`SplatKernel::value`] reproduces its operation order exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplatKernel {
    /// Mean, horizontal (`x`).
    pub x: f32,
    /// Mean, vertical (`y`).
    pub y: f32,
    /// Half-width of the support box, `kappa * sigma_x` (one f32 product, as in `gs.cu`).
    pub half_x: f32,
    /// Half-height of the support box, `kappa * sigma_y`.
    pub half_y: f32,
    /// `a = 1/sigma_x`.
    a: f32,
    /// `b = 1/sigma_y`.
    b: f32,
    /// `a*a`, the first product of `gs.cu`'s left-to-right chain `a*a*dx*dx`.
    aa: f32,
    /// `2*rho`, the first product of the chain `2*rho*dx*dy*a*b`.
    two_rho: f32,
    /// `r = 1/(1-rho*rho)`.
    r: f32,
}

impl SplatKernel {
    /// The kernel of a token (`token[..5]` = `[sigma_x, sigma_y, rho, x, y]`).
    ///
    /// # Panics
    /// If `token` holds fewer than five values.
    #[inline]
    pub fn new(token: &[f32], kappa: f32) -> SplatKernel {
        let (sx, sy, rho) = (token[SIGMA_X], token[SIGMA_Y], token[RHO]);
        // gs.cu divides `1.0 / float` in double and rounds to f32; for a division that double
        // rounding is innocuous, so the f32 division gives the same bits.
        let a = 1.0 / sx;
        let b = 1.0 / sy;
        SplatKernel {
            x: token[MEAN_X],
            y: token[MEAN_Y],
            half_x: kappa * sx,
            half_y: kappa * sy,
            a,
            b,
            aa: a * a,
            two_rho: 2.0 * rho,
            r: 1.0 / (1.0 - rho * rho),
        }
    }

    /// The official support test: `!(dx > k*sx || dx < -k*sx || dy > k*sy || dy < -k*sy)`.
    ///
    /// Boundary included. A negative sigma makes it always false; a NaN anywhere makes it true
    /// (as in `gs.cu`, NaN then reaches the output instead of being hidden).
    #[inline]
    pub fn inside(&self, dx: f32, dy: f32) -> bool {
        !(dx > self.half_x || dx < -self.half_x || dy > self.half_y || dy < -self.half_y)
    }

    /// The kernel value `exp(-q / (2(1-rho^2)))` at offset `(dx, dy)` from the mean, with
    /// `gs.cu`'s f32 operation order and no FMA (the box test is not applied here).
    #[inline]
    pub fn value(&self, dx: f32, dy: f32) -> f32 {
        let (t_x, p_x) = self.column_terms(dx);
        self.value_from_terms(t_x, p_x, dy, self.row_term(dy))
    }

    /// The factors of `gs.cu`'s chain that depend on the column only: `(a*a*dx*dx, 2*rho*dx)`.
    /// A tiled renderer computes them once per column and reuses them down the rows.
    #[inline]
    pub fn column_terms(&self, dx: f32) -> (f32, f32) {
        (self.aa * dx * dx, self.two_rho * dx)
    }

    /// The term that depends on the row only: `dy*dy*b*b`.
    #[inline]
    pub fn row_term(&self, dy: f32) -> f32 {
        dy * dy * self.b * self.b
    }

    /// [`SplatKernel::value`] from [`SplatKernel::column_terms`] and [`SplatKernel::row_term`]:
    /// `exp(((t_x - p_x*dy*a*b) + t_y) * (-r/2))`, the same f32 operations in the same order.
    #[inline]
    pub fn value_from_terms(&self, t_x: f32, p_x: f32, dy: f32, t_y: f32) -> f32 {
        expf(self.scale_exponent(t_x - p_x * dy * self.a * self.b + t_y))
    }

    /// `t * (-r/2)`: `gs.cu` computes `-r / 2.0` in double and multiplies in double before
    /// rounding, i.e. one correctly rounded product; the f64 product of two f32 is exact.
    #[inline]
    fn scale_exponent(&self, t: f32) -> f32 {
        (f64::from(t) * (-f64::from(self.r) / 2.0)) as f32
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
// Backward (spec 2.2)
// ---------------------------------------------------------------------------------------------

/// Colour-gradient accumulators held on the stack at once. Every released config has C <= 32;
/// a larger C is handled in several passes over the footprint (same results, more `exp`).
const CHANNEL_GROUP: usize = 64;

/// Columns the backward processes together: the per-pixel terms of a chunk land in stack
/// buffers, then each channel is one contiguous pass over the chunk (vectorisable, no allocation).
const CHUNK: usize = 64;

/// Gradient of ONE Gaussian `s` of one image: writes `grad_token` (`5 + C` values) with
/// `dL/d[sigma_x, sigma_y, rho, x, y]` then `dL/d features`, from `grad_out = dL/dF` `[C, H, W]`.
///
/// The analytic formulas of spec 2.2 (exact derivatives of the box-truncated forward; the box
/// edge is treated as constant). Unlike `gs.cu`, which works in f32, every per-pixel term and
/// every accumulator is f64 (`dx`, `dy` from the f32 grid, exactly like the golden f64
/// reference); only the final values are rounded to f32. The pixels are the forward's f32 box
/// (its [`Footprint`]), visited rows then columns; each accumulator is summed in that fixed
/// order, so the result does not depend on threads. `desc.batch` is ignored.
pub fn splat_backward_gaussian(
    desc: &SplatDesc,
    tokens: &[f32],
    s: usize,
    grad_out: &[f32],
    grad_token: &mut [f32],
) -> Result<(), ShapeError> {
    check_image(desc, tokens.len(), grad_out.len())?;
    if s >= desc.gaussians {
        return Err(ShapeError::Length {
            what: "gaussian index (expected: gaussian count)",
            expected: desc.gaussians,
            got: s,
        });
    }
    let stride = desc.token_stride();
    check_len("token gradient", stride, grad_token.len())?;
    backward_one(desc, &tokens[s * stride..(s + 1) * stride], grad_out, grad_token);
    Ok(())
}

/// Splat backward for ONE image: `grad_tokens` `[N, 5+C]` (overwritten) from `grad_out`
/// `[C, H, W]`. Gaussian after Gaussian, see [`splat_backward_gaussian`].
pub fn splat_backward(
    desc: &SplatDesc,
    tokens: &[f32],
    grad_out: &[f32],
    grad_tokens: &mut [f32],
) -> Result<(), ShapeError> {
    check_image(desc, tokens.len(), grad_out.len())?;
    check_len("token gradients", tokens.len(), grad_tokens.len())?;
    let stride = desc.token_stride();
    for (token, grad) in tokens.chunks_exact(stride).zip(grad_tokens.chunks_exact_mut(stride)) {
        backward_one(desc, token, grad_out, grad);
    }
    Ok(())
}

/// The per-Gaussian backward on checked slices.
fn backward_one(desc: &SplatDesc, token: &[f32], grad_out: &[f32], grad_token: &mut [f32]) {
    let (height, width, channels) = (desc.height, desc.width, desc.channels);
    let plane = height * width;
    grad_token.fill(0.0);
    let fp = footprint(&SplatKernel::new(token, desc.kappa), height, width);
    if fp.is_empty() {
        return;
    }
    let [sx, sy, rho, x, y] = [SIGMA_X, SIGMA_Y, RHO, MEAN_X, MEAN_Y].map(|p| f64::from(token[p]));
    let colors = &token[GAUSSIAN_PARAMS..];
    let w1 = -0.5 / (1.0 - rho * rho);
    let w2 = 1.0 / (sx * sx);
    let w3 = 1.0 / (sx * sy);
    let w4 = 1.0 / (sy * sy);
    // Sums over pixels of P*v*(...), the per-pixel factors of spec 2.2 without their constant
    // prefactors (2*w1, 2*w1/sigma, -2*w1), which are applied once at the end.
    let (mut acc_x, mut acc_y, mut acc_sx, mut acc_sy, mut acc_rho) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    let mut group_start = 0;
    loop {
        let group_end = channels.min(group_start + CHANNEL_GROUP);
        // The geometric sums need all channels at once (P = sum_c G*col): done in the first pass.
        let geometry = group_start == 0;
        let mut acc_col = [0.0f64; CHANNEL_GROUP];
        for i in fp.rows() {
            let dy = f64::from(pixel_coord(i, height)) - y;
            for j0 in fp.cols().step_by(CHUNK) {
                let n = CHUNK.min(fp.col_end - j0);
                let mut dx = [0.0f64; CHUNK];
                let mut q = [0.0f64; CHUNK];
                let mut v = [0.0f64; CHUNK];
                for k in 0..n {
                    dx[k] = f64::from(pixel_coord(j0 + k, width)) - x;
                    q[k] = w2 * dx[k] * dx[k] - 2.0 * rho * w3 * dx[k] * dy + w4 * dy * dy;
                    v[k] = exp_f64(w1 * q[k]);
                }
                let mut p = [0.0f64; CHUNK];
                let row = i * width + j0;
                for (c, &col) in colors.iter().enumerate() {
                    let g = &grad_out[c * plane + row..c * plane + row + n];
                    if geometry {
                        let col = f64::from(col);
                        for (pk, &gk) in p[..n].iter_mut().zip(g) {
                            *pk += f64::from(gk) * col;
                        }
                    }
                    if (group_start..group_end).contains(&c) {
                        let acc = &mut acc_col[c - group_start];
                        for (&vk, &gk) in v[..n].iter().zip(g) {
                            *acc += vk * f64::from(gk);
                        }
                    }
                }
                if geometry {
                    for k in 0..n {
                        let (dx, pv) = (dx[k], p[k] * v[k]);
                        let cross = rho * w3 * dx * dy;
                        acc_x += pv * (-w2 * dx + rho * w3 * dy);
                        acc_y += pv * (-w4 * dy + rho * w3 * dx);
                        acc_sx += pv * (cross - w2 * dx * dx);
                        acc_sy += pv * (cross - w4 * dy * dy);
                        acc_rho += pv * (2.0 * w1 * rho * q[k] + w3 * dx * dy);
                    }
                }
            }
        }
        for (g, &acc) in grad_token[GAUSSIAN_PARAMS + group_start..GAUSSIAN_PARAMS + group_end].iter_mut().zip(&acc_col)
        {
            *g = acc as f32;
        }
        if group_end >= channels {
            break;
        }
        group_start = group_end;
    }
    grad_token[SIGMA_X] = (2.0 * w1 / sx * acc_sx) as f32;
    grad_token[SIGMA_Y] = (2.0 * w1 / sy * acc_sy) as f32;
    grad_token[RHO] = (-2.0 * w1 * acc_rho) as f32;
    grad_token[MEAN_X] = (2.0 * w1 * acc_x) as f32;
    grad_token[MEAN_Y] = (2.0 * w1 * acc_y) as f32;
}

/// `exp(x)` for the backward, accurate to a few ulp of f64 and inlinable.
///
/// Why not `libm::exp`: it is an out-of-line call and took over half of the backward's time.
/// The backward only needs accuracy (f64 sums, rounded to f32 at the end) and determinism, not
/// bit-compatibility with anything, so a local version does. Cody-Waite reduction
/// `x = k ln2 + r`, `|r| <= ln2/2`, a degree-12 Taylor polynomial (truncation below 2e-16
/// relative), then scaling by `2^k` built from its bits. `x` is clamped to `[-708, 709]`
/// (results below 3.3e-308 or above 8.2e307 saturate there); NaN stays NaN.
#[inline]
fn exp_f64(x: f64) -> f64 {
    // ln 2 split as in fdlibm: the high part has 11 trailing zero bits, so `k * LN2_HI` is exact.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
    let y = x.clamp(-708.0, 709.0);
    let kf = (y * core::f64::consts::LOG2_E + SHIFTER) - SHIFTER;
    let r = (y - kf * LN2_HI) - kf * LN2_LO;
    // 1/n! for n = 12 down to 1 (Horner), then the constant 1.
    const INV_FACT: [f64; 12] = [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        1.0 / 2.0,
        1.0,
    ];
    let mut p = INV_FACT[0];
    for &c in &INV_FACT[1..] {
        p = p * r + c;
    }
    p = p * r + 1.0;
    let scale = f64::from_bits(((kf as i64 + 1023) as u64) << 52);
    if x.is_nan() {
        x
    } else {
        p * scale
    }
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
mod tests {
    use super::*;

    struct Rng(crate::rng::SplitMix64);
    impl Rng {
        fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
            lo + (hi - lo) * self.0.unit_f32()
        }
    }

    fn desc(gaussians: usize, channels: usize, height: usize, width: usize) -> SplatDesc {
        SplatDesc { batch: 1, gaussians, channels, height, width, kappa: 3.0 }
    }

    fn random_tokens(rng: &mut Rng, n: usize, channels: usize) -> [f32; 512] {
        let mut t = [0.0f32; 512];
        let stride = GAUSSIAN_PARAMS + channels;
        assert!(n * stride <= t.len());
        for token in t[..n * stride].chunks_exact_mut(stride) {
            token[SIGMA_X] = rng.uniform(0.02, 0.4);
            token[SIGMA_Y] = rng.uniform(0.02, 0.4);
            token[RHO] = rng.uniform(-0.95, 0.95);
            token[MEAN_X] = rng.uniform(-1.2, 1.2);
            token[MEAN_Y] = rng.uniform(-1.2, 1.2);
            for f in &mut token[GAUSSIAN_PARAMS..] {
                *f = rng.uniform(-1.0, 1.0);
            }
        }
        t
    }

    #[test]
    fn pixel_coord_is_the_align_corners_grid() {
        assert_eq!(pixel_coord(0, 64), -1.0);
        assert_eq!(pixel_coord(63, 64), 1.0);
        assert_eq!(pixel_coord(8, 17), 0.0);
        assert_eq!(pixel_coord(1, 2), 1.0);
        // Rounded once from f64: 2/63 - 1 is not representable, the f32 nearest to it is expected.
        assert_eq!(pixel_coord(1, 64), (2.0f64 / 63.0 - 1.0) as f32);
        // Monotone, which the footprint search relies on.
        for size in [2usize, 3, 31, 64, 1000] {
            for i in 1..size {
                assert!(pixel_coord(i, size) > pixel_coord(i - 1, size));
            }
        }
    }

    /// The footprint must be exactly the set of pixels passing the official box test.
    fn assert_footprint_exact(k: &SplatKernel, height: usize, width: usize) {
        let fp = footprint(k, height, width);
        let mut count = 0;
        for i in 0..height {
            for j in 0..width {
                let inside = k.inside(pixel_coord(j, width) - k.x, pixel_coord(i, height) - k.y);
                let in_fp = fp.rows().contains(&i) && fp.cols().contains(&j);
                assert_eq!(inside, in_fp, "pixel ({i},{j}) kernel {k:?} footprint {fp:?}");
                count += usize::from(inside);
            }
        }
        assert_eq!(fp.pixel_count(), count);
    }

    #[test]
    fn footprint_equals_exhaustive_box_test() {
        let mut rng = Rng(crate::rng::SplitMix64::new(7));
        for case in 0..3000 {
            let height = 2 + (rng.0.next_u64() % 40) as usize;
            let width = 2 + (rng.0.next_u64() % 40) as usize;
            let mut token = [
                rng.uniform(0.0, 0.5),
                rng.uniform(0.0, 0.5),
                rng.uniform(-0.9, 0.9),
                rng.uniform(-1.5, 1.5),
                rng.uniform(-1.5, 1.5),
            ];
            match case % 10 {
                // Means exactly on pixel centres, boxes ending exactly on pixel centres.
                0 => {
                    token[MEAN_X] = pixel_coord((rng.0.next_u64() as usize) % width, width);
                    token[MEAN_Y] = pixel_coord((rng.0.next_u64() as usize) % height, height);
                }
                1 => token[SIGMA_X] = (pixel_coord(3, width) - pixel_coord(0, width)) / 3.0,
                2 => token[SIGMA_X] = -token[SIGMA_X],
                3 => token[SIGMA_Y] = 0.0,
                4 => token[SIGMA_X] = rng.uniform(0.0, 1e-4),
                5 => token[SIGMA_Y] = 1e30,
                _ => {}
            }
            assert_footprint_exact(&SplatKernel::new(&token, 3.0), height, width);
        }
        // Zero sigma exactly on a pixel centre: the official test accepts that one pixel.
        let on_pixel = [0.0, 0.0, 0.0, pixel_coord(3, 9), pixel_coord(4, 11)];
        let k = SplatKernel::new(&on_pixel, 3.0);
        assert_eq!(footprint(&k, 11, 9), Footprint { row_start: 4, row_end: 5, col_start: 3, col_end: 4 });
        // Non-finite parameters: NaN accepts everything (as gs.cu), infinite means nothing.
        for bad in [[f32::NAN, 0.1, 0.0, 0.0, 0.0], [0.1, 0.1, 0.0, f32::NAN, 0.0], [0.1, 0.1, 0.0, f32::INFINITY, 0.0]]
        {
            assert_footprint_exact(&SplatKernel::new(&bad, 3.0), 7, 5);
        }
        assert_eq!(footprint(&SplatKernel::new(&[f32::NAN, f32::NAN, 0.0, 0.0, 0.0], 3.0), 7, 5).pixel_count(), 35);
        assert!(footprint(&SplatKernel::new(&[0.1, 0.1, 0.0, f32::INFINITY, 0.0], 3.0), 7, 5).is_empty());
    }

    #[test]
    fn partition_point_from_any_hint() {
        for n in 0..20usize {
            for boundary in 0..=n {
                for hint in 0..=n + 2 {
                    assert_eq!(partition_point_from(n, hint, |i| i >= boundary), boundary);
                }
            }
        }
    }

    /// The plain gs.cu loop: every pixel, every Gaussian.
    fn naive_forward(desc: &SplatDesc, tokens: &[f32], out: &mut [f32]) {
        let (h, w, c) = (desc.height, desc.width, desc.channels);
        out.fill(0.0);
        for i in 0..h {
            for j in 0..w {
                for token in tokens.chunks_exact(desc.token_stride()) {
                    let k = SplatKernel::new(token, desc.kappa);
                    let (dx, dy) = (pixel_coord(j, w) - k.x, pixel_coord(i, h) - k.y);
                    if k.inside(dx, dy) {
                        let v = k.value(dx, dy);
                        for ch in 0..c {
                            out[(ch * h + i) * w + j] += v * token[GAUSSIAN_PARAMS + ch];
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn forward_is_bit_identical_to_the_naive_loop() {
        let mut rng = Rng(crate::rng::SplitMix64::new(11));
        let d = desc(20, 3, 23, 70); // 70 columns: boxes wider than one CHUNK occur
        let tokens = random_tokens(&mut rng, d.gaussians, d.channels);
        let tokens = &tokens[..d.gaussians * d.token_stride()];
        let mut naive = [0.0f32; 3 * 23 * 70];
        naive_forward(&d, tokens, &mut naive);
        let mut fast = [1.0f32; 3 * 23 * 70];
        splat_forward(&d, tokens, &mut fast).unwrap();
        assert!(naive.iter().zip(&fast).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(naive.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn shapes_are_checked() {
        let d = desc(2, 1, 4, 5);
        let tokens = [0.1f32; 12];
        let mut out = [0.0f32; 20];
        assert_eq!(splat_forward(&d, &tokens, &mut out), Ok(()));
        assert!(matches!(splat_forward(&d, &tokens[..11], &mut out), Err(ShapeError::Length { .. })));
        assert!(matches!(splat_forward(&d, &tokens, &mut out[..19]), Err(ShapeError::Length { .. })));
        let tiny = desc(2, 1, 1, 5);
        assert!(matches!(splat_forward(&tiny, &tokens, &mut out[..5]), Err(ShapeError::CanvasTooSmall { .. })));
        let mut g = [0.0f32; 6];
        assert!(splat_backward_gaussian(&d, &tokens, 2, &out, &mut g).is_err());
        assert!(splat_backward_gaussian(&d, &tokens, 1, &out, &mut g[..5]).is_err());
        assert_eq!(splat_backward_gaussian(&d, &tokens, 1, &out, &mut g), Ok(()));
        let mut gt = [0.0f32; 12];
        assert!(splat_backward(&d, &tokens, &out[..19], &mut gt).is_err());
        assert!(splat_backward(&d, &tokens, &out, &mut gt[..11]).is_err());
    }

    #[test]
    fn backward_per_gaussian_matches_whole_and_channel_groups_are_exact() {
        let mut rng = Rng(crate::rng::SplitMix64::new(5));
        // C = 70 > CHANNEL_GROUP: the colour gradients take two passes.
        let channels = 70;
        let d = desc(2, channels, 9, 8);
        let mut tokens = random_tokens(&mut rng, 2, channels);
        // Keep Gaussian 1 on the canvas so that its gradients are not all zero.
        tokens[75 + MEAN_X] = 0.1;
        tokens[75 + MEAN_Y] = -0.2;
        let tokens = &tokens[..2 * d.token_stride()];
        let mut grad_out = [0.0f32; 70 * 9 * 8];
        for g in grad_out.iter_mut() {
            *g = rng.uniform(-1.0, 1.0);
        }
        let mut all = [0.0f32; 2 * 75];
        splat_backward(&d, tokens, &grad_out, &mut all).unwrap();
        let mut one = [0.0f32; 75];
        splat_backward_gaussian(&d, tokens, 1, &grad_out, &mut one).unwrap();
        assert_eq!(&all[75..], &one[..]);
        // Channel 66 alone (C = 1) gives the same colour gradient bits.
        let single = desc(1, 1, 9, 8);
        let mut token1 = [0.0f32; 6];
        token1[..5].copy_from_slice(&tokens[75..80]);
        token1[5] = tokens[75 + 5 + 66];
        let mut g1 = [0.0f32; 6];
        splat_backward(&single, &token1, &grad_out[66 * 72..67 * 72], &mut g1).unwrap();
        assert_eq!(g1[5].to_bits(), one[5 + 66].to_bits());
        assert!(one.iter().any(|&g| g != 0.0));
    }

    #[test]
    fn invisible_and_nan_gaussians_do_not_panic() {
        let d1 = desc(1, 1, 6, 6);
        let negative = [-0.2, 0.3, 0.0, 0.0, 0.0, 1.0];
        let mut out = [1.0f32; 36];
        splat_forward(&d1, &negative, &mut out).unwrap();
        assert!(out.iter().all(|&v| v == 0.0));
        let mut g = [1.0f32; 6];
        splat_backward(&d1, &negative, &[1.0; 36], &mut g).unwrap();
        assert_eq!(g, [0.0; 6]);
        // NaN sigma is inside everywhere (as in gs.cu) and poisons the canvas; rho = 1 gives
        // inf/NaN. Neither may panic.
        let d2 = desc(2, 1, 6, 6);
        let bad = [f32::NAN, f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.2, 0.2, 1.0, 0.0, 0.0, 1.0];
        splat_forward(&d2, &bad, &mut out).unwrap();
        assert!(out.iter().all(|v| v.is_nan()));
        let mut g2 = [0.0f32; 12];
        splat_backward(&d2, &bad, &[1.0; 36], &mut g2).unwrap();
        assert!(g2[5].is_nan());
    }

    #[test]
    fn backward_exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -700.0f64;
        while x < 700.0 {
            let (ours, want) = (exp_f64(x), libm::exp(x));
            worst = worst.max(((ours - want) / want).abs());
            x += 0.012_345_678_9;
        }
        assert!(worst < 1e-15, "max relative error {worst:e}");
        assert_eq!(exp_f64(0.0), 1.0);
        assert!(exp_f64(f64::NAN).is_nan());
        assert!(exp_f64(-1e6) < 1e-307 && exp_f64(-1e6) >= 0.0);
    }

    #[test]
    fn merge_patches_follows_adjust_gpstoken() {
        // np = 2, one token per patch, one channel.
        let patches = [
            0.4, 0.2, 0.5, -1.0, -1.0, 7.0, // patch (0,0)
            0.4, 0.2, 0.5, 1.0, 0.0, 8.0, // patch (0,1)
            0.4, 0.2, -0.5, 0.0, 1.0, 9.0, // patch (1,0)
            0.4, 0.2, 0.0, 0.5, -0.5, 10.0, // patch (1,1)
        ];
        let mut out = [0.0f32; 24];
        merge_patches(2, 2, 1, 1, &patches, &mut out).unwrap();
        let want = [
            0.2, 0.1, 0.5, -1.0, -1.0, 7.0, //
            0.2, 0.1, 0.5, 1.0, -0.5, 8.0, //
            0.2, 0.1, -0.5, -0.5, 1.0, 9.0, //
            0.2, 0.1, 0.0, 0.75, 0.25, 10.0,
        ];
        assert_eq!(out, want);
        // The f32 formula, operation by operation, for an inexact case.
        let p = [0.3f32, 0.3, 0.1, 0.123_456_7, -0.987_654_3];
        let mut o = [0.0f32; 5 * 9];
        let mut all = [0.0f32; 5 * 9];
        for k in 0..9 {
            all[k * 5..k * 5 + 5].copy_from_slice(&p);
        }
        merge_patches(3, 3, 1, 0, &all, &mut o).unwrap();
        let (i, j) = (2.0f32, 1.0f32);
        assert_eq!(o[7 * 5 + MEAN_X], -1.0 + (2.0 * j + p[MEAN_X] + 1.0) / 3.0);
        assert_eq!(o[7 * 5 + MEAN_Y], -1.0 + (2.0 * i + p[MEAN_Y] + 1.0) / 3.0);
        assert_eq!(o[7 * 5 + SIGMA_X], 0.3 / 3.0);
        // np = 1 is the identity; wrong lengths are errors.
        let mut same = [0.0f32; 6];
        merge_patches(1, 1, 1, 1, &patches[..6], &mut same).unwrap();
        assert_eq!(same, patches[..6]);
        assert!(merge_patches(2, 2, 1, 1, &patches[..18], &mut out).is_err());
        assert!(merge_patches(2, 2, 1, 1, &patches, &mut out[..18]).is_err());
    }
}
