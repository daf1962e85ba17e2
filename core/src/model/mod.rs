//! The GPSToken tokenizer network (spec 5-7), generic over the [`crate::Backend`]: encoder,
//! renderer glue and `DecoderNP`, each layer with an explicit forward and backward (llm.c style).
//!
//! * [`config`]: hyper-parameters in the official yaml's terms and the built-in configs;
//! * [`params`]: official state-dict names and shapes, parameter and gradient buffers;
//! * [`weights`]: strict safetensors loading and saving;
//! * [`init`]: PyTorch-default initialisation from a seed;
//! * [`GpsToken`] and [`Activations`]: the model and its preallocated per-batch buffers;
//! * [`discriminator`]: the PatchGAN discriminator of the optional adversarial stage (spec 8);
//! * [`sit`]: SiT, the latent generator, with flow matching and its samplers (spec 9).
//!
//! See `docs/MODEL.md` for the module tree, the state-dict prefixes and the reproduced quirks.

pub mod config;
mod decoder;
pub mod discriminator;
mod encoder;
mod gpstoken;
pub mod init;
mod layers;
mod packed_attention;
pub mod params;
pub mod sit;
pub mod weights;

pub use config::{ConfigError, DecoderConfig, GpsConfig, ModelConfig};
pub use discriminator::{DiscActs, DiscGradients, Discriminator, DiscriminatorConfig};
pub use gpstoken::{Activations, GpsToken, ModelError};
pub use params::{Gradients, GradientsReady, Init, NoListener, ParamId, ParamSpec, ParamStore};
pub use weights::{
    load_safetensors, read_metadata, save_safetensors, save_safetensors_with_metadata, serialize_safetensors,
    WeightsError,
};
