//! The pixel grid and the bounded Gaussian kernel (spec 2.1): one definition of a pixel's value
//! shared by every backend and the brute-force reference.

use crate::token::{MEAN_X, MEAN_Y, RHO, SIGMA_X, SIGMA_Y};

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
        expf(self.exponent_from_terms(t_x, p_x, dy, t_y))
    }

    /// The argument of [`expf`] in [`SplatKernel::value_from_terms`]: a renderer that evaluates
    /// `expf` on many pixels at once (bit-exactly) starts from this.
    #[inline]
    pub fn exponent_from_terms(&self, t_x: f32, p_x: f32, dy: f32, t_y: f32) -> f32 {
        self.scale_exponent(t_x - p_x * dy * self.a * self.b + t_y)
    }

    /// `t * (-r/2)`: `gs.cu` computes `-r / 2.0` in double and multiplies in double before
    /// rounding, i.e. one correctly rounded product; the f64 product of two f32 is exact.
    #[inline]
    fn scale_exponent(&self, t: f32) -> f32 {
        (f64::from(t) * (-f64::from(self.r) / 2.0)) as f32
    }
}
