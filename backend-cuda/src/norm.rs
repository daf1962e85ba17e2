//! `NormOps` on CUDA: GroupNorm (standard, and `NormalizeNP` with per-patch statistics resized
//! bicubically, spec 6.2: [`group`]), LayerNorm and training-mode BatchNorm2d.
//!
//! Statistics are f32 two-pass sums (mean, then squared deviations) by one block per
//! normalised set (row, channel, group tile): each thread adds a strided subset in order,
//! then a shared-memory tree adds the threads' sums (`kernels/norm.cu`). The
//! block is the default size, or smaller for short sets ([`MIN_REDUCTION_WORKGROUP`] at
//! least); the order depends on the shape and the device only: identical bits run to run.
//!
//! * LayerNorm: one block per row (forward, `dx`); `dgamma = Σ_rows dy x̂` and
//!   `dbeta = Σ_rows dy` are the crate's chunked column sums, `x̂` written by the `dx` kernel.
//! * BatchNorm: one block per channel for the statistics (and the running update) and for
//!   the backward's `(Σ dy, Σ dy (x - mean))` (and `dgamma`, `dbeta`), then one thread per
//!   value for `y` or `dx`.
//!
//! Saved statistics: as the CPU backend, GroupNorm `[B, G, np, np, (mean, rstd or std)]`,
//! LayerNorm `[rows, (mean, rstd)]`, BatchNorm `[C, (mean, rstd)]`.

pub(crate) mod group;

use crate::launch::{params, Kernel};
use crate::launch::{read, read_write, write, Binding};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::NormKernels;
use gpstoken_core::backend::{BatchNormDesc, GroupNormDesc, LayerNormDesc};

params! {
    /// `kernels/norm.cu` `layer_norm_{forward,backward}`.
    struct LayerNormParams { rows: u32, features: u32, flag: u32, eps: f32 }
}
params! {
    /// `kernels/norm.cu` (every BatchNorm kernel).
    struct BatchNormParams { total: u32, batch: u32, channels: u32, spatial: u32, flag: u32, eps: f32, momentum: f32 }
}

/// `layer_norm_backward` flag bits.
const LAYER_NORM_HAS_GAMMA: u32 = 1;
const LAYER_NORM_WRITE_XHAT: u32 = 2;

/// Smallest block of the reductions (a GPU's SIMD width; below, threads are wasted anyway).
const MIN_REDUCTION_WORKGROUP: u32 = 32;

impl CudaBackend {
    /// Records `kernel` as one block per item, `items` of them, each reducing `len` values:
    /// the default block size, or for short sets the power of two covering them, so that
    /// short rows (LayerNorm of a few features) leave few threads idle. The size (and so the
    /// sums' order) depends on the shape and the device only.
    pub(super) fn per_item_workgroups<P: cudarc::driver::DeviceRepr>(
        &self,
        kernel: Kernel,
        bindings: &[Binding],
        params: &P,
        items: u32,
        len: u32,
    ) -> Result<(), CudaError> {
        if items == 0 {
            return Ok(());
        }
        let size = len.max(MIN_REDUCTION_WORKGROUP).checked_next_power_of_two().unwrap_or(u32::MAX);
        let size = size.min(crate::BLOCK);
        self.run_groups(kernel, &[size], bindings, params, items.min(self.max_groups()))
    }

    fn batch_params(&self, desc: &BatchNormDesc, flag: bool) -> Result<BatchNormParams, CudaError> {
        let [total, batch, channels, spatial] = dims([desc.len(), desc.batch, desc.channels, desc.spatial])?;
        let (eps, momentum, flag) = (desc.eps, desc.momentum, u32::from(flag));
        Ok(BatchNormParams { total, batch, channels, spatial, flag, eps, momentum })
    }
}

impl NormKernels for CudaBackend {
    fn group_norm_forward(
        &self,
        desc: &GroupNormDesc,
        x: &CudaBuffer,
        gamma: &CudaBuffer,
        beta: &CudaBuffer,
        y: &mut CudaBuffer,
        stats: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        self.group_norm_forward_kernels(desc, x, gamma, beta, y, stats)
    }

    fn group_norm_backward(
        &self,
        desc: &GroupNormDesc,
        x: &CudaBuffer,
        gamma: &CudaBuffer,
        stats: &CudaBuffer,
        dy: &CudaBuffer,
        dx: &mut CudaBuffer,
        dgamma: &mut CudaBuffer,
        dbeta: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        self.group_norm_backward_kernels(desc, x, gamma, stats, dy, dx, dgamma, dbeta)
    }

    fn layer_norm_forward(
        &self,
        desc: &LayerNormDesc,
        x: &CudaBuffer,
        affine: Option<(&CudaBuffer, &CudaBuffer)>,
        y: &mut CudaBuffer,
        stats: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let [rows, features] = dims([desc.rows, desc.features])?;
        let params = LayerNormParams { rows, features, flag: u32::from(affine.is_some()), eps: desc.eps };
        // Without affine, `x` stands in for the unused gamma and beta bindings.
        let (gamma, beta) = affine.unwrap_or((x, x));
        let bindings = [read(x), read(gamma), read(beta), write(y), write(stats)];
        self.per_item_workgroups(Kernel::LayerNormForward, &bindings, &params, rows, features)
    }

    fn layer_norm_backward(
        &self,
        desc: &LayerNormDesc,
        x: &CudaBuffer,
        gamma: Option<&CudaBuffer>,
        stats: &CudaBuffer,
        dy: &CudaBuffer,
        dx: &mut CudaBuffer,
        daffine: Option<(&mut CudaBuffer, &mut CudaBuffer)>,
    ) -> Result<(), CudaError> {
        if desc.features == 0 {
            return Ok(());
        }
        let [rows, features] = dims([desc.rows, desc.features])?;
        // x̂ for dgamma = Σ_rows dy x̂ (the column sums below); without affine `dx` stands in.
        let xhat = match daffine {
            Some(_) => Some(self.allocate(dx.len)?),
            None => None,
        };
        let mut flag = if gamma.is_some() { LAYER_NORM_HAS_GAMMA } else { 0 };
        if xhat.is_some() {
            flag |= LAYER_NORM_WRITE_XHAT;
        }
        // The backward reads the saved rstd: eps is unused. Without gamma, `x` stands in for it.
        let params = LayerNormParams { rows, features, flag, eps: 0.0 };
        let bindings =
            [read(x), read(gamma.unwrap_or(x)), read(stats), read(dy), write(dx), write(xhat.as_ref().unwrap_or(dx))];
        self.per_item_workgroups(Kernel::LayerNormBackward, &bindings, &params, rows, features)?;
        if let (Some((dgamma, dbeta)), Some(xhat)) = (daffine, &xhat) {
            self.column_sums(1, desc.rows, desc.features, dy, Some(xhat), dgamma)?;
            self.column_sums(1, desc.rows, desc.features, dy, None, dbeta)?;
        }
        Ok(())
    }

    fn batch_norm_train_forward(
        &self,
        desc: &BatchNormDesc,
        x: &CudaBuffer,
        gamma: &CudaBuffer,
        beta: &CudaBuffer,
        y: &mut CudaBuffer,
        stats: &mut CudaBuffer,
        running: Option<(&mut CudaBuffer, &mut CudaBuffer)>,
    ) -> Result<(), CudaError> {
        let params = self.batch_params(desc, running.is_some())?;
        // Without running statistics, `stats` stands in for their bindings (never touched).
        let (rm, rv): (&CudaBuffer, &CudaBuffer) = match &running {
            Some((rm, rv)) => (rm, rv),
            None => (stats, stats),
        };
        let bindings = [read(x), write(stats), read_write(rm), read_write(rv)];
        self.per_item_workgroups(
            Kernel::BatchNormStats,
            &bindings,
            &params,
            params.channels,
            params.batch * params.spatial,
        )?;
        let bindings = [read(x), read(gamma), read(beta), read(stats), write(y)];
        self.run(Kernel::BatchNormApply, &bindings, &params, params.total)
    }

    fn batch_norm_train_backward(
        &self,
        desc: &BatchNormDesc,
        x: &CudaBuffer,
        gamma: &CudaBuffer,
        stats: &CudaBuffer,
        dy: &CudaBuffer,
        dx: &mut CudaBuffer,
        daffine: Option<(&mut CudaBuffer, &mut CudaBuffer)>,
    ) -> Result<(), CudaError> {
        if desc.channels == 0 {
            return Ok(());
        }
        let params = self.batch_params(desc, daffine.is_some())?;
        let sums = self.allocate(2 * desc.channels)?;
        // Without dgamma/dbeta, `sums` stands in for their bindings (never written through them).
        let (dgamma, dbeta): (&CudaBuffer, &CudaBuffer) = match &daffine {
            Some((dg, db)) => (dg, db),
            None => (&sums, &sums),
        };
        let bindings = [read(x), read(dy), read(stats), write(&sums), write(dgamma), write(dbeta)];
        self.per_item_workgroups(
            Kernel::BatchNormBackwardSums,
            &bindings,
            &params,
            params.channels,
            params.batch * params.spatial,
        )?;
        let bindings = [read(x), read(gamma), read(dy), read(stats), read(&sums), write(dx)];
        self.run(Kernel::BatchNormDx, &bindings, &params, params.total)
    }
}
