//! The CPU backend gives the same bits with 1 and 2 threads (and from run to run): every output
//! value is computed by one task in a fixed order, whatever the split.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{Buffers, SplatOps};
use gpstoken_core::render::SplatDesc;
use gpstoken_tests::conformance::splat::{random_case, GaussianRanges};
use gpstoken_tests::TestRng;

fn run(backend: &CpuBackend, desc: &SplatDesc, tokens: &[f32], grad_out: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let tokens = backend.upload(tokens).unwrap();
    let mut out = backend.zeros(desc.image_len()).unwrap();
    backend.splat_forward(desc, &tokens, &mut out).unwrap();
    let grad_out = backend.upload(grad_out).unwrap();
    let mut grad = backend.zeros(desc.tokens_len()).unwrap();
    backend.splat_backward(desc, &tokens, &grad_out, &mut grad).unwrap();
    (out, grad)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn one_and_two_threads_give_identical_bits() {
    let desc = SplatDesc { batch: 2, gaussians: 300, channels: 8, height: 128, width: 96, kappa: 3.0 };
    let ranges = GaussianRanges { sigma: (0.02, 0.15), ..GaussianRanges::DEFAULT };
    let case = random_case(&mut TestRng::new(42), desc, &ranges, None);
    let one = CpuBackend::with_threads(1).unwrap();
    let two = CpuBackend::with_threads(2).unwrap();
    let (out1, grad1) = run(&one, &desc, &case.tokens, &case.grad_out);
    let (out2, grad2) = run(&two, &desc, &case.tokens, &case.grad_out);
    assert!(out1.iter().filter(|&&v| v != 0.0).count() > out1.len() / 2, "most pixels are covered");
    assert!(grad1.iter().all(|v| v.is_finite()) && grad1.iter().any(|&v| v != 0.0));
    assert_eq!(bits(&out1), bits(&out2), "forward differs between 1 and 2 threads");
    assert_eq!(bits(&grad1), bits(&grad2), "backward differs between 1 and 2 threads");
    // And run to run on the same pool.
    let (out2b, grad2b) = run(&two, &desc, &case.tokens, &case.grad_out);
    assert_eq!(bits(&out2), bits(&out2b));
    assert_eq!(bits(&grad2), bits(&grad2b));
}
