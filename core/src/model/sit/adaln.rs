//! The adaLN modulation of SiT (spec 9.2): `Linear(D → kD)(SiLU(c))` cut into `k` per-sample
//! vectors `[B, D]` (`chunk(k, dim=1)`), with the backward that glues their gradients back.
//!
//! The chunks are columns of the `[B, kD]` output, so they are peeled off one at a time with
//! [`crate::backend::TensorOps::split_cols`] (and glued with `concat_cols` in the backward):
//! exact copies, no arithmetic.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::{Backend, Buffers};
use crate::model::layers::{zeros, LinearP, Res};
use crate::model::params::{Init, ParamRegistry, ParamStore};

/// `{prefix}.adaLN_modulation.1`, zero-initialised (adaLN-Zero), producing `chunks` vectors.
#[derive(Clone, Debug)]
pub(crate) struct AdaLn {
    linear: LinearP,
    chunks: usize,
    dim: usize,
}

/// Buffers of one [`AdaLn`] for `batch` samples.
pub(crate) struct AdaLnActs<B: Buffers> {
    batch: usize,
    /// The linear output `[B, kD]` and its gradient.
    mods: B::Buffer,
    dmods: B::Buffer,
    /// The `k` chunks `[B, D]` (shift, scale, gate, ... in the official order).
    pub parts: Vec<B::Buffer>,
    /// Gradients of the chunks, written by the layers that read them.
    pub dparts: Vec<B::Buffer>,
}

/// Scratch shared by every [`AdaLn`] of a model (used by one layer at a time): the columns not
/// yet peeled off (and their gradients), `[B, (k-1)D]` down to `[B, 2D]`.
pub(crate) struct AdaLnScratch<B: Buffers> {
    rests: Vec<B::Buffer>,
    /// dL/d(SiLU(c)) of one layer, `[B, D]`; the model adds it to its total.
    pub dsc: B::Buffer,
}

impl AdaLn {
    pub fn new(reg: &mut ParamRegistry, prefix: &str, dim: usize, chunks: usize) -> Self {
        let linear = LinearP::named(
            reg,
            format!("{prefix}.adaLN_modulation.1.weight"),
            format!("{prefix}.adaLN_modulation.1.bias"),
            dim,
            chunks * dim,
            Init::Zeros,
            Init::Zeros,
        );
        AdaLn { linear, chunks, dim }
    }

    pub fn acts<B: Backend>(&self, be: &B, batch: usize) -> Result<AdaLnActs<B>, B::Error> {
        let vec = |_| zeros(be, batch * self.dim);
        Ok(AdaLnActs {
            batch,
            mods: zeros(be, batch * self.chunks * self.dim)?,
            dmods: zeros(be, batch * self.chunks * self.dim)?,
            parts: (0..self.chunks).map(vec).collect::<Result<_, _>>()?,
            dparts: (0..self.chunks).map(vec).collect::<Result<_, _>>()?,
        })
    }

    /// Scratch for the widest modulation (`chunks`) of a model.
    pub fn scratch<B: Backend>(be: &B, batch: usize, dim: usize, chunks: usize) -> Result<AdaLnScratch<B>, B::Error> {
        Ok(AdaLnScratch {
            rests: (2..chunks).rev().map(|k| zeros(be, batch * k * dim)).collect::<Result<_, _>>()?,
            dsc: zeros(be, batch * dim)?,
        })
    }

    /// `parts = chunk(Linear(sc))`; `sc = SiLU(c)` `[B, D]`.
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        p: &ParamStore<B>,
        sc: &B::Buffer,
        a: &mut AdaLnActs<B>,
        s: &mut AdaLnScratch<B>,
    ) -> Res<B> {
        let (rows, d, k) = (a.batch, self.dim, self.chunks);
        self.linear.forward(be, p, rows, sc, &mut a.mods)?;
        let rests = self.rests(&mut s.rests);
        // chunk i is peeled off the remaining (k - i)·D columns; the last split yields two chunks
        for i in 0..k - 1 {
            let (pl, ph) = a.parts.split_at_mut(k - 1);
            let (rl, rh) = rests.split_at_mut(i);
            let src = if i == 0 { &a.mods } else { &rl[i - 1] };
            let rest = if i == k - 2 { &mut ph[0] } else { &mut rh[0] };
            be.split_cols(rows, d, (k - 1 - i) * d, src, &mut pl[i], rest)?;
        }
        Ok(())
    }

    /// From `a.dparts` (every chunk's gradient) to the weight and bias gradients (overwritten)
    /// and `s.dsc` = dL/d(SiLU(c)) of this layer (overwritten).
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        p: &mut ParamStore<B>,
        sc: &B::Buffer,
        a: &mut AdaLnActs<B>,
        s: &mut AdaLnScratch<B>,
    ) -> Res<B> {
        let (rows, d, k) = (a.batch, self.dim, self.chunks);
        let rests = self.rests(&mut s.rests);
        for i in (0..k - 1).rev() {
            let (rl, rh) = rests.split_at_mut(i);
            let rest: &B::Buffer = if i == k - 2 { &a.dparts[k - 1] } else { &rh[0] };
            let dst = if i == 0 { &mut a.dmods } else { &mut rl[i - 1] };
            be.concat_cols(rows, d, (k - 1 - i) * d, &a.dparts[i], rest, dst)?;
        }
        self.linear.backward(be, p, rows, sc, &a.dmods, Some(&mut s.dsc))
    }

    /// The scratch rests this layer uses: `[B, (k-1)D]` down to `[B, 2D]` (the tail of the
    /// model's widest set).
    fn rests<'a, T>(&self, all: &'a mut [T]) -> &'a mut [T] {
        let skip = all.len() + 2 - self.chunks;
        &mut all[skip..]
    }
}
