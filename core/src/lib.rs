//! # gpstoken-core
//!
//! The `no_std` heart of GPSToken. Modules follow the data path of the tokenizer:
//!
//! ```text
//! image --preprocess--> [-1,1] pixels --partition (Algorithm 1)--> initial Gaussians + RoI boxes
//!       --encoder--> tokens [sigma_x, sigma_y, rho, x, y, f..] --render (splat)--> feature map
//!       --decoder--> image
//! ```
//!
//! * [`preprocess`]: pixel conversion, grey image, the official resize and centre crop.
//! * [`partition`]: Algorithm 1, the entropy-driven partition, bit-exact with the official code.
//! * [`calibrate`]: Algorithm 2, snapping generated Gaussians to the nearest layout Algorithm 1 can make.
//! * [`token`]: the token layout, validation, support box, covariance and ellipse of a Gaussian.
//! * [`render`]: the bounded Gaussian kernel, splatting forward and backward on caller slices,
//!   and the multi-patch merge.
//! * [`gpst`]: the `.gpst` token file format.
//! * [`metrics`]: PSNR and SSIM.
//! * [`backend`]: the op-family traits that CPU, Vulkan and CUDA backends implement.
//! * `model` (feature `alloc`): the GPSToken network (encoder, renderer, DecoderNP) generic over the
//!   backend, with explicit backward passes, configs and safetensors checkpoints.
//!
//! The math and algorithms work on caller-provided slices. The `alloc` feature (on by default)
//! adds `Vec`-based conveniences and the model. Float functions come from `libm`, so results do not depend on the platform's libm.
#![no_std]
// `deny`, not `forbid`: the exceptions are the x86-64 SIMD kernels of Algorithm 1
// (`partition::sobel::x86`, `partition::sobel::avx512`, `partition::resize::x86`: CPUID dispatch
// and `core::arch` intrinsics), allowed there alone.
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod backend;
pub mod calibrate;
pub mod gpst;
pub mod metrics;
#[cfg(feature = "alloc")]
pub mod model;
pub mod partition;
pub mod preprocess;
pub mod render;
pub mod rng;
pub mod shape;
pub mod token;

pub use backend::Backend;
pub use token::{Gaussian, TokenError};
