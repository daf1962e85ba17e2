//! Data-parallel training across GPUs: the mean of every rank's gradients through NCCL.
//!
//! Like the driver, `libnccl` is opened at run time (cudarc's dynamic loading), so nothing here is
//! needed to build, and a machine without NCCL gets [`CudaError::Nccl`] when it asks for more than
//! one rank. cudarc looks for `libnccl.so` (not the `libnccl.so.2` that NCCL installs, e.g. in
//! PyTorch's `nvidia/nccl/lib`): put a link named `libnccl.so` on `LD_LIBRARY_PATH`
//! (`scripts/gpu-check.sh` does).
//!
//! The raw NCCL calls are used rather than cudarc's safe `Comm`, whose drop and group guards
//! unwrap NCCL's errors (a panic); here every failure is a one-line error.

use crate::{CudaBackend, CudaBuffer, CudaError, Engine, Storage};
use cudarc::driver::{CudaEvent, CudaStream};
use cudarc::nccl::{result, sys};
use std::sync::Arc;

/// Whether `libnccl.so` can be opened on this machine.
pub fn nccl_available() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

fn require_nccl() -> Result<(), CudaError> {
    if nccl_available() {
        Ok(())
    } else {
        Err(CudaError::Nccl(
            "libnccl.so not found (install NCCL, or link libnccl.so to libnccl.so.2 on LD_LIBRARY_PATH)".into(),
        ))
    }
}

fn nccl_error(call: &str) -> impl Fn(result::NcclError) -> CudaError + '_ {
    move |e| CudaError::Nccl(format!("{call} failed: {e:?}"))
}

/// The 128 bytes every rank of one run must share (rank 0 makes it; the others receive it out of
/// band, e.g. through the rendezvous of `gpstoken train`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NcclId(pub [u8; 128]);

impl NcclId {
    /// A fresh id (rank 0).
    pub fn new() -> Result<NcclId, CudaError> {
        require_nccl()?;
        let id = result::get_uniqueid().map_err(nccl_error("ncclGetUniqueId"))?;
        Ok(NcclId(id.internal.map(|c| c as u8)))
    }

    fn raw(&self) -> sys::ncclUniqueId {
        sys::ncclUniqueId { internal: self.0.map(|b| b as core::ffi::c_char) }
    }
}

/// This rank's member of a communicator over `world` ranks, on one backend's device.
///
/// The all-reduces run on a stream of their own, so that the backward pass goes on while the
/// gradients it finished are averaged (as PyTorch DDP overlaps its buckets):
/// [`NcclComm::start_all_reduce_mean`] orders the reduction after everything queued so far on
/// the backend's stream, [`NcclComm::wait`] orders everything queued on the backend's stream
/// from then on after every reduction started so far. In between, the backend must not write
/// the buffers being reduced (their gradients are final) nor read them.
pub struct NcclComm {
    comm: sys::ncclComm_t,
    /// The backend's stream (every kernel runs there) and the stream of the reductions.
    compute: Arc<CudaStream>,
    reductions: Arc<CudaStream>,
    /// Recorded on `compute` at each start and on `reductions` at each wait: one event each,
    /// re-recorded, not one made per bucket (a stream's wait takes the event as recorded then).
    computed: CudaEvent,
    reduced: CudaEvent,
    /// Whether a reduction was started since the last [`NcclComm::wait`].
    started: bool,
    rank: usize,
    world: usize,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; `NcclComm` is used through `&mut self` only (or moved whole).
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// Joins the communicator `id` as `rank` of `world` on `be`'s device. Every rank must call
    /// this at the same time (it blocks until all have joined).
    pub fn new(be: &CudaBackend, rank: usize, world: usize, id: &NcclId) -> Result<NcclComm, CudaError> {
        if world == 0 || rank >= world {
            return Err(CudaError::Nccl(format!("rank {rank} is not below the world size {world}")));
        }
        let (Ok(nranks), Ok(rank_i32)) = (i32::try_from(world), i32::try_from(rank)) else {
            return Err(CudaError::Nccl(format!("world size {world} is too large")));
        };
        let Engine::Device { ctx, stream, .. } = &be.engine else {
            return Err(CudaError::Nccl("the CPU emulator of the kernels has no NCCL".into()));
        };
        require_nccl()?;
        ctx.bind_to_thread()?;
        let reductions = stream.fork()?;
        let (computed, reduced) = (ctx.new_event(None)?, ctx.new_event(None)?);
        let mut comm = core::mem::MaybeUninit::uninit();
        // SAFETY: `comm` is written by NCCL on success; the id is 128 plain bytes.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), nranks, id.raw(), rank_i32)
                .map_err(nccl_error("ncclCommInitRank"))?;
            comm.assume_init()
        };
        Ok(NcclComm { comm, compute: stream.clone(), reductions, computed, reduced, started: false, rank, world })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Replaces every buffer, on every rank, by the element-wise mean over the ranks: the
    /// reduction is queued, then the backend's stream waits for it.
    pub fn all_reduce_mean(&mut self, buffers: &mut [&mut CudaBuffer]) -> Result<(), CudaError> {
        self.start_all_reduce_mean(buffers)?;
        self.wait()
    }

    /// Queues the element-wise mean over the ranks of every buffer, in one NCCL group (NCCL
    /// fuses the buffers into its own chunks), on the reduction stream after everything queued
    /// so far on the backend's stream. Every rank must pass buffers of the same lengths in the
    /// same order. The buffers hold the means for the ops queued after [`NcclComm::wait`].
    pub fn start_all_reduce_mean(&mut self, buffers: &mut [&mut CudaBuffer]) -> Result<(), CudaError> {
        self.computed.record(&self.compute)?;
        self.reductions.wait(&self.computed)?;
        self.started = true;
        let stream = self.reductions.cu_stream() as sys::cudaStream_t;
        result::group_start().map_err(nccl_error("ncclGroupStart"))?;
        let mut queued = Ok(());
        for b in buffers.iter_mut() {
            if b.len == 0 {
                continue;
            }
            if !matches!(b.storage, Storage::Device(_)) {
                queued = Err(CudaError::Nccl("a buffer is not in device memory".into()));
                break;
            }
            let ptr = b.address() as *mut core::ffi::c_void;
            // SAFETY: `ptr` addresses `b.len` f32 values on this communicator's device, alive
            // (gradients live as long as the model) and left alone by the backend's stream
            // until `wait`; in place is allowed by NCCL.
            let r = unsafe {
                result::all_reduce(
                    ptr,
                    ptr,
                    b.len,
                    sys::ncclDataType_t::ncclFloat32,
                    sys::ncclRedOp_t::ncclAvg,
                    self.comm,
                    stream,
                )
            };
            if let Err(e) = r {
                queued = Err(nccl_error("ncclAllReduce")(e));
                break;
            }
        }
        // The group is closed even after a failed call, so that NCCL is not left inside it.
        let ended = result::group_end().map_err(nccl_error("ncclGroupEnd"));
        queued.and(ended.map(|_| ()))
    }

    /// Makes every op queued on the backend's stream from now on wait for the reductions
    /// started so far (the host does not wait).
    pub fn wait(&mut self) -> Result<(), CudaError> {
        if std::mem::take(&mut self.started) {
            self.reduced.record(&self.reductions)?;
            self.compute.wait(&self.reduced)?;
        }
        Ok(())
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // Reductions still queued finish before the backend's later ops (and its buffers' frees).
        let _ = self.wait();
        // SAFETY: the communicator is not used after this; an error here has no one to go to.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}
