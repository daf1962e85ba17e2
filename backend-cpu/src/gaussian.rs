//! `GaussianOps` on the CPU: the encoder's reparameterisation (spec 1), row by row in f32 in
//! the official op order, parallel over fixed blocks of rows (no reduction).
//!
//! Backward, with `s` the sigmoid recomputed from `g_init` and `delta`:
//! * `ddelta[0:2] = dt · s(1-s)`, `ddelta[2:5] = dt · 2 s(1-s)`;
//! * `dg_init[0:2] = ddelta · 1/(g(1-g))` (`da/dg`), `dg_init[2:5] = ddelta · 2/((1+v)(1-v))`
//!   (`db/dv`);
//! * `dfeatures = dtokens[5..]`.
//!
//! The multi-patch merge runs the core's `render::merge_patches` per image (parallel over images);
//! its backward divides the σ and mean gradients by np.

use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::GaussianKernels;
use gpstoken_core::backend::{MergeDesc, ReparamDesc};
use gpstoken_core::token::{GAUSSIAN_PARAMS, MEAN_X, MEAN_Y, SIGMA_X, SIGMA_Y};
use rayon::prelude::*;

/// Rows per task.
const ROWS: usize = 1024;

/// `a` (columns 0, 1) or `b` (columns 2..5) of one initial value, in the official f32 order.
#[inline]
fn pre_activation(col: usize, g: f32) -> f32 {
    if col < 2 {
        -(1.0 / g - 1.0).ln()
    } else {
        -(2.0 / (1.0 + g) - 1.0).ln()
    }
}

#[inline]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl GaussianKernels for CpuBackend {
    fn gaussian_reparam_forward(
        &self,
        desc: &ReparamDesc,
        g_init: &Vec<f32>,
        delta: &Vec<f32>,
        features: &Vec<f32>,
        tokens: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let (c, stride) = (desc.channels, desc.channels + 5);
        if desc.rows == 0 {
            return Ok(());
        }
        self.install(|| {
            tokens.par_chunks_mut(ROWS * stride).enumerate().for_each(|(t, tok)| {
                for (k, row) in tok.chunks_exact_mut(stride).enumerate() {
                    let r = t * ROWS + k;
                    for col in 0..5 {
                        let z = pre_activation(col, g_init[r * 5 + col]) + delta[r * 5 + col];
                        row[col] = if col < 2 { sigmoid(z) } else { 2.0 / (1.0 + (-z).exp()) - 1.0 };
                    }
                    row[5..].copy_from_slice(&features[r * c..(r + 1) * c]);
                }
            })
        });
        Ok(())
    }

    fn gaussian_reparam_backward(
        &self,
        desc: &ReparamDesc,
        g_init: &Vec<f32>,
        delta: &Vec<f32>,
        dtokens: &Vec<f32>,
        ddelta: &mut Vec<f32>,
        dfeatures: &mut Vec<f32>,
        dg_init: Option<&mut Vec<f32>>,
    ) -> Result<(), CpuError> {
        let (c, stride) = (desc.channels, desc.channels + 5);
        if desc.rows == 0 {
            return Ok(());
        }
        self.install(|| {
            ddelta.par_chunks_mut(ROWS * 5).enumerate().for_each(|(t, dd)| {
                for (k, dd) in dd.chunks_exact_mut(5).enumerate() {
                    let r = t * ROWS + k;
                    for col in 0..5 {
                        let s = sigmoid(pre_activation(col, g_init[r * 5 + col]) + delta[r * 5 + col]);
                        let ds = s * (1.0 - s);
                        let dt = dtokens[r * stride + col];
                        dd[col] = if col < 2 { dt * ds } else { dt * (2.0 * ds) };
                    }
                }
            });
            if c > 0 {
                dfeatures.par_chunks_mut(ROWS * c).enumerate().for_each(|(t, df)| {
                    for (k, df) in df.chunks_exact_mut(c).enumerate() {
                        let r = t * ROWS + k;
                        df.copy_from_slice(&dtokens[r * stride + 5..(r + 1) * stride]);
                    }
                });
            }
            if let Some(dg) = dg_init {
                let dd: &[f32] = ddelta;
                dg.par_chunks_mut(ROWS * 5).zip(g_init.par_chunks(ROWS * 5)).zip(dd.par_chunks(ROWS * 5)).for_each(
                    |((dg, g), dd)| {
                        for (i, ((dg, &g), &dd)) in dg.iter_mut().zip(g).zip(dd).enumerate() {
                            *dg = if i % 5 < 2 { dd / (g * (1.0 - g)) } else { dd * (2.0 / ((1.0 + g) * (1.0 - g))) };
                        }
                    },
                );
            }
        });
        Ok(())
    }

    fn merge_patches_forward(
        &self,
        desc: &MergeDesc,
        tokens: &Vec<f32>,
        merged: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        if desc.is_empty() {
            return Ok(());
        }
        let per_image = desc.len() / desc.batch;
        let (np, n, c) = (desc.patches, desc.tokens_per_patch, desc.channels);
        self.install(|| {
            merged
                .par_chunks_mut(per_image)
                .zip(tokens.par_chunks(per_image))
                .try_for_each(|(dst, src)| gpstoken_core::render::merge_patches(np, np, n, c, src, dst))
        })?;
        Ok(())
    }

    fn merge_patches_backward(
        &self,
        desc: &MergeDesc,
        dmerged: &Vec<f32>,
        dtokens: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        if desc.is_empty() {
            return Ok(());
        }
        let stride = GAUSSIAN_PARAMS + desc.channels;
        let np = desc.patches as f32;
        self.install(|| {
            dtokens.par_chunks_mut(ROWS * stride).zip(dmerged.par_chunks(ROWS * stride)).for_each(|(dt, dm)| {
                dt.copy_from_slice(dm);
                for t in dt.chunks_exact_mut(stride) {
                    for k in [SIGMA_X, SIGMA_Y, MEAN_X, MEAN_Y] {
                        t[k] /= np;
                    }
                }
            })
        });
        Ok(())
    }
}
