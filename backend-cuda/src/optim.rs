//! `OptimOps` on CUDA: elementwise kernels, the CPU backend's f32 operation order (`precise`
//! in the kernels keeps the compiler from fusing multiply-adds), scalars prepared on the host
//! in f64 and rounded to f32 as PyTorch does.
//!
//! The multi-tensor ops are one launch for all tensors (`adam_many`, `ema_many`): the tensors'
//! values are laid end to end in one index space and a small table of u32 words, uploaded per
//! call, gives each tensor's first index and buffer addresses (layout: `TensorTable` in
//! `kernels/optim.cu`). Per value they run the single-tensor kernels' code, so the same bits.

use crate::launch::{params, Kernel};
use crate::launch::{read, read_write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::OptimKernels;
use gpstoken_core::backend::{ema_weight, AdamConfig, AdamTensor, EmaTensor};

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
params! {
    /// `kernels/optim.cu` `adam_many`: `AdamParams` (`total`: all tensors' values), then the
    /// number of tensors in the table.
    struct AdamManyParams {
        total: u32,
        neg_step_size: f32,
        bc2_sqrt: f32,
        one_minus_b1: f32,
        one_minus_b2: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        tensors: u32,
    }
}
params! {
    /// `kernels/optim.cu` `ema_many`: `EmaParams` then the number of tensors in the table.
    struct EmaManyParams { total: u32, weight: f32, tensors: u32 }
}

/// Most values one multi-tensor launch covers: its indices (u32, grid-stride steps included)
/// stay far from wrapping. A larger set of tensors is split into several launches.
const VALUES_PER_LAUNCH: usize = 1 << 31;

/// One launch of a multi-tensor kernel: its values and its table (`TensorTable` in
/// `kernels/optim.cu`).
#[derive(Debug, PartialEq)]
struct TableLaunch {
    total: u32,
    tensors: u32,
    words: Vec<u32>,
}

/// The launches for `tensors` (each its length and its `K` buffer addresses), in order: empty
/// tensors are left out, and a launch takes tensors while they fit [`VALUES_PER_LAUNCH`] (a
/// single larger tensor gets a launch of its own, if its length fits the u32 indices).
fn table_launches<const K: usize>(tensors: &[(usize, [u64; K])]) -> Result<Vec<TableLaunch>, CudaError> {
    let mut launches = Vec::new();
    let mut group: Vec<(usize, [u64; K])> = Vec::new();
    let mut total = 0usize;
    let mut flush = |group: &mut Vec<(usize, [u64; K])>, total: usize| -> Result<(), CudaError> {
        if group.is_empty() {
            return Ok(());
        }
        let [total, tensors] = dims([total, group.len()])?;
        let mut words = Vec::with_capacity(group.len() * (1 + 2 * K));
        let mut start = 0u32;
        for (len, _) in group.iter() {
            words.push(start);
            start += *len as u32;
        }
        for (_, addresses) in group.iter() {
            for a in addresses {
                words.extend([*a as u32, (*a >> 32) as u32]);
            }
        }
        launches.push(TableLaunch { total, tensors, words });
        group.clear();
        Ok(())
    };
    for &(len, addresses) in tensors.iter().filter(|t| t.0 > 0) {
        if total + len > VALUES_PER_LAUNCH {
            flush(&mut group, total)?;
            total = 0;
        }
        group.push((len, addresses));
        total += len;
    }
    flush(&mut group, total)?;
    Ok(launches)
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
        let params = adam_params(config, step, total);
        self.run(Kernel::Adam, &[read_write(param), read(grad), read_write(m), read_write(v)], &params, total)
    }

    fn ema_update(&self, decay: f32, ema: &mut CudaBuffer, param: &CudaBuffer) -> Result<(), CudaError> {
        let [total] = dims([ema.len])?;
        let params = EmaParams { total, weight: (1.0 - f64::from(decay)) as f32 };
        self.run(Kernel::Ema, &[read_write(ema), read(param)], &params, total)
    }

    fn adam_step_many(
        &self,
        config: &AdamConfig,
        step: u32,
        tensors: &mut [AdamTensor<'_, CudaBuffer>],
    ) -> Result<(), CudaError> {
        let layout: Vec<(usize, [u64; 4])> = tensors
            .iter()
            .map(|t| (t.param.len, [t.param.address(), t.grad.address(), t.m.address(), t.v.address()]))
            .collect();
        for launch in table_launches(&layout)? {
            let a = adam_params(config, step, launch.total);
            let params = AdamManyParams {
                total: a.total,
                neg_step_size: a.neg_step_size,
                bc2_sqrt: a.bc2_sqrt,
                one_minus_b1: a.one_minus_b1,
                one_minus_b2: a.one_minus_b2,
                beta2: a.beta2,
                eps: a.eps,
                weight_decay: a.weight_decay,
                tensors: launch.tensors,
            };
            // Freed stream-ordered when dropped, after the launch queued before it has run.
            let table = self.upload_words(&launch.words)?;
            self.run(Kernel::AdamMany, &[read(&table)], &params, launch.total)?;
        }
        Ok(())
    }

    fn ema_update_many(&self, decay: f32, tensors: &mut [EmaTensor<'_, CudaBuffer>]) -> Result<(), CudaError> {
        let layout: Vec<(usize, [u64; 2])> =
            tensors.iter().map(|t| (t.ema.len, [t.ema.address(), t.param.address()])).collect();
        for launch in table_launches(&layout)? {
            let params = EmaManyParams { total: launch.total, weight: ema_weight(decay), tensors: launch.tensors };
            let table = self.upload_words(&launch.words)?;
            self.run(Kernel::EmaMany, &[read(&table)], &params, launch.total)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::{table_launches, TableLaunch, VALUES_PER_LAUNCH};

    #[test]
    fn the_table_lists_starts_then_address_halves_and_skips_empty_tensors() {
        let a = 0x1234_5678_9abc_def0u64;
        let b = 0x0000_0001_0000_0004u64;
        let launches = table_launches(&[(3, [a, b]), (0, [7, 7]), (5, [b, a])]).unwrap();
        let words = vec![0, 3, 0x9abc_def0, 0x1234_5678, 4, 1, 4, 1, 0x9abc_def0, 0x1234_5678];
        assert_eq!(launches, vec![TableLaunch { total: 8, tensors: 2, words }]);
        assert!(table_launches::<2>(&[(0, [1, 2])]).unwrap().is_empty());
    }

    #[test]
    fn tensors_past_the_launch_limit_start_a_new_launch() {
        let half = VALUES_PER_LAUNCH / 2 + 1;
        let launches = table_launches(&[(half, [1]), (half, [2]), (10, [3])]).unwrap();
        let shape: Vec<(u32, u32)> = launches.iter().map(|l| (l.total, l.tensors)).collect();
        assert_eq!(shape, vec![(half as u32, 1), (half as u32 + 10, 2)]);
        assert_eq!(launches[1].words[..2], [0, half as u32]);
        assert!(table_launches(&[(u32::MAX as usize + 1, [1])]).is_err(), "one tensor past the u32 indices");
    }
}
