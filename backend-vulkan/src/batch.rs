//! One command buffer with what it needs in flight: its pool, its fence, its descriptor pools.
//! The recorder cycles through a few of them, so it can record the next batch while the device
//! runs the previous ones.

use crate::device::Context;
use crate::error::{VkContext, VulkanError};
use ash::vk;
use std::sync::Arc;

/// Descriptor sets per pool (a new pool is added when one is full, all reset with the batch).
const SETS_PER_POOL: u32 = 1024;
/// Bindings per set the pools are sized for (no shader binds more).
const MAX_BINDINGS: u32 = 8;

/// The one object a Vulkan call made (an empty answer is a driver bug, reported, not a panic).
pub(crate) fn first<T: Copy>(objects: Vec<T>, what: &'static str) -> Result<T, VulkanError> {
    objects.first().copied().ok_or(VulkanError::Call { what, result: vk::Result::ERROR_UNKNOWN })
}

pub(crate) struct Batch {
    ctx: Arc<Context>,
    command_pool: vk::CommandPool,
    pub command_buffer: vk::CommandBuffer,
    fence: vk::Fence,
    descriptor_pools: Vec<vk::DescriptorPool>,
    /// Index of the pool sets are allocated from now.
    current_pool: usize,
    /// Whether the command buffer is begun and not yet submitted.
    pub recording: bool,
    /// Whether it was submitted and its fence not yet waited for.
    pub in_flight: bool,
}

impl Batch {
    pub fn new(ctx: Arc<Context>) -> Result<Batch, VulkanError> {
        let device = &ctx.device;
        let info = vk::CommandPoolCreateInfo::default().queue_family_index(ctx.queue_family);
        // SAFETY: valid create info; `Drop` destroys what was made, also when a later step fails
        // (null handles are skipped).
        let command_pool = unsafe { device.create_command_pool(&info, None) }.during("vkCreateCommandPool")?;
        let mut batch = Batch {
            ctx: ctx.clone(),
            command_pool,
            command_buffer: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            descriptor_pools: Vec::new(),
            current_pool: 0,
            recording: false,
            in_flight: false,
        };
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(command_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool is live; the buffer is freed with the pool.
        let buffers = unsafe { device.allocate_command_buffers(&info) }.during("vkAllocateCommandBuffers")?;
        batch.command_buffer = first(buffers, "vkAllocateCommandBuffers")?;
        // SAFETY: valid create info.
        batch.fence = unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) }.during("vkCreateFence")?;
        Ok(batch)
    }

    /// Begins the command buffer (it must be idle: neither recording nor in flight).
    pub fn begin(&mut self) -> Result<(), VulkanError> {
        let info = vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: the buffer is in the initial state (new, or its pool was reset by `finish`).
        unsafe { self.ctx.device.begin_command_buffer(self.command_buffer, &info) }.during("vkBeginCommandBuffer")?;
        self.recording = true;
        Ok(())
    }

    pub fn allocate_set(&mut self, layout: vk::DescriptorSetLayout) -> Result<vk::DescriptorSet, VulkanError> {
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

    /// Ends the command buffer (after a barrier that makes device writes visible to the host,
    /// for downloads from mapped memory) and submits it with the batch's fence. On error the
    /// batch is left for `finish` to reset (its work is dropped).
    pub fn submit(&mut self) -> Result<(), VulkanError> {
        let device = &self.ctx.device;
        let cb = self.command_buffer;
        self.recording = false;
        let to_host = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        // SAFETY: `cb` is recording; the fence is unsignalled (new, or reset by `finish`).
        unsafe {
            device.cmd_pipeline_barrier(
                cb,
                vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[to_host],
                &[],
                &[],
            );
            device.end_command_buffer(cb).during("vkEndCommandBuffer")?;
            let cbs = [cb];
            let submit = vk::SubmitInfo::default().command_buffers(&cbs);
            device.queue_submit(self.ctx.queue, &[submit], self.fence).during("vkQueueSubmit")?;
        }
        self.in_flight = true;
        Ok(())
    }

    /// Waits for the batch if it is in flight, then resets it for the next recording (its
    /// command buffer and descriptor sets are reusable).
    pub fn finish(&mut self) -> Result<(), VulkanError> {
        let device = &self.ctx.device;
        let waited = if self.in_flight {
            // SAFETY: the fence belongs to this batch's submission.
            unsafe {
                device
                    .wait_for_fences(&[self.fence], true, u64::MAX)
                    .during("vkWaitForFences")
                    .and_then(|()| device.reset_fences(&[self.fence]).during("vkResetFences"))
            }
        } else {
            Ok(())
        };
        self.in_flight = false;
        self.recording = false;
        self.current_pool = 0;
        // SAFETY: the command buffer is not pending (waited for, or never submitted), so it and
        // the descriptor sets can be reset.
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
        waited.and(reset)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let device = &self.ctx.device;
        // SAFETY: the device is idle after the wait, so nothing uses the batch's objects, which
        // are its own.
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
