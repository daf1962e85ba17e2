//! GPSToken on Vulkan: the core's backend traits on any Vulkan 1.2 device, through `ash`.
//!
//! * One file per op family, named like the trait's file in `core/src/backend/`, each
//!   implementing that family's kernel trait (`gpstoken_core::backend::kernels`); the core's
//!   front end has checked every buffer against the descriptor before a kernel runs, so there
//!   are no shape checks here (only `dims`, which refuses sizes the shaders' u32 indices cannot
//!   hold).
//! * The loader is opened at run time ([`VulkanBackend::new`], [`list_devices`]): a machine
//!   without Vulkan builds and runs everything else, and gets a one-line [`VulkanError`].
//! * Kernels are GLSL 4.50 compute shaders (`shaders/<family>/<op>.comp`), compiled by
//!   `compile-shaders.sh` into the committed SPIR-V under `spv/`, embedded in the binary.
//! * Ops record into a pending command buffer ([`recorder`]), submitted without waiting every
//!   256 commands; `download`, `write` and [`VulkanBackend::sync`] submit and wait. Barriers are inserted only between commands
//!   that touch a buffer in conflicting ways.
//! * Tensors are ranges of large memory blocks ([`memory`]); when the device memory is
//!   host-visible (lavapipe, unified memory, resizable BAR) the host writes it in place (and
//!   reads it in place when it is host-cached), otherwise through staging copies.
//! * f32 everywhere in the shaders; every reduction has a fixed order (no float atomics), so
//!   running an op twice gives the same bits.
//!
//! `README.md` (next to this crate's `Cargo.toml`) says how to add an op.

mod attention;
mod batch;
mod conv;
mod device;
mod error;
mod gaussian;
mod linear;
mod loss;
mod memory;
mod norm;
mod optim;
mod pipeline;
mod recorder;
mod roi;
mod splat;
mod tensor;

pub use device::{list_devices, DeviceInfo, DeviceType};
pub use error::VulkanError;
pub use memory::VulkanBuffer;

use device::Context;
use gpstoken_core::backend::Buffers;
use memory::{lock, Allocator, PoolKind};
use pipeline::{PipelineCache, PushConstants, Shader};
use recorder::{Binding, Recorder};
use std::sync::{Arc, Mutex, MutexGuard};

// The backend and its buffers can move between threads and be shared (every mutable state is
// behind a lock), as a CPU backend can.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<VulkanBackend>();
    send_and_sync::<VulkanBuffer>();
};

/// Choices for [`VulkanBackend::with_options`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VulkanOptions {
    /// Keep tensors in device-local memory that the host cannot map, moving data through
    /// staging buffers, even when the device has host-visible device memory (tests the path
    /// discrete GPUs without resizable BAR take).
    pub force_staging: bool,
}

/// What ops record into; one lock, so an op's recording is never interleaved with another's.
struct Engine {
    recorder: Recorder,
    pipelines: PipelineCache,
}

/// The Vulkan backend: one device, one compute queue.
pub struct VulkanBackend {
    // Field order is drop order: the engine's objects go before the memory and the device.
    engine: Mutex<Engine>,
    memory: Arc<Mutex<Allocator>>,
    ctx: Arc<Context>,
    /// Invocations per workgroup of the elementwise kernels (specialization constant 0): a
    /// power of two within the device's limits.
    workgroup_size: u32,
}

/// Largest workgroup the elementwise kernels use (a common sweet spot; the device may allow less).
const PREFERRED_WORKGROUP: u32 = 256;

impl VulkanBackend {
    /// The backend on device `device_index` (the order of [`list_devices`]).
    pub fn new(device_index: usize) -> Result<VulkanBackend, VulkanError> {
        Self::with_options(device_index, VulkanOptions::default())
    }

    pub fn with_options(device_index: usize, options: VulkanOptions) -> Result<VulkanBackend, VulkanError> {
        let ctx = Arc::new(Context::new(device_index)?);
        let limits = ctx.limits;
        let cap = PREFERRED_WORKGROUP.min(limits.max_workgroup_invocations).min(limits.max_workgroup_size_x).max(1);
        // Largest power of two <= cap (the reductions halve it).
        let workgroup_size = 1 << (31 - cap.leading_zeros());
        let engine = Engine { recorder: Recorder::new(ctx.clone())?, pipelines: PipelineCache::new(ctx.clone()) };
        let memory = Arc::new(Mutex::new(Allocator::new(ctx.clone(), options.force_staging)));
        Ok(VulkanBackend { engine: Mutex::new(engine), memory, ctx, workgroup_size })
    }

    /// The device this backend runs on.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.ctx.info
    }

    /// Whether tensors live in host-visible memory (read and written in place).
    pub fn host_visible_tensors(&self) -> bool {
        lock(&self.memory).device_is_mapped()
    }

    /// Submits every recorded op and waits for it.
    pub fn sync(&self) -> Result<(), VulkanError> {
        let mut engine = self.engine();
        self.submit(&mut engine)
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        // A poisoned lock still holds a consistent recorder: no recorder method panics.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, engine: &mut Engine) -> Result<(), VulkanError> {
        let result = engine.recorder.submit_and_wait();
        // Nothing is pending now (a failed submit dropped its work): freed ranges are reusable.
        lock(&self.memory).retire();
        result
    }

    /// A buffer of `len` floats, contents undefined.
    pub(crate) fn allocate(&self, kind: PoolKind, len: usize) -> Result<VulkanBuffer, VulkanError> {
        let bytes = (len as u64).checked_mul(4).ok_or(VulkanError::BufferTooLarge { bytes: u64::MAX, max: 0 })?;
        {
            // Held while retiring, so no other thread records a use of a range being freed.
            let engine = self.engine();
            if engine.recorder.is_idle() {
                lock(&self.memory).retire();
            }
        }
        VulkanBuffer::new(&self.memory, kind, bytes, len)
    }

    /// A device buffer holding `words` (u32 data such as embedding indices; shaders declare
    /// the binding as `uint`).
    pub(crate) fn upload_words(&self, words: &[u32]) -> Result<VulkanBuffer, VulkanError> {
        let buffer = self.allocate(PoolKind::Device, words.len())?;
        self.write_bytes(&buffer, words_as_bytes(words), true)?;
        Ok(buffer)
    }

    /// The side of the square tiles of 2D kernels (GEMM, transpose): the largest of 16, 8, 4
    /// whose square of invocations the device allows in one workgroup.
    pub(crate) fn gemm_tile(&self) -> u32 {
        let l = &self.ctx.limits;
        [16, 8, 4]
            .into_iter()
            .find(|&t| t * t <= l.max_workgroup_invocations && t * t <= l.max_workgroup_size_x)
            .unwrap_or(1)
    }

    /// Most workgroups one dispatch asks for (grid-stride kernels cover the rest).
    pub(crate) fn max_groups(&self) -> u32 {
        self.ctx.limits.max_workgroup_count_x.clamp(1, 65_535)
    }

    /// Workgroups for `total` items of a grid-stride kernel.
    fn groups_for(&self, total: u32) -> u32 {
        total.div_ceil(self.workgroup_size).clamp(1, self.max_groups())
    }

    /// Records a grid-stride `shader` over `total` items with the default workgroup size.
    pub(crate) fn run<P: PushConstants>(
        &self,
        shader: Shader,
        bindings: &[Binding],
        params: &P,
        total: u32,
    ) -> Result<(), VulkanError> {
        if total == 0 {
            return Ok(());
        }
        self.run_groups(shader, &[self.workgroup_size], bindings, params, self.groups_for(total))
    }

    /// Records `shader` specialised with `spec` (id 0: workgroup size) as `groups` workgroups.
    pub(crate) fn run_groups<P: PushConstants>(
        &self,
        shader: Shader,
        spec: &[u32],
        bindings: &[Binding],
        params: &P,
        groups: u32,
    ) -> Result<(), VulkanError> {
        debug_assert_eq!(bindings.len() as u32, shader.bindings(), "{}", shader.name());
        let mut engine = self.engine();
        let pipeline = engine.pipelines.get(shader, spec)?;
        engine.recorder.dispatch(&pipeline, bindings, params.as_bytes(), groups)
    }

    /// Records a grid-stride `shader` once per entry of `dispatches` (bindings, push constants,
    /// items), all into one command buffer and so one submission ([`Recorder::dispatch_many`]).
    /// Entries with no items are left out.
    pub(crate) fn run_many<P: PushConstants>(
        &self,
        shader: Shader,
        dispatches: &[(&[Binding], P, u32)],
    ) -> Result<(), VulkanError> {
        let recorded: Vec<(&[Binding], &[u8], u32)> = dispatches
            .iter()
            .filter(|d| d.2 > 0)
            .map(|(bindings, params, total)| {
                debug_assert_eq!(bindings.len() as u32, shader.bindings(), "{}", shader.name());
                (*bindings, params.as_bytes(), self.groups_for(*total))
            })
            .collect();
        let mut engine = self.engine();
        let pipeline = engine.pipelines.get(shader, &[self.workgroup_size])?;
        engine.recorder.dispatch_many(&pipeline, &recorded)
    }

    /// Copies `bytes` into `buffer` (`fresh`: no recorded command can use it yet).
    fn write_bytes(&self, buffer: &VulkanBuffer, bytes: &[u8], fresh: bool) -> Result<(), VulkanError> {
        if let Some(ptr) = buffer.mapped {
            if !fresh {
                self.sync()?;
            }
            // SAFETY: the mapping covers `buffer.bytes() >= bytes.len()` bytes owned by this
            // buffer alone, and no GPU work uses it (fresh, or just waited for).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
            return Ok(());
        }
        let staging = VulkanBuffer::new(&self.memory, PoolKind::Staging, bytes.len() as u64, 0)?;
        let ptr = staging.mapped.ok_or_else(|| VulkanError::OutOfMemory("staging memory is not mapped".into()))?;
        // SAFETY: the fresh staging range holds at least `bytes.len()` bytes and nothing uses it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
        let mut engine = self.engine();
        // Recorded, not waited for: the staging range is freed once the copy has run.
        engine.recorder.copy(&staging, buffer, bytes.len() as u64)
    }
}

/// Sizes as the u32 the shaders index with. Buffers are at most `maxStorageBufferRange` bytes
/// (below 4 GiB), so sizes of real tensors fit; an absurd descriptor is an error, not a wrap.
pub(crate) fn dims<const N: usize>(values: [usize; N]) -> Result<[u32; N], VulkanError> {
    let mut out = [0u32; N];
    for (o, &v) in out.iter_mut().zip(&values) {
        *o = u32::try_from(v)
            .map_err(|_| VulkanError::Unsupported(format!("size {v} does not fit the shaders' 32-bit indices")))?;
    }
    Ok(out)
}

/// `write` and `download`: the host slice must hold as many values as the buffer (the one
/// length check the core's front ends do not make, as in the CPU backend).
fn check_host(buffer: usize, host: usize) -> Result<(), VulkanError> {
    if buffer == host {
        Ok(())
    } else {
        Err(VulkanError::LengthMismatch { buffer, host })
    }
}

/// The bytes of `words` (native endianness, what the device reads).
fn words_as_bytes(words: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding and any byte is a valid u8; the length is in bytes.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

fn floats_as_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: as `words_as_bytes`.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

impl Drop for VulkanBackend {
    fn drop(&mut self) {
        // Finish recorded work so that dropping the engine and the memory is safe.
        let _ = self.sync();
    }
}

impl Buffers for VulkanBackend {
    type Buffer = VulkanBuffer;
    type Error = VulkanError;

    fn name(&self) -> &'static str {
        "vulkan"
    }

    fn zeros(&self, len: usize) -> Result<VulkanBuffer, VulkanError> {
        let buffer = self.allocate(PoolKind::Device, len)?;
        match buffer.mapped {
            // SAFETY: a fresh range of at least `4 len` bytes, used by nothing else.
            Some(ptr) => unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, 4 * len) },
            None => self.fill_buffer(&buffer, 0.0)?,
        }
        Ok(buffer)
    }

    fn upload(&self, host: &[f32]) -> Result<VulkanBuffer, VulkanError> {
        let buffer = self.allocate(PoolKind::Device, host.len())?;
        self.write_bytes(&buffer, floats_as_bytes(host), true)?;
        Ok(buffer)
    }

    fn write(&self, buffer: &mut VulkanBuffer, host: &[f32]) -> Result<(), VulkanError> {
        check_host(buffer.len, host.len())?;
        self.write_bytes(buffer, floats_as_bytes(host), false)
    }

    fn download(&self, buffer: &VulkanBuffer, host: &mut [f32]) -> Result<(), VulkanError> {
        check_host(buffer.len, host.len())?;
        let bytes = 4 * host.len();
        let staging;
        let ptr = match buffer.mapped.filter(|_| buffer.host_cached) {
            Some(ptr) => ptr,
            None => {
                staging = VulkanBuffer::new(&self.memory, PoolKind::Staging, bytes as u64, 0)?;
                self.engine().recorder.copy(buffer, &staging, bytes as u64)?;
                staging.mapped.ok_or_else(|| VulkanError::OutOfMemory("staging memory is not mapped".into()))?
            }
        };
        self.sync()?;
        // SAFETY: the mapping holds at least `bytes` bytes of this buffer (or its staging copy),
        // and the work writing them has completed (sync waited, with a host barrier).
        unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), host.as_mut_ptr().cast::<u8>(), bytes) };
        Ok(())
    }

    fn len(&self, buffer: &VulkanBuffer) -> usize {
        buffer.len
    }
}
