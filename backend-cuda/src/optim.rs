//! `OptimOps` on CUDA: elementwise kernels, the CPU backend's f32 operation order (`precise`
//! in the kernels keeps the compiler from fusing multiply-adds), scalars prepared on the host
//! in f64 and rounded to f32 as PyTorch does.

use crate::launch::{params, Kernel};
use crate::launch::{read, read_write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::OptimKernels;
use gpstoken_core::backend::AdamConfig;

params! {
    /// `kernels/optim.cu` `adam`.
    struct AdamParams {
        total: u32,
        neg_step_size: f32,
        bc2_sqrt: f32,
        one_minus_b1: f32,
        one_minus_b2: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    }
}
params! {
    /// `kernels/optim.cu` `ema`.
    struct EmaParams { total: u32, weight: f32 }
}

impl OptimKernels for CudaBackend {
    fn adam_step(
        &self,
        config: &AdamConfig,
        step: u32,
        param: &mut CudaBuffer,
        grad: &CudaBuffer,
        m: &mut CudaBuffer,
        v: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let [total] = dims([param.len])?;
        let (b1, b2) = (f64::from(config.beta1), f64::from(config.beta2));
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2 = 1.0 - b2.powi(step as i32);
        let params = AdamParams {
            total,
            neg_step_size: (-(f64::from(config.lr) / bc1)) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            one_minus_b1: (1.0 - b1) as f32,
            one_minus_b2: (1.0 - b2) as f32,
            beta2: config.beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
        };
        self.run(Kernel::Adam, &[read_write(param), read(grad), read_write(m), read_write(v)], &params, total)
    }

    fn ema_update(&self, decay: f32, ema: &mut CudaBuffer, param: &CudaBuffer) -> Result<(), CudaError> {
        let [total] = dims([ema.len])?;
        let params = EmaParams { total, weight: (1.0 - f64::from(decay)) as f32 };
        self.run(Kernel::Ema, &[read_write(ema), read(param)], &params, total)
    }
}
