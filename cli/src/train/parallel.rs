//! Data-parallel training: `W` ranks, each with its own backend (a GPU, or a share of the CPU),
//! its own copy of the model and `batch / W` samples of every batch. After each backward pass
//! every gradient becomes the mean over the ranks, so every rank takes the same optimiser step
//! and the weights stay identical: one step on `W` ranks is one step on the whole batch (to
//! float rounding: the mean of `W` sub-batch means instead of one mean).
//!
//! How the mean is taken ([`GradientSync`]):
//! - one rank: nothing to do ([`SingleRank`]);
//! - ranks in one process on a backend without NCCL (cpu, vulkan): through the host
//!   ([`HostSync`]): each rank downloads its gradients, the sum is taken in rank order (so the
//!   result does not depend on timing) and uploaded again;
//! - cuda ranks, in one process (`--devices 0,1`) or one per process (`torchrun`-style
//!   environment, [`crate::rendezvous`]): NCCL's all-reduce on a stream beside the backend's
//!   (`gpstoken_backend_cuda::NcclComm`), so that it overlaps the rest of the backward pass.
//!
//! The training step hands the gradients over in buckets as the backward pass finishes them
//! ([`super::buckets::GradientBuckets`]).

use crate::rendezvous::LaunchEnv;
use anyhow::{anyhow, bail, Result};
use gpstoken_core::backend::Backend;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// This process's or thread's place among the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankInfo {
    pub rank: usize,
    pub world: usize,
}

impl RankInfo {
    pub const SINGLE: RankInfo = RankInfo { rank: 0, world: 1 };

    /// Rank 0 writes the log, the checkpoints and the outputs; the others only compute.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    /// The samples of a `batch` this rank computes: `batch / world` consecutive ones.
    pub fn shard(&self, batch: usize) -> std::ops::Range<usize> {
        let per = batch / self.world;
        self.rank * per..(self.rank + 1) * per
    }
}

/// Checks that `batch` splits evenly over `world` ranks.
pub fn check_batch_split(batch: usize, world: usize) -> Result<()> {
    if world > 1 && (batch < world || !batch.is_multiple_of(world)) {
        bail!("--batch {batch} does not split evenly over {world} devices (use a multiple of {world})");
    }
    Ok(())
}

/// Makes gradients the mean over the ranks.
pub trait GradientSync<B: Backend> {
    fn info(&self) -> RankInfo;

    /// Whether there is anything to exchange: false only for [`SingleRank`] (an NCCL
    /// communicator of one rank still runs its all-reduce, to test that path on one GPU).
    fn exchanges(&self) -> bool {
        true
    }

    /// Starts replacing every buffer by its element-wise mean over the ranks. Every rank passes
    /// buffers of the same lengths in the same order. The ops queued on `be` after
    /// [`GradientSync::wait`] see the means; until then nothing may write or read the buffers
    /// (on CUDA the reduction runs beside the backend's later kernels).
    fn start_all_reduce_mean(&mut self, be: &B, buffers: &mut [&mut B::Buffer]) -> Result<()>;

    /// Orders the ops queued on `be` from now on after every reduction started so far (the
    /// host does not wait). Nothing to do where reductions finish before they return.
    fn wait(&mut self, _be: &B) -> Result<()> {
        Ok(())
    }

    /// Replaces every buffer by its element-wise mean over the ranks, for the ops queued after.
    fn all_reduce_mean(&mut self, be: &B, buffers: &mut [&mut B::Buffer]) -> Result<()> {
        self.start_all_reduce_mean(be, buffers)?;
        self.wait(be)
    }

    /// Tells the other ranks that this one failed, so that none waits for it forever.
    fn abort(&self) {}
}

/// World size 1.
pub struct SingleRank;

impl<B: Backend> GradientSync<B> for SingleRank {
    fn info(&self) -> RankInfo {
        RankInfo::SINGLE
    }

    fn exchanges(&self) -> bool {
        false
    }

    fn start_all_reduce_mean(&mut self, _: &B, _: &mut [&mut B::Buffer]) -> Result<()> {
        Ok(())
    }
}

/// How long a rank waits for the others at one exchange before it gives up (a rank that died
/// without aborting, e.g. killed by the system).
const HOST_WAIT: Duration = Duration::from_secs(600);

/// The meeting point of the ranks of one process ([`HostSync`]).
pub struct HostHub {
    world: usize,
    state: Mutex<HubState>,
    turn: Condvar,
}

struct HubState {
    /// Each rank's downloaded values for the current exchange.
    slots: Vec<Vec<f32>>,
    /// The mean of the current exchange, once every slot is in (reused from exchange to exchange).
    mean: Vec<f32>,
    /// Ranks that have delivered in the current exchange, and the exchange's number.
    arrived: usize,
    generation: u64,
    aborted: bool,
}

impl HostHub {
    pub fn new(world: usize) -> Arc<HostHub> {
        Arc::new(HostHub {
            world,
            state: Mutex::new(HubState {
                slots: vec![Vec::new(); world],
                mean: Vec::new(),
                arrived: 0,
                generation: 0,
                aborted: false,
            }),
            turn: Condvar::new(),
        })
    }

    pub fn abort(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.aborted = true;
        }
        self.turn.notify_all();
    }

    /// Delivers rank `rank`'s `values` and overwrites them with the mean over all ranks once
    /// every rank has delivered. The sum runs over ranks 0, 1, ... in order, whatever the arrival
    /// order. The vectors change hands instead of being copied, so a run allocates them once.
    fn exchange(&self, rank: usize, values: &mut Vec<f32>) -> Result<()> {
        let poisoned = || anyhow!("another rank panicked");
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        if s.aborted {
            bail!("another rank failed");
        }
        std::mem::swap(&mut s.slots[rank], values);
        s.arrived += 1;
        let generation = s.generation;
        if s.arrived == self.world {
            let n = s.slots[0].len();
            if s.slots.iter().any(|v| v.len() != n) {
                s.aborted = true;
                self.turn.notify_all();
                bail!("internal error: the ranks exchanged gradients of different sizes");
            }
            let HubState { slots, mean, .. } = &mut *s;
            mean.clear();
            mean.resize(n, 0.0);
            for slot in slots.iter() {
                for (a, b) in mean.iter_mut().zip(slot) {
                    *a += b;
                }
            }
            let inv = 1.0 / self.world as f32;
            mean.iter_mut().for_each(|a| *a *= inv);
            s.arrived = 0;
            s.generation += 1;
            self.turn.notify_all();
            return copy_mean(&s, values);
        }
        while s.generation == generation && !s.aborted {
            let (next, timeout) = self.turn.wait_timeout(s, HOST_WAIT).map_err(|_| poisoned())?;
            s = next;
            if timeout.timed_out() && s.generation == generation {
                s.aborted = true;
                self.turn.notify_all();
                bail!("no word from the other ranks for {} s", HOST_WAIT.as_secs());
            }
        }
        if s.generation == generation {
            bail!("another rank failed");
        }
        // Read under the lock: the next mean is computed only after every rank has arrived again.
        copy_mean(&s, values)
    }
}

fn copy_mean(s: &HubState, values: &mut Vec<f32>) -> Result<()> {
    values.clear();
    values.extend_from_slice(&s.mean);
    Ok(())
}

/// A rank of one process whose gradients meet on the host.
pub struct HostSync {
    pub hub: Arc<HostHub>,
    pub rank: usize,
    /// This rank's gradients on the host, reused every step.
    pub host: Vec<f32>,
}

impl<B: Backend> GradientSync<B> for HostSync {
    fn info(&self) -> RankInfo {
        RankInfo { rank: self.rank, world: self.hub.world }
    }

    /// Finishes before it returns: the downloads wait for the backend.
    fn start_all_reduce_mean(&mut self, be: &B, buffers: &mut [&mut B::Buffer]) -> Result<()> {
        let err = crate::backends::device_error(be);
        let total: usize = buffers.iter().map(|b| be.len(b)).sum();
        self.host.resize(total, 0.0);
        let mut at = 0;
        for b in buffers.iter() {
            let n = be.len(b);
            be.download(b, &mut self.host[at..at + n]).map_err(err)?;
            at += n;
        }
        self.hub.exchange(self.rank, &mut self.host)?;
        let mut at = 0;
        for b in buffers.iter_mut() {
            let n = be.len(b);
            be.write(b, &self.host[at..at + n]).map_err(err)?;
            at += n;
        }
        Ok(())
    }

    fn abort(&self) {
        self.hub.abort();
    }
}

/// NCCL on the CUDA backend.
#[cfg(feature = "cuda")]
pub struct NcclSync {
    pub comm: gpstoken_backend_cuda::NcclComm,
    /// In one process: the hub's abort wakes the host side of the other ranks.
    pub hub: Option<Arc<HostHub>>,
}

#[cfg(feature = "cuda")]
impl GradientSync<gpstoken_backend_cuda::CudaBackend> for NcclSync {
    fn info(&self) -> RankInfo {
        RankInfo { rank: self.comm.rank(), world: self.comm.world() }
    }

    fn start_all_reduce_mean(
        &mut self,
        _: &gpstoken_backend_cuda::CudaBackend,
        buffers: &mut [&mut gpstoken_backend_cuda::CudaBuffer],
    ) -> Result<()> {
        Ok(self.comm.start_all_reduce_mean(buffers)?)
    }

    fn wait(&mut self, _: &gpstoken_backend_cuda::CudaBackend) -> Result<()> {
        Ok(self.comm.wait()?)
    }

    fn abort(&self) {
        if let Some(hub) = &self.hub {
            hub.abort();
        }
    }
}

/// A value that one rank of this process makes and every rank reads (the NCCL id).
pub struct Shared<T: Clone> {
    value: Mutex<Option<Result<T, String>>>,
    ready: Condvar,
}

impl<T: Clone> Shared<T> {
    pub fn new() -> Arc<Shared<T>> {
        Arc::new(Shared { value: Mutex::new(None), ready: Condvar::new() })
    }

    pub fn put(&self, value: Result<T, String>) {
        if let Ok(mut v) = self.value.lock() {
            *v = Some(value);
        }
        self.ready.notify_all();
    }

    pub fn get(&self) -> Result<T> {
        let mut v = self.value.lock().map_err(|_| anyhow!("another rank panicked"))?;
        loop {
            if let Some(value) = v.as_ref() {
                return value.clone().map_err(|e| anyhow!("{e}"));
            }
            let (next, timeout) =
                self.ready.wait_timeout(v, HOST_WAIT).map_err(|_| anyhow!("another rank panicked"))?;
            v = next;
            if timeout.timed_out() && v.is_none() {
                bail!("rank 0 did not start within {} s", HOST_WAIT.as_secs());
            }
        }
    }
}

/// How one rank of a run meets the others.
pub enum RankPlan {
    /// The only rank.
    Single,
    /// Rank `rank` of the threads of this process (`--devices`).
    InProcess { rank: usize, hub: Arc<HostHub>, nccl_id: Arc<Shared<[u8; 128]>> },
    /// One rank per process, placed by the environment (`torchrun`-style).
    Launched(LaunchEnv),
}

impl RankPlan {
    pub fn info(&self) -> RankInfo {
        match self {
            RankPlan::Single => RankInfo::SINGLE,
            RankPlan::InProcess { rank, hub, .. } => RankInfo { rank: *rank, world: hub.world },
            RankPlan::Launched(e) => RankInfo { rank: e.rank, world: e.world },
        }
    }

    /// Tells the other ranks of this process that this one failed.
    pub fn abort(&self) {
        if let RankPlan::InProcess { hub, nccl_id, .. } = self {
            hub.abort();
            nccl_id.put(Err("another rank failed".into()));
        }
    }

    /// The sync of a backend without NCCL: through the host, in this process only.
    pub fn host_sync<B: Backend>(&self) -> Result<Box<dyn GradientSync<B>>> {
        match self {
            RankPlan::InProcess { rank, hub, .. } => {
                Ok(Box::new(HostSync { hub: hub.clone(), rank: *rank, host: Vec::new() }))
            }
            RankPlan::Launched(e) if e.world > 1 => {
                bail!("WORLD_SIZE={}: training across processes needs --backend cuda (NCCL)", e.world)
            }
            _ => Ok(Box::new(SingleRank)),
        }
    }

    /// The sync of a CUDA rank: NCCL when there is more than one rank.
    #[cfg(feature = "cuda")]
    pub fn cuda_sync(
        &self,
        be: &gpstoken_backend_cuda::CudaBackend,
    ) -> Result<Box<dyn GradientSync<gpstoken_backend_cuda::CudaBackend>>> {
        use gpstoken_backend_cuda::{NcclComm, NcclId};
        let info = self.info();
        let (id, hub) = match self {
            RankPlan::InProcess { rank, hub, nccl_id } => {
                if *rank == 0 {
                    nccl_id.put(NcclId::new().map(|id| id.0).map_err(|e| e.to_string()));
                }
                (nccl_id.get()?, Some(hub.clone()))
            }
            // A launched run goes through NCCL even with one rank, so that a one-GPU machine
            // runs the same path as a cluster (`WORLD_SIZE=1 RANK=0`, scripts/gpu-check.sh).
            RankPlan::Launched(e) => (e.share_id(|| Ok(NcclId::new()?.0))?, None),
            _ => return Ok(Box::new(SingleRank)),
        };
        let comm = NcclComm::new(be, info.rank, info.world, &NcclId(id))?;
        Ok(Box::new(NcclSync { comm, hub }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_hub_returns_the_rank_ordered_mean_to_every_rank() {
        let hub = HostHub::new(3);
        let handles: Vec<_> = (0..3)
            .map(|r| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    for round in 0..4 {
                        let mut v = vec![r as f32 + round as f32, 10.0 * r as f32];
                        hub.exchange(r, &mut v).unwrap();
                        out.push(v);
                    }
                    out
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for round in 0..4 {
            // (0 + 1 + 2) / 3 + round and (0 + 10 + 20) / 3.
            let want = [(3.0 + 3.0 * round as f32) * (1.0 / 3.0), 30.0 * (1.0 / 3.0)];
            for r in &results {
                assert_eq!(r[round], want, "round {round}");
            }
        }
    }

    #[test]
    fn a_failed_rank_wakes_the_others_with_an_error() {
        let hub = HostHub::new(3);
        let waiting: Vec<_> = (0..2)
            .map(|r| {
                let hub = hub.clone();
                std::thread::spawn(move || hub.exchange(r, &mut vec![1.0]))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        hub.abort();
        for w in waiting {
            let e = w.join().unwrap().unwrap_err();
            assert_eq!(e.to_string(), "another rank failed");
        }
        assert!(hub.exchange(2, &mut vec![1.0]).is_err());
    }

    #[test]
    fn shards_cover_the_batch_and_uneven_splits_are_refused() {
        let w = 4;
        let all: Vec<usize> = (0..w).flat_map(|rank| RankInfo { rank, world: w }.shard(8)).collect();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
        assert!(check_batch_split(8, 4).is_ok());
        assert!(check_batch_split(6, 4).unwrap_err().to_string().contains("--batch 6"));
        assert!(check_batch_split(2, 4).is_err());
        assert!(check_batch_split(3, 1).is_ok());
    }
}
