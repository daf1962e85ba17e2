//! The CPU emulator of the kernels (`emulator/build.sh` compiles `kernels/*.cu` with g++ against
//! `emulator/cuda_shim.hpp`): each kernel `k` is a host function `emu_k(grid, block, params,
//! args)` that runs the grid one block at a time, the block's threads as OS threads. For testing
//! the kernels without a GPU; nothing here is used on a device.

use crate::CudaError;
use cudarc::driver::DeviceRepr;

/// `emu_<kernel>(grid, block, params, args)`.
type EmulatedKernel = unsafe extern "C" fn(u32, u32, *const u8, *const u64);

/// The loaded emulator library.
pub(crate) struct Emulator {
    lib: libloading::Library,
}

impl Emulator {
    pub(crate) fn open(path: &std::path::Path) -> Result<Emulator, CudaError> {
        // SAFETY: the library is emulator/build.sh's output, whose initialisers only set up
        // thread-local and static storage.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| CudaError::Unsupported(format!("cannot open the CUDA emulator {}: {e}", path.display())))?;
        Ok(Emulator { lib })
    }

    /// Runs kernel `name` to completion.
    pub(crate) fn launch<P: DeviceRepr>(
        &self,
        name: &str,
        block: u32,
        groups: u32,
        params: &P,
        addresses: &[u64],
    ) -> Result<(), CudaError> {
        let symbol = format!("emu_{name}");
        // SAFETY: emulator/generate.py gives every kernel this signature.
        let f = unsafe { self.lib.get::<EmulatedKernel>(symbol.as_bytes()) }
            .map_err(|e| CudaError::Kernel(format!("{symbol} not in the emulator: {e}")))?;
        // SAFETY: `params` is the kernel's parameter struct (the caller checked its size against
        // the PTX signature) and `addresses` its pointers, host addresses of live buffers of at
        // least the lengths the front end checked.
        unsafe { f(groups, block, (params as *const P).cast::<u8>(), addresses.as_ptr()) };
        Ok(())
    }
}
