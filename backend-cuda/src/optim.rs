//! `OptimOps` on CUDA: elementwise kernels, the CPU backend's f32 operation order (`precise`
//! in the kernels keeps the compiler from fusing multiply-adds), scalars prepared on the host
//! in f64 and rounded to f32 as PyTorch does.
//!
//! The multi-tensor ops are one launch for all tensors (`adam_many`, `ema_many`): the tensors'
//! values are laid end to end in one index space and a small table of u32 words gives each
//! tensor's first index and buffer addresses (layout: `TensorTable` in `kernels/optim.cu`). The
//! table is uploaded when its words differ from those of the recent calls [`TableCache`] keeps,
//! so a training loop, which updates the same tensors every step, uploads it once. Per value
//! they run the single-tensor kernels' code, so the same bits.

use crate::launch::{params, Kernel};
use crate::launch::{read, read_write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use cudarc::driver::DeviceRepr;
use gpstoken_core::backend::kernels::OptimKernels;
use gpstoken_core::backend::{ema_weight, AdamConfig, AdamTensor, EmaTensor};
use std::collections::HashMap;

params! {
    /// `kernels/optim.cu` `adam`.
    struct AdamParams {
        total: u32,
        neg_step_size: f32,
        bc2_sqrt: f32,
        one_minus_b1: f32,
        one_minus_b2: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    }
}
params! {
    /// `kernels/optim.cu` `ema`.
    struct EmaParams { total: u32, weight: f32 }
}
params! {
    /// `kernels/optim.cu` `adam_many`: `adam` (its `total`: all tensors' values), then the
    /// number of tensors in the table.
    struct AdamManyParams { adam: AdamParams, tensors: u32 }
}
params! {
    /// `kernels/optim.cu` `ema_many`: `ema` (its `total`: all tensors' values), then the number
    /// of tensors in the table.
    struct EmaManyParams { ema: EmaParams, tensors: u32 }
}

/// Most values one multi-tensor launch covers: its indices (u32, grid-stride steps included)
/// stay far from wrapping. A larger set of tensors is split into several launches.
const VALUES_PER_LAUNCH: usize = 1 << 31;

/// One launch of a multi-tensor kernel: its values and its table (`TensorTable` in
/// `kernels/optim.cu`).
#[derive(Debug, PartialEq)]
struct TableLaunch {
    total: u32,
    tensors: u32,
    words: Vec<u32>,
}

/// The launches for `tensors` (each its length and its `K` buffer addresses), in order: empty
/// tensors are left out, and a launch takes tensors while they fit [`VALUES_PER_LAUNCH`] (a
/// single larger tensor gets a launch of its own, if its length fits the u32 indices).
fn table_launches<const K: usize>(tensors: &[(usize, [u64; K])]) -> Result<Vec<TableLaunch>, CudaError> {
    let mut launches = Vec::new();
    let mut group: Vec<(usize, [u64; K])> = Vec::new();
    let mut total = 0usize;
    let mut flush = |group: &mut Vec<(usize, [u64; K])>, total: usize| -> Result<(), CudaError> {
        if group.is_empty() {
            return Ok(());
        }
        let [total, tensors] = dims([total, group.len()])?;
        let mut words = Vec::with_capacity(group.len() * (1 + 2 * K));
        let mut start = 0u32;
        for (len, _) in group.iter() {
            words.push(start);
            start += *len as u32;
        }
        for (_, addresses) in group.iter() {
            for a in addresses {
                words.extend([*a as u32, (*a >> 32) as u32]);
            }
        }
        launches.push(TableLaunch { total, tensors, words });
        group.clear();
        Ok(())
    };
    for &(len, addresses) in tensors.iter().filter(|t| t.0 > 0) {
        if total + len > VALUES_PER_LAUNCH {
            flush(&mut group, total)?;
            total = 0;
        }
        group.push((len, addresses));
        total += len;
    }
    flush(&mut group, total)?;
    Ok(launches)
}

impl OptimKernels for CudaBackend {
    fn adam_step(
        &self,
        config: &AdamConfig,
        step: u32,
        param: &mut CudaBuffer,
        grad: &CudaBuffer,
        m: &mut CudaBuffer,
        v: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        let [total] = dims([param.len])?;
        let params = adam_params(config, step, total);
        self.run(Kernel::Adam, &[read_write(param), read(grad), read_write(m), read_write(v)], &params, total)
    }

    fn ema_update(&self, decay: f32, ema: &mut CudaBuffer, param: &CudaBuffer) -> Result<(), CudaError> {
        let [total] = dims([ema.len])?;
        let params = EmaParams { total, weight: (1.0 - f64::from(decay)) as f32 };
        self.run(Kernel::Ema, &[read_write(ema), read(param)], &params, total)
    }

    fn adam_step_many(
        &self,
        config: &AdamConfig,
        step: u32,
        tensors: &mut [AdamTensor<'_, CudaBuffer>],
    ) -> Result<(), CudaError> {
        let layout: Vec<(usize, [u64; 4])> = tensors
            .iter()
            .map(|t| (t.param.len, [t.param.address(), t.grad.address(), t.m.address(), t.v.address()]))
            .collect();
        self.run_tables(Kernel::AdamMany, &table_launches(&layout)?, |launch| AdamManyParams {
            adam: adam_params(config, step, launch.total),
            tensors: launch.tensors,
        })
    }

    fn ema_update_many(&self, decay: f32, tensors: &mut [EmaTensor<'_, CudaBuffer>]) -> Result<(), CudaError> {
        let layout: Vec<(usize, [u64; 2])> =
            tensors.iter().map(|t| (t.ema.len, [t.ema.address(), t.param.address()])).collect();
        self.run_tables(Kernel::EmaMany, &table_launches(&layout)?, |launch| EmaManyParams {
            ema: EmaParams { total: launch.total, weight: ema_weight(decay) },
            tensors: launch.tensors,
        })
    }
}

impl CudaBackend {
    /// Launches the multi-tensor `kernel` once per launch of `launches`, with its `params` and
    /// its table, on the device copy of the table that [`TableCache`] holds.
    fn run_tables<P: DeviceRepr>(
        &self,
        kernel: Kernel,
        launches: &[TableLaunch],
        params: impl Fn(&TableLaunch) -> P,
    ) -> Result<(), CudaError> {
        if launches.is_empty() {
            return Ok(());
        }
        let words: Vec<&[u32]> = launches.iter().map(|l| l.words.as_slice()).collect();
        // A table evicted from the cache is dropped, and a dropped device buffer is freed in
        // stream order (cudarc frees with cuMemFreeAsync on the backend's one stream, or
        // synchronizes the stream first where the driver lacks it): every launch queued before
        // the drop still reads it. So the lock is held until this call's launches are queued:
        // another thread's call cannot evict (and queue the free of) a table between its
        // lookup here and the launch that reads it. (The emulator's tables are host memory,
        // freed at once, but its launches finish before returning.)
        let mut cache = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let tables = cache.buffers(kernel, &words, |w| self.upload_words(w))?;
        for (launch, table) in launches.iter().zip(tables) {
            self.run(kernel, &[read(table)], &params(launch), launch.total)?;
        }
        Ok(())
    }
}

/// Tables kept per multi-tensor kernel: a GAN's generator and discriminator Adam steps
/// alternate, each on its own tensors, and both stay cached.
const TABLES_PER_KERNEL: usize = 4;

/// The device copies of multi-tensor tables ([`table_launches`]) of recent calls, per kernel
/// (`B`: the buffer type). Training updates the same tensors every step, so the table words
/// repeat: a call whose words equal a cached call's launches on that call's buffers instead of
/// allocating and copying the table again.
pub(crate) struct TableCache<B> {
    /// Per kernel, the cached calls, most recently used first.
    calls: HashMap<Kernel, Vec<CachedCall<B>>>,
}

/// One call's tables: each launch's words and the buffer holding them.
struct CachedCall<B> {
    words: Vec<Vec<u32>>,
    buffers: Vec<B>,
}

impl<B> Default for TableCache<B> {
    fn default() -> Self {
        TableCache { calls: HashMap::new() }
    }
}

impl<B> TableCache<B> {
    /// The buffers holding `words` (one table per launch) for `kernel`: those of a cached call
    /// with the same words, else new ones from `upload`, cached in place of the least recently
    /// used call past [`TABLES_PER_KERNEL`] (whose buffers are dropped).
    pub(crate) fn buffers<E>(
        &mut self,
        kernel: Kernel,
        words: &[&[u32]],
        mut upload: impl FnMut(&[u32]) -> Result<B, E>,
    ) -> Result<&[B], E> {
        let calls = self.calls.entry(kernel).or_default();
        let same = |call: &CachedCall<B>| call.words.iter().map(Vec::as_slice).eq(words.iter().copied());
        match calls.iter().position(same) {
            Some(i) => calls[..=i].rotate_right(1),
            None => {
                let buffers = words.iter().map(|w| upload(w)).collect::<Result<Vec<B>, E>>()?;
                calls.insert(0, CachedCall { words: words.iter().map(|w| w.to_vec()).collect(), buffers });
                calls.truncate(TABLES_PER_KERNEL);
            }
        }
        Ok(&calls[0].buffers)
    }
}

/// The kernel parameters of Adam step `step` over `total` values ([`AdamConfig::step_scalars`]).
fn adam_params(config: &AdamConfig, step: u32, total: u32) -> AdamParams {
    let s = config.step_scalars(step);
    AdamParams {
        total,
        neg_step_size: s.neg_step_size,
        bc2_sqrt: s.bc2_sqrt,
        one_minus_b1: s.one_minus_b1,
        one_minus_b2: s.one_minus_b2,
        beta2: s.beta2,
        eps: s.eps,
        weight_decay: s.weight_decay,
    }
}

#[cfg(test)]
mod tests {
    use super::{table_launches, TableCache, TableLaunch, TABLES_PER_KERNEL, VALUES_PER_LAUNCH};
    use crate::launch::Kernel;
    use std::convert::Infallible;

    /// A [`TableCache`] whose "buffers" are upload numbers (0, 1, ...) and the words uploaded.
    struct Uploads {
        cache: TableCache<usize>,
        uploaded: Vec<Vec<u32>>,
    }

    impl Uploads {
        fn new() -> Uploads {
            Uploads { cache: TableCache::default(), uploaded: Vec::new() }
        }

        /// The upload numbers `kernel` launches on for `words`.
        fn buffers(&mut self, kernel: Kernel, words: &[&[u32]]) -> Vec<usize> {
            let uploaded = &mut self.uploaded;
            let upload = |w: &[u32]| -> Result<usize, Infallible> {
                uploaded.push(w.to_vec());
                Ok(uploaded.len() - 1)
            };
            self.cache.buffers(kernel, words, upload).unwrap().to_vec()
        }
    }

    #[test]
    fn the_same_words_reuse_the_uploaded_table_and_other_words_upload_theirs() {
        let mut u = Uploads::new();
        let (a, b): (&[u32], &[u32]) = (&[0, 3, 10, 0], &[0, 3, 11, 0]);
        assert_eq!(u.buffers(Kernel::AdamMany, &[a]), [0]);
        assert_eq!(u.buffers(Kernel::AdamMany, &[a]), [0], "same words: the cached table");
        assert_eq!(u.buffers(Kernel::AdamMany, &[b]), [1], "another address: uploaded");
        assert_eq!(u.buffers(Kernel::AdamMany, &[&b[..3]]), [2], "a prefix is other words");
        assert_eq!(u.uploaded, [a.to_vec(), b.to_vec(), b[..3].to_vec()]);
        // The GAN's alternation: both tensor sets stay cached.
        for _ in 0..3 {
            assert_eq!(u.buffers(Kernel::AdamMany, &[a]), [0]);
            assert_eq!(u.buffers(Kernel::AdamMany, &[b]), [1]);
        }
        assert_eq!(u.uploaded.len(), 3);
    }

    #[test]
    fn adam_and_ema_tables_are_cached_apart() {
        let mut u = Uploads::new();
        let words: &[u32] = &[0, 7, 0];
        assert_eq!(u.buffers(Kernel::AdamMany, &[words]), [0]);
        assert_eq!(u.buffers(Kernel::EmaMany, &[words]), [1], "the same words for another kernel");
        assert_eq!(u.buffers(Kernel::AdamMany, &[words]), [0]);
        assert_eq!(u.buffers(Kernel::EmaMany, &[words]), [1]);
        assert_eq!(u.uploaded.len(), 2);
    }

    #[test]
    fn a_call_of_several_launches_is_cached_whole() {
        let mut u = Uploads::new();
        let (first, second, other): (&[u32], &[u32], &[u32]) = (&[0, 1, 2], &[0, 3, 4], &[0, 5, 6]);
        assert_eq!(u.buffers(Kernel::AdamMany, &[first, second]), [0, 1]);
        assert_eq!(u.buffers(Kernel::AdamMany, &[first, second]), [0, 1], "both launches cached");
        assert_eq!(u.buffers(Kernel::AdamMany, &[first, other]), [2, 3], "one launch changed");
        assert_eq!(u.buffers(Kernel::AdamMany, &[first]), [4], "fewer launches");
        assert_eq!(u.buffers(Kernel::AdamMany, &[first, second]), [0, 1]);
        assert_eq!(u.uploaded.len(), 5);
    }

    #[test]
    fn the_least_recently_used_call_is_dropped_past_the_limit() {
        let mut u = Uploads::new();
        let sets: Vec<[u32; 1]> = (0..=TABLES_PER_KERNEL as u32).map(|i| [i]).collect();
        for set in &sets[..TABLES_PER_KERNEL] {
            u.buffers(Kernel::EmaMany, &[set]);
        }
        assert_eq!(u.buffers(Kernel::EmaMany, &[&sets[0]]), [0], "used again: now the most recent");
        u.buffers(Kernel::EmaMany, &[&sets[TABLES_PER_KERNEL]]);
        assert_eq!(u.buffers(Kernel::EmaMany, &[&sets[0]]), [0], "kept");
        let uploads = u.uploaded.len();
        assert_eq!(u.buffers(Kernel::EmaMany, &[&sets[1]]), [uploads], "the least recently used: dropped");
    }

    /// The CUDA `adam_many` / `ema_many` parameters: the single-tensor `Params` as the first
    /// member, then `uint tensors`.
    #[test]
    fn the_many_params_hold_the_single_tensor_params_then_the_tensor_count() {
        use super::{AdamManyParams, AdamParams, EmaManyParams, EmaParams};
        use std::mem::{offset_of, size_of};
        assert_eq!(
            [offset_of!(AdamManyParams, adam), offset_of!(AdamManyParams, tensors)],
            [0, size_of::<AdamParams>()]
        );
        assert_eq!([offset_of!(EmaManyParams, ema), offset_of!(EmaManyParams, tensors)], [0, size_of::<EmaParams>()]);
        assert_eq!([size_of::<AdamManyParams>(), size_of::<EmaManyParams>()], [36, 12]);
    }

    #[test]
    fn a_failed_upload_caches_nothing() {
        let mut cache = TableCache::<usize>::default();
        let words: &[u32] = &[0, 1];
        assert!(cache.buffers(Kernel::AdamMany, &[words, words], |_| Err("no memory")).is_err());
        let mut uploads = 0;
        let upload = |_: &[u32]| -> Result<usize, Infallible> {
            uploads += 1;
            Ok(uploads)
        };
        assert_eq!(cache.buffers(Kernel::AdamMany, &[words], upload).unwrap(), [1]);
    }

    #[test]
    fn the_table_lists_starts_then_address_halves_and_skips_empty_tensors() {
        let a = 0x1234_5678_9abc_def0u64;
        let b = 0x0000_0001_0000_0004u64;
        let launches = table_launches(&[(3, [a, b]), (0, [7, 7]), (5, [b, a])]).unwrap();
        let words = vec![0, 3, 0x9abc_def0, 0x1234_5678, 4, 1, 4, 1, 0x9abc_def0, 0x1234_5678];
        assert_eq!(launches, vec![TableLaunch { total: 8, tensors: 2, words }]);
        assert!(table_launches::<2>(&[(0, [1, 2])]).unwrap().is_empty());
    }

    #[test]
    fn tensors_past_the_launch_limit_start_a_new_launch() {
        let half = VALUES_PER_LAUNCH / 2 + 1;
        let launches = table_launches(&[(half, [1]), (half, [2]), (10, [3])]).unwrap();
        let shape: Vec<(u32, u32)> = launches.iter().map(|l| (l.total, l.tensors)).collect();
        assert_eq!(shape, vec![(half as u32, 1), (half as u32 + 10, 2)]);
        assert_eq!(launches[1].words[..2], [0, half as u32]);
        assert!(table_launches(&[(u32::MAX as usize + 1, [1])]).is_err(), "one tensor past the u32 indices");
    }
}
