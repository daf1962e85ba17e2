//! Generator checkpoints: the official state dict (strict, [`crate::model::load_safetensors`])
//! plus the latent normalisation statistics in the header's metadata, so that a checkpoint
//! carries everything needed to turn samples back into tokens.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::network::Sit;
use super::stats::LatentStats;
use crate::backend::Backend;
use crate::model::{load_safetensors, read_metadata, save_safetensors_with_metadata, WeightsError};

/// Metadata keys of the statistics: comma-separated f32 values (shortest round-trip text).
pub const MEAN_KEY: &str = "latent_mean";
pub const STD_KEY: &str = "latent_std";

fn join(v: &[f32]) -> String {
    v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(",")
}

fn parse(key: &str, text: &str) -> Result<Vec<f32>, WeightsError> {
    text.split(',')
        .map(|s| s.trim().parse::<f32>().map_err(|e| WeightsError::Format(format!("metadata {key}: {e}"))))
        .collect()
}

impl<B: Backend> Sit<B> {
    /// The parameters as safetensors (official names, f32), with `stats` in the metadata.
    pub fn save_checkpoint(&self, be: &B, stats: Option<&LatentStats>) -> Result<Vec<u8>, WeightsError> {
        let meta: Vec<(String, String)> = match stats {
            Some(s) => [(MEAN_KEY.to_string(), join(&s.mean)), (STD_KEY.to_string(), join(&s.std))].into(),
            None => Vec::new(),
        };
        save_safetensors_with_metadata(be, &self.params, &meta)
    }

    /// Loads every parameter (strict) and returns the statistics stored with them, if any.
    /// Statistics whose channel count is not the model's are an error.
    pub fn load_checkpoint(&mut self, be: &B, bytes: &[u8]) -> Result<Option<LatentStats>, WeightsError> {
        let stats = match (read_metadata(bytes, MEAN_KEY)?, read_metadata(bytes, STD_KEY)?) {
            (Some(m), Some(s)) => Some(LatentStats { mean: parse(MEAN_KEY, &m)?, std: parse(STD_KEY, &s)? }),
            (None, None) => None,
            _ => return Err(WeightsError::Format("metadata has only one of latent_mean and latent_std".into())),
        };
        if let Some(s) = &stats {
            let c = self.config().in_channels;
            if s.mean.len() != c || s.std.len() != c {
                return Err(WeightsError::Format(format!(
                    "latent statistics for {} channels, the model has {c}",
                    s.mean.len()
                )));
            }
        }
        load_safetensors(be, &mut self.params, bytes)?;
        Ok(stats)
    }
}
