//! Conformance of [`OptimOps`]: Adam over several steps (with and without weight decay) and the
//! EMA update, against the documented formulas in f64. The parameter is compared through its
//! change (`p_new - p_old`), which is what the update computes. The multi-tensor ops
//! (`adam_step_many`, `ema_update_many`) must give the bits of the single-tensor ops.

use super::common::{assert_close, download, normal_vec, to_f64, upload};
use super::tensor::DenseTolerance;
use crate::TestRng;
use gpstoken_core::backend::{AdamConfig, AdamTensor, EmaTensor, OptimOps, TensorOps};

/// The change of an f32 value carries the rounding of the new value (half an ulp, at most
/// `2^-24 |new|`): that bound relative to the largest reference change, added to the tolerance.
fn rounding_allowance(new_values: &[f32], reference_change: &[f64]) -> f64 {
    let largest = crate::nan_max(new_values.iter().map(|v| f64::from(v.abs())));
    let scale = crate::nan_max(reference_change.iter().map(|v| v.abs()));
    largest * 2f64.powi(-24) / scale
}

/// One Adam step in f64 (`torch.optim.Adam`, L2 weight decay): updates `p`, `m`, `v`.
pub fn adam_f64(c: &AdamConfig, step: u32, p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]) {
    let (b1, b2) = (f64::from(c.beta1), f64::from(c.beta2));
    let (lr, eps, wd) = (f64::from(c.lr), f64::from(c.eps), f64::from(c.weight_decay));
    let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
    for i in 0..p.len() {
        let g = g[i] + wd * p[i];
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        p[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + eps);
    }
}

/// Three Adam steps with fresh gradients, from a nonzero state.
pub fn adam_matches_reference<B: OptimOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x0a11_0001);
    let name = backend.name();
    let n = 40_000;
    for config in
        [AdamConfig::official(0.05), AdamConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 }]
    {
        let p0 = normal_vec(&mut rng, n, 1.0);
        let mut p = upload(backend, &p0);
        let mut m = upload(backend, &vec![0.0; n]);
        let mut v = upload(backend, &vec![0.0; n]);
        let (mut p64, mut m64, mut v64) = (to_f64(&p0), vec![0.0; n], vec![0.0; n]);
        for step in 1..=3 {
            let g = normal_vec(&mut rng, n, 1.0);
            let before = download(backend, &p);
            backend.adam_step(&config, step, &mut p, &upload(backend, &g), &mut m, &mut v).unwrap();
            // The reference starts each step from the backend's state (errors do not compound).
            let mut p_ref = to_f64(&before);
            let (mut m_ref, mut v_ref) = (m64.clone(), v64.clone());
            adam_f64(&config, step, &mut p_ref, &to_f64(&g), &mut m_ref, &mut v_ref);
            let after = download(backend, &p);
            let delta: Vec<f32> =
                after.iter().zip(&before).map(|(a, b)| (f64::from(*a) - f64::from(*b)) as f32).collect();
            let want: Vec<f64> = p_ref.iter().zip(&before).map(|(a, b)| a - f64::from(*b)).collect();
            let what = format!("{name} adam {config:?} step {step}");
            assert_close(&format!("{what} update"), &delta, &want, tol.forward + rounding_allowance(&after, &want));
            assert_close(&format!("{what} m"), &download(backend, &m), &m_ref, tol.forward);
            assert_close(&format!("{what} v"), &download(backend, &v), &v_ref, tol.forward);
            m64 = to_f64(&download(backend, &m));
            v64 = to_f64(&download(backend, &v));
            p64 = to_f64(&after);
        }
        assert!(p64.iter().all(|v| v.is_finite()));
    }
}

/// `ema += (1 - decay)(param - ema)`.
pub fn ema_matches_reference<B: OptimOps>(backend: &B, tol: DenseTolerance) {
    let mut rng = TestRng::new(0x0a11_0002);
    let n = 30_001;
    for decay in [0.9f32, 0.3, 0.9999] {
        let e = normal_vec(&mut rng, n, 1.0);
        let p = normal_vec(&mut rng, n, 1.0);
        let mut eb = upload(backend, &e);
        backend.ema_update(decay, &mut eb, &upload(backend, &p)).unwrap();
        let got: Vec<f32> = download(backend, &eb).iter().zip(&e).map(|(a, b)| a - b).collect();
        let want: Vec<f64> =
            e.iter().zip(&p).map(|(&e, &p)| (1.0 - f64::from(decay)) * (f64::from(p) - f64::from(e))).collect();
        let tol = tol.forward + rounding_allowance(&download(backend, &eb), &want);
        assert_close(&format!("{} ema decay {decay} change", backend.name()), &got, &want, tol);
    }
}

/// Mismatched lengths and step 0 are errors.
pub fn optim_rejects_bad_shapes<B: OptimOps>(backend: &B) {
    let c = AdamConfig::official(1e-3);
    let (mut p, g, mut m, mut v) = (
        upload(backend, &[0.0; 4]),
        upload(backend, &[0.0; 4]),
        upload(backend, &[0.0; 4]),
        upload(backend, &[0.0; 4]),
    );
    assert!(backend.adam_step(&c, 1, &mut p, &g, &mut m, &mut v).is_ok());
    assert!(backend.adam_step(&c, 0, &mut p, &g, &mut m, &mut v).is_err(), "step 0");
    assert!(backend.adam_step(&c, 1, &mut p, &upload(backend, &[0.0; 3]), &mut m, &mut v).is_err(), "grad");
    assert!(backend.adam_step(&c, 1, &mut p, &g, &mut upload(backend, &[0.0; 5]), &mut v).is_err(), "m");
    assert!(backend.adam_step(&c, 1, &mut p, &g, &mut m, &mut upload(backend, &[0.0; 3])).is_err(), "v");
    assert!(backend.ema_update(0.9, &mut p, &upload(backend, &[0.0; 3])).is_err(), "ema");
}

/// Tensor lengths of the multi-tensor checks: single values, odd sizes, an empty tensor and one
/// spanning several of the CPU backend's 16384-value chunks, so pieces of one chunk belong to
/// different tensors.
const MANY_LENGTHS: [usize; 6] = [1, 3, 1000, 0, 70_001, 17];

/// The fused Adam's view of the tensors `i`: `params[i]`, `grads[i]`, `ms[i]`, `vs[i]`.
pub(crate) fn adam_tensors<'a, Buf>(
    params: &'a mut [Buf],
    grads: &'a [Buf],
    ms: &'a mut [Buf],
    vs: &'a mut [Buf],
) -> Vec<AdamTensor<'a, Buf>> {
    params
        .iter_mut()
        .zip(grads)
        .zip(ms.iter_mut().zip(vs.iter_mut()))
        .map(|((param, grad), (m, v))| AdamTensor { param, grad, m, v })
        .collect()
}

/// The values of every buffer of `buffers`, as bits (`to_bits`: NaN payloads and signed zeros
/// count).
fn bits_of<B: OptimOps>(backend: &B, buffers: &[B::Buffer]) -> Vec<Vec<u32>> {
    buffers.iter().map(|b| download(backend, b).iter().map(|v| v.to_bits()).collect()).collect()
}

fn assert_same_bits(what: &str, fused: &[Vec<u32>], single: &[Vec<u32>]) {
    for (tensor, (f, s)) in fused.iter().zip(single).enumerate() {
        let first = f.iter().zip(s).position(|(a, b)| a != b);
        assert!(first.is_none() && f.len() == s.len(), "{what}: tensor {tensor} differs at value {first:?}");
    }
}

/// Three steps of `adam_step_many` over tensors of [`MANY_LENGTHS`] give, bit for bit, what
/// `adam_step` gives on each tensor in turn (from a nonzero state, fresh gradients each step).
pub fn adam_step_many_matches_single_steps<B: OptimOps>(backend: &B) {
    let mut rng = TestRng::new(0x0a11_0003);
    let name = backend.name();
    for config in
        [AdamConfig::official(0.05), AdamConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 }]
    {
        let host = |rng: &mut TestRng, positive: bool| -> Vec<Vec<f32>> {
            let values = MANY_LENGTHS.iter().map(|&n| normal_vec(rng, n, 1.0));
            values.map(|v| if positive { v.iter().map(|x| x.abs()).collect() } else { v }).collect()
        };
        let (p0, m0, v0) = (host(&mut rng, false), host(&mut rng, false), host(&mut rng, true));
        let uploads = |values: &[Vec<f32>]| -> Vec<B::Buffer> { values.iter().map(|v| upload(backend, v)).collect() };
        let (mut p_one, mut m_one, mut v_one) = (uploads(&p0), uploads(&m0), uploads(&v0));
        let (mut p_many, mut m_many, mut v_many) = (uploads(&p0), uploads(&m0), uploads(&v0));
        for step in 1..=3 {
            let grads = uploads(&host(&mut rng, false));
            for (i, g) in grads.iter().enumerate() {
                backend.adam_step(&config, step, &mut p_one[i], g, &mut m_one[i], &mut v_one[i]).unwrap();
            }
            let mut tensors = adam_tensors(&mut p_many, &grads, &mut m_many, &mut v_many);
            backend.adam_step_many(&config, step, &mut tensors).unwrap();
            let what = format!("{name} adam_step_many {config:?} step {step}");
            assert_same_bits(&format!("{what} param"), &bits_of(backend, &p_many), &bits_of(backend, &p_one));
            assert_same_bits(&format!("{what} m"), &bits_of(backend, &m_many), &bits_of(backend, &m_one));
            assert_same_bits(&format!("{what} v"), &bits_of(backend, &v_many), &bits_of(backend, &v_one));
        }
        let moved = download(backend, &p_many[4]).iter().zip(&p0[4]).filter(|(a, b)| a != b).count();
        assert!(moved > MANY_LENGTHS[4] / 2, "{name}: adam_step_many left the parameters where they were");
    }
}

/// `ema_update_many` over tensors of [`MANY_LENGTHS`] gives, bit for bit, what `ema_update`
/// gives on each tensor in turn, for decays on both sides of PyTorch's lerp switch (weight 0.5).
pub fn ema_update_many_matches_single_updates<B: OptimOps>(backend: &B) {
    let mut rng = TestRng::new(0x0a11_0004);
    let name = backend.name();
    let host = |rng: &mut TestRng| -> Vec<Vec<f32>> { MANY_LENGTHS.iter().map(|&n| normal_vec(rng, n, 1.0)).collect() };
    let uploads = |values: &[Vec<f32>]| -> Vec<B::Buffer> { values.iter().map(|v| upload(backend, v)).collect() };
    let e0 = host(&mut rng);
    let (mut e_one, mut e_many) = (uploads(&e0), uploads(&e0));
    for decay in [0.9f32, 0.3, 0.9999] {
        let params = uploads(&host(&mut rng));
        for (e, p) in e_one.iter_mut().zip(&params) {
            backend.ema_update(decay, e, p).unwrap();
        }
        let mut tensors: Vec<EmaTensor<'_, B::Buffer>> =
            e_many.iter_mut().zip(&params).map(|(ema, param)| EmaTensor { ema, param }).collect();
        backend.ema_update_many(decay, &mut tensors).unwrap();
        let what = format!("{name} ema_update_many decay {decay}");
        assert_same_bits(&what, &bits_of(backend, &e_many), &bits_of(backend, &e_one));
    }
    let moved = download(backend, &e_many[4]).iter().zip(&e0[4]).filter(|(a, b)| a != b).count();
    assert!(moved > MANY_LENGTHS[4] / 2, "{name}: ema_update_many left the averages where they were");
}

/// A model's worth of tensors (300, of 1 to 64 values: more than the Vulkan backend records
/// per submission) after 200 unrelated ops, so the group starts late in a batch: the
/// multi-tensor ops still give the bits of the single-tensor ones.
pub fn optim_many_over_hundreds_of_tensors<B: OptimOps + TensorOps>(backend: &B) {
    let mut rng = TestRng::new(0x0a11_0005);
    let name = backend.name();
    let lengths: Vec<usize> = (0..300).map(|i| 1 + (i * 37) % 64).collect();
    let host = |rng: &mut TestRng| -> Vec<Vec<f32>> { lengths.iter().map(|&n| normal_vec(rng, n, 1.0)).collect() };
    let uploads = |values: &[Vec<f32>]| -> Vec<B::Buffer> { values.iter().map(|v| upload(backend, v)).collect() };
    let (p0, grads, e0) = (host(&mut rng), uploads(&host(&mut rng)), host(&mut rng));
    let (mut p_one, mut p_many) = (uploads(&p0), uploads(&p0));
    let zeros = || -> Vec<B::Buffer> { lengths.iter().map(|&n| backend.zeros(n).unwrap()).collect() };
    let (mut m_one, mut v_one, mut m_many, mut v_many) = (zeros(), zeros(), zeros(), zeros());
    let (mut e_one, mut e_many) = (uploads(&e0), uploads(&e0));
    let config = AdamConfig::official(0.01);
    let mut busy = upload(backend, &[1.0; 64]);
    for step in 1..=2 {
        for _ in 0..200 {
            backend.scale(&mut busy, 0.5).unwrap();
        }
        let mut tensors = adam_tensors(&mut p_many, &grads, &mut m_many, &mut v_many);
        backend.adam_step_many(&config, step, &mut tensors).unwrap();
        let mut tensors: Vec<EmaTensor<'_, B::Buffer>> =
            e_many.iter_mut().zip(&p_many).map(|(ema, param)| EmaTensor { ema, param }).collect();
        backend.ema_update_many(0.9, &mut tensors).unwrap();
        for i in 0..lengths.len() {
            backend.adam_step(&config, step, &mut p_one[i], &grads[i], &mut m_one[i], &mut v_one[i]).unwrap();
            backend.ema_update(0.9, &mut e_one[i], &p_one[i]).unwrap();
        }
    }
    assert_same_bits(&format!("{name} adam_step_many param"), &bits_of(backend, &p_many), &bits_of(backend, &p_one));
    assert_same_bits(&format!("{name} adam_step_many v"), &bits_of(backend, &v_many), &bits_of(backend, &v_one));
    assert_same_bits(&format!("{name} ema_update_many"), &bits_of(backend, &e_many), &bits_of(backend, &e_one));
    assert_ne!(bits_of(backend, &p_many), bits_of(backend, &uploads(&p0)), "{name}: no parameter moved");
}

/// `items[i]` for each `i` of `order` (each at most once), mutably.
fn pick<'a, T>(items: &'a mut [T], order: &[usize]) -> Vec<&'a mut T> {
    let mut slots: Vec<Option<&mut T>> = items.iter_mut().map(Some).collect();
    order.iter().map(|&i| slots[i].take().expect("a tensor listed twice")).collect()
}

/// The multi-tensor ops on the tensors of one call after another: the same tensors again, in
/// reverse order, a subset, the same parameters with other gradients, the first set again. A
/// backend may keep a call's tensor table for the calls after it (the CUDA backend does); each
/// call must still update exactly its own tensors from its own buffers, bit for bit as the
/// single-tensor ops.
pub fn optim_many_follow_the_tensors_of_each_call<B: OptimOps>(backend: &B) {
    let mut rng = TestRng::new(0x0a11_0006);
    let name = backend.name();
    let host = |rng: &mut TestRng| -> Vec<Vec<f32>> { MANY_LENGTHS.iter().map(|&n| normal_vec(rng, n, 1.0)).collect() };
    let uploads = |values: &[Vec<f32>]| -> Vec<B::Buffer> { values.iter().map(|v| upload(backend, v)).collect() };
    let (p0, e0) = (host(&mut rng), host(&mut rng));
    let grad_sets = [uploads(&host(&mut rng)), uploads(&host(&mut rng))];
    let (mut p_one, mut p_many) = (uploads(&p0), uploads(&p0));
    let zeros = || -> Vec<B::Buffer> { MANY_LENGTHS.iter().map(|&n| backend.zeros(n).unwrap()).collect() };
    let (mut m_one, mut v_one, mut m_many, mut v_many) = (zeros(), zeros(), zeros(), zeros());
    let (mut e_one, mut e_many) = (uploads(&e0), uploads(&e0));
    let config = AdamConfig::official(0.01);
    let all: Vec<usize> = (0..MANY_LENGTHS.len()).collect();
    let reversed: Vec<usize> = all.iter().rev().copied().collect();
    let subset = vec![4, 1, 2];
    // (tensors, gradient set) of each call.
    let calls = [(&all, 0), (&all, 0), (&reversed, 0), (&subset, 0), (&all, 1), (&all, 0)];
    for (call, &(order, g)) in calls.iter().enumerate() {
        let (step, grads) = (call as u32 + 1, &grad_sets[g]);
        for &i in order.iter() {
            backend.adam_step(&config, step, &mut p_one[i], &grads[i], &mut m_one[i], &mut v_one[i]).unwrap();
            backend.ema_update(0.9, &mut e_one[i], &p_one[i]).unwrap();
        }
        let (params, ms, vs) = (pick(&mut p_many, order), pick(&mut m_many, order), pick(&mut v_many, order));
        let mut tensors: Vec<AdamTensor<'_, B::Buffer>> = order
            .iter()
            .zip(params.into_iter().zip(ms).zip(vs))
            .map(|(&i, ((param, m), v))| AdamTensor { param, grad: &grads[i], m, v })
            .collect();
        backend.adam_step_many(&config, step, &mut tensors).unwrap();
        drop(tensors);
        let mut tensors: Vec<EmaTensor<'_, B::Buffer>> =
            order.iter().zip(pick(&mut e_many, order)).map(|(&i, ema)| EmaTensor { ema, param: &p_many[i] }).collect();
        backend.ema_update_many(0.9, &mut tensors).unwrap();
        drop(tensors);
        let what = format!("{name} call {call}: tensors {order:?}, gradients {g}");
        assert_same_bits(&format!("{what} param"), &bits_of(backend, &p_many), &bits_of(backend, &p_one));
        assert_same_bits(&format!("{what} m"), &bits_of(backend, &m_many), &bits_of(backend, &m_one));
        assert_same_bits(&format!("{what} v"), &bits_of(backend, &v_many), &bits_of(backend, &v_one));
        assert_same_bits(&format!("{what} ema"), &bits_of(backend, &e_many), &bits_of(backend, &e_one));
    }
    let moved = download(backend, &p_many[0]).iter().zip(&p0[0]).filter(|(a, b)| a != b).count();
    assert_eq!(moved, MANY_LENGTHS[0], "{name}: adam_step_many left tensor 0 where it was");
}

/// The multi-tensor ops: step 0 and a length mismatch in any tensor are errors naming that
/// tensor, and nothing is updated then; an empty list is a no-op.
pub fn optim_many_rejects_bad_shapes<B: OptimOps>(backend: &B) {
    let c = AdamConfig::official(1e-3);
    let ones = |n: usize| upload(backend, &vec![1.0; n]);
    let mut params = [ones(4), ones(2), ones(3)];
    let grads = [ones(4), ones(2), ones(3)];
    let mut ms = [ones(4), ones(2), ones(3)];
    let mut vs = [ones(4), ones(2), ones(5)];
    let mut tensors = adam_tensors(&mut params, &grads, &mut ms, &mut vs);
    let err = backend.adam_step_many(&c, 1, &mut tensors).expect_err("tensor 2's second moment").to_string();
    assert!(err.contains("tensor 2") && err.contains("second moment"), "{err}");
    tensors.pop();
    let err = backend.adam_step_many(&c, 0, &mut tensors).expect_err("step 0").to_string();
    assert!(err.contains("1-based"), "{err}");
    assert!(backend.adam_step_many(&c, 1, &mut []).is_ok(), "no tensors");
    drop(tensors);
    for (i, p) in params.iter().enumerate() {
        assert!(download(backend, p).iter().all(|&v| v == 1.0), "tensor {i} updated by a rejected step");
    }

    let mut emas = [ones(4), ones(3)];
    let ema_params = [upload(backend, &[0.0; 4]), upload(backend, &[0.0; 2])];
    let mut tensors: Vec<EmaTensor<'_, B::Buffer>> =
        emas.iter_mut().zip(&ema_params).map(|(ema, param)| EmaTensor { ema, param }).collect();
    let err = backend.ema_update_many(0.5, &mut tensors).expect_err("tensor 1's parameters").to_string();
    assert!(err.contains("tensor 1"), "{err}");
    assert!(backend.ema_update_many(0.5, &mut []).is_ok(), "no tensors");
    drop(tensors);
    assert!(download(backend, &emas[0]).iter().all(|&v| v == 1.0), "tensor 0 updated by a rejected update");
}
