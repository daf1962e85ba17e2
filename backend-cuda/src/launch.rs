//! The kernel registry (committed PTX, embedded), kernel arguments and launches.
//!
//! Each `kernels/<family>.cu` is compiled to `ptx/<family>.ptx` by `compile-kernels.sh` and
//! embedded here; a family's module is loaded (JIT-compiled by the driver for the device) on
//! first use, and each kernel's function handle is looked up once and kept.
//!
//! Every kernel takes `(Params p, buffers...)`: a `#[repr(C)]` struct of 4-byte fields (or of
//! such structs nested) declared with [`params!`] (mirroring the `Params` struct of its namespace
//! in the `.cu` file), then device pointers ([`Arg`]) in the order the kernel declares them.

use crate::{CudaBackend, CudaBuffer, CudaError, Engine};
use cudarc::driver::{CudaFunction, CudaModule, DeviceRepr, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::Arc;

/// Declares a kernel's parameter struct, mirrored by `struct Params` of its `.cu` namespace. A
/// field is a 4-byte scalar (`u32`, `i32`, `f32`) or another `params!` struct, mirrored by a
/// member of that struct's CUDA type (`adam_impl::Params adam;`).
macro_rules! params {
    ($(#[$meta:meta])* struct $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct $name { $($(#[$fmeta])* pub $field: $ty),* }
        // SAFETY: repr(C) whose fields are all `ParamWords` (runs of 4-byte words, alignment 4,
        // no padding inside), and the struct's size is the sum of its fields' (both asserted
        // below): no padding between or after fields either, so the bytes are the CUDA
        // struct's with the same members in the same order, nested structs included (a nested
        // C struct of 4-byte members has alignment 4 and no padding too).
        unsafe impl cudarc::driver::DeviceRepr for $name {}
        // SAFETY: as above: a run of 4-byte words with alignment 4 and no padding, so it may be
        // a field of another `params!` struct.
        unsafe impl crate::launch::ParamWords for $name {}
        const _: () = {
            assert!(std::mem::size_of::<$name>() == 0 $(+ crate::launch::param_field_bytes::<$ty>())*);
        };
    };
}
pub(crate) use params;

/// What a [`params!`] field may be: a run of 4-byte words (size a multiple of 4, alignment 4)
/// with no padding, laid out as the CUDA member it mirrors.
///
/// # Safety
/// Implement it only for 4-byte scalars and for `params!` structs (the macro does).
pub(crate) unsafe trait ParamWords {}
// SAFETY: 4-byte scalars, CUDA's `uint`, `int`, `float`.
unsafe impl ParamWords for u32 {}
// SAFETY: as above.
unsafe impl ParamWords for i32 {}
// SAFETY: as above.
unsafe impl ParamWords for f32 {}

/// The bytes of a [`params!`] field of type `T`, asserting (at compile time, where `params!`
/// calls it) that `T` is whole 4-byte words with alignment 4.
pub(crate) const fn param_field_bytes<T: ParamWords>() -> usize {
    let bytes = std::mem::size_of::<T>();
    assert!(bytes.is_multiple_of(4) && std::mem::align_of::<T>() == 4, "a params! field is whole 4-byte words");
    bytes
}

/// A family of kernels: one `.cu` source, one PTX module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    Tensor,
    Linear,
    Conv,
    Norm,
    NormGroup,
    Attention,
    Roi,
    Splat,
    SplatBins,
    Gaussian,
    Loss,
    Optim,
}

impl Family {
    /// The committed PTX (`compile-kernels.sh` writes it from `kernels/<family>.cu`).
    pub(crate) fn ptx(self) -> &'static str {
        match self {
            Family::Tensor => include_str!("../ptx/tensor.ptx"),
            Family::Linear => include_str!("../ptx/linear.ptx"),
            Family::Conv => include_str!("../ptx/conv.ptx"),
            Family::Norm => include_str!("../ptx/norm.ptx"),
            Family::NormGroup => include_str!("../ptx/norm_group.ptx"),
            Family::Attention => include_str!("../ptx/attention.ptx"),
            Family::Roi => include_str!("../ptx/roi.ptx"),
            Family::Splat => include_str!("../ptx/splat.ptx"),
            Family::SplatBins => include_str!("../ptx/splat_bins.ptx"),
            Family::Gaussian => include_str!("../ptx/gaussian.ptx"),
            Family::Loss => include_str!("../ptx/loss.ptx"),
            Family::Optim => include_str!("../ptx/optim.ptx"),
        }
    }

    #[cfg(test)]
    pub(crate) const ALL: [Family; 12] = [
        Family::Tensor,
        Family::Linear,
        Family::Conv,
        Family::Norm,
        Family::NormGroup,
        Family::Attention,
        Family::Roi,
        Family::Splat,
        Family::SplatBins,
        Family::Gaussian,
        Family::Loss,
        Family::Optim,
    ];
}

/// Every kernel the Rust code launches: variant => family, `extern "C"` name.
macro_rules! kernels {
    ($($variant:ident => $family:ident, $name:literal;)*) => {
        /// A kernel of the registry.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum Kernel { $($variant),* }

        impl Kernel {
            pub(crate) fn family(self) -> Family {
                match self { $(Kernel::$variant => Family::$family),* }
            }
            /// Its `extern "C"` name in the family's PTX.
            pub(crate) fn name(self) -> &'static str {
                match self { $(Kernel::$variant => $name),* }
            }
            #[cfg(test)]
            pub(crate) const ALL: &'static [Kernel] = &[$(Kernel::$variant),*];
        }
    };
}

kernels! {
    Unary => Tensor, "unary";
    Binary => Tensor, "binary";
    AddRowBroadcast => Tensor, "add_row_broadcast";
    ColumnSums => Tensor, "column_sums";
    Activation => Tensor, "activation";
    Transpose => Tensor, "transpose";
    CopyColumns => Tensor, "copy_columns";
    Patchify => Tensor, "patchify";
    Modulate => Tensor, "modulate";
    GatedAdd => Tensor, "gated_add";
    ScaleByVector => Tensor, "scale_by_vector";
    LossPartials => Loss, "loss_partials";
    LossFinish => Loss, "loss_finish";
    Adam => Optim, "adam";
    Ema => Optim, "ema";
    AdamMany => Optim, "adam_many";
    EmaMany => Optim, "ema_many";
    GemmWpt1 => Linear, "gemm_wpt1";
    GemmWpt4 => Linear, "gemm_wpt4";
    EmbeddingForward => Linear, "embedding_forward";
    EmbeddingBackward => Linear, "embedding_backward";
    ConvGemmForwardWpt1 => Conv, "conv_gemm_forward_wpt1";
    ConvGemmForwardWpt4 => Conv, "conv_gemm_forward_wpt4";
    ConvGemmDxWpt1 => Conv, "conv_gemm_dx_wpt1";
    ConvGemmDxWpt4 => Conv, "conv_gemm_dx_wpt4";
    ConvGemmDwWpt1 => Conv, "conv_gemm_dw_wpt1";
    ConvGemmDwWpt4 => Conv, "conv_gemm_dw_wpt4";
    RowSums => Conv, "row_sums";
    Upsample => Conv, "upsample";
    ReparamForward => Gaussian, "reparam_forward";
    ReparamBackward => Gaussian, "reparam_backward";
    MergePatches => Gaussian, "merge_patches";
    GroupNormStats => NormGroup, "group_norm_stats";
    GroupNormMaps => NormGroup, "group_norm_maps";
    GroupNormApply => NormGroup, "group_norm_apply";
    GroupNormChannelSums => NormGroup, "group_norm_channel_sums";
    GroupNormCoefficients => NormGroup, "group_norm_coefficients";
    GroupNormPixelGrads => NormGroup, "group_norm_pixel_grads";
    GroupNormTileGrads => NormGroup, "group_norm_tile_grads";
    GroupNormDx => NormGroup, "group_norm_dx";
    GroupNormAffineGrads => NormGroup, "group_norm_affine_grads";
    LayerNormForward => Norm, "layer_norm_forward";
    LayerNormBackward => Norm, "layer_norm_backward";
    BatchNormStats => Norm, "batch_norm_stats";
    BatchNormApply => Norm, "batch_norm_apply";
    BatchNormBackwardSums => Norm, "batch_norm_backward_sums";
    BatchNormDx => Norm, "batch_norm_dx";
    SoftmaxRows => Attention, "softmax_rows";
    SoftmaxBackwardRows => Attention, "softmax_backward_rows";
    RoiAlignForward => Roi, "roi_align_forward";
    RoiAlignBackward => Roi, "roi_align_backward";
    SplatFootprints => SplatBins, "splat_footprints";
    SplatTileCounts => SplatBins, "splat_tile_counts";
    SplatTileOffsets => SplatBins, "splat_tile_offsets";
    SplatTileLists => SplatBins, "splat_tile_lists";
    SplatForwardG1 => Splat, "splat_forward_g1";
    SplatForwardG2 => Splat, "splat_forward_g2";
    SplatForwardG4 => Splat, "splat_forward_g4";
    SplatForwardG8 => Splat, "splat_forward_g8";
    SplatForwardG16 => Splat, "splat_forward_g16";
    SplatForwardG32 => Splat, "splat_forward_g32";
    SplatBackwardG1 => Splat, "splat_backward_g1";
    SplatBackwardG2 => Splat, "splat_backward_g2";
    SplatBackwardG4 => Splat, "splat_backward_g4";
    SplatBackwardG8 => Splat, "splat_backward_g8";
    SplatBackwardG16 => Splat, "splat_backward_g16";
    SplatBackwardG32 => Splat, "splat_backward_g32";
}

/// A kernel argument: a device address (of a buffer, or an element inside one).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arg(pub(crate) u64);

/// The address of `buffer`'s first value. Reads and writes are not told apart: every kernel
/// runs on the backend's one stream, in launch order.
pub(crate) fn read(buffer: &CudaBuffer) -> Arg {
    Arg(buffer.address())
}
pub(crate) use read as write;
pub(crate) use read as read_write;

impl Arg {
    /// The address `values` f32 further on.
    pub(crate) fn offset(self, values: usize) -> Arg {
        Arg(self.0 + 4 * values as u64)
    }
}

/// Loaded modules and looked-up functions (with their PTX signatures).
#[derive(Default)]
pub(crate) struct KernelCache {
    modules: HashMap<Family, Arc<CudaModule>>,
    functions: HashMap<Kernel, (CudaFunction, Signature)>,
}

/// What a kernel's PTX entry declares: the byte size of its first parameter (the `Params`
/// struct) and how many parameters follow it (device pointers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Signature {
    pub params_bytes: usize,
    pub pointers: usize,
}

/// The [`Signature`] of entry `name` in `ptx`, from its `.param` lines:
/// `.param .align 4 .b8 NAME_param_0[32],` then one `.param .u64 NAME_param_i` per pointer.
pub(crate) fn signature(ptx: &str, name: &str) -> Option<Signature> {
    let start = ptx.find(&format!(".visible .entry {name}(\n"))?;
    let body = &ptx[start..];
    let end = body.find(')')?;
    let params: Vec<&str> = body[..end].lines().skip(1).map(str::trim).filter(|l| l.starts_with(".param")).collect();
    let first = params.first()?;
    let bytes = first.rsplit_once('[')?.1.split(']').next()?.parse().ok()?;
    let pointers = params[1..].iter().filter(|l| l.starts_with(".param .u64")).count();
    (pointers == params.len() - 1).then_some(Signature { params_bytes: bytes, pointers })
}

impl CudaBackend {
    fn function(
        ctx: &Arc<cudarc::driver::CudaContext>,
        kernels: &std::sync::Mutex<KernelCache>,
        kernel: Kernel,
    ) -> Result<(CudaFunction, Signature), CudaError> {
        let mut cache = kernels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = cache.functions.get(&kernel) {
            return Ok(f.clone());
        }
        let family = kernel.family();
        let module = match cache.modules.get(&family) {
            Some(m) => m.clone(),
            None => {
                let ptx = cudarc::nvrtc::Ptx::from_src(family.ptx());
                let m = ctx.load_module(ptx).map_err(|e| {
                    CudaError::Kernel(format!("loading the {family:?} PTX: {e} (see docs/CUDA.md: PTX ISA vs driver)"))
                })?;
                cache.modules.insert(family, m.clone());
                m
            }
        };
        let f = module
            .load_function(kernel.name())
            .map_err(|e| CudaError::Kernel(format!("kernel {} not in the PTX: {e}", kernel.name())))?;
        let sig = signature(family.ptx(), kernel.name())
            .ok_or_else(|| CudaError::Kernel(format!("cannot read the parameters of {} in the PTX", kernel.name())))?;
        cache.functions.insert(kernel, (f.clone(), sig));
        Ok((f, sig))
    }

    /// Launches `kernel` as `groups` blocks of `block` threads with `params` then `args`.
    pub(crate) fn launch<P: DeviceRepr>(
        &self,
        kernel: Kernel,
        block: u32,
        groups: u32,
        params: &P,
        args: &[Arg],
    ) -> Result<(), CudaError> {
        if groups == 0 {
            return Ok(());
        }
        let sig = signature(kernel.family().ptx(), kernel.name())
            .ok_or_else(|| CudaError::Kernel(format!("cannot read the parameters of {} in the PTX", kernel.name())))?;
        // The argument list must be what the kernel declares: a mismatch between a `params!`
        // struct and its CUDA twin would otherwise read garbage on the device.
        let given = Signature { params_bytes: std::mem::size_of::<P>(), pointers: args.len() };
        if given != sig {
            return Err(CudaError::Kernel(format!(
                "{} takes {} parameter bytes and {} pointers, the Rust code passes {} and {}",
                kernel.name(),
                sig.params_bytes,
                sig.pointers,
                given.params_bytes,
                given.pointers
            )));
        }
        let addresses: Vec<u64> = args.iter().map(|a| a.0).collect();
        let (ctx, stream, kernels) = match &self.engine {
            Engine::Device { ctx, stream, kernels } => (ctx, stream, kernels),
            Engine::Emulator(emulator) => return emulator.launch(kernel.name(), block, groups, params, &addresses),
        };
        let (f, _) = CudaBackend::function(ctx, kernels, kernel)?;
        let mut builder = stream.launch_builder(&f);
        builder.arg(params);
        for a in &addresses {
            builder.arg(a);
        }
        let cfg = LaunchConfig { grid_dim: (groups, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the argument list matches the kernel's signature (params struct mirrored by
        // `params!`, then one device address per pointer parameter, as the kernel declares
        // them); every address is a live allocation of this context whose length the front end
        // checked against the op's descriptor, and the kernels stay inside those lengths.
        unsafe { builder.launch(cfg) }.map_err(|e| CudaError::Kernel(format!("launching {}: {e}", kernel.name())))?;
        Ok(())
    }
}

/// A kernel argument as the family files name it (`read(x)`, `write(y)`): a device address.
pub(crate) type Binding = Arg;

#[cfg(test)]
mod tests {
    use super::{Family, Kernel};
    use std::collections::BTreeSet;

    /// The `.visible .entry` names of a PTX module.
    fn entries(ptx: &str) -> BTreeSet<&str> {
        ptx.lines()
            .filter_map(|l| l.strip_prefix(".visible .entry "))
            .map(|l| l.split('(').next().unwrap_or(l).trim())
            .collect()
    }

    #[test]
    fn every_launched_kernel_is_in_the_committed_ptx_and_every_kernel_is_launched() {
        for family in Family::ALL {
            let in_ptx = entries(family.ptx());
            let launched: BTreeSet<&str> =
                Kernel::ALL.iter().filter(|k| k.family() == family).map(|k| k.name()).collect();
            let missing: Vec<_> = launched.difference(&in_ptx).collect();
            assert!(missing.is_empty(), "{family:?}: launched but not in ptx/: {missing:?}");
            let unused: Vec<_> = in_ptx.difference(&launched).collect();
            assert!(unused.is_empty(), "{family:?}: in ptx/ but never launched: {unused:?}");
        }
    }

    #[test]
    fn every_kernel_signature_is_readable_from_the_ptx() {
        for k in Kernel::ALL {
            let sig = super::signature(k.family().ptx(), k.name()).unwrap_or_else(|| panic!("{}", k.name()));
            assert!(sig.params_bytes.is_multiple_of(4) && sig.params_bytes > 0, "{}: {sig:?}", k.name());
            assert!(sig.pointers >= 1, "{}: {sig:?}", k.name());
        }
        let adam = super::signature(Family::Optim.ptx(), "adam").unwrap();
        assert_eq!(adam, super::Signature { params_bytes: 32, pointers: 4 });
    }

    /// What each launch site passes: the `params!` struct and the number of pointers.
    fn passed(kernel: Kernel) -> (usize, usize) {
        use crate::{attention, blas, conv, gaussian, linear, loss, norm, optim, roi, splat, tensor};
        use std::mem::size_of;
        use Kernel::*;
        match kernel {
            Unary => (size_of::<tensor::UnaryParams>(), 2),
            Binary => (size_of::<tensor::BinaryParams>(), 3),
            AddRowBroadcast => (size_of::<tensor::BroadcastParams>(), 2),
            ColumnSums => (size_of::<tensor::ColumnSumParams>(), 3),
            Activation => (size_of::<tensor::ActivationParams>(), 3),
            Transpose => (size_of::<tensor::TransposeParams>(), 2),
            CopyColumns => (size_of::<tensor::CopyColumnsParams>(), 2),
            Patchify => (size_of::<tensor::PatchParams>(), 2),
            Modulate => (size_of::<tensor::TokenParams>(), 4),
            GatedAdd | ScaleByVector => (size_of::<tensor::TokenParams>(), 3),
            LossPartials => (size_of::<loss::LossParams>(), 4),
            LossFinish => (size_of::<loss::FinishParams>(), 2),
            Adam => (size_of::<optim::AdamParams>(), 4),
            Ema => (size_of::<optim::EmaParams>(), 2),
            AdamMany => (size_of::<optim::AdamManyParams>(), 1),
            EmaMany => (size_of::<optim::EmaManyParams>(), 1),
            GemmWpt1 | GemmWpt4 => (size_of::<blas::GemmParams>(), 4),
            EmbeddingForward | EmbeddingBackward => (size_of::<linear::EmbeddingParams>(), 3),
            ConvGemmForwardWpt1 | ConvGemmForwardWpt4 | ConvGemmDxWpt1 | ConvGemmDxWpt4 | ConvGemmDwWpt1
            | ConvGemmDwWpt4 => (size_of::<conv::ConvParams>(), 4),
            RowSums => (size_of::<conv::RowSumParams>(), 2),
            Upsample => (size_of::<conv::UpsampleParams>(), 2),
            ReparamForward => (size_of::<gaussian::ReparamParams>(), 4),
            ReparamBackward => (size_of::<gaussian::ReparamParams>(), 6),
            MergePatches => (size_of::<gaussian::MergeParams>(), 2),
            GroupNormStats => (size_of::<norm::group::GroupNormParams>(), 2),
            GroupNormMaps | GroupNormTileGrads => (size_of::<norm::group::GroupNormParams>(), 3),
            GroupNormApply => (size_of::<norm::group::GroupNormParams>(), 6),
            GroupNormChannelSums | GroupNormPixelGrads => (size_of::<norm::group::GroupNormParams>(), 5),
            GroupNormCoefficients | GroupNormAffineGrads => (size_of::<norm::group::GroupNormParams>(), 4),
            GroupNormDx => (size_of::<norm::group::GroupNormParams>(), 7),
            LayerNormForward => (size_of::<norm::LayerNormParams>(), 5),
            LayerNormBackward => (size_of::<norm::LayerNormParams>(), 6),
            BatchNormStats => (size_of::<norm::BatchNormParams>(), 4),
            BatchNormApply => (size_of::<norm::BatchNormParams>(), 5),
            BatchNormBackwardSums | BatchNormDx => (size_of::<norm::BatchNormParams>(), 6),
            SoftmaxRows => (size_of::<attention::RowParams>(), 1),
            SoftmaxBackwardRows => (size_of::<attention::RowParams>(), 2),
            RoiAlignForward | RoiAlignBackward => (size_of::<roi::RoiParams>(), 3),
            SplatFootprints => (size_of::<splat::FootprintParams>(), 4),
            SplatTileCounts | SplatTileOffsets => (size_of::<splat::TileParams>(), 2),
            SplatTileLists => (size_of::<splat::TileParams>(), 3),
            SplatForwardG1 | SplatForwardG2 | SplatForwardG4 | SplatForwardG8 | SplatForwardG16 | SplatForwardG32 => {
                (size_of::<splat::ForwardParams>(), 7)
            }
            SplatBackwardG1 | SplatBackwardG2 | SplatBackwardG4 | SplatBackwardG8 | SplatBackwardG16
            | SplatBackwardG32 => (size_of::<splat::BackwardParams>(), 5),
        }
    }

    /// The launch-time signature check, ahead of time: each kernel's CUDA `Params` has the size
    /// of the Rust struct its launch site passes, and it takes as many pointers as are passed
    /// (the pointer counts mirror the launch sites in `src/<family>.rs`).
    #[test]
    fn every_kernel_takes_what_its_launch_site_passes() {
        for &k in Kernel::ALL {
            let sig = super::signature(k.family().ptx(), k.name()).unwrap_or_else(|| panic!("{}", k.name()));
            let (params_bytes, pointers) = passed(k);
            assert_eq!(sig, super::Signature { params_bytes, pointers }, "{}", k.name());
        }
    }

    /// Determinism: no kernel adds floats with atomics (whose order would vary run to run); the
    /// only atomic is the integer count of `splat_tile_counts` (an order-free sum).
    #[test]
    fn the_committed_ptx_has_no_float_atomics() {
        let mut integer = 0;
        for family in Family::ALL {
            for line in family.ptx().lines().map(str::trim) {
                if line.starts_with("atom.") || line.starts_with("red.") {
                    let op = line.split_whitespace().next().unwrap_or(line);
                    assert!(!op.contains(".f"), "{family:?}: float atomic {line}");
                    integer += 1;
                }
            }
        }
        assert_eq!(integer, 1, "one integer atomic, in splat_tile_counts");
    }

    #[test]
    fn the_committed_ptx_is_nvrtc_12_4_for_sm_80() {
        for family in Family::ALL {
            let ptx = family.ptx();
            // ISA 8.4 loads on drivers of CUDA 12.4 and later (docs/CUDA.md).
            assert!(ptx.contains("\n.version 8.4\n"), "{family:?}: not PTX ISA 8.4");
            assert!(ptx.contains("\n.target sm_80\n"), "{family:?}: not compiled for sm_80");
            assert!(!ptx.contains('\0'), "{family:?}: a NUL byte (cudarc passes the PTX as a C string)");
        }
    }
}
