//! The `gpstoken` command-line tool as a library, so that its pieces are testable.
//!
//! * [`imageio`]: reading photos, preprocessing them the official way, writing PNGs atomically.
//! * [`backends`]: choosing a backend from `--backend`/`--device`/`--threads` and running work on it.
//! * [`devices`]: the backends and devices `gpstoken info` lists.
//! * [`fit`]: training-free tokenization of one image (Adam on the tokens through the splat).
//! * [`viz`]: drawing regions and Gaussian ellipses.
//! * [`data`]: training/eval folders, augmentation, Algorithm 1 per sample, the seeded PRNG.
//! * [`train`]: `gpstoken train` (L2, Adam, EMA, adversarial stage, checkpoints, resume).
//! * [`integrity`]: checksums of the checkpoints and weights `train` writes.
//! * [`model_io`]: loading trained models, inference and evaluation.
//! * [`outputs`]: output paths checked before the work, all outputs written or none.
//! * [`plot`]: a minimal line plot of training curves.
//! * [`strata`]: reconstruction error on texture-rich vs flat blocks (`eval --by-complexity`).
//! * [`json`]: the few JSON writers the commands need (f32 printed so that it round-trips).

pub mod backends;
pub mod config;
pub mod data;
pub mod devices;
pub mod fit;
pub mod generator;
pub mod imageio;
pub mod integrity;
pub mod json;
pub mod model_io;
pub mod outputs;
pub mod plot;
pub mod rendezvous;
pub mod strata;
pub mod tiling;
pub mod train;
pub mod viz;
pub mod whole;

/// The `log2`/`pow` used by Algorithm 1's score. The official code runs NumPy on Linux, i.e.
/// glibc's functions, and Rust's `f64::log2`/`powf` call the same glibc functions there, so on
/// glibc the scores are bit-identical to the official ones. Elsewhere the core's portable,
/// correctly rounded versions are used (they differ from glibc by 1 ulp on 0.2% of the golden
/// scores and give the same partitions on every golden case).
pub fn partition_math() -> gpstoken_core::partition::MathFns {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        gpstoken_core::partition::MathFns { log2: f64::log2, pow: f64::powf }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        gpstoken_core::partition::MathFns::PORTABLE
    }
}
