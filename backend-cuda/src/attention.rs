//! `AttentionKernels` on CUDA: scaled dot-product attention as cuBLAS strided-batched GEMMs
//! ([`crate::blas`]) around two row kernels (`kernels/attention.cu`).
//!
//! With `q [B, Lq, H*D]`, `k, v [B, Lk, H*D]` (head `h` is columns `h*D ..`), each (image, head)
//! pair is one product of a batch: the heads of one image are `D` values apart, the images
//! `L*H*D` apart, so a launch batches whichever of the two is longer and loops over the other.
//! * Forward: `S = scale Q Kᵀ` straight into the saved `probs [B, H, Lq, Lk]`, `softmax_rows` in
//!   place (one block per row, fixed-order tree reductions), then `O = P V` into the head's
//!   columns of `out`.
//! * Backward: `dP = dO Vᵀ` (scratch `[B, H, Lq, Lk]`), `softmax_backward_rows` turns it into
//!   `dS = P ⊙ (dP - rowsum(dP ⊙ P))` in place, then `dQ = scale dS K`, `dK = scale dSᵀ Q`,
//!   `dV = Pᵀ dO`.

use crate::blas::{Batch, Mat};
use crate::launch::{params, read, write, Arg, Kernel};
use crate::{dims, CudaBackend, CudaBuffer, CudaError, BLOCK};
use gpstoken_core::backend::kernels::AttentionKernels;
use gpstoken_core::backend::AttentionDesc;

params! {
    /// `softmax_rows_impl::Params` in `kernels/attention.cu`.
    struct RowParams { rows: u32, cols: u32 }
}

/// The (image, head) pairs as an outer loop and an inner batch.
struct Pairs {
    outer: usize,
    inner: usize,
    /// Value offsets of one step of the outer loop / the inner batch, in q (rows `lq`), in k and
    /// v (rows `lk`) and in the `[B, H, Lq, Lk]` probabilities.
    outer_q: usize,
    outer_kv: usize,
    outer_p: usize,
    inner_q: usize,
    inner_kv: usize,
    inner_p: usize,
}

impl Pairs {
    fn new(desc: &AttentionDesc) -> Pairs {
        let (b, h, d) = (desc.batch, desc.heads, desc.head_dim);
        let hd = h * d;
        let pp = desc.seq_q * desc.seq_k;
        let (per_image_q, per_image_kv) = (desc.seq_q * hd, desc.seq_k * hd);
        if h >= b {
            // Batch the heads of one image, loop over images.
            Pairs {
                outer: b,
                inner: h,
                outer_q: per_image_q,
                outer_kv: per_image_kv,
                outer_p: h * pp,
                inner_q: d,
                inner_kv: d,
                inner_p: pp,
            }
        } else {
            Pairs {
                outer: h,
                inner: b,
                outer_q: d,
                outer_kv: d,
                outer_p: pp,
                inner_q: per_image_q,
                inner_kv: per_image_kv,
                inner_p: h * pp,
            }
        }
    }
}

impl CudaBackend {
    /// One launch per row block of `rows x cols` values (`probs` and, for the backward, `dp`).
    fn attention_rows(&self, kernel: Kernel, rows: usize, cols: usize, args: &[Arg]) -> Result<(), CudaError> {
        let [rows_u, cols_u] = dims([rows, cols])?;
        // A power of two of threads, enough for one pass over short rows.
        let block = (cols_u.max(32)).next_power_of_two().min(BLOCK);
        self.run_groups(
            kernel,
            &[block],
            args,
            &RowParams { rows: rows_u, cols: cols_u },
            rows_u.min(self.max_groups()),
        )
    }
}

impl AttentionKernels for CudaBackend {
    fn attention_forward(
        &self,
        desc: &AttentionDesc,
        q: &CudaBuffer,
        k: &CudaBuffer,
        v: &CudaBuffer,
        out: &mut CudaBuffer,
        probs: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        if out.len == 0 || probs.len == 0 {
            return Ok(());
        }
        dims([q.len, k.len, probs.len])?;
        let (lq, lk, d, hd) = (desc.seq_q, desc.seq_k, desc.head_dim, desc.heads * desc.head_dim);
        let pairs = Pairs::new(desc);
        let p_arg = write(probs);
        for o in 0..pairs.outer {
            let batch = |sa, sb, sc| Batch { count: pairs.inner, stride_a: sa, stride_b: sb, stride_c: sc };
            // S [Lq, Lk] = scale Q [Lq, D] Kᵀ.
            self.gemm(
                [lq, d, lk],
                desc.scale,
                Mat::rows(read(q).offset(o * pairs.outer_q), hd),
                Mat::cols(read(k).offset(o * pairs.outer_kv), hd),
                p_arg.offset(o * pairs.outer_p),
                lk,
                batch(pairs.inner_q, pairs.inner_kv, pairs.inner_p),
            )?;
        }
        self.attention_rows(Kernel::SoftmaxRows, desc.batch * desc.heads * lq, lk, &[p_arg])?;
        for o in 0..pairs.outer {
            let batch = |sa, sb, sc| Batch { count: pairs.inner, stride_a: sa, stride_b: sb, stride_c: sc };
            // O [Lq, D] = P [Lq, Lk] V [Lk, D], into the head's columns.
            self.gemm(
                [lq, lk, d],
                1.0,
                Mat::rows(p_arg.offset(o * pairs.outer_p), lk),
                Mat::rows(read(v).offset(o * pairs.outer_kv), hd),
                write(out).offset(o * pairs.outer_q),
                hd,
                batch(pairs.inner_p, pairs.inner_kv, pairs.inner_q),
            )?;
        }
        Ok(())
    }

    fn attention_backward(
        &self,
        desc: &AttentionDesc,
        q: &CudaBuffer,
        k: &CudaBuffer,
        v: &CudaBuffer,
        probs: &CudaBuffer,
        dout: &CudaBuffer,
        dq: &mut CudaBuffer,
        dk: &mut CudaBuffer,
        dv: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        if dq.len == 0 && dk.len == 0 {
            return Ok(());
        }
        let (lq, lk, d, hd) = (desc.seq_q, desc.seq_k, desc.head_dim, desc.heads * desc.head_dim);
        if lq == 0 {
            // No query: no key or value receives a gradient.
            self.fill_buffer(dk, 0.0)?;
            return self.fill_buffer(dv, 0.0);
        }
        dims([q.len, k.len, probs.len])?;
        let pairs = Pairs::new(desc);
        let ds = self.allocate(probs.len)?;
        let ds_arg = write(&ds);
        let batch = |sa, sb, sc| Batch { count: pairs.inner, stride_a: sa, stride_b: sb, stride_c: sc };
        for o in 0..pairs.outer {
            // dP [Lq, Lk] = dO [Lq, D] Vᵀ.
            self.gemm(
                [lq, d, lk],
                1.0,
                Mat::rows(read(dout).offset(o * pairs.outer_q), hd),
                Mat::cols(read(v).offset(o * pairs.outer_kv), hd),
                ds_arg.offset(o * pairs.outer_p),
                lk,
                batch(pairs.inner_q, pairs.inner_kv, pairs.inner_p),
            )?;
        }
        self.attention_rows(Kernel::SoftmaxBackwardRows, desc.batch * desc.heads * lq, lk, &[read(probs), ds_arg])?;
        for o in 0..pairs.outer {
            let (oq, okv, op) = (o * pairs.outer_q, o * pairs.outer_kv, o * pairs.outer_p);
            // dQ [Lq, D] = scale dS [Lq, Lk] K [Lk, D].
            self.gemm(
                [lq, lk, d],
                desc.scale,
                Mat::rows(ds_arg.offset(op), lk),
                Mat::rows(read(k).offset(okv), hd),
                write(dq).offset(oq),
                hd,
                batch(pairs.inner_p, pairs.inner_kv, pairs.inner_q),
            )?;
            // dK [Lk, D] = scale dSᵀ [Lk, Lq] Q [Lq, D].
            self.gemm(
                [lk, lq, d],
                desc.scale,
                Mat::cols(ds_arg.offset(op), lk),
                Mat::rows(read(q).offset(oq), hd),
                write(dk).offset(okv),
                hd,
                batch(pairs.inner_p, pairs.inner_q, pairs.inner_kv),
            )?;
            // dV [Lk, D] = Pᵀ [Lk, Lq] dO [Lq, D].
            self.gemm(
                [lk, lq, d],
                1.0,
                Mat::cols(read(probs).offset(op), lk),
                Mat::rows(read(dout).offset(oq), hd),
                write(dv).offset(okv),
                hd,
                batch(pairs.inner_p, pairs.inner_q, pairs.inner_kv),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Pairs;
    use gpstoken_core::backend::AttentionDesc;

    /// The outer loop and the inner batch visit every (image, head) pair once, at its offsets in
    /// q, k/v and the probabilities, whichever of images and heads is batched.
    #[test]
    fn pairs_cover_every_image_and_head_at_their_offsets() {
        for (batch, heads) in [(2, 3), (3, 2), (1, 4), (4, 1), (1, 1)] {
            let desc = AttentionDesc { batch, heads, seq_q: 5, seq_k: 7, head_dim: 4, scale: 0.5 };
            let (hd, pp) = (heads * 4, 5 * 7);
            let p = Pairs::new(&desc);
            let mut seen: Vec<(usize, usize, usize)> = (0..p.outer)
                .flat_map(|o| (0..p.inner).map(move |i| (o, i)))
                .map(|(o, i)| {
                    (o * p.outer_q + i * p.inner_q, o * p.outer_kv + i * p.inner_kv, o * p.outer_p + i * p.inner_p)
                })
                .collect();
            seen.sort();
            let mut want: Vec<(usize, usize, usize)> = (0..batch)
                .flat_map(|b| (0..heads).map(move |h| (b, h)))
                .map(|(b, h)| (b * 5 * hd + h * 4, b * 7 * hd + h * 4, (b * heads + h) * pp))
                .collect();
            want.sort();
            assert_eq!(seen, want, "batch {batch}, heads {heads}");
        }
    }
}
