//! The GPSToken token: five Gaussian parameters in the official order
//! `[sigma_x, sigma_y, rho, x, y]` followed by `C` texture features (spec section 1).
//!
//! Coordinates are normalised: the canvas spans `[-1, 1]` on both axes with the
//! align-corners convention (pixel centre 0 is -1, pixel centre `W-1` is +1). `x` is
//! horizontal (columns), `y` vertical (rows). `sigma_*` are standard deviations in the same
//! normalised units, so `sigma_x = 1` is half the canvas width.

use core::fmt;

/// Number of Gaussian parameters at the start of every token.
pub const GAUSSIAN_PARAMS: usize = 5;
/// Index of `sigma_x` inside a token.
pub const SIGMA_X: usize = 0;
/// Index of `sigma_y` inside a token.
pub const SIGMA_Y: usize = 1;
/// Index of the correlation coefficient `rho` inside a token.
pub const RHO: usize = 2;
/// Index of the mean's `x` (horizontal) inside a token.
pub const MEAN_X: usize = 3;
/// Index of the mean's `y` (vertical) inside a token.
pub const MEAN_Y: usize = 4;

/// The support factor kappa of every released config (`gps_dmax: 3`, spec 2.3).
pub const DEFAULT_KAPPA: f32 = 3.0;

/// Why a Gaussian is not a valid one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TokenError {
    /// A parameter is NaN or infinite (`index` into the five parameters).
    NotFinite { index: usize, value: f32 },
    /// `sigma_x` or `sigma_y` is not strictly positive.
    NonPositiveSigma { index: usize, value: f32 },
    /// `|rho| >= 1`: the covariance is singular or indefinite.
    RhoOutOfRange { value: f32 },
}

/// Names of the five Gaussian parameters, in token order.
pub const PARAM_NAMES: [&str; GAUSSIAN_PARAMS] = ["sigma_x", "sigma_y", "rho", "x", "y"];
const NAMES: [&str; GAUSSIAN_PARAMS] = PARAM_NAMES;

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TokenError::NotFinite { index, value } if index >= GAUSSIAN_PARAMS => {
                write!(f, "feature {} is not finite ({value})", index - GAUSSIAN_PARAMS)
            }
            TokenError::NotFinite { index, value } => {
                write!(f, "{} is not finite ({value})", NAMES[index])
            }
            TokenError::NonPositiveSigma { index, value } => {
                write!(f, "{} must be > 0, got {value}", NAMES[index])
            }
            TokenError::RhoOutOfRange { value } => write!(f, "rho must satisfy |rho| < 1, got {value}"),
        }
    }
}

impl core::error::Error for TokenError {}

/// An axis-aligned box in normalised coordinates, bounds included.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SupportBox {
    pub x_min: f32,
    pub x_max: f32,
    pub y_min: f32,
    pub y_max: f32,
}

/// An ellipse for drawing: centre, semi-axes and the angle of the major axis
/// (radians, measured from +x towards +y, i.e. clockwise on screen where y points down).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ellipse {
    pub cx: f32,
    pub cy: f32,
    pub semi_major: f32,
    pub semi_minor: f32,
    pub angle: f32,
}

/// The five Gaussian parameters of a token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gaussian {
    pub sigma_x: f32,
    pub sigma_y: f32,
    pub rho: f32,
    pub x: f32,
    pub y: f32,
}

impl Gaussian {
    /// Reads the first five values of a token (`token.len() >= 5`).
    ///
    /// # Panics
    /// If `token` holds fewer than five values.
    pub fn from_token(token: &[f32]) -> Gaussian {
        Gaussian {
            sigma_x: token[SIGMA_X],
            sigma_y: token[SIGMA_Y],
            rho: token[RHO],
            x: token[MEAN_X],
            y: token[MEAN_Y],
        }
    }

    /// The parameters in the official order.
    pub fn to_params(&self) -> [f32; GAUSSIAN_PARAMS] {
        [self.sigma_x, self.sigma_y, self.rho, self.x, self.y]
    }

    /// Checks that every parameter is finite, both sigmas are positive and `|rho| < 1`.
    pub fn validate(&self) -> Result<(), TokenError> {
        for (index, value) in self.to_params().into_iter().enumerate() {
            if !value.is_finite() {
                return Err(TokenError::NotFinite { index, value });
            }
        }
        for (index, value) in [(SIGMA_X, self.sigma_x), (SIGMA_Y, self.sigma_y)] {
            if value <= 0.0 {
                return Err(TokenError::NonPositiveSigma { index, value });
            }
        }
        if self.rho.abs() >= 1.0 {
            return Err(TokenError::RhoOutOfRange { value: self.rho });
        }
        Ok(())
    }

    /// The splat's support: the axis-aligned box `|dx| <= kappa*sigma_x, |dy| <= kappa*sigma_y`.
    /// It ignores `rho`, exactly as the official kernel does (spec 2.1).
    pub fn support_box(&self, kappa: f32) -> SupportBox {
        let hx = kappa * self.sigma_x;
        let hy = kappa * self.sigma_y;
        SupportBox { x_min: self.x - hx, x_max: self.x + hx, y_min: self.y - hy, y_max: self.y + hy }
    }

    /// The covariance `[[sx^2, rho sx sy], [rho sx sy, sy^2]]`.
    pub fn covariance(&self) -> [[f32; 2]; 2] {
        let sxy = self.rho * self.sigma_x * self.sigma_y;
        [[self.sigma_x * self.sigma_x, sxy], [sxy, self.sigma_y * self.sigma_y]]
    }

    /// The `k`-sigma ellipse of the covariance (k = 1 gives the 1-sigma contour).
    /// Computed in f64 from the eigen-decomposition of the 2x2 covariance.
    pub fn ellipse(&self, k: f32) -> Ellipse {
        let [[a, b], [_, d]] = self.covariance().map(|row| row.map(f64::from));
        let mean = 0.5 * (a + d);
        let diff = 0.5 * (a - d);
        let radius = libm::sqrt(diff * diff + b * b);
        let l1 = mean + radius;
        let l2 = (mean - radius).max(0.0);
        let angle = 0.5 * libm::atan2(2.0 * b, a - d);
        Ellipse {
            cx: self.x,
            cy: self.y,
            semi_major: (f64::from(k) * libm::sqrt(l1)) as f32,
            semi_minor: (f64::from(k) * libm::sqrt(l2)) as f32,
            angle: angle as f32,
        }
    }
}

/// Validates every token of a `[n, 5 + channels]` slice and reports the first bad one.
pub fn validate_tokens(tokens: &[f32], channels: usize) -> Result<(), (usize, TokenError)> {
    let stride = GAUSSIAN_PARAMS + channels;
    for (i, token) in tokens.chunks_exact(stride).enumerate() {
        Gaussian::from_token(token).validate().map_err(|e| (i, e))?;
        if let Some((index, &value)) = token[GAUSSIAN_PARAMS..].iter().enumerate().find(|(_, v)| !v.is_finite()) {
            // Features have no range, but NaN or inf poisons every pixel the Gaussian touches.
            return Err((i, TokenError::NotFinite { index: GAUSSIAN_PARAMS + index, value }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_bad_parameter() {
        let good = Gaussian { sigma_x: 0.1, sigma_y: 0.2, rho: 0.5, x: 0.0, y: -0.3 };
        assert_eq!(good.validate(), Ok(()));
        let bad_sigma = Gaussian { sigma_y: 0.0, ..good };
        assert_eq!(bad_sigma.validate(), Err(TokenError::NonPositiveSigma { index: 1, value: 0.0 }));
        let bad_rho = Gaussian { rho: -1.0, ..good };
        assert_eq!(bad_rho.validate(), Err(TokenError::RhoOutOfRange { value: -1.0 }));
        let nan = Gaussian { x: f32::NAN, ..good };
        assert!(matches!(nan.validate(), Err(TokenError::NotFinite { index: 3, .. })));
    }

    #[test]
    fn ellipse_of_axis_aligned_and_rotated_gaussians() {
        let g = Gaussian { sigma_x: 0.3, sigma_y: 0.1, rho: 0.0, x: 0.2, y: 0.1 };
        let e = g.ellipse(1.0);
        assert!((e.semi_major - 0.3).abs() < 1e-6 && (e.semi_minor - 0.1).abs() < 1e-6);
        assert!(e.angle.abs() < 1e-6);
        // Equal sigmas, positive correlation: the major axis is the diagonal x = y.
        let g = Gaussian { sigma_x: 0.2, sigma_y: 0.2, rho: 0.5, x: 0.0, y: 0.0 };
        let e = g.ellipse(2.0);
        assert!((e.angle - core::f32::consts::FRAC_PI_4).abs() < 1e-6);
        // Eigenvalues of s^2 [[1, r], [r, 1]] are s^2 (1 +- r).
        assert!((e.semi_major - 2.0 * (0.04f32 * 1.5).sqrt()).abs() < 1e-6);
        assert!((e.semi_minor - 2.0 * (0.04f32 * 0.5).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn support_box_ignores_rho() {
        let g = Gaussian { sigma_x: 0.1, sigma_y: 0.05, rho: 0.9, x: 0.5, y: -0.5 };
        let b = g.support_box(3.0);
        assert_eq!(b, SupportBox { x_min: 0.5 - 0.3, x_max: 0.5 + 0.3, y_min: -0.5 - 0.15, y_max: -0.5 + 0.15 });
    }

    #[test]
    fn validate_tokens_reports_index() {
        let mut t = [0.1f32, 0.1, 0.0, 0.0, 0.0, 1.0, 0.1, 0.1, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(validate_tokens(&t, 1), Ok(()));
        t[11] = f32::INFINITY;
        let err = validate_tokens(&t, 1);
        assert_eq!(err, Err((1, TokenError::NotFinite { index: 5, value: f32::INFINITY })));
        extern crate alloc;
        use alloc::string::ToString;
        assert_eq!(err.unwrap_err().1.to_string(), "feature 0 is not finite (inf)");
    }
}
