//! The backend conformance suite, written once, generic over the backend: one module per op
//! family (the same names as `core/src/backend/` and each backend's kernel files), the
//! cross-backend check ([`cross`]) and the golden parity tests ([`crate::golden`]).
//!
//! Each family checks, on fresh random inputs: the forward against a reference (the core's
//! slice functions or a plain f64 implementation here), the backward against finite differences
//! of that reference, and that bad shapes are errors. [`cross`] then compares every op with the
//! reference CPU backend. A backend crate instantiates all of it with one line,
//! [`conformance_suite!`](crate::conformance_suite), which makes every check its own `#[test]`;
//! its [`Tolerances`] are stated once, there.

pub mod attention;
pub(crate) mod common;
pub mod conv;
pub mod cross;
pub mod gaussian;
pub mod linear;
pub mod loss;
pub mod model;
pub mod norm;
pub mod optim;
pub mod roi;
pub mod splat;
pub mod tensor;

pub use tensor::DenseTolerance;

/// Everything a backend states about its accuracy, in one place (the argument of
/// [`conformance_suite!`](crate::conformance_suite)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    /// Tensor, linear, conv, loss, optimiser and Gaussian ops vs their f64 references.
    pub dense: DenseTolerance,
    pub norm: norm::Tolerance,
    pub attention: attention::Tolerance,
    pub roi: roi::Tolerance,
    pub splat: splat::Tolerance,
    /// Scale of the per-op tolerances of the cross-backend check ([`cross`]); 0 demands the
    /// reference CPU backend's exact bits.
    pub cross: f64,
}

impl Tolerances {
    /// The CPU backend: f32 kernels with f64 reductions and statistics where an op sums many
    /// terms (dense 1e-5; norms 1e-6; attention's sgemm 2e-6; RoIAlign in torchvision's f32
    /// arithmetic 2e-6); the splat forward gives the core reference's bits, its f32-lane backward
    /// (f64 totals every 8 rows) is within 2e-6 of the core's f64 reference and agrees with f64
    /// finite differences to about f32 round-off; every op gives the same bits for any thread
    /// count.
    pub const CPU: Tolerances = Tolerances {
        dense: DenseTolerance { forward: 1e-5, gradient: 1e-5 },
        norm: norm::Tolerance { forward: 1e-6, finite_difference: 1e-5 },
        attention: attention::Tolerance { forward: 2e-6, finite_difference: 2e-5 },
        roi: roi::Tolerance { forward: 2e-6, finite_difference: 2e-6 },
        splat: splat::Tolerance { forward: 0.0, backward: 2e-6, finite_difference: 1e-6 },
        cross: 0.0,
    };

    /// A starting point for f32 GPU kernels (f32 accumulation everywhere, other `exp`/`erf`, FMA
    /// contraction), in line with the golden README's bounds for an f32 port.
    pub const GPU: Tolerances = Tolerances {
        dense: DenseTolerance { forward: 5e-5, gradient: 1e-4 },
        norm: norm::Tolerance { forward: 1e-5, finite_difference: 1e-4 },
        attention: attention::Tolerance { forward: 1e-5, finite_difference: 1e-4 },
        roi: roi::Tolerance { forward: 1e-5, finite_difference: 1e-5 },
        splat: splat::Tolerance { forward: 1e-5, backward: 2e-5, finite_difference: 1e-4 },
        cross: 1.0,
    };
}

/// The backend a suite test runs on, or `None` after printing one `SKIPPED` line (a GPU
/// backend on a machine without the device).
pub fn available<B, E: std::fmt::Display>(test: &str, made: Result<B, E>) -> Option<B> {
    match made {
        Ok(backend) => Some(backend),
        Err(why) => {
            println!("SKIPPED: {why} ({test})");
            None
        }
    }
}

/// Instantiates the whole suite for one backend: every check of every family, the cross-backend
/// check of every family and the golden parity tests, each its own `#[test]` in a module named
/// `$name` (so a failure names the backend and the check).
///
/// ```ignore
/// // a backend that is always there:
/// gpstoken_tests::conformance_suite!(cpu, CpuBackend::new(), Tolerances::CPU);
/// // one that may be missing: an expression giving `Result<B, impl Display>`; on `Err` every
/// // test prints `SKIPPED: <why>` and returns.
/// gpstoken_tests::conformance_suite!(vulkan, fallible VulkanBackend::new(), Tolerances::GPU);
/// ```
///
/// The expression is evaluated once per test, in a module below the caller's (so names the
/// caller imported are in scope).
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, fallible $make:expr, $tolerances:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::__suite_tests! { ($make), $tolerances;
                // tensor
                tensor_elementwise_ops => tensor::elementwise_ops_match_reference(dense);
                tensor_broadcast_and_sum_rows => tensor::broadcast_and_sum_rows_match_reference(dense);
                tensor_activations => tensor::activations_match_reference(dense);
                tensor_layout_ops => tensor::layout_ops_match_reference(dense);
                tensor_rejects_bad_shapes => tensor::tensor_ops_reject_bad_shapes();
                tensor_adaln_ops => tensor::adaln_ops_match_reference(dense);
                tensor_adaln_rejects_bad_shapes => tensor::adaln_ops_reject_bad_shapes();
                // linear
                linear_forward => linear::linear_forward_matches_reference(dense);
                linear_gradients => linear::linear_gradients_match_finite_differences(dense);
                linear_large_gradients => linear::linear_large_gradients_match_reference(dense);
                linear_embedding => linear::embedding_matches_reference(dense);
                linear_rejects_bad_shapes => linear::linear_rejects_bad_shapes();
                // conv
                conv_forward => conv::conv2d_forward_matches_reference(dense);
                conv_gradients => conv::conv2d_gradients_match_finite_differences(dense);
                conv_large_gradients => conv::conv2d_large_gradients_match_reference(dense);
                conv_upsample => conv::upsample_matches_reference(dense);
                conv_rejects_bad_shapes => conv::conv_rejects_bad_shapes();
                // norm
                norm_group_norm => norm::group_norm_matches_reference(norm);
                norm_group_norm_constant_groups => norm::group_norm_handles_constant_groups();
                norm_layer_norm => norm::layer_norm_matches_reference(norm);
                norm_batch_norm => norm::batch_norm_matches_reference(norm);
                norm_batch_norm_constant_channels => norm::batch_norm_handles_constant_channels();
                norm_rejects_bad_shapes => norm::norm_rejects_bad_shapes();
                norm_batch_norm_rejects_bad_shapes => norm::batch_norm_rejects_bad_shapes();
                // attention
                attention_forward_and_gradients => attention::attention_matches_reference(attention);
                attention_rejects_bad_shapes => attention::attention_rejects_bad_shapes();
                // roi
                roi_forward_and_gradients => roi::roi_align_matches_reference(roi);
                roi_rejects_bad_input => roi::roi_align_rejects_bad_input();
                // splat
                splat_forward => splat::splat_forward_matches_reference(splat);
                splat_backward => splat::splat_backward_matches_reference(splat);
                splat_gradients => splat::splat_gradients_match_finite_differences(splat);
                splat_gradients_on_hard_gaussians => splat::splat_gradients_on_hard_gaussians(splat);
                splat_rejects_bad_shapes => splat::splat_rejects_bad_shapes();
                // gaussian
                gaussian_reparam_forward => gaussian::reparam_forward_matches_reference(dense);
                gaussian_reparam_gradients => gaussian::reparam_gradients_match_finite_differences(dense);
                gaussian_reparam_rejects_bad_shapes => gaussian::reparam_rejects_bad_shapes();
                gaussian_merge_forward => gaussian::merge_forward_matches_reference(dense);
                gaussian_merge_gradients => gaussian::merge_gradients_match_finite_differences(dense);
                gaussian_merge_rejects_bad_shapes => gaussian::merge_rejects_bad_shapes();
                // loss
                loss_reconstruction => loss::losses_match_reference(dense);
                loss_adversarial => loss::adversarial_losses_match_reference(dense);
                loss_buffers => loss::loss_buffers_hold_the_host_value(dense);
                loss_rejects_bad_shapes => loss::losses_reject_bad_shapes();
                // optim
                optim_adam => optim::adam_matches_reference(dense);
                optim_ema => optim::ema_matches_reference(dense);
                optim_rejects_bad_shapes => optim::optim_rejects_bad_shapes();
                optim_adam_many => optim::adam_step_many_matches_single_steps();
                optim_ema_many => optim::ema_update_many_matches_single_updates();
                optim_many_rejects_bad_shapes => optim::optim_many_rejects_bad_shapes();
                optim_many_over_hundreds_of_tensors => optim::optim_many_over_hundreds_of_tensors();
                optim_many_follow_the_tensors_of_each_call => optim::optim_many_follow_the_tensors_of_each_call();
                // the whole model
                model_backward_announces_final_gradients => model::backward_announces_each_gradient_once_final();
                // every op against the reference CPU backend
                cross_tensor => cross::tensor(cross);
                cross_linear => cross::linear(cross);
                cross_conv => cross::conv(cross);
                cross_norm => cross::norm(cross);
                cross_attention => cross::attention(cross);
                cross_roi => cross::roi(cross);
                cross_splat => cross::splat(cross);
                cross_gaussian => cross::gaussian(cross);
                cross_loss => cross::loss(cross);
                cross_optim => cross::optim(cross);
            }
            $crate::__suite_tests! { ($make), $tolerances; @golden
                golden_splat => splat_matches_golden_vectors(splat);
                golden_roi_conds => roi_align_matches_golden_roi_conds();
                golden_model => golden_model_forward_and_backward();
            }
        }
    };
    ($name:ident, $make:expr, $tolerances:expr) => {
        $crate::conformance_suite!(
            $name,
            fallible::core::result::Result::<_, ::core::convert::Infallible>::Ok($make),
            $tolerances
        );
    };
}

/// One `#[test]` per `name => module::check(tolerance field)` line of [`conformance_suite!`]
/// (`@golden`: the checks live in [`crate::golden`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __suite_tests {
    (($make:expr), $tolerances:expr; $($test:ident => $module:ident :: $check:ident ($($field:ident)?);)*) => {
        $(
            #[test]
            fn $test() {
                let Some(backend) = $crate::conformance::available(stringify!($test), $make) else { return };
                let _tolerances: $crate::conformance::Tolerances = $tolerances;
                $crate::conformance::$module::$check(&backend $(, _tolerances.$field)?);
            }
        )*
    };
    (($make:expr), $tolerances:expr; @golden $($test:ident => $check:ident ($($field:ident)?);)*) => {
        $(
            #[test]
            fn $test() {
                let Some(backend) = $crate::conformance::available(stringify!($test), $make) else { return };
                let _tolerances: $crate::conformance::Tolerances = $tolerances;
                $crate::golden::$check(&backend $(, _tolerances.$field)?);
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_backend_skips_and_a_present_one_runs() {
        assert_eq!(super::available("t", Err::<u8, _>("no device")), None);
        assert_eq!(super::available("t", Ok::<u8, &str>(7)), Some(7));
    }
}
