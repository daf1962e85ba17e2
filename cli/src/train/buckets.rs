//! The gradients handed to the all-reduce in buckets as the backward pass finishes them, as
//! PyTorch's DDP does: the model announces each layer's parameters once their gradients are
//! final ([`GradientsReady`]); once the announced gradients fill a bucket, its reduction starts
//! ([`GradientSync::start_all_reduce_mean`]). On CUDA that runs on NCCL's stream while the
//! backward pass goes on with the earlier layers; after the pass, the rest goes out with the
//! loss and the optimiser waits for all of it ([`GradientSync::wait`]).
//!
//! Every rank announces the same parameters in the same order, so every rank cuts the same
//! buckets. The mean of each value does not depend on how the values are grouped.

use super::parallel::GradientSync;
use anyhow::{bail, Result};
use gpstoken_core::backend::Backend;
use gpstoken_core::model::{GradientsReady, ParamId, ParamStore};
use std::ops::Range;

/// MiB of gradients per bucket (`--bucket-mb`): DDP's default `bucket_cap_mb = 25`.
pub const DEFAULT_BUCKET_MIB: f64 = 25.0;
/// The first bucket is smaller (DDP: 1 MiB), so that the first reduction starts early in the pass.
const FIRST_BUCKET_MIB: f64 = 1.0;

/// `--bucket-mb` must be a positive number of MiB.
pub fn check_bucket_size(mib: f64) -> Result<()> {
    if !(mib.is_finite() && mib > 0.0) {
        bail!("--bucket-mb {mib}: give a positive number of MiB (the default is {DEFAULT_BUCKET_MIB})");
    }
    Ok(())
}

/// Collects announced gradients into buckets and starts each bucket's reduction.
pub struct GradientBuckets<'s, B: Backend> {
    sync: &'s mut dyn GradientSync<B>,
    /// Values that close the first bucket, and every later one.
    first_bucket_values: usize,
    bucket_values: usize,
    /// Announced parameters with a gradient, not yet handed over, and their values.
    pending: Vec<ParamId>,
    pending_values: usize,
    /// Buckets handed over so far.
    started: usize,
    /// The first failure: kept until [`GradientBuckets::finish`], nothing is handed over after it.
    error: Option<anyhow::Error>,
}

impl<'s, B: Backend> GradientBuckets<'s, B> {
    /// Buckets of `bucket_mib` MiB (the first at most 1 MiB).
    pub fn new(sync: &'s mut dyn GradientSync<B>, bucket_mib: f64) -> Self {
        let values = |mib: f64| ((mib * f64::from(1u32 << 20) / size_of::<f32>() as f64) as usize).max(1);
        GradientBuckets {
            sync,
            first_bucket_values: values(bucket_mib.min(FIRST_BUCKET_MIB)),
            bucket_values: values(bucket_mib),
            pending: Vec::new(),
            pending_values: 0,
            started: 0,
            error: None,
        }
    }

    /// Starts the reduction of the pending gradients and of `extra`.
    fn hand_over(&mut self, be: &B, params: &mut ParamStore<B>, extra: &mut [&mut B::Buffer]) -> Result<()> {
        self.pending.sort_unstable();
        let mut buffers = params.gradients_of_mut(&self.pending);
        buffers.extend(extra.iter_mut().map(|b| &mut **b));
        self.pending.clear();
        self.pending_values = 0;
        self.started += 1;
        self.sync.start_all_reduce_mean(be, &mut buffers)
    }

    /// After the backward pass: starts the reduction of what is left together with `extra`
    /// (the loss), then orders the ops queued from now on after every reduction. Returns the
    /// number of buckets, or the first failure of the pass.
    pub fn finish(mut self, be: &B, params: &mut ParamStore<B>, extra: &mut [&mut B::Buffer]) -> Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if !self.sync.exchanges() {
            return Ok(0);
        }
        self.hand_over(be, params, extra)?;
        self.sync.wait(be)?;
        Ok(self.started)
    }
}

impl<B: Backend> GradientsReady<B> for GradientBuckets<'_, B> {
    fn ready(&mut self, be: &B, params: &mut ParamStore<B>, ids: Range<ParamId>) {
        if self.error.is_some() || !self.sync.exchanges() {
            return;
        }
        for id in ids {
            if let Some(grad) = params.grad(id) {
                self.pending_values += be.len(grad);
                self.pending.push(id);
            }
        }
        let full = if self.started == 0 { self.first_bucket_values } else { self.bucket_values };
        if self.pending_values >= full {
            if let Err(e) = self.hand_over(be, params, &mut []) {
                self.error = Some(e);
            }
        }
    }
}

#[cfg(test)]
#[path = "buckets_tests.rs"]
mod tests;
