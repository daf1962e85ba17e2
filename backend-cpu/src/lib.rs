//! # gpstoken-backend-cpu
//!
//! The CPU implementation of [`gpstoken_core::Backend`]: buffers are `Vec<f32>`, kernels run on
//! a rayon pool. One file per op family, named like the trait's file in `core/src/backend/`, each
//! implementing that family's kernel trait (`gpstoken_core::backend::kernels`); the core's front
//! end has checked every buffer before a kernel runs, so there are no shape checks here.
//!
//! Determinism: every output value is produced by exactly one task, in a fixed order that does
//! not depend on how the work is split (no float atomics, no reductions across threads; work is
//! cut into pieces whose size does not depend on the thread count). So the results are
//! bit-identical for any thread count.

use gpstoken_core::backend::{Buffers, ShapeError};
use std::fmt;

mod attention;
mod conv;
mod gaussian;
mod gemm;
mod linear;
mod loss;
mod norm;
mod optim;
mod roi;
mod scratch;
mod simd;
mod splat;
mod tensor;

/// What can go wrong on the CPU backend.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuError {
    /// A buffer does not fit the op's shape descriptor (reported by the core's front end).
    Shape(ShapeError),
    /// `write`/`download`: the host slice and the buffer differ in length.
    LengthMismatch { buffer: usize, host: usize },
    /// The thread pool could not be built (or zero threads were asked for).
    ThreadPool(String),
    /// A buffer of this many values could not be allocated.
    OutOfMemory { values: usize },
}

impl fmt::Display for CpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuError::Shape(e) => write!(f, "shape error: {e}"),
            CpuError::LengthMismatch { buffer, host } => {
                write!(f, "buffer holds {buffer} values but the host slice holds {host}")
            }
            CpuError::ThreadPool(msg) => write!(f, "cannot build the CPU thread pool: {msg}"),
            CpuError::OutOfMemory { values } => {
                write!(f, "out of memory: cannot allocate a buffer of {values} values ({} MiB)", values / (1 << 18))
            }
        }
    }
}

impl std::error::Error for CpuError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CpuError::Shape(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ShapeError> for CpuError {
    fn from(e: ShapeError) -> Self {
        CpuError::Shape(e)
    }
}

/// The CPU backend. `new()` runs on rayon's global pool; `with_threads(n)` owns a pool of `n`
/// threads and runs every op inside it.
#[derive(Debug, Default)]
pub struct CpuBackend {
    pool: Option<rayon::ThreadPool>,
    /// Temporary f32 buffers of the kernels (im2col, attention `dS`, ...), reused across calls.
    pub(crate) scratch: scratch::ScratchPool<f32>,
    /// Temporary f64 buffers (partial sums, interpolation tables), reused across calls.
    pub(crate) scratch64: scratch::ScratchPool<f64>,
    /// The splat's per-Gaussian pixel ranges.
    pub(crate) footprints: scratch::ScratchPool<gpstoken_core::render::Footprint>,
    /// Index permutations (the splat backward's visiting order).
    pub(crate) indices: scratch::ScratchPool<usize>,
}

impl CpuBackend {
    /// A backend on rayon's global thread pool.
    pub fn new() -> CpuBackend {
        CpuBackend {
            pool: None,
            scratch: Default::default(),
            scratch64: Default::default(),
            footprints: Default::default(),
            indices: Default::default(),
        }
    }

    /// A backend with its own pool of `threads` threads (at least 1).
    pub fn with_threads(threads: usize) -> Result<CpuBackend, CpuError> {
        if threads == 0 {
            return Err(CpuError::ThreadPool("the thread count must be at least 1".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("gpstoken-cpu-{i}"))
            .build()
            .map_err(|e| CpuError::ThreadPool(e.to_string()))?;
        Ok(CpuBackend {
            pool: Some(pool),
            scratch: Default::default(),
            scratch64: Default::default(),
            footprints: Default::default(),
            indices: Default::default(),
        })
    }

    /// Threads the ops run on.
    pub fn threads(&self) -> usize {
        match &self.pool {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Runs `op` on this backend's pool.
    pub(crate) fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(op),
            None => op(),
        }
    }
}

/// `len` zeros, or [`CpuError::OutOfMemory`] instead of the abort `vec![0.0; len]` gives when the
/// allocation fails. Zeroed memory comes from `alloc_zeroed` (calloc), so pages never written
/// are never touched, as with `vec!`.
fn zeroed(len: usize) -> Result<Vec<f32>, CpuError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let oom = CpuError::OutOfMemory { values: len };
    let layout = std::alloc::Layout::array::<f32>(len).map_err(|_| oom.clone())?;
    // SAFETY: the layout has a non-zero size; a non-null result is valid for `len` f32 values,
    // all zero bits (= 0.0), allocated by the global allocator with exactly this layout, which
    // is what `Vec::from_raw_parts` requires.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<f32>();
        if ptr.is_null() {
            return Err(oom);
        }
        Ok(Vec::from_raw_parts(ptr, len, len))
    }
}

#[cfg(test)]
mod alloc_tests {
    #[test]
    fn an_impossible_buffer_is_an_error_not_an_abort() {
        use gpstoken_core::backend::Buffers;
        let be = super::CpuBackend::new();
        assert!(matches!(be.zeros(usize::MAX / 8), Err(super::CpuError::OutOfMemory { .. })));
        assert!(matches!(be.zeros(1 << 56), Err(super::CpuError::OutOfMemory { .. })));
        assert_eq!(be.zeros(5).unwrap(), vec![0.0; 5]);
    }
}

pub(crate) fn check_host(buffer: usize, host: usize) -> Result<(), CpuError> {
    if buffer == host {
        Ok(())
    } else {
        Err(CpuError::LengthMismatch { buffer, host })
    }
}

impl Buffers for CpuBackend {
    type Buffer = Vec<f32>;
    type Error = CpuError;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>, CpuError> {
        zeroed(len)
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>, CpuError> {
        Ok(host.to_vec())
    }

    fn write(&self, buffer: &mut Vec<f32>, host: &[f32]) -> Result<(), CpuError> {
        check_host(buffer.len(), host.len())?;
        buffer.copy_from_slice(host);
        Ok(())
    }

    fn download(&self, buffer: &Vec<f32>, host: &mut [f32]) -> Result<(), CpuError> {
        check_host(buffer.len(), host.len())?;
        host.copy_from_slice(buffer);
        Ok(())
    }

    fn len(&self, buffer: &Vec<f32>) -> usize {
        buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_round_trip_and_check_lengths() {
        let b = CpuBackend::with_threads(1).unwrap();
        let mut buf = b.upload(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(b.len(&buf), 3);
        b.write(&mut buf, &[4.0, 5.0, 6.0]).unwrap();
        let mut host = [0.0; 3];
        b.download(&buf, &mut host).unwrap();
        assert_eq!(host, [4.0, 5.0, 6.0]);
        assert_eq!(b.write(&mut buf, &[1.0]), Err(CpuError::LengthMismatch { buffer: 3, host: 1 }));
        assert!(b.download(&buf, &mut [0.0; 4]).is_err());
        assert_eq!(b.zeros(2).unwrap(), vec![0.0, 0.0]);
        assert!(CpuBackend::with_threads(0).is_err());
        assert_eq!(b.threads(), 1);
    }
}
