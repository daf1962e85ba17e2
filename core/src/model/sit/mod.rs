//! SiT, the generator of GPSToken's latents (spec 9), generic over the [`crate::Backend`]:
//! the network with explicit forward and backward passes, flow matching (the Linear path and
//! its velocity loss), classifier-free guidance, and the official SDE and ODE samplers.
//!
//! * [`SitConfig`]: SiT-XL/2-gs (texture), SiT-S/2-gs (layout), a CPU-sized config;
//! * [`Sit`] and [`SitActs`]: the model and its preallocated buffers;
//!
//! See `docs/GENERATION.md`.

mod adaln;
mod block;
pub mod checkpoint;
pub mod config;
mod dopri5;
mod embed;
mod generate;
pub mod guidance;
mod network;
pub mod postprocess;
pub mod sampler;
mod stats;
pub mod transport;

pub use config::SitConfig;
pub use embed::timestep_embedding;
pub use generate::{GenerateRequest, Sampler};
pub use guidance::Guidance;
pub use network::{Sit, SitActs};
pub use postprocess::{latents_to_layouts, latents_to_tokens, tokens_to_latents, LayoutError};
pub use sampler::{
    linspace_f32, sample_ode, sample_sde, LastStep, NoiseSource, OdeMethod, SdeConfig, SdeMethod, SeededNoise,
    StoredNoise,
};
pub use stats::LatentStats;
pub use transport::{drop_labels, linear_path, CondNoise, FlowScratch, TrainingBatch};
