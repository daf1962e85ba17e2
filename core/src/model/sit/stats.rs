//! Per-channel normalisation of the token latents (spec 9.1): the generator sees
//! `z_c = (t_c − mean_c)/std_c`. The statistics are computed from training tokens and stored with
//! the model's checkpoint ([`super::checkpoint`]).

use alloc::vec;
use alloc::vec::Vec;

use crate::shape::{check_len, ensure, ShapeError};

/// Mean and standard deviation of every latent channel.
#[derive(Clone, Debug, PartialEq)]
pub struct LatentStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl LatentStats {
    /// GPSToken-M128's statistics as the official inference code inverts them (spec 9.1): the
    /// residual `g − g_init` (channels 0-4) and the 16 features.
    pub fn m128() -> Self {
        LatentStats {
            mean: vec![
                -0.0211, -0.0196, 0.0107, -0.0052, -0.0044, 1.8017, 2.4036, 2.0145, 1.2402, -4.2579, -1.2646, -3.0395,
                2.2928, 3.2168, -0.1431, 0.1600, 1.3924, 3.2345, 1.6994, 0.8237, 0.3222,
            ],
            std: vec![
                0.0121, 0.0108, 0.2533, 0.0119, 0.0114, 2.7334, 2.6400, 2.7963, 2.9325, 2.8337, 2.8269, 3.1082, 3.1412,
                2.8038, 2.6501, 2.6163, 2.4718, 2.6958, 2.8157, 2.4744, 2.8200,
            ],
        }
    }

    /// Channels described.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Mean and (population) standard deviation of each channel over token rows
    /// `[rows, channels]` (the layout of `.gpst` token sets), accumulated in f64 in row order.
    pub fn from_token_rows(rows: &[f32], channels: usize) -> Result<Self, ShapeError> {
        let stats = Self::moments(rows, channels)?;
        ensure(stats.std.iter().all(|&s| s > 0.0), "a latent channel is constant over the training tokens")?;
        Ok(stats)
    }

    /// [`LatentStats::from_token_rows`] where a constant channel gets std 1 instead of an error:
    /// Algorithm 1 layouts (the layout model's data) always have ρ = 0 (spec 3.4).
    pub fn from_token_rows_unit_if_constant(rows: &[f32], channels: usize) -> Result<Self, ShapeError> {
        let mut stats = Self::moments(rows, channels)?;
        stats.std.iter_mut().filter(|s| **s <= 0.0).for_each(|s| *s = 1.0);
        Ok(stats)
    }

    fn moments(rows: &[f32], channels: usize) -> Result<Self, ShapeError> {
        ensure(
            channels > 0 && !rows.is_empty() && rows.len().is_multiple_of(channels),
            "token rows must be [rows, channels]",
        )?;
        let count = (rows.len() / channels) as f64;
        let mut sum = vec![0.0f64; channels];
        for row in rows.chunks_exact(channels) {
            sum.iter_mut().zip(row).for_each(|(s, &v)| *s += f64::from(v));
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let mut sq = vec![0.0f64; channels];
        for row in rows.chunks_exact(channels) {
            for ((s, &v), m) in sq.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(v) - m) * (f64::from(v) - m);
            }
        }
        let std: Vec<f32> = sq.iter().map(|s| libm::sqrt(s / count) as f32).collect();
        Ok(LatentStats { mean: mean.iter().map(|&m| m as f32).collect(), std })
    }

    /// Token rows `[B, N, C]` to normalised latents `[B, C, N, 1]` (the generator's layout).
    pub fn normalize(&self, rows: &[f32], tokens: usize, latents: &mut [f32]) -> Result<(), ShapeError> {
        let c = self.channels();
        check_len("latents", rows.len(), latents.len())?;
        ensure(tokens > 0 && rows.len().is_multiple_of(tokens * c), "token rows must be [B, tokens, channels]")?;
        for (src, dst) in rows.chunks_exact(tokens * c).zip(latents.chunks_exact_mut(tokens * c)) {
            for n in 0..tokens {
                for ch in 0..c {
                    dst[ch * tokens + n] = (src[n * c + ch] - self.mean[ch]) / self.std[ch];
                }
            }
        }
        Ok(())
    }

    /// The inverse of [`LatentStats::normalize`]: `[B, C, N, 1]` to token rows `[B, N, C]`
    /// with `t = z·std + mean` (spec 9.7).
    pub fn denormalize(&self, latents: &[f32], tokens: usize, rows: &mut [f32]) -> Result<(), ShapeError> {
        let c = self.channels();
        check_len("token rows", latents.len(), rows.len())?;
        ensure(tokens > 0 && latents.len().is_multiple_of(tokens * c), "latents must be [B, channels, tokens, 1]")?;
        for (src, dst) in latents.chunks_exact(tokens * c).zip(rows.chunks_exact_mut(tokens * c)) {
            for n in 0..tokens {
                for ch in 0..c {
                    dst[n * c + ch] = src[ch * tokens + n] * self.std[ch] + self.mean[ch];
                }
            }
        }
        Ok(())
    }
}
