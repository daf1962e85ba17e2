//! # gpstoken-backend-cuda
//!
//! The CUDA implementation of [`gpstoken_core::Backend`], on [`cudarc`] with the driver and
//! cuBLAS opened at run time (`dynamic-loading`): the crate builds with no CUDA toolkit and no
//! driver, and [`CudaBackend::new`] on such a machine returns the one-line
//! [`CudaError::NoDriver`] ("no CUDA driver found (libcuda.so.1 ...)"), never a panic.
//!
//! * Kernels: CUDA C in `kernels/<family>.cu`, compiled to PTX by `compile-kernels.sh` (NVRTC)
//!   and **committed** in `ptx/`, embedded with `include_str!` ([`launch`]); the driver
//!   JIT-compiles a family's module on first use. One file per op family here too, named like
//!   `core/src/backend/<family>.rs`, each implementing that family's kernel trait.
//! * GEMMs (linear layers, attention): cuBLAS `sgemm` / strided-batched, f32 unless
//!   [`CudaOptions::tf32`]; without libcublas the backend falls back to its own tiled GEMM
//!   kernel ([`blas`]). Convolutions: implicit-GEMM kernels (the im2col matrix is gathered as
//!   tiles load, never stored).
//! * One stream per backend: every op is queued on it in call order, so no op needs an event
//!   to order it after another; `download` waits for the stream.
//! * Deterministic: every output value is written by one thread, sums run in a fixed order
//!   (shared-memory trees, chunked column sums), no float atomics; the splat bins Gaussians into
//!   16×16 tiles in Gaussian order (count, prefix sum, ordered fill) and its backward gives each
//!   Gaussian one block that reduces over its support box in a fixed order.
//!
//! docs/CUDA.md has the design, how kernels are built and checked, and what ran where.

use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr};
use gpstoken_core::backend::Buffers;
use std::sync::{Arc, Mutex};

mod attention;
mod blas;
mod conv;
mod device;
mod emulator;
mod error;
mod gaussian;
mod launch;
mod linear;
mod loss;
mod nccl;
mod norm;
mod optim;
mod roi;
mod splat;
mod tensor;

pub use device::{list_devices, DeviceInfo};
pub use error::CudaError;
pub use nccl::{nccl_available, NcclComm, NcclId};

/// Threads per block of the grid-stride kernels (`MAX_WG` in `kernels/common.cuh`).
pub(crate) const BLOCK: u32 = 256;
/// Most blocks one launch asks for (grid-stride kernels cover the rest).
const MAX_GROUPS: u32 = 65_535;

/// Choices a caller makes when opening the backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// Let cuBLAS use TF32 tensor cores for f32 GEMMs (about 10 bits of mantissa in the
    /// products; faster, outside the conformance tolerances). Off by default.
    pub tf32: bool,
}

/// A device buffer of f32 values (`len` of them; an empty buffer holds no allocation).
pub struct CudaBuffer {
    storage: Storage,
    address: u64,
    pub(crate) len: usize,
}

/// Where a buffer's values live.
enum Storage {
    Empty,
    Device(CudaSlice<f32>),
    /// Host memory of the CPU emulator ([`CudaBackend::emulated`]): kernels write it through
    /// `address` while no Rust reference to it is alive (emulated launches are synchronous).
    Host(Vec<f32>),
}

impl std::fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuffer({} values at {:#x})", self.len, self.address)
    }
}

impl CudaBuffer {
    fn new(slice: CudaSlice<f32>, stream: &CudaStream) -> CudaBuffer {
        let len = slice.len();
        // With event tracking off (CudaBackend::with_options) the guard records nothing.
        let address = slice.device_ptr(stream).0;
        CudaBuffer { storage: Storage::Device(slice), address, len }
    }

    fn host(mut values: Vec<f32>) -> CudaBuffer {
        let len = values.len();
        let address = values.as_mut_ptr() as u64;
        CudaBuffer { storage: Storage::Host(values), address, len }
    }

    fn empty() -> CudaBuffer {
        CudaBuffer { storage: Storage::Empty, address: 0, len: 0 }
    }

    /// The device address of the first value (0 for an empty buffer, never dereferenced).
    pub(crate) fn address(&self) -> u64 {
        self.address
    }
}

/// The CUDA backend: one device, one stream, a cuBLAS handle (when libcublas is present); or
/// the kernels on the CPU emulator ([`CudaBackend::emulated`]).
pub struct CudaBackend {
    engine: Engine,
    blas: Option<blas::Blas>,
    info: DeviceInfo,
    options: CudaOptions,
    /// The multi-tensor optimiser tables of recent calls, on the device (`optim.rs`).
    tables: Mutex<optim::TableCache<CudaBuffer>>,
}

/// What runs the kernels.
pub(crate) enum Engine {
    Device { ctx: Arc<CudaContext>, stream: Arc<CudaStream>, kernels: Mutex<launch::KernelCache> },
    Emulator(emulator::Emulator),
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend({}, {:?}, cuBLAS: {})", self.info, self.options, self.blas.is_some())
    }
}

impl CudaBackend {
    /// Device `device` with the default options (f32 GEMMs).
    pub fn new(device: usize) -> Result<CudaBackend, CudaError> {
        CudaBackend::with_options(device, CudaOptions::default())
    }

    /// Device `device` with `options`.
    pub fn with_options(device: usize, options: CudaOptions) -> Result<CudaBackend, CudaError> {
        CudaBackend::open(device, options, true)
    }

    /// Device `device` with every GEMM on the built-in tiled kernel, even where libcublas is
    /// present (to test that path; it is what a machine without cuBLAS runs).
    pub fn with_builtin_gemm(device: usize, options: CudaOptions) -> Result<CudaBackend, CudaError> {
        CudaBackend::open(device, options, false)
    }

    fn open(device: usize, options: CudaOptions, cublas: bool) -> Result<CudaBackend, CudaError> {
        let ctx = device::open(device)?;
        // SAFETY: everything this backend does runs on its one stream (kernels, copies, cuBLAS),
        // so cudarc's per-buffer events are not needed to order uses; allocations and frees
        // are stream-ordered on that stream too.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let blas = if cublas { blas::Blas::open(&stream, options.tf32)? } else { None };
        let info = device::device_info(&ctx)?;
        let engine = Engine::Device { ctx, stream, kernels: Mutex::default() };
        Ok(CudaBackend { engine, blas, info, options, tables: Mutex::default() })
    }

    /// The kernels compiled for the CPU by `emulator/build.sh` (the shared library at `library`),
    /// run one block at a time: slow, for testing the kernels on a machine without a GPU. GEMMs
    /// run a host loop with cuBLAS's semantics on the arguments the backend gives cuBLAS, or with
    /// `builtin_gemm` the built-in GEMM kernel.
    pub fn emulated(library: &std::path::Path, builtin_gemm: bool) -> Result<CudaBackend, CudaError> {
        let engine = Engine::Emulator(emulator::Emulator::open(library)?);
        let info = DeviceInfo {
            index: 0,
            name: format!("CPU emulator ({})", library.display()),
            compute_capability: (0, 0),
            memory_bytes: 0,
            driver_version: (0, 0),
            memory_bandwidth: None,
        };
        let blas = if builtin_gemm { None } else { Some(blas::Blas::Host) };
        Ok(CudaBackend { engine, blas, info, options: CudaOptions::default(), tables: Mutex::default() })
    }

    /// [`CudaBackend::emulated`] on `GPSTOKEN_CUDA_EMULATOR`, for tests: an error (the tests
    /// skip) when it is not set; a panic when it is set but cannot be opened (a relative path
    /// is taken from the test's crate folder), so that a mistyped path fails instead of
    /// skipping. `GPSTOKEN_CUDA_CUBLAS=0` selects the built-in GEMM kernel.
    pub fn emulated_for_tests() -> Result<CudaBackend, CudaError> {
        let builtin_gemm = std::env::var("GPSTOKEN_CUDA_CUBLAS").is_ok_and(|v| v == "0");
        match std::env::var_os("GPSTOKEN_CUDA_EMULATOR") {
            Some(path) => match CudaBackend::emulated(std::path::Path::new(&path), builtin_gemm) {
                Err(e) => panic!("GPSTOKEN_CUDA_EMULATOR={}: {e}", path.to_string_lossy()),
                made => made,
            },
            None => Err(CudaError::Unsupported(
                "GPSTOKEN_CUDA_EMULATOR is not set (build it with backend-cuda/emulator/build.sh)".into(),
            )),
        }
    }

    /// The backend `GPSTOKEN_CUDA_DEVICE` (default 0) names, for tests: on a machine without
    /// CUDA it returns the error (tests print one `SKIPPED` line), unless
    /// `GPSTOKEN_REQUIRE_CUDA=1`, where it panics so that CI on a GPU machine cannot skip.
    /// `GPSTOKEN_CUDA_CUBLAS=0` opens it [`CudaBackend::with_builtin_gemm`].
    pub fn for_tests() -> Result<CudaBackend, CudaError> {
        let device = std::env::var("GPSTOKEN_CUDA_DEVICE").ok().and_then(|d| d.parse().ok()).unwrap_or(0);
        let made = if std::env::var("GPSTOKEN_CUDA_CUBLAS").is_ok_and(|v| v == "0") {
            CudaBackend::with_builtin_gemm(device, CudaOptions::default())
        } else {
            CudaBackend::new(device)
        };
        if let Err(e) = &made {
            if std::env::var("GPSTOKEN_REQUIRE_CUDA").is_ok_and(|v| v == "1") {
                panic!("GPSTOKEN_REQUIRE_CUDA=1 but the CUDA backend cannot be opened: {e}");
            }
        }
        made
    }

    /// The device this backend runs on.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The options it was opened with.
    pub fn options(&self) -> CudaOptions {
        self.options
    }

    /// Whether GEMMs go through cuBLAS (else through the built-in tiled GEMM kernel).
    pub fn has_cublas(&self) -> bool {
        matches!(self.blas, Some(blas::Blas::Cublas(_)))
    }

    /// Waits for every queued op.
    pub fn sync(&self) -> Result<(), CudaError> {
        match &self.engine {
            Engine::Device { stream, .. } => Ok(stream.synchronize()?),
            Engine::Emulator(_) => Ok(()),
        }
    }

    /// Milliseconds the device spends on `work` (events recorded on the stream before and
    /// after it), for benches.
    pub fn time_ms(&self, work: impl FnOnce() -> Result<(), CudaError>) -> Result<f32, CudaError> {
        let Engine::Device { ctx, stream, .. } = &self.engine else {
            let start = std::time::Instant::now();
            work()?;
            return Ok(start.elapsed().as_secs_f32() * 1e3);
        };
        // cudarc's default flags disable timing: ask for timing events.
        let timed = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start: CudaEvent = ctx.new_event(timed)?;
        let end: CudaEvent = ctx.new_event(timed)?;
        start.record(stream)?;
        work()?;
        end.record(stream)?;
        end.synchronize()?;
        Ok(start.elapsed_ms(&end)?)
    }

    /// A buffer of `len` floats, contents undefined.
    pub(crate) fn allocate(&self, len: usize) -> Result<CudaBuffer, CudaError> {
        let stream = match &self.engine {
            _ if len == 0 => return Ok(CudaBuffer::empty()),
            Engine::Device { stream, .. } => stream,
            Engine::Emulator(_) => return Ok(CudaBuffer::host(vec![f32::NAN; len])),
        };
        // SAFETY: f32 has no invalid bit patterns; every caller writes the buffer before reading.
        let slice = unsafe { stream.alloc::<f32>(len) }?;
        Ok(CudaBuffer::new(slice, stream))
    }

    /// A device buffer holding `words` (u32 data such as embedding indices; the kernels declare
    /// the pointer as `uint*`): the bits are copied unchanged.
    pub(crate) fn upload_words(&self, words: &[u32]) -> Result<CudaBuffer, CudaError> {
        let bits: Vec<f32> = words.iter().map(|&w| f32::from_bits(w)).collect();
        self.upload(&bits)
    }

    /// Most blocks a grid-stride launch uses.
    pub(crate) fn max_groups(&self) -> u32 {
        MAX_GROUPS
    }

    /// Side of the square tiles of 2D kernels (`TILE` in the `.cu` files).
    pub(crate) fn gemm_tile(&self) -> u32 {
        16
    }

    /// Launches a grid-stride `kernel` over `total` items in blocks of [`BLOCK`] threads.
    pub(crate) fn run<P: cudarc::driver::DeviceRepr>(
        &self,
        kernel: launch::Kernel,
        args: &[launch::Arg],
        params: &P,
        total: u32,
    ) -> Result<(), CudaError> {
        if total == 0 {
            return Ok(());
        }
        let groups = total.div_ceil(BLOCK).clamp(1, MAX_GROUPS);
        self.launch(kernel, BLOCK, groups, params, args)
    }

    /// Launches `kernel` as `groups` blocks of `block[0]` threads (the tile sizes and channel
    /// groups the CUDA backend passes as further compile-time constants are compiled into
    /// the CUDA kernels; callers choose the same values).
    pub(crate) fn run_groups<P: cudarc::driver::DeviceRepr>(
        &self,
        kernel: launch::Kernel,
        block: &[u32],
        args: &[launch::Arg],
        params: &P,
        groups: u32,
    ) -> Result<(), CudaError> {
        self.launch(kernel, block[0], groups, params, args)
    }
}

/// Sizes as the u32 the kernels index with: an absurd descriptor is an error, not a wrap.
pub(crate) fn dims<const N: usize>(values: [usize; N]) -> Result<[u32; N], CudaError> {
    let mut out = [0u32; N];
    for (o, &v) in out.iter_mut().zip(&values) {
        *o = u32::try_from(v)
            .map_err(|_| CudaError::Unsupported(format!("size {v} does not fit the kernels' 32-bit indices")))?;
    }
    Ok(out)
}

fn check_host(buffer: usize, host: usize) -> Result<(), CudaError> {
    if buffer == host {
        Ok(())
    } else {
        Err(CudaError::LengthMismatch { buffer, host })
    }
}

impl Buffers for CudaBackend {
    type Buffer = CudaBuffer;
    type Error = CudaError;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn zeros(&self, len: usize) -> Result<CudaBuffer, CudaError> {
        match &self.engine {
            _ if len == 0 => Ok(CudaBuffer::empty()),
            Engine::Device { stream, .. } => Ok(CudaBuffer::new(stream.alloc_zeros::<f32>(len)?, stream)),
            Engine::Emulator(_) => Ok(CudaBuffer::host(vec![0.0; len])),
        }
    }

    fn upload(&self, host: &[f32]) -> Result<CudaBuffer, CudaError> {
        match &self.engine {
            _ if host.is_empty() => Ok(CudaBuffer::empty()),
            Engine::Device { stream, .. } => Ok(CudaBuffer::new(stream.clone_htod(host)?, stream)),
            Engine::Emulator(_) => Ok(CudaBuffer::host(host.to_vec())),
        }
    }

    fn write(&self, buffer: &mut CudaBuffer, host: &[f32]) -> Result<(), CudaError> {
        check_host(buffer.len, host.len())?;
        match (&mut buffer.storage, &self.engine) {
            (Storage::Device(slice), Engine::Device { stream, .. }) => stream.memcpy_htod(host, slice)?,
            (Storage::Host(values), _) => values.copy_from_slice(host),
            _ => {}
        }
        Ok(())
    }

    fn download(&self, buffer: &CudaBuffer, host: &mut [f32]) -> Result<(), CudaError> {
        check_host(buffer.len, host.len())?;
        match (&buffer.storage, &self.engine) {
            (Storage::Device(slice), Engine::Device { stream, .. }) => stream.memcpy_dtoh(slice, host)?,
            (Storage::Host(values), _) => host.copy_from_slice(values),
            _ => {}
        }
        self.sync()
    }

    fn len(&self, buffer: &CudaBuffer) -> usize {
        buffer.len
    }
}
