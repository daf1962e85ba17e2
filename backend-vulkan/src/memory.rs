//! Device memory sub-allocated from large blocks.
//!
//! A block is one `VkDeviceMemory` with one `VkBuffer` over all of it, so a tensor is just
//! (block, offset, size) and binding it is a descriptor with that offset: no Vulkan object per
//! tensor. Each block keeps a sorted free list (first fit, neighbours merged on free). Offsets
//! and sizes are multiples of `minStorageBufferOffsetAlignment`.
//!
//! Freed ranges are not reusable at once: commands already recorded may still read or write
//! them, and the barrier tracking knows buffers by id, not by address. A dropped buffer's range
//! goes to a deferred list that [`Allocator::retire`] releases once no recorded work is pending
//! (after each submit and wait). Emptied blocks go back to the driver, except one ordinary block
//! kept for the next allocations.

use crate::device::Context;
use crate::error::{VkContext, VulkanError};
use ash::vk;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Size of an ordinary block; larger buffers get a block of their own.
const BLOCK_BYTES: u64 = 64 << 20;

/// Which pool a range comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolKind {
    /// Where tensors live (device-local; host-visible too when the device has such memory).
    Device,
    /// Host-visible memory for copies in and out when tensors are not host-visible.
    Staging,
}

/// A host pointer into a persistently mapped block.
#[derive(Clone, Copy)]
pub(crate) struct HostPtr(*mut u8);

impl HostPtr {
    pub fn as_ptr(self) -> *mut u8 {
        self.0
    }
}

// SAFETY: the pointer is into a mapping that lives as long as its block; every access goes
// through a buffer that owns a disjoint range of it, and GPU work on that range is waited for
// before the host touches it.
unsafe impl Send for HostPtr {}
// SAFETY: as above.
unsafe impl Sync for HostPtr {}

/// One range of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub pool: PoolKind,
    pub block: usize,
    pub offset: u64,
    pub size: u64,
}

struct Block {
    memory: vk::DeviceMemory,
    buffer: vk::Buffer,
    size: u64,
    mapped: Option<HostPtr>,
    /// Whether the mapping is cached on the host (fast to read; write-combined memory is not).
    host_cached: bool,
    /// Free `(offset, size)` ranges, sorted by offset, never adjacent.
    free: Vec<(u64, u64)>,
    /// A block made for one large buffer: given back to the driver when that buffer is freed.
    dedicated: bool,
}

impl Block {
    fn take(&mut self, size: u64, align: u64) -> Option<u64> {
        let i = self.free.iter().position(|&(off, len)| {
            let start = off.next_multiple_of(align);
            start + size <= off + len
        })?;
        let (off, len) = self.free[i];
        let start = off.next_multiple_of(align);
        let mut pieces = Vec::with_capacity(2);
        if start > off {
            pieces.push((off, start - off));
        }
        if start + size < off + len {
            pieces.push((start + size, off + len - start - size));
        }
        self.free.splice(i..=i, pieces);
        Some(start)
    }

    fn give_back(&mut self, offset: u64, size: u64) {
        let i = self.free.partition_point(|&(off, _)| off < offset);
        self.free.insert(i, (offset, size));
        // Merge with the next range, then with the previous one.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.free.len() == 1 && self.free[0] == (0, self.size)
    }
}

struct Pool {
    /// Memory property flags wanted for this pool (the best type allowed by the buffers is used).
    wanted: vk::MemoryPropertyFlags,
    blocks: Vec<Option<Block>>,
}

/// Every block of the device, and the deferred frees.
pub(crate) struct Allocator {
    ctx: Arc<Context>,
    device: Pool,
    staging: Pool,
    deferred: Vec<Range>,
    align: u64,
}

/// Whether device-local memory is also host-visible for most of the device's memory (unified
/// memory, lavapipe, resizable-BAR GPUs): then tensors are written and read in place.
fn device_memory_is_mappable(memory: &vk::PhysicalDeviceMemoryProperties) -> bool {
    let heaps = memory.memory_heaps_as_slice();
    let largest_local =
        heaps.iter().filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL)).map(|h| h.size).max().unwrap_or(0);
    let mapped = vk::MemoryPropertyFlags::DEVICE_LOCAL
        | vk::MemoryPropertyFlags::HOST_VISIBLE
        | vk::MemoryPropertyFlags::HOST_COHERENT;
    memory
        .memory_types_as_slice()
        .iter()
        .any(|t| t.property_flags.contains(mapped) && heaps[t.heap_index as usize].size >= largest_local / 2)
}

impl Allocator {
    pub fn new(ctx: Arc<Context>, force_staging: bool) -> Allocator {
        let host = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let device_flags = if !force_staging && device_memory_is_mappable(&ctx.memory) {
            vk::MemoryPropertyFlags::DEVICE_LOCAL | host
        } else {
            vk::MemoryPropertyFlags::DEVICE_LOCAL
        };
        let align = ctx.limits.min_storage_offset_alignment.next_power_of_two().max(16);
        Allocator {
            ctx,
            device: Pool { wanted: device_flags, blocks: Vec::new() },
            staging: Pool { wanted: host, blocks: Vec::new() },
            deferred: Vec::new(),
            align,
        }
    }

    /// Whether tensors can be read and written by the host in place.
    pub fn device_is_mapped(&self) -> bool {
        self.device.wanted.contains(vk::MemoryPropertyFlags::HOST_VISIBLE)
    }

    fn pool(&mut self, kind: PoolKind) -> &mut Pool {
        match kind {
            PoolKind::Device => &mut self.device,
            PoolKind::Staging => &mut self.staging,
        }
    }

    /// A range of at least `bytes` bytes (at least one aligned unit, so an empty tensor still
    /// has something to bind).
    pub fn allocate(&mut self, kind: PoolKind, bytes: u64) -> Result<Range, VulkanError> {
        let max = self.ctx.limits.max_storage_buffer_range;
        if kind == PoolKind::Device && bytes > max {
            return Err(VulkanError::BufferTooLarge { bytes, max });
        }
        let align = self.align;
        let size = bytes.max(1).next_multiple_of(align);
        let pool = self.pool(kind);
        for (i, block) in pool.blocks.iter_mut().enumerate() {
            if let Some(block) = block.as_mut().filter(|b| !b.dedicated) {
                if let Some(offset) = block.take(size, align) {
                    return Ok(Range { pool: kind, block: i, offset, size });
                }
            }
        }
        let dedicated = size > BLOCK_BYTES;
        let mut block = self.create_block(kind, if dedicated { size } else { BLOCK_BYTES }, dedicated)?;
        let offset = block.take(size, align).unwrap_or(0);
        let pool = self.pool(kind);
        let slot = pool.blocks.iter().position(Option::is_none).unwrap_or(pool.blocks.len());
        if slot == pool.blocks.len() {
            pool.blocks.push(None);
        }
        pool.blocks[slot] = Some(block);
        Ok(Range { pool: kind, block: slot, offset, size })
    }

    fn create_block(&mut self, kind: PoolKind, size: u64, dedicated: bool) -> Result<Block, VulkanError> {
        let wanted = self.pool(kind).wanted;
        let device = &self.ctx.device;
        let usage = vk::BufferUsageFlags::STORAGE_BUFFER
            | vk::BufferUsageFlags::TRANSFER_SRC
            | vk::BufferUsageFlags::TRANSFER_DST;
        let info = vk::BufferCreateInfo::default().size(size).usage(usage).sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: `info` is valid; the buffer is destroyed on every error path below.
        let buffer = unsafe { device.create_buffer(&info, None) }.during("vkCreateBuffer")?;
        let result = self.bind_memory(buffer, size, wanted);
        match result {
            Ok((memory, mapped, host_cached)) => {
                Ok(Block { memory, buffer, size, mapped, host_cached, free: vec![(0, size)], dedicated })
            }
            Err(e) => {
                // SAFETY: the buffer has no memory and is used nowhere.
                unsafe { device.destroy_buffer(buffer, None) };
                Err(e)
            }
        }
    }

    fn bind_memory(
        &self,
        buffer: vk::Buffer,
        size: u64,
        wanted: vk::MemoryPropertyFlags,
    ) -> Result<(vk::DeviceMemory, Option<HostPtr>, bool), VulkanError> {
        let device = &self.ctx.device;
        // SAFETY: `buffer` is a live buffer of this device.
        let req = unsafe { device.get_buffer_memory_requirements(buffer) };
        let types = self.ctx.memory.memory_types_as_slice();
        let allowed = |i: usize, flags: vk::MemoryPropertyFlags| {
            req.memory_type_bits & (1 << i) != 0 && types[i].property_flags.contains(flags)
        };
        // Host-visible memory: host-cached if there is such a type (downloads read it).
        let host_visible = wanted.contains(vk::MemoryPropertyFlags::HOST_VISIBLE);
        let cached = wanted | vk::MemoryPropertyFlags::HOST_CACHED;
        let type_index = (0..types.len())
            .find(|&i| host_visible && allowed(i, cached))
            .or_else(|| (0..types.len()).find(|&i| allowed(i, wanted)))
            .ok_or_else(|| VulkanError::OutOfMemory(format!("no memory type with {wanted:?}")))?;
        let host_cached = types[type_index].property_flags.contains(vk::MemoryPropertyFlags::HOST_CACHED);
        let info = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(type_index as u32);
        // SAFETY: `info` is valid for this device.
        let memory = unsafe { device.allocate_memory(&info, None) }
            .map_err(|r| VulkanError::OutOfMemory(format!("vkAllocateMemory of {size} bytes failed: {r:?}")))?;
        // SAFETY: `memory` fits `buffer` (its requirements), neither is bound or mapped yet; on
        // error the memory is freed and the caller destroys the buffer.
        let bound = unsafe {
            device.bind_buffer_memory(buffer, memory, 0).during("vkBindBufferMemory").and_then(|()| {
                if host_visible {
                    device
                        .map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
                        .during("vkMapMemory")
                        .map(|p| Some(HostPtr(p.cast())))
                } else {
                    Ok(None)
                }
            })
        };
        match bound {
            Ok(mapped) => Ok((memory, mapped, host_cached)),
            Err(e) => {
                // SAFETY: the memory is not in use.
                unsafe { device.free_memory(memory, None) };
                Err(e)
            }
        }
    }

    /// The block's `VkBuffer`, the host address of `range` when mapped, and whether the
    /// mapping is host-cached.
    pub fn resolve(&self, range: &Range) -> (vk::Buffer, Option<HostPtr>, bool) {
        let pool = match range.pool {
            PoolKind::Device => &self.device,
            PoolKind::Staging => &self.staging,
        };
        match pool.blocks.get(range.block).and_then(Option::as_ref) {
            // SAFETY: `range` lies inside the block's mapping.
            Some(b) => (b.buffer, b.mapped.map(|p| HostPtr(unsafe { p.0.add(range.offset as usize) })), b.host_cached),
            None => (vk::Buffer::null(), None, false),
        }
    }

    /// Frees `range` once no recorded work can still use it.
    pub fn defer_free(&mut self, range: Range) {
        self.deferred.push(range);
    }

    /// Releases the deferred ranges: the caller knows no recorded work is pending.
    pub fn retire(&mut self) {
        let device = self.ctx.device.clone();
        for range in std::mem::take(&mut self.deferred) {
            let pool = self.pool(range.pool);
            let Some(block) = pool.blocks.get_mut(range.block).and_then(Option::as_mut) else { continue };
            block.give_back(range.offset, range.size);
            if !block.is_empty() {
                continue;
            }
            // An empty block goes back to the driver if it was made for one large buffer, or if
            // another empty block is kept for the next allocations already.
            let dedicated = block.dedicated;
            let spare = |(i, b): (usize, &Option<Block>)| {
                i != range.block && b.as_ref().is_some_and(|b| !b.dedicated && b.is_empty())
            };
            if dedicated || pool.blocks.iter().enumerate().any(spare) {
                if let Some(block) = pool.blocks[range.block].take() {
                    // SAFETY: no buffer uses the block and no pending work references it.
                    unsafe { destroy_block(&device, &block) };
                }
            }
        }
    }
}

/// # Safety
/// No live buffer or pending command uses the block.
unsafe fn destroy_block(device: &ash::Device, block: &Block) {
    // SAFETY: per the function contract; unmapping happens implicitly when freeing.
    unsafe {
        device.destroy_buffer(block.buffer, None);
        device.free_memory(block.memory, None);
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        let device = self.ctx.device.clone();
        // SAFETY: the allocator is dropped after every buffer (each holds an `Arc` to it) and
        // after the backend waited for its last submission.
        unsafe {
            let _ = device.device_wait_idle();
            for block in self.device.blocks.iter().chain(&self.staging.blocks).flatten() {
                destroy_block(&device, block);
            }
        }
    }
}

/// Source of buffer ids (the barrier tracking's keys).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Locks the allocator; a poisoned lock (a panic elsewhere) still gives the data, which stays
/// consistent because no allocator method panics half-way.
pub(crate) fn lock(memory: &Mutex<Allocator>) -> MutexGuard<'_, Allocator> {
    memory.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tensor on the device: `len` f32 values in a range of a block.
pub struct VulkanBuffer {
    pub(crate) id: u64,
    pub(crate) len: usize,
    pub(crate) range: Range,
    pub(crate) buffer: vk::Buffer,
    pub(crate) mapped: Option<HostPtr>,
    /// Whether `mapped` is host-cached memory (read in place by downloads; uncached,
    /// write-combined memory, as on resizable-BAR GPUs, is read through a staging copy).
    pub(crate) host_cached: bool,
    memory: Arc<Mutex<Allocator>>,
}

impl VulkanBuffer {
    pub(crate) fn new(
        memory: &Arc<Mutex<Allocator>>,
        kind: PoolKind,
        bytes: u64,
        len: usize,
    ) -> Result<Self, VulkanError> {
        let mut alloc = lock(memory);
        let range = alloc.allocate(kind, bytes)?;
        let (buffer, mapped, host_cached) = alloc.resolve(&range);
        Ok(VulkanBuffer {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            len,
            range,
            buffer,
            mapped,
            host_cached,
            memory: memory.clone(),
        })
    }

    /// The bytes a binding of this buffer covers.
    pub(crate) fn bytes(&self) -> u64 {
        self.range.size
    }
}

impl std::fmt::Debug for VulkanBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VulkanBuffer {{ id: {}, len: {} }}", self.id, self.len)
    }
}

impl Drop for VulkanBuffer {
    fn drop(&mut self) {
        lock(&self.memory).defer_free(self.range);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(size: u64) -> Block {
        Block {
            memory: vk::DeviceMemory::null(),
            buffer: vk::Buffer::null(),
            size,
            mapped: None,
            host_cached: false,
            free: vec![(0, size)],
            dedicated: false,
        }
    }

    #[test]
    fn ranges_are_aligned_and_merge_back() {
        // Sizes are multiples of the alignment, as `Allocator::allocate` makes them.
        let mut b = block(1024);
        let x = b.take(128, 64).unwrap();
        let y = b.take(64, 64).unwrap();
        let z = b.take(256, 256).unwrap();
        assert_eq!((x, y, z), (0, 128, 256), "the 64 bytes before z stay free");
        assert_eq!(b.free, vec![(192, 64), (512, 512)]);
        assert!(b.take(1024, 64).is_none(), "no room for a whole block");
        b.give_back(y, 64);
        assert_eq!(b.free, vec![(128, 128), (512, 512)], "merged with the next range");
        assert_eq!(b.take(64, 64), Some(128), "first fit reuses the hole");
        for (offset, size) in [(128, 64), (0, 128), (256, 256)] {
            b.give_back(offset, size);
        }
        assert!(b.is_empty(), "{:?}", b.free);
    }
}
