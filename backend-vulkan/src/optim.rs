//! `OptimOps` on Vulkan: elementwise kernels, the CPU backend's f32 operation order (`precise`
//! in the shaders keeps the compiler from fusing multiply-adds), scalars prepared on the host
//! in f64 and rounded to f32 as PyTorch does.
//!
//! The multi-tensor ops record one dispatch of the same shader per tensor, all into one command
//! buffer (one submission, the pipeline bound once, no barriers between them: the tensors'
//! buffers are distinct). A single dispatch over all tensors would need their buffers in one
//! descriptor array or by device address, optional features of Vulkan 1.2.

use crate::pipeline::{push_constants, Shader};
use crate::recorder::{read, read_write, Binding};
use crate::{dims, VulkanBackend, VulkanBuffer, VulkanError};
use gpstoken_core::backend::kernels::OptimKernels;
use gpstoken_core::backend::{ema_weight, AdamConfig, AdamTensor, EmaTensor};

push_constants! {
    /// `shaders/optim/adam.comp`.
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
push_constants! {
    /// `shaders/optim/ema.comp`.
    struct EmaParams { total: u32, weight: f32 }
}

impl OptimKernels for VulkanBackend {
    fn adam_step(
        &self,
        config: &AdamConfig,
        step: u32,
        param: &mut VulkanBuffer,
        grad: &VulkanBuffer,
        m: &mut VulkanBuffer,
        v: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        let [total] = dims([param.len])?;
        let params = adam_params(config, step, total);
        self.run(Shader::Adam, &[read_write(param), read(grad), read_write(m), read_write(v)], &params, total)
    }

    fn ema_update(&self, decay: f32, ema: &mut VulkanBuffer, param: &VulkanBuffer) -> Result<(), VulkanError> {
        let [total] = dims([ema.len])?;
        let params = EmaParams { total, weight: ema_weight(decay) };
        self.run(Shader::Ema, &[read_write(ema), read(param)], &params, total)
    }

    fn adam_step_many(
        &self,
        config: &AdamConfig,
        step: u32,
        tensors: &mut [AdamTensor<'_, VulkanBuffer>],
    ) -> Result<(), VulkanError> {
        let bindings: Vec<[Binding; 4]> =
            tensors.iter().map(|t| [read_write(t.param), read(t.grad), read_write(t.m), read_write(t.v)]).collect();
        let mut dispatches = Vec::with_capacity(tensors.len());
        for (t, b) in tensors.iter().zip(&bindings) {
            let [total] = dims([t.param.len])?;
            dispatches.push((&b[..], adam_params(config, step, total), total));
        }
        self.run_many(Shader::Adam, &dispatches)
    }

    fn ema_update_many(&self, decay: f32, tensors: &mut [EmaTensor<'_, VulkanBuffer>]) -> Result<(), VulkanError> {
        let bindings: Vec<[Binding; 2]> = tensors.iter().map(|t| [read_write(t.ema), read(t.param)]).collect();
        let mut dispatches = Vec::with_capacity(tensors.len());
        for (t, b) in tensors.iter().zip(&bindings) {
            let [total] = dims([t.ema.len])?;
            dispatches.push((&b[..], EmaParams { total, weight: ema_weight(decay) }, total));
        }
        self.run_many(Shader::Ema, &dispatches)
    }
}

/// The kernel parameters of Adam step `step` over `total` values ([`AdamConfig::step_scalars`]).
fn adam_params(config: &AdamConfig, step: u32, total: u32) -> AdamParams {
    let s = config.step_scalars(step);
    AdamParams {
        total,
        neg_step_size: s.neg_step_size,
        bc2_sqrt: s.bc2_sqrt,
        one_minus_b1: s.one_minus_b1,
        one_minus_b2: s.one_minus_b2,
        beta2: s.beta2,
        eps: s.eps,
        weight_decay: s.weight_decay,
    }
}
