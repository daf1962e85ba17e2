//! Conformance suite of [`AttentionOps`]: multi-head scaled dot-product attention, written once
//! for every backend.
//!
//! The forward (output and saved probabilities) is compared with a plain f64 reference written
//! here, and `dq`, `dk`, `dv` with central finite differences of the f64 loss
//! `L = Σ dout · out`, on fresh random inputs: one and eight heads, `Lq != Lk`, and shapes that
//! cross the CPU backend's 64-row blocks. Errors are [`max_rel_error`] per tensor.

use super::common::{assert_close, download, to_f64};
use crate::TestRng;
use gpstoken_core::backend::{AttentionDesc, AttentionOps};

/// How close a backend must be to the f64 references.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Output and probabilities vs the f64 reference, `max_rel_error` per tensor.
    pub forward: f64,
    /// `dq`, `dk`, `dv` vs central finite differences, per tensor.
    pub finite_difference: f64,
}

const STEP: f64 = 1e-5;

/// Attention in f64: `(out [B, Lq, H*D], probs [B, H, Lq, Lk])`.
pub fn attention_reference(desc: &AttentionDesc, q: &[f64], k: &[f64], v: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (heads, lq, lk, d) = (desc.heads, desc.seq_q, desc.seq_k, desc.head_dim);
    let hd = heads * d;
    let scale = f64::from(desc.scale);
    let mut out = vec![0.0; desc.q_len()];
    let mut probs = vec![0.0; desc.probs_len()];
    for b in 0..desc.batch {
        for h in 0..heads {
            for i in 0..lq {
                let qi = &q[(b * lq + i) * hd + h * d..][..d];
                let logits: Vec<f64> = (0..lk)
                    .map(|j| {
                        scale * qi.iter().zip(&k[(b * lk + j) * hd + h * d..][..d]).map(|(a, c)| a * c).sum::<f64>()
                    })
                    .collect();
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                let p = &mut probs[((b * heads + h) * lq + i) * lk..][..lk];
                for (pj, e) in p.iter_mut().zip(&exps) {
                    *pj = e / sum;
                }
                let o = &mut out[(b * lq + i) * hd + h * d..][..d];
                for (j, &pj) in p.iter().enumerate() {
                    for (oc, vc) in o.iter_mut().zip(&v[(b * lk + j) * hd + h * d..][..d]) {
                        *oc += pj * vc;
                    }
                }
            }
        }
    }
    (out, probs)
}

/// One random attention problem.
#[derive(Clone, Debug)]
pub struct AttentionCase {
    pub desc: AttentionDesc,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub dout: Vec<f32>,
}

/// Random inputs; `q` and `k` scaled so that the logits spread over a few units.
pub fn attention_case(rng: &mut TestRng, desc: AttentionDesc) -> AttentionCase {
    let mut normals =
        |len: usize, scale: f64| -> Vec<f32> { (0..len).map(|_| (scale * rng.normal()) as f32).collect() };
    let logit_scale = f64::from(desc.scale) * (desc.head_dim as f64).sqrt();
    let qk_scale = (1.5 / logit_scale.max(1e-6)).sqrt();
    let q = normals(desc.q_len(), qk_scale);
    let k = normals(desc.kv_len(), qk_scale);
    let v = normals(desc.kv_len(), 1.0);
    let dout = normals(desc.q_len(), 1.0);
    AttentionCase { desc, q, k, v, dout }
}

/// `scale = 1/sqrt(head_dim)` descriptor.
pub fn attention_desc(batch: usize, heads: usize, seq_q: usize, seq_k: usize, head_dim: usize) -> AttentionDesc {
    AttentionDesc { batch, heads, seq_q, seq_k, head_dim, scale: 1.0 / (head_dim as f32).sqrt() }
}

/// The backend's `(out, probs, dq, dk, dv)` (outputs start as NaN garbage).
pub fn attention_outputs<B: AttentionOps>(backend: &B, case: &AttentionCase) -> [Vec<f32>; 5] {
    let d = &case.desc;
    let up = |h: &[f32]| backend.upload(h).expect("upload");
    let garbage = |len: usize| backend.upload(&vec![f32::NAN; len]).expect("upload");
    let (q, k, v, dout) = (up(&case.q), up(&case.k), up(&case.v), up(&case.dout));
    let (mut out, mut probs) = (garbage(d.q_len()), garbage(d.probs_len()));
    backend.attention_forward(d, &q, &k, &v, &mut out, &mut probs).expect("attention_forward");
    let (mut dq, mut dk, mut dv) = (garbage(d.q_len()), garbage(d.kv_len()), garbage(d.kv_len()));
    backend.attention_backward(d, &q, &k, &v, &probs, &dout, &mut dq, &mut dk, &mut dv).expect("attention_backward");
    [out, probs, dq, dk, dv].map(|b| download(backend, &b))
}

/// Central finite differences of `L = Σ dout · out` w.r.t. every `stride`-th entry of `which`
/// (0: q, 1: k, 2: v); returns (indices, derivatives).
fn attention_fd(case: &AttentionCase, which: usize, stride: usize) -> (Vec<usize>, Vec<f64>) {
    let mut inputs = [to_f64(&case.q), to_f64(&case.k), to_f64(&case.v)];
    let dout = to_f64(&case.dout);
    let loss = |inputs: &[Vec<f64>; 3]| -> f64 {
        let (out, _) = attention_reference(&case.desc, &inputs[0], &inputs[1], &inputs[2]);
        out.iter().zip(&dout).map(|(a, b)| a * b).sum()
    };
    let indices: Vec<usize> = (0..inputs[which].len()).step_by(stride).collect();
    let fd = indices
        .iter()
        .map(|&i| {
            let base = inputs[which][i];
            inputs[which][i] = base + STEP;
            let plus = loss(&inputs);
            inputs[which][i] = base - STEP;
            let minus = loss(&inputs);
            inputs[which][i] = base;
            (plus - minus) / (2.0 * STEP)
        })
        .collect();
    (indices, fd)
}

/// The shapes of the suite, with the finite-difference stride for each (1 = every entry).
pub fn attention_descs() -> Vec<(AttentionDesc, usize)> {
    vec![
        (attention_desc(2, 1, 6, 9, 5), 1),
        (attention_desc(2, 8, 5, 3, 4), 1),
        (attention_desc(1, 8, 16, 16, 8), 1),
        (attention_desc(1, 2, 70, 67, 8), 5),
        (attention_desc(1, 1, 1, 1, 3), 1),
    ]
}

/// Forward (output, probabilities) vs the f64 reference and `dq`, `dk`, `dv` vs finite
/// differences.
pub fn attention_matches_reference<B: AttentionOps>(backend: &B, tol: Tolerance) {
    let mut rng = TestRng::new(0xa77e_0001);
    for (desc, stride) in attention_descs() {
        let case = attention_case(&mut rng, desc);
        let [out, probs, dq, dk, dv] = attention_outputs(backend, &case);
        let label = format!(
            "{} attention B={} H={} Lq={} Lk={} D={}",
            backend.name(),
            desc.batch,
            desc.heads,
            desc.seq_q,
            desc.seq_k,
            desc.head_dim
        );
        let (ref_out, ref_probs) = attention_reference(&desc, &to_f64(&case.q), &to_f64(&case.k), &to_f64(&case.v));
        assert_close(&format!("{label} out"), &out, &ref_out, tol.forward);
        assert_close(&format!("{label} probs"), &probs, &ref_probs, tol.forward);
        for (which, (name, grad)) in [("dq", &dq), ("dk", &dk), ("dv", &dv)].into_iter().enumerate() {
            let (indices, fd) = attention_fd(&case, which, stride);
            let ours: Vec<f32> = indices.iter().map(|&i| grad[i]).collect();
            if desc.seq_k == 1 && which < 2 {
                // One key: the softmax is constant, dq = dk = 0 exactly.
                assert!(ours.iter().all(|&g| g.abs() <= 1e-6), "{label} {name}: want zeros, got {ours:?}");
                continue;
            }
            assert_close(&format!("{label} {name} vs finite differences"), &ours, &fd, tol.finite_difference);
        }
    }
}

/// Every attention op returns an error (never panics) for buffers that do not fit.
pub fn attention_rejects_bad_shapes<B: AttentionOps>(backend: &B) {
    let z = |len: usize| backend.zeros(len).expect("zeros");
    let d = attention_desc(2, 2, 3, 4, 5);
    let (ql, kl, pl) = (d.q_len(), d.kv_len(), d.probs_len());
    let fwd = |d: &AttentionDesc, q: usize, k: usize, v: usize, o: usize, p: usize| {
        backend.attention_forward(d, &z(q), &z(k), &z(v), &mut z(o), &mut z(p)).is_err()
    };
    assert!(!fwd(&d, ql, kl, kl, ql, pl), "well-shaped attention_forward");
    assert!(fwd(&d, ql - 1, kl, kl, ql, pl), "short q");
    assert!(fwd(&d, ql, kl + 1, kl, ql, pl), "long k");
    assert!(fwd(&d, ql, kl, kl - 1, ql, pl), "short v");
    assert!(fwd(&d, ql, kl, kl, ql + 1, pl), "long out");
    assert!(fwd(&d, ql, kl, kl, ql, pl - 1), "short probs");
    let no_keys = AttentionDesc { seq_k: 0, ..d };
    assert!(fwd(&no_keys, ql, 0, 0, ql, 0), "queries without keys");
    let bwd = |q: usize, k: usize, v: usize, p: usize, o: usize, dq: usize, dk: usize, dv: usize| {
        backend.attention_backward(&d, &z(q), &z(k), &z(v), &z(p), &z(o), &mut z(dq), &mut z(dk), &mut z(dv)).is_err()
    };
    assert!(!bwd(ql, kl, kl, pl, ql, ql, kl, kl), "well-shaped attention_backward");
    assert!(bwd(ql + 1, kl, kl, pl, ql, ql, kl, kl), "long q");
    assert!(bwd(ql, kl - 1, kl, pl, ql, ql, kl, kl), "short k");
    assert!(bwd(ql, kl, kl + 1, pl, ql, ql, kl, kl), "long v");
    assert!(bwd(ql, kl, kl, pl + 1, ql, ql, kl, kl), "long probs");
    assert!(bwd(ql, kl, kl, pl, ql - 1, ql, kl, kl), "short dout");
    assert!(bwd(ql, kl, kl, pl, ql, ql - 1, kl, kl), "short dq");
    assert!(bwd(ql, kl, kl, pl, ql, ql, kl + 1, kl), "long dk");
    assert!(bwd(ql, kl, kl, pl, ql, ql, kl, kl - 1), "short dv");
}

/// Every output on shapes large enough to spread over several threads (several 64-row and
/// 64-key blocks, 1 and 8 heads), for comparing backends or thread counts bit for bit.
pub fn attention_determinism_outputs<B: AttentionOps>(backend: &B) -> Vec<(String, Vec<f32>)> {
    let mut rng = TestRng::new(0xa77e_0002);
    let mut outputs = Vec::new();
    for desc in [attention_desc(2, 1, 300, 200, 32), attention_desc(2, 8, 130, 130, 64)] {
        let case = attention_case(&mut rng, desc);
        for (name, v) in ["out", "probs", "dq", "dk", "dv"].iter().zip(attention_outputs(backend, &case)) {
            outputs.push((format!("attention H={} Lq={} Lk={} {name}", desc.heads, desc.seq_q, desc.seq_k), v));
        }
    }
    outputs
}
