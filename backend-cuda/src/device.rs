//! Finding the driver and the devices without ever panicking.
//!
//! cudarc opens `libcuda` at first use and *panics* when it is missing ("Unable to dynamically
//! load the \"cuda\" shared library"), so every entry point here first asks
//! [`is_culib_present`](cudarc::driver::sys::is_culib_present) and then runs the first driver
//! call inside `catch_unwind`, turning both failures into [`CudaError::NoDriver`].

use crate::CudaError;
use cudarc::driver::{result, sys, CudaContext};
use std::sync::Arc;

/// One CUDA device, for `gpstoken info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Ordinal, what [`crate::CudaBackend::new`] takes.
    pub index: usize,
    pub name: String,
    /// `(major, minor)`, e.g. `(9, 0)` for an H100 or H200.
    pub compute_capability: (u32, u32),
    /// Device memory in bytes.
    pub memory_bytes: u64,
    /// The driver's CUDA version, e.g. `(13, 0)`.
    pub driver_version: (u32, u32),
    /// Peak memory bandwidth in bytes per second (the memory clock's two transfers per cycle
    /// times the bus width, as NVIDIA quotes it), when the driver reports both: the floor a
    /// memory-bound kernel's time is compared with.
    pub memory_bandwidth: Option<u64>,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (major, minor) = self.compute_capability;
        let (dmajor, dminor) = self.driver_version;
        write!(
            f,
            "cuda:{} {} (sm_{major}{minor}, {:.1} GiB",
            self.index,
            self.name,
            self.memory_bytes as f64 / (1u64 << 30) as f64
        )?;
        if let Some(bandwidth) = self.memory_bandwidth {
            write!(f, ", {:.2} TB/s", bandwidth as f64 / 1e12)?;
        }
        write!(f, ", driver CUDA {dmajor}.{dminor})")
    }
}

/// Runs `f` (driver calls) turning a panic of cudarc's loader into [`CudaError::NoDriver`].
fn guarded<T>(f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("the driver library could not be loaded");
            Err(CudaError::NoDriver(format!("could not be loaded: {why}")))
        }
    }
}

/// `Ok` when a driver library is present and `cuInit` succeeds.
pub(crate) fn init_driver() -> Result<(), CudaError> {
    // SAFETY: only tries to open the library (libloading), no symbol is called.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::NoDriver("or libcuda.so: not found; install the NVIDIA driver".into()));
    }
    guarded(|| result::init().map_err(|e| CudaError::NoDriver(format!("found, but cuInit failed: {e}"))))
}

/// The driver's CUDA version as `(major, minor)`.
fn driver_version() -> Result<(u32, u32), CudaError> {
    let mut version = 0i32;
    // SAFETY: the driver is initialised (init_driver) and `version` is a valid out pointer.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result()?;
    let version = version.max(0) as u32;
    Ok((version / 1000, (version % 1000) / 10))
}

/// Opens device `index` (primary context), after checking it exists.
pub(crate) fn open(index: usize) -> Result<Arc<CudaContext>, CudaError> {
    init_driver()?;
    let found = guarded(|| Ok(result::device::get_count()?))?.max(0) as usize;
    if index >= found {
        return Err(CudaError::NoDevice { index, found });
    }
    guarded(|| Ok(CudaContext::new(index)?))
}

/// Every CUDA device: name, compute capability, memory, driver version. A machine without a
/// driver gives [`CudaError::NoDriver`]; one with a driver and no device, an empty list.
pub fn list_devices() -> Result<Vec<DeviceInfo>, CudaError> {
    init_driver()?;
    guarded(|| {
        let driver_version = driver_version()?;
        let count = result::device::get_count()?.max(0) as usize;
        (0..count).map(|index| info_of(&*CudaContext::new(index)?, driver_version)).collect()
    })
}

pub(crate) fn device_info(ctx: &CudaContext) -> Result<DeviceInfo, CudaError> {
    info_of(ctx, driver_version()?)
}

fn info_of(ctx: &CudaContext, driver_version: (u32, u32)) -> Result<DeviceInfo, CudaError> {
    let (major, minor) = ctx.compute_capability()?;
    use sys::CUdevice_attribute::{CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE};
    let clock_khz = ctx.attribute(CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).unwrap_or(0);
    let bus_bits = ctx.attribute(CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH).unwrap_or(0);
    Ok(DeviceInfo {
        index: ctx.ordinal(),
        name: ctx.name()?,
        compute_capability: (major.max(0) as u32, minor.max(0) as u32),
        memory_bytes: ctx.total_mem()? as u64,
        driver_version,
        memory_bandwidth: peak_bandwidth(clock_khz, bus_bits),
    })
}

/// Bytes per second of a memory clocked at `clock_khz` on a `bus_bits`-wide bus, two transfers
/// per cycle (HBM and GDDR as NVIDIA rates them); `None` when either is unknown (0).
fn peak_bandwidth(clock_khz: i32, bus_bits: i32) -> Option<u64> {
    let (clock_khz, bus_bits) = (u64::try_from(clock_khz).ok()?, u64::try_from(bus_bits).ok()?);
    (clock_khz > 0 && bus_bits > 0).then(|| 2 * clock_khz * 1000 * bus_bits / 8)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_peak_bandwidth_is_that_of_the_data_sheets() {
        // H100 SXM: HBM3 at 2619 MHz on 5120 bits, quoted as 3.35 TB/s.
        assert_eq!(super::peak_bandwidth(2_619_000, 5120), Some(3_352_320_000_000));
        assert_eq!(super::peak_bandwidth(0, 5120), None);
        assert_eq!(super::peak_bandwidth(-1, 5120), None);
    }
}
