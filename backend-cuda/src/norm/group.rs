//! GroupNorm on CUDA, both variants (`kernels/norm_group.cu`).
//!
//! Forward: one block per (image, group, tile) computes the statistics (np = 1: one tile,
//! the whole group); for np > 1 the per-pixel maps `(M, 1 / (S + eps))` are the tile statistics
//! resized bicubically through two dense `[H, np]`, `[W, np]` weight matrices prepared on the
//! host from the shapes alone; then one thread per value writes `y`.
//!
//! Backward: one block per (image, channel) sums `(Σ dy (x - M) D, Σ dy)`, which give
//! `dgamma`/`dbeta` (added over the images in order) and, for np = 1, the per-group
//! coefficients of `dx`. For np > 1 the gradient of each pixel's maps is pulled back to the
//! tile statistics by a gather over the pixels (one block per tile, no atomics), then `dx`
//! is one thread per value. Every sum has a fixed order: the same bits run to run.

use crate::launch::{params, Kernel};
use crate::launch::{read, write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::{bicubic_matrix, Buffers, GroupNormDesc, NormKind};

params! {
    /// `kernels/norm.cu` (every GroupNorm kernel).
    struct GroupNormParams {
        total: u32, groups: u32, cpg: u32, height: u32, width: u32, patches: u32, standard: u32, eps: f32,
    }
}

impl CudaBackend {
    fn group_params(&self, desc: &GroupNormDesc, total: usize) -> Result<GroupNormParams, CudaError> {
        let [total, groups, cpg, height, width, patches] =
            dims([total, desc.groups, desc.channels / desc.groups, desc.height, desc.width, desc.patches])?;
        let standard = u32::from(desc.kind == NormKind::Standard);
        Ok(GroupNormParams { total, groups, cpg, height, width, patches, standard, eps: desc.eps })
    }

    /// The tile statistics into `stats` and, for np > 1, the bicubic table and the per-pixel
    /// maps `[B·G, H·W, (M, D)]` (`None` for np = 1).
    fn group_norm_statistics(
        &self,
        desc: &GroupNormDesc,
        x: &CudaBuffer,
        stats: &CudaBuffer,
        compute_stats: bool,
    ) -> Result<Option<(CudaBuffer, CudaBuffer)>, CudaError> {
        let bg = desc.batch * desc.groups;
        if compute_stats {
            let params = self.group_params(desc, bg * desc.patches * desc.patches)?;
            let tile_len = (desc.channels / desc.groups) * (desc.height / desc.patches) * (desc.width / desc.patches);
            let [tile_len] = dims([tile_len])?;
            self.per_item_workgroups(
                Kernel::GroupNormStats,
                &[read(x), write(stats)],
                &params,
                params.total,
                tile_len,
            )?;
        }
        if desc.patches == 1 {
            return Ok(None);
        }
        let (np, hw) = (desc.patches, desc.height * desc.width);
        let mut table = Vec::with_capacity(np * (desc.height + desc.width));
        bicubic_matrix(np, desc.height, &mut table);
        bicubic_matrix(np, desc.width, &mut table);
        let table = self.upload(&table)?;
        let maps = self.allocate(2 * bg * hw)?;
        let params = self.group_params(desc, bg * hw)?;
        self.run(Kernel::GroupNormMaps, &[read(stats), read(&table), write(&maps)], &params, params.total)?;
        Ok(Some((table, maps)))
    }

    pub(super) fn group_norm_forward_kernels(
        &self,
        desc: &GroupNormDesc,
        x: &CudaBuffer,
        gamma: &CudaBuffer,
        beta: &CudaBuffer,
        y: &CudaBuffer,
        stats: &CudaBuffer,
    ) -> Result<(), CudaError> {
        let maps = self.group_norm_statistics(desc, x, stats, true)?;
        // For np = 1 the maps binding is unused: `stats` stands in.
        let maps = maps.as_ref().map_or(stats, |(_, m)| m);
        let params = self.group_params(desc, desc.len())?;
        let bindings = [read(x), read(gamma), read(beta), read(stats), read(maps), write(y)];
        self.run(Kernel::GroupNormApply, &bindings, &params, params.total)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn group_norm_backward_kernels(
        &self,
        desc: &GroupNormDesc,
        x: &CudaBuffer,
        gamma: &CudaBuffer,
        stats: &CudaBuffer,
        dy: &CudaBuffer,
        dx: &CudaBuffer,
        dgamma: &CudaBuffer,
        dbeta: &CudaBuffer,
    ) -> Result<(), CudaError> {
        if desc.is_empty() {
            self.fill_buffer(dgamma, 0.0)?;
            return self.fill_buffer(dbeta, 0.0);
        }
        let (bg, np, hw) = (desc.batch * desc.groups, desc.patches, desc.height * desc.width);
        let [pixels] = dims([hw])?;
        let maps = self.group_norm_statistics(desc, x, stats, false)?;
        let maps_binding = maps.as_ref().map_or(stats, |(_, m)| m);
        // Per (image, channel): (Σ dy (x - M) D, Σ dy).
        let parts = self.allocate(2 * desc.batch * desc.channels)?;
        let params = self.group_params(desc, desc.batch * desc.channels)?;
        let bindings = [read(x), read(dy), read(stats), read(maps_binding), write(&parts)];
        self.per_item_workgroups(Kernel::GroupNormChannelSums, &bindings, &params, params.total, pixels)?;
        self.run(
            Kernel::GroupNormAffineGrads,
            &[read(stats), read(&parts), write(dgamma), write(dbeta)],
            &params,
            dims([desc.channels])?[0],
        )?;
        // np = 1: per (image, group) (q, c2); np > 1: per tile (dL/dmean, dL/dstd).
        let coefficients = match &maps {
            None => {
                let coefficients = self.allocate(2 * bg)?;
                let params = self.group_params(desc, bg)?;
                let bindings = [read(gamma), read(stats), read(&parts), write(&coefficients)];
                self.run(Kernel::GroupNormCoefficients, &bindings, &params, params.total)?;
                coefficients
            }
            Some((table, maps)) => {
                let pixel_grads = self.allocate(2 * bg * hw)?;
                let params = self.group_params(desc, bg * hw)?;
                let bindings = [read(x), read(gamma), read(dy), read(maps), write(&pixel_grads)];
                self.run(Kernel::GroupNormPixelGrads, &bindings, &params, params.total)?;
                let tile_grads = self.allocate(2 * bg * np * np)?;
                let params = self.group_params(desc, bg * np * np)?;
                let bindings = [read(table), read(&pixel_grads), write(&tile_grads)];
                self.per_item_workgroups(Kernel::GroupNormTileGrads, &bindings, &params, params.total, pixels)?;
                tile_grads
            }
        };
        let params = self.group_params(desc, desc.len())?;
        let bindings =
            [read(x), read(gamma), read(dy), read(stats), read(maps_binding), read(&coefficients), write(dx)];
        self.run(Kernel::GroupNormDx, &bindings, &params, params.total)
    }
}
