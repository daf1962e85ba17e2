//! Waiting for a backend's queued work, so a timed loop measures finished work. The GPU backends
//! record ops and return before the device has run them; without a wait inside the loop criterion
//! would time how fast ops are queued.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_backend_cuda::CudaBackend;
use gpstoken_backend_vulkan::VulkanBackend;

/// A backend whose pending work can be waited for.
pub trait Completion {
    /// Returns once every op issued so far has finished on the device.
    fn wait(&self);
}

impl Completion for CpuBackend {
    /// Nothing to wait for: every CPU op has finished when it returns.
    fn wait(&self) {}
}

impl Completion for VulkanBackend {
    fn wait(&self) {
        self.sync().expect("vulkan sync");
    }
}

impl Completion for CudaBackend {
    fn wait(&self) {
        self.sync().expect("cuda sync");
    }
}
