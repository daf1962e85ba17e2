//! The pending command buffer: many dispatches per submit, barriers only where needed.
//!
//! Ops record into a command buffer. Dispatches in it may run concurrently unless a barrier
//! separates them, so before recording a command the recorder checks its buffers against those
//! touched since the last barrier: reading or writing a buffer an earlier command wrote (RAW,
//! WAW) or writing one an earlier command read (WAR) inserts one global memory barrier, and the
//! tracking starts over. Buffers are known by id; the allocator never reuses a range while
//! commands are pending, so ids are enough.
//!
//! Every [`SUBMIT_EVERY`] commands the batch is submitted without waiting and recording goes on
//! in the next of [`BATCHES`] batches, so the device works while the host records (a batch still
//! in flight when its turn comes again is waited for). The tracking carries over: a pipeline
//! barrier also orders the commands of earlier submissions to the queue. `submit_and_wait`
//! submits the current batch and waits for every batch; only then does the tracking restart.

use crate::batch::Batch;
use crate::device::Context;
use crate::error::VulkanError;
use crate::memory::VulkanBuffer;
use crate::pipeline::Pipeline;
use ash::vk;
use std::collections::HashSet;
use std::sync::Arc;

/// Command buffers that can be in flight or recording at once.
const BATCHES: usize = 3;
/// Commands recorded before the batch is submitted without waiting.
const SUBMIT_EVERY: usize = 256;

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

pub(crate) struct Recorder {
    ctx: Arc<Context>,
    batches: Vec<Batch>,
    /// The batch being recorded (or the next to record).
    current: usize,
    /// Commands recorded in the current batch.
    pending: usize,
    written: HashSet<u64>,
    read: HashSet<u64>,
}

impl Recorder {
    pub fn new(ctx: Arc<Context>) -> Result<Recorder, VulkanError> {
        let batches = (0..BATCHES).map(|_| Batch::new(ctx.clone())).collect::<Result<Vec<_>, _>>()?;
        Ok(Recorder { ctx, batches, current: 0, pending: 0, written: HashSet::new(), read: HashSet::new() })
    }

    /// Whether nothing is recorded or running: every recorded command has completed.
    pub fn is_idle(&self) -> bool {
        self.batches.iter().all(|b| !b.recording && !b.in_flight)
    }

    fn begin_if_needed(&mut self) -> Result<(), VulkanError> {
        let batch = &mut self.batches[self.current];
        if !batch.recording {
            // Its previous submission (if any) must be done before its buffers are reused.
            batch.finish()?;
            batch.begin()?;
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
                    self.batches[self.current].command_buffer,
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

    /// Records `pipeline` over `bindings` (binding `i` of set 0 is `bindings[i]`) with
    /// `push` as push constants and `groups` workgroups; submits the batch (without waiting)
    /// when it is long enough.
    pub fn dispatch(
        &mut self,
        pipeline: &Pipeline,
        bindings: &[Binding],
        push: &[u8],
        groups: u32,
    ) -> Result<(), VulkanError> {
        self.begin_if_needed()?;
        self.bind_pipeline(pipeline);
        self.record_dispatch(pipeline, bindings, push, groups)?;
        self.recorded()
    }

    /// Records `pipeline` once per entry of `dispatches` (bindings, push constants, workgroups),
    /// all into the current command buffer: the batch is not submitted in between, so the whole
    /// group reaches the device in one submission (the multi-tensor optimiser ops).
    pub fn dispatch_many(
        &mut self,
        pipeline: &Pipeline,
        dispatches: &[(&[Binding], &[u8], u32)],
    ) -> Result<(), VulkanError> {
        if dispatches.is_empty() {
            return Ok(());
        }
        self.begin_if_needed()?;
        self.bind_pipeline(pipeline);
        for &(bindings, push, groups) in dispatches {
            self.record_dispatch(pipeline, bindings, push, groups)?;
        }
        self.pending += dispatches.len() - 1;
        self.recorded()
    }

    fn bind_pipeline(&self, pipeline: &Pipeline) {
        let cb = self.batches[self.current].command_buffer;
        // SAFETY: the command buffer is recording; the pipeline is live (cached until drop).
        unsafe { self.ctx.device.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, pipeline.pipeline) };
    }

    /// One dispatch of the bound `pipeline` into the recording command buffer (barrier first
    /// where needed), not yet counted.
    fn record_dispatch(
        &mut self,
        pipeline: &Pipeline,
        bindings: &[Binding],
        push: &[u8],
        groups: u32,
    ) -> Result<(), VulkanError> {
        let set = self.batches[self.current].allocate_set(pipeline.set_layout)?;
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
        let cb = self.batches[self.current].command_buffer;
        // SAFETY: the set is fresh (not in use); the buffers are live blocks; the command buffer
        // is recording with `pipeline` bound (barriers keep the binding); `push` fits the
        // layout's push-constant range.
        unsafe {
            device.update_descriptor_sets(&writes, &[]);
            device.cmd_bind_descriptor_sets(cb, vk::PipelineBindPoint::COMPUTE, pipeline.layout, 0, &[set], &[]);
            if !push.is_empty() {
                device.cmd_push_constants(cb, pipeline.layout, vk::ShaderStageFlags::COMPUTE, 0, push);
            }
            device.cmd_dispatch(cb, groups, 1, 1);
        }
        Ok(())
    }

    /// Records a copy of the first `bytes` bytes of `src` into `dst`.
    pub fn copy(&mut self, src: &VulkanBuffer, dst: &VulkanBuffer, bytes: u64) -> Result<(), VulkanError> {
        self.begin_if_needed()?;
        self.track(&[read(src), write(dst)]);
        if bytes > 0 {
            let region =
                vk::BufferCopy::default().src_offset(src.range.offset).dst_offset(dst.range.offset).size(bytes);
            let cb = self.batches[self.current].command_buffer;
            // SAFETY: both ranges lie in live blocks; the command buffer is recording.
            unsafe { self.ctx.device.cmd_copy_buffer(cb, src.buffer, dst.buffer, &[region]) };
        }
        self.recorded()
    }

    /// Counts a recorded command; a long batch is submitted (not waited for) and the next begun
    /// on the next command.
    fn recorded(&mut self) -> Result<(), VulkanError> {
        self.pending += 1;
        if self.pending >= SUBMIT_EVERY {
            self.submit_current()?;
        }
        Ok(())
    }

    fn submit_current(&mut self) -> Result<(), VulkanError> {
        let index = self.current;
        if !self.batches[index].recording {
            return Ok(());
        }
        self.pending = 0;
        self.current = (index + 1) % BATCHES;
        let result = self.batches[index].submit();
        if result.is_err() {
            // Its work is dropped: forget the tracking that refers to it.
            self.written.clear();
            self.read.clear();
        }
        result
    }

    /// Submits what is recorded and waits for every batch; then every pool is reset and the
    /// tracking restarts. Nothing recorded or running: nothing to do.
    pub fn submit_and_wait(&mut self) -> Result<(), VulkanError> {
        let submitted = self.submit_current();
        // Wait for every batch even if the submit failed, so that all are idle afterwards.
        let finished = self.batches.iter_mut().map(Batch::finish).fold(Ok(()), Result::and);
        self.written.clear();
        self.read.clear();
        submitted.and(finished)
    }
}
