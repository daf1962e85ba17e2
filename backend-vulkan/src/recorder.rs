//! The pending command buffer: many dispatches per submit, barriers only where needed.
//!
//! Ops record into one command buffer. Dispatches in it may run concurrently unless a barrier
//! separates them, so before recording a command the recorder checks its buffers against those
//! touched since the last barrier: reading or writing a buffer an earlier command wrote (RAW,
//! WAW) or writing one an earlier command read (WAR) inserts one global memory barrier, and the
//! tracking starts over. Buffers are known by id; the allocator never reuses a range while
//! commands are pending, so ids are enough.
//!
//! `submit_and_wait` ends the buffer (with a barrier that makes device writes visible to the
//! host), submits it, waits on a fence, and resets the command pool and the descriptor pools.

use crate::device::Context;
use crate::error::{VkContext, VulkanError};
use crate::memory::VulkanBuffer;
use crate::pipeline::Pipeline;
use ash::vk;
use std::collections::HashSet;
use std::sync::Arc;

/// Descriptor sets per pool (a new pool is added when one is full, all reset after a submit).
const SETS_PER_POOL: u32 = 1024;
/// Bindings per set the pools are sized for (no shader binds more).
const MAX_BINDINGS: u32 = 8;
/// Commands recorded before the recorder submits on its own (bounds the pools and the
/// command buffer when a caller records a whole training step without reading anything).
const MAX_PENDING_COMMANDS: usize = 4096;

/// How a command uses a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
    ReadWrite,
}

/// One buffer of a command, in binding order for dispatches.
#[derive(Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub buffer: &'a VulkanBuffer,
    pub access: Access,
}

pub(crate) fn read(buffer: &VulkanBuffer) -> Binding<'_> {
    Binding { buffer, access: Access::Read }
}

pub(crate) fn write(buffer: &VulkanBuffer) -> Binding<'_> {
    Binding { buffer, access: Access::Write }
}

pub(crate) fn read_write(buffer: &VulkanBuffer) -> Binding<'_> {
    Binding { buffer, access: Access::ReadWrite }
}

/// The one object a Vulkan call made (an empty answer is a driver bug, reported, not a panic).
pub(crate) fn first<T: Copy>(objects: Vec<T>, what: &'static str) -> Result<T, VulkanError> {
    objects.first().copied().ok_or(VulkanError::Call { what, result: vk::Result::ERROR_UNKNOWN })
}

pub(crate) struct Recorder {
    ctx: Arc<Context>,
    command_pool: vk::CommandPool,
    command_buffer: vk::CommandBuffer,
    fence: vk::Fence,
    descriptor_pools: Vec<vk::DescriptorPool>,
    /// Index of the pool sets are allocated from now.
    current_pool: usize,
    /// Whether the command buffer is begun (something may be recorded).
    recording: bool,
    /// Commands recorded since the last submit.
    pending: usize,
    written: HashSet<u64>,
    read: HashSet<u64>,
}

impl Recorder {
    pub fn new(ctx: Arc<Context>) -> Result<Recorder, VulkanError> {
        let device = &ctx.device;
        let info = vk::CommandPoolCreateInfo::default().queue_family_index(ctx.queue_family);
        // SAFETY: valid create info; each object is destroyed in `Drop` (or below on error).
        let command_pool = unsafe { device.create_command_pool(&info, None) }.during("vkCreateCommandPool")?;
        let mut recorder = Recorder {
            ctx: ctx.clone(),
            command_pool,
            command_buffer: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            descriptor_pools: Vec::new(),
            current_pool: 0,
            recording: false,
            pending: 0,
            written: HashSet::new(),
            read: HashSet::new(),
        };
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(command_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool is live; `Drop` frees the buffer with the pool.
        let buffers = unsafe { device.allocate_command_buffers(&info) }.during("vkAllocateCommandBuffers")?;
        recorder.command_buffer = first(buffers, "vkAllocateCommandBuffers")?;
        // SAFETY: valid create info.
        recorder.fence =
            unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) }.during("vkCreateFence")?;
        Ok(recorder)
    }

    /// Whether nothing is recorded since the last submit.
    pub fn is_idle(&self) -> bool {
        !self.recording
    }

    fn begin_if_needed(&mut self) -> Result<(), VulkanError> {
        if !self.recording {
            let info = vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            // SAFETY: the buffer is in the initial state (new, or its pool was reset).
            unsafe { self.ctx.device.begin_command_buffer(self.command_buffer, &info) }
                .during("vkBeginCommandBuffer")?;
            self.recording = true;
        }
        Ok(())
    }

    /// Inserts a barrier if `bindings` conflict with commands since the last one, then records
    /// them as touched.
    fn track(&mut self, bindings: &[Binding]) {
        let hazard = bindings.iter().any(|b| {
            self.written.contains(&b.buffer.id) || (b.access != Access::Read && self.read.contains(&b.buffer.id))
        });
        if hazard {
            let barrier = vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
                .dst_access_mask(
                    vk::AccessFlags::SHADER_READ
                        | vk::AccessFlags::SHADER_WRITE
                        | vk::AccessFlags::TRANSFER_READ
                        | vk::AccessFlags::TRANSFER_WRITE,
                );
            let stages = vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER;
            // SAFETY: the command buffer is recording.
            unsafe {
                self.ctx.device.cmd_pipeline_barrier(
                    self.command_buffer,
                    stages,
                    stages,
                    vk::DependencyFlags::empty(),
                    &[barrier],
                    &[],
                    &[],
                )
            };
            self.written.clear();
            self.read.clear();
        }
        for b in bindings {
            if b.access != Access::Write {
                self.read.insert(b.buffer.id);
            }
            if b.access != Access::Read {
                self.written.insert(b.buffer.id);
            }
        }
    }

    fn allocate_set(&mut self, layout: vk::DescriptorSetLayout) -> Result<vk::DescriptorSet, VulkanError> {
        let device = &self.ctx.device;
        let layouts = [layout];
        loop {
            if self.current_pool == self.descriptor_pools.len() {
                let sizes = [vk::DescriptorPoolSize::default()
                    .ty(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(SETS_PER_POOL * MAX_BINDINGS)];
                let info = vk::DescriptorPoolCreateInfo::default().max_sets(SETS_PER_POOL).pool_sizes(&sizes);
                // SAFETY: valid create info; destroyed in `Drop`.
                let pool = unsafe { device.create_descriptor_pool(&info, None) }.during("vkCreateDescriptorPool")?;
                self.descriptor_pools.push(pool);
            }
            let info = vk::DescriptorSetAllocateInfo::default()
                .descriptor_pool(self.descriptor_pools[self.current_pool])
                .set_layouts(&layouts);
            // SAFETY: the pool and the layout are live.
            match unsafe { device.allocate_descriptor_sets(&info) } {
                Ok(sets) => return first(sets, "vkAllocateDescriptorSets"),
                Err(vk::Result::ERROR_OUT_OF_POOL_MEMORY | vk::Result::ERROR_FRAGMENTED_POOL) => self.current_pool += 1,
                Err(result) => return Err(VulkanError::Call { what: "vkAllocateDescriptorSets", result }),
            }
        }
    }

    /// Records `pipeline` over `bindings` (binding `i` of set 0 is `bindings[i]`) with
    /// `push` as push constants and `groups` workgroups.
    pub fn dispatch(
        &mut self,
        pipeline: &Pipeline,
        bindings: &[Binding],
        push: &[u8],
        groups: u32,
    ) -> Result<(), VulkanError> {
        self.begin_if_needed()?;
        let set = self.allocate_set(pipeline.set_layout)?;
        let infos: Vec<_> = bindings
            .iter()
            .map(|b| {
                vk::DescriptorBufferInfo::default()
                    .buffer(b.buffer.buffer)
                    .offset(b.buffer.range.offset)
                    .range(b.buffer.bytes())
            })
            .collect();
        let writes: Vec<_> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(i as u32)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(std::slice::from_ref(info))
            })
            .collect();
        self.track(bindings);
        let device = &self.ctx.device;
        // SAFETY: the set is fresh (not in use); the buffers are live blocks; the command buffer
        // is recording; `push` fits the layout's push-constant range.
        unsafe {
            device.update_descriptor_sets(&writes, &[]);
            let cb = self.command_buffer;
            device.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, pipeline.pipeline);
            device.cmd_bind_descriptor_sets(cb, vk::PipelineBindPoint::COMPUTE, pipeline.layout, 0, &[set], &[]);
            if !push.is_empty() {
                device.cmd_push_constants(cb, pipeline.layout, vk::ShaderStageFlags::COMPUTE, 0, push);
            }
            device.cmd_dispatch(cb, groups, 1, 1);
        }
        self.pending += 1;
        Ok(())
    }

    /// Records a copy of the first `bytes` bytes of `src` into `dst`.
    pub fn copy(&mut self, src: &VulkanBuffer, dst: &VulkanBuffer, bytes: u64) -> Result<(), VulkanError> {
        self.begin_if_needed()?;
        self.track(&[read(src), write(dst)]);
        if bytes > 0 {
            let region =
                vk::BufferCopy::default().src_offset(src.range.offset).dst_offset(dst.range.offset).size(bytes);
            // SAFETY: both ranges lie in live blocks; the command buffer is recording.
            unsafe { self.ctx.device.cmd_copy_buffer(self.command_buffer, src.buffer, dst.buffer, &[region]) };
        }
        self.pending += 1;
        Ok(())
    }

    /// Whether so much is recorded that the caller should submit now.
    pub fn is_full(&self) -> bool {
        self.pending >= MAX_PENDING_COMMANDS
    }

    /// Submits what is recorded and waits for it; then every pool is reset. Nothing recorded:
    /// nothing to do.
    pub fn submit_and_wait(&mut self) -> Result<(), VulkanError> {
        if !self.recording {
            return Ok(());
        }
        let device = &self.ctx.device;
        let cb = self.command_buffer;
        // Device writes made visible to the host, for downloads from mapped memory.
        let to_host = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        // SAFETY: `cb` is recording; after the fence wait nothing uses it or the descriptor
        // sets, so the pools can be reset.
        let result = unsafe {
            device.cmd_pipeline_barrier(
                cb,
                vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[to_host],
                &[],
                &[],
            );
            device
                .end_command_buffer(cb)
                .during("vkEndCommandBuffer")
                .and_then(|()| {
                    let cbs = [cb];
                    let submit = vk::SubmitInfo::default().command_buffers(&cbs);
                    device.queue_submit(self.ctx.queue, &[submit], self.fence).during("vkQueueSubmit")
                })
                .and_then(|()| device.wait_for_fences(&[self.fence], true, u64::MAX).during("vkWaitForFences"))
                .and_then(|()| device.reset_fences(&[self.fence]).during("vkResetFences"))
        };
        // Whatever happened, start over with an empty buffer (a failed submit drops its work).
        self.recording = false;
        self.pending = 0;
        self.written.clear();
        self.read.clear();
        self.current_pool = 0;
        // SAFETY: the command buffer is not pending (waited, or never submitted).
        let reset = unsafe {
            device
                .reset_command_pool(self.command_pool, vk::CommandPoolResetFlags::empty())
                .during("vkResetCommandPool")
                .and_then(|()| {
                    self.descriptor_pools.iter().try_for_each(|&p| {
                        device
                            .reset_descriptor_pool(p, vk::DescriptorPoolResetFlags::empty())
                            .during("vkResetDescriptorPool")
                    })
                })
        };
        result.and(reset)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let device = &self.ctx.device;
        // SAFETY: every submission was waited for (`submit_and_wait` waits); the objects are
        // this recorder's own.
        unsafe {
            let _ = device.device_wait_idle();
            for &p in &self.descriptor_pools {
                device.destroy_descriptor_pool(p, None);
            }
            if self.fence != vk::Fence::null() {
                device.destroy_fence(self.fence, None);
            }
            device.destroy_command_pool(self.command_pool, None);
        }
    }
}
