//! The shader registry (committed SPIR-V, embedded) and the pipeline cache.
//!
//! Pipelines are created on first use and kept, keyed by shader and specialization constants.
//! All shaders share one push-constant range (the first 128 bytes, the minimum every device
//! has) and one descriptor set of storage buffers; there is one set layout and one pipeline
//! layout per binding count.

use crate::device::Context;
use crate::error::{VkContext, VulkanError};
use ash::vk;
use std::collections::HashMap;
use std::sync::Arc;

/// Bytes of the push-constant range every pipeline layout declares (Vulkan guarantees 128).
pub(crate) const PUSH_CONSTANT_BYTES: u32 = 128;

/// Push-constant structs: `#[repr(C)]`, every field a 4-byte scalar (so no padding), at most
/// [`PUSH_CONSTANT_BYTES`]. Declare them with [`push_constants!`], which checks this.
///
/// # Safety
/// Implement only for types whose bytes are all initialised (no padding).
pub(crate) unsafe trait PushConstants: Copy {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: per the trait contract every byte of `Self` is initialised.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u8>(), std::mem::size_of::<Self>()) }
    }
}

/// Declares a push-constant struct mirrored by a shader's `layout(push_constant)` block.
macro_rules! push_constants {
    ($(#[$meta:meta])* struct $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct $name { $($(#[$fmeta])* pub $field: $ty),* }
        // SAFETY: repr(C) with only 4-byte fields (asserted below), so there is no padding.
        unsafe impl $crate::pipeline::PushConstants for $name {}
        const _: () = {
            $(assert!(std::mem::size_of::<$ty>() == 4);)*
            assert!(std::mem::size_of::<$name>() <= $crate::pipeline::PUSH_CONSTANT_BYTES as usize);
        };
    };
}
pub(crate) use push_constants;

/// Every shader: variant, SPIR-V path under `spv/` (without `.spv`), number of bindings.
macro_rules! shaders {
    ($($variant:ident => $path:literal, $bindings:literal;)*) => {
        /// A compute shader of the registry.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum Shader { $($variant),* }

        impl Shader {
            /// The committed SPIR-V (`compile-shaders.sh` writes it from `shaders/`).
            fn spirv(self) -> &'static [u8] {
                match self { $(Shader::$variant => include_bytes!(concat!("../spv/", $path, ".spv"))),* }
            }
            /// How many storage buffers it binds (bindings 0..n of set 0).
            pub fn bindings(self) -> u32 {
                match self { $(Shader::$variant => $bindings),* }
            }
            /// Its source path under `shaders/`, for error messages.
            pub fn name(self) -> &'static str {
                match self { $(Shader::$variant => $path),* }
            }
        }
    };
}

shaders! {
    Unary => "tensor/unary", 2;
    Binary => "tensor/binary", 3;
    AddRowBroadcast => "tensor/add_row_broadcast", 2;
    ColumnSums => "tensor/column_sums", 3;
    Activation => "tensor/activation", 3;
    Transpose => "tensor/transpose", 2;
    CopyColumns => "tensor/copy_columns", 2;
    Patchify => "tensor/patchify", 2;
    Modulate => "tensor/modulate", 4;
    GatedAdd => "tensor/gated_add", 3;
    ScaleByVector => "tensor/scale_by_vector", 3;
    LossPartials => "loss/loss_partials", 4;
    LossReduce => "loss/loss_reduce", 2;
    Adam => "optim/adam", 4;
    Ema => "optim/ema", 2;
    Gemm => "linear/gemm", 4;
    EmbeddingForward => "linear/embedding_forward", 3;
    EmbeddingBackward => "linear/embedding_backward", 3;
    ConvGemm => "conv/conv_gemm", 4;
    RowSums => "conv/row_sums", 2;
    Upsample => "conv/upsample", 2;
    ReparamForward => "gaussian/reparam_forward", 4;
    ReparamBackward => "gaussian/reparam_backward", 6;
    MergePatches => "gaussian/merge_patches", 2;
    GroupNormStats => "norm/group_norm_stats", 2;
    GroupNormMaps => "norm/group_norm_maps", 3;
    GroupNormApply => "norm/group_norm_apply", 6;
    GroupNormChannelSums => "norm/group_norm_channel_sums", 5;
    GroupNormCoefficients => "norm/group_norm_coefficients", 4;
    GroupNormPixelGrads => "norm/group_norm_pixel_grads", 5;
    GroupNormTileGrads => "norm/group_norm_tile_grads", 3;
    GroupNormDx => "norm/group_norm_dx", 7;
    GroupNormAffineGrads => "norm/group_norm_affine_grads", 4;
    LayerNormForward => "norm/layer_norm_forward", 5;
    LayerNormBackward => "norm/layer_norm_backward", 6;
    BatchNormStats => "norm/batch_norm_stats", 4;
    BatchNormApply => "norm/batch_norm_apply", 5;
    BatchNormBackwardSums => "norm/batch_norm_backward_sums", 6;
    BatchNormDx => "norm/batch_norm_dx", 6;
    SplatFootprints => "splat/footprints", 4;
    SplatTileCounts => "splat/tile_counts", 2;
    SplatTileOffsets => "splat/tile_offsets", 2;
    SplatTileLists => "splat/tile_lists", 3;
    SplatForward => "splat/forward", 7;
    SplatBackward => "splat/backward", 5;
    HeadGemm => "attention/head_gemm", 3;
    SoftmaxRows => "attention/softmax_rows", 1;
    SoftmaxBackwardRows => "attention/softmax_backward_rows", 2;
    RoiAlignForward => "roi/roi_align_forward", 3;
    RoiAxisWeights => "roi/roi_axis_weights", 3;
    RoiImageBoxes => "roi/roi_image_boxes", 2;
    RoiAlignBackward => "roi/roi_align_backward", 6;
}

/// A ready pipeline and the layouts recording needs.
#[derive(Clone, Copy)]
pub(crate) struct Pipeline {
    pub pipeline: vk::Pipeline,
    pub layout: vk::PipelineLayout,
    pub set_layout: vk::DescriptorSetLayout,
}

/// Created pipelines and layouts, destroyed with the cache.
pub(crate) struct PipelineCache {
    ctx: Arc<Context>,
    layouts: HashMap<u32, (vk::DescriptorSetLayout, vk::PipelineLayout)>,
    pipelines: HashMap<(Shader, Vec<u32>), vk::Pipeline>,
}

impl PipelineCache {
    pub fn new(ctx: Arc<Context>) -> Self {
        PipelineCache { ctx, layouts: HashMap::new(), pipelines: HashMap::new() }
    }

    /// The pipeline of `shader` with specialization constants `spec` (constant id `i` is
    /// `spec[i]`; id 0 is the workgroup size), created on first use.
    pub fn get(&mut self, shader: Shader, spec: &[u32]) -> Result<Pipeline, VulkanError> {
        let (set_layout, layout) = self.layouts(shader.bindings())?;
        if let Some(&pipeline) = self.pipelines.get(&(shader, spec.to_vec())) {
            return Ok(Pipeline { pipeline, layout, set_layout });
        }
        let pipeline = self.create(shader, spec, layout)?;
        self.pipelines.insert((shader, spec.to_vec()), pipeline);
        Ok(Pipeline { pipeline, layout, set_layout })
    }

    fn layouts(&mut self, bindings: u32) -> Result<(vk::DescriptorSetLayout, vk::PipelineLayout), VulkanError> {
        if let Some(&l) = self.layouts.get(&bindings) {
            return Ok(l);
        }
        let device = &self.ctx.device;
        let slots: Vec<_> = (0..bindings)
            .map(|i| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(i)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&slots);
        // SAFETY: `info` and `slots` live until the call returns.
        let set_layout =
            unsafe { device.create_descriptor_set_layout(&info, None) }.during("vkCreateDescriptorSetLayout")?;
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .offset(0)
            .size(PUSH_CONSTANT_BYTES)];
        let set_layouts = [set_layout];
        let info = vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts).push_constant_ranges(&ranges);
        // SAFETY: as above; on error the set layout is destroyed, unused.
        let layout = match unsafe { device.create_pipeline_layout(&info, None) }.during("vkCreatePipelineLayout") {
            Ok(l) => l,
            Err(e) => {
                // SAFETY: `set_layout` is used by nothing.
                unsafe { device.destroy_descriptor_set_layout(set_layout, None) };
                return Err(e);
            }
        };
        self.layouts.insert(bindings, (set_layout, layout));
        Ok((set_layout, layout))
    }

    fn create(&self, shader: Shader, spec: &[u32], layout: vk::PipelineLayout) -> Result<vk::Pipeline, VulkanError> {
        let device = &self.ctx.device;
        // `read_spv` copies the embedded bytes into aligned u32 words.
        let words = ash::util::read_spv(&mut std::io::Cursor::new(shader.spirv()))
            .map_err(|e| VulkanError::Unsupported(format!("bad SPIR-V for {}: {e}", shader.name())))?;
        let info = vk::ShaderModuleCreateInfo::default().code(&words);
        // SAFETY: `words` is valid SPIR-V (validated by compile-shaders.sh) and outlives the call.
        let module = unsafe { device.create_shader_module(&info, None) }.during("vkCreateShaderModule")?;
        let entries: Vec<_> = (0..spec.len() as u32)
            .map(|i| vk::SpecializationMapEntry::default().constant_id(i).offset(4 * i).size(4))
            .collect();
        let data: Vec<u8> = spec.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let spec_info = vk::SpecializationInfo::default().map_entries(&entries).data(&data);
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(c"main")
            .specialization_info(&spec_info);
        let info = vk::ComputePipelineCreateInfo::default().stage(stage).layout(layout);
        // SAFETY: every pointer in `info` lives until the call returns; the module is destroyed
        // after it (a pipeline does not need its module afterwards).
        let created = unsafe { device.create_compute_pipelines(vk::PipelineCache::null(), &[info], None) };
        // SAFETY: the module is used by nothing else.
        unsafe { device.destroy_shader_module(module, None) };
        match created {
            Ok(p) => crate::batch::first(p, "vkCreateComputePipelines"),
            Err((_, result)) => Err(VulkanError::Call { what: "vkCreateComputePipelines", result }),
        }
    }
}

impl Drop for PipelineCache {
    fn drop(&mut self) {
        let device = &self.ctx.device;
        // SAFETY: the backend waited for its last submission before dropping the cache, so no
        // command buffer uses these objects.
        unsafe {
            for &p in self.pipelines.values() {
                device.destroy_pipeline(p, None);
            }
            for &(set_layout, layout) in self.layouts.values() {
                device.destroy_pipeline_layout(layout, None);
                device.destroy_descriptor_set_layout(set_layout, None);
            }
        }
    }
}
