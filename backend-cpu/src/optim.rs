//! `OptimOps` on the CPU: elementwise, parallel over fixed chunks (no reduction, so the thread
//! count cannot change a bit).
//!
//! Adam follows PyTorch's single-tensor `torch.optim.Adam` (the default on CPU) op by op in f32:
//! ```text
//! g  = grad + wd·p                         (only when wd != 0)
//! m  = lerp(m, g, 1-b1)                    (PyTorch >= 1.13: exp_avg.lerp_(grad, 1-beta1))
//! v  = v·b2 + ((1-b2)·g)·g                 (mul_ then addcmul_)
//! p  = p + (-step_size · m) / (sqrt(v) / bc2_sqrt + eps)   (addcdiv_)
//! ```
//! with `bc1 = 1 - b1^t`, `bc2 = 1 - b2^t`, `step_size = lr / bc1`, `bc2_sqrt = sqrt(bc2)` in
//! f64 (Python floats) and rounded to f32 where PyTorch passes them to a kernel. `lerp` is
//! PyTorch's scalar formula: `w < 0.5 ? a + w·(b-a) : b - (b-a)·(1-w)`. The configuration is
//! f32, so `1 - b2` etc. start from the f32 betas (0.9f32 is not Python's 0.9).

use crate::tensor::CHUNK;
use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::OptimKernels;
use gpstoken_core::backend::AdamConfig;
use rayon::prelude::*;

/// PyTorch's `lerp(a, b, w)` (CPU kernel, scalar form).
#[inline]
fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

impl OptimKernels for CpuBackend {
    fn adam_step(
        &self,
        config: &AdamConfig,
        step: u32,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let (b1, b2) = (f64::from(config.beta1), f64::from(config.beta2));
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2 = 1.0 - b2.powi(step as i32);
        let neg_step_size = (-(f64::from(config.lr) / bc1)) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let one_minus_b1 = (1.0 - b1) as f32;
        let one_minus_b2 = (1.0 - b2) as f32;
        let (beta2, eps, wd) = (config.beta2, config.eps, config.weight_decay);
        self.install(|| {
            param
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .for_each(|((p, g), (m, v))| {
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        let g = if wd != 0.0 { g + wd * *p } else { g };
                        *m = lerp(*m, g, one_minus_b1);
                        *v = *v * beta2 + one_minus_b2 * g * g;
                        let denom = v.sqrt() / bc2_sqrt + eps;
                        *p += neg_step_size * *m / denom;
                    }
                })
        });
        Ok(())
    }

    fn ema_update(&self, decay: f32, ema: &mut Vec<f32>, param: &Vec<f32>) -> Result<(), CpuError> {
        let weight = (1.0 - f64::from(decay)) as f32;
        self.install(|| {
            ema.par_chunks_mut(CHUNK).zip(param.par_chunks(CHUNK)).for_each(|(e, p)| {
                for (e, &p) in e.iter_mut().zip(p) {
                    *e = lerp(*e, p, weight);
                }
            })
        });
        Ok(())
    }
}
