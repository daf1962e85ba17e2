//! The `gpstoken` command-line tool as a library, so that its pieces are testable.
//!
//! * [`imageio`]: reading photos, preprocessing them the official way, writing PNGs atomically.
//! * [`backends`]: choosing a backend from `--backend`.
//! * [`fit`]: training-free tokenization of one image (Adam on the tokens through the splat).
//! * [`viz`]: drawing regions and Gaussian ellipses.
//! * [`json`]: the few JSON writers the commands need (f32 printed so that it round-trips).

pub mod backends;
pub mod fit;
pub mod imageio;
pub mod json;
pub mod viz;
