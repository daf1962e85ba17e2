//! Fully connected layers and embedding lookups.

use super::Buffers;
use crate::shape::{check_len, check_optional, ensure, ShapeError};

/// `y [rows, out] = x [rows, in] · Wᵀ + b`, `W [out, in]` (PyTorch `nn.Linear`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearDesc {
    pub rows: usize,
    pub in_features: usize,
    pub out_features: usize,
}

impl LinearDesc {
    /// Checks x, W, bias (if any) and y lengths.
    pub fn check(&self, x: usize, w: usize, bias: Option<usize>, y: usize) -> Result<(), ShapeError> {
        check_len("linear input", self.rows * self.in_features, x)?;
        check_len("linear weight", self.out_features * self.in_features, w)?;
        if let Some(b) = bias {
            check_len("linear bias", self.out_features, b)?;
        }
        check_len("linear output", self.rows * self.out_features, y)
    }

    /// Checks the backward's buffers: x, W, dy and each gradient that is asked for.
    pub fn check_backward(
        &self,
        x: usize,
        w: usize,
        dy: usize,
        dx: Option<usize>,
        dw: Option<usize>,
        dbias: Option<usize>,
    ) -> Result<(), ShapeError> {
        self.check(x, w, None, dy)?;
        check_optional("linear input gradient", x, dx)?;
        check_optional("linear weight gradient", w, dw)?;
        check_optional("linear bias gradient", self.out_features, dbias)
    }
}

/// `out [rows, dim] = table[indices[r]]`, `table [vocab, dim]` (PyTorch `nn.Embedding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddingDesc {
    pub rows: usize,
    pub vocab: usize,
    pub dim: usize,
}

impl EmbeddingDesc {
    /// Checks the table, the indices (count, and each `< vocab`) and the row buffer lengths.
    pub fn check(&self, table: usize, indices: &[u32], rows_buffer: usize) -> Result<(), ShapeError> {
        check_len("embedding table", self.vocab * self.dim, table)?;
        check_len("embedding indices", self.rows, indices.len())?;
        check_len("embedding rows", self.rows * self.dim, rows_buffer)?;
        ensure(
            indices.iter().all(|&i| (i as usize) < self.vocab),
            "an embedding index is not below the vocabulary size",
        )
    }
}

pub trait LinearOps: Buffers {
    /// `y = x Wᵀ + b`.
    fn linear_forward(
        &self,
        desc: &LinearDesc,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        y: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `dx = dy W`, `dW = dyᵀ x`, `db = Σ_rows dy`, each overwritten (skipped when `None`).
    /// A frozen layer (the perceptual losses' networks) passes `dw = None`: the weight-gradient
    /// product is not computed, and `dx`, `db` are the same bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        desc: &LinearDesc,
        x: &Self::Buffer,
        w: &Self::Buffer,
        dy: &Self::Buffer,
        dx: Option<&mut Self::Buffer>,
        dw: Option<&mut Self::Buffer>,
        dbias: Option<&mut Self::Buffer>,
    ) -> Result<(), Self::Error>;

    /// `out[r] = table[indices[r]]`. Indices are small host data (labels); an index `>= vocab`
    /// is an error.
    fn embedding_forward(
        &self,
        desc: &EmbeddingDesc,
        table: &Self::Buffer,
        indices: &[u32],
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `dtable[v] = Σ_{r: indices[r] = v} dout[r]`, overwritten (rows never looked up get 0).
    fn embedding_backward(
        &self,
        desc: &EmbeddingDesc,
        indices: &[u32],
        dout: &Self::Buffer,
        dtable: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

/// The kernels behind [`LinearOps`], one per op, same signature. Called only after the front end
/// (the blanket `impl<T: LinearKernels> LinearOps for T` below) has checked every buffer length
/// against the descriptor: implementations contain no shape logic.
pub trait LinearKernels: Buffers {
    /// [`LinearOps::linear_forward`].
    fn linear_forward(
        &self,
        desc: &LinearDesc,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        y: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`LinearOps::linear_backward`].
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        desc: &LinearDesc,
        x: &Self::Buffer,
        w: &Self::Buffer,
        dy: &Self::Buffer,
        dx: Option<&mut Self::Buffer>,
        dw: Option<&mut Self::Buffer>,
        dbias: Option<&mut Self::Buffer>,
    ) -> Result<(), Self::Error>;
    /// [`LinearOps::embedding_forward`].
    fn embedding_forward(
        &self,
        desc: &EmbeddingDesc,
        table: &Self::Buffer,
        indices: &[u32],
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
    /// [`LinearOps::embedding_backward`].
    fn embedding_backward(
        &self,
        desc: &EmbeddingDesc,
        indices: &[u32],
        dout: &Self::Buffer,
        dtable: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;
}

impl<T: LinearKernels> LinearOps for T {
    fn linear_forward(
        &self,
        desc: &LinearDesc,
        x: &T::Buffer,
        w: &T::Buffer,
        bias: Option<&T::Buffer>,
        y: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(x), self.len(w), bias.map(|b| self.len(b)), self.len(y))?;
        LinearKernels::linear_forward(self, desc, x, w, bias, y)
    }

    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        desc: &LinearDesc,
        x: &T::Buffer,
        w: &T::Buffer,
        dy: &T::Buffer,
        dx: Option<&mut T::Buffer>,
        dw: Option<&mut T::Buffer>,
        dbias: Option<&mut T::Buffer>,
    ) -> Result<(), T::Error> {
        desc.check_backward(
            self.len(x),
            self.len(w),
            self.len(dy),
            dx.as_deref().map(|d| self.len(d)),
            dw.as_deref().map(|d| self.len(d)),
            dbias.as_deref().map(|d| self.len(d)),
        )?;
        LinearKernels::linear_backward(self, desc, x, w, dy, dx, dw, dbias)
    }

    fn embedding_forward(
        &self,
        desc: &EmbeddingDesc,
        table: &T::Buffer,
        indices: &[u32],
        out: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(table), indices, self.len(out))?;
        LinearKernels::embedding_forward(self, desc, table, indices, out)
    }

    fn embedding_backward(
        &self,
        desc: &EmbeddingDesc,
        indices: &[u32],
        dout: &T::Buffer,
        dtable: &mut T::Buffer,
    ) -> Result<(), T::Error> {
        desc.check(self.len(dtable), indices, self.len(dout))?;
        LinearKernels::embedding_backward(self, desc, indices, dout, dtable)
    }
}
