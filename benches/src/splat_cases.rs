//! Random splat cases shaped like an adaptive partition's Gaussians: `sigma ~ (2/sqrt(N))/3 *
//! [0.5, 2]` (boxes cover a few percent of the canvas at most), moderate anisotropy and
//! correlation. Same seed for every shape and backend, so backends time identical work.

use gpstoken_core::render::SplatDesc;
use gpstoken_tests::conformance::splat::{random_case, GaussianRanges, SplatCase};
use gpstoken_tests::TestRng;

/// A square canvas of `size` pixels, `channels` feature channels and `gaussians` Gaussians.
pub struct SplatShape {
    pub size: usize,
    pub channels: usize,
    pub gaussians: usize,
}

impl SplatShape {
    /// `HxWxC_N`, e.g. `64x64x16_128`.
    pub fn id(&self) -> String {
        format!("{0}x{0}x{1}_{2}", self.size, self.channels, self.gaussians)
    }
}

/// Random Gaussians and output gradient for `shape` (batch 1, kappa 3).
pub fn splat_case(shape: &SplatShape) -> SplatCase {
    let desc = SplatDesc {
        batch: 1,
        gaussians: shape.gaussians,
        channels: shape.channels,
        height: shape.size,
        width: shape.size,
        kappa: 3.0,
    };
    // One Gaussian per cell of a sqrt(N) x sqrt(N) partition: side 2/sqrt(N), sigma a third of it.
    let sigma = 2.0 / (shape.gaussians as f64).sqrt() / 3.0;
    let ranges =
        GaussianRanges { sigma: (0.5 * sigma, 2.0 * sigma), anisotropy: 2.0, rho_abs: (0.0, 0.6), mean: (-1.0, 1.0) };
    random_case(&mut TestRng::new(0xbe7c), desc, &ranges, None)
}
