//! What can go wrong on the Vulkan backend: one line each, never a panic.

use ash::vk;
use gpstoken_core::shape::ShapeError;
use std::fmt;

/// An error of the Vulkan backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VulkanError {
    /// No Vulkan loader (`libvulkan.so.1`) could be opened.
    NoLoader(String),
    /// The loader found no driver (ICD) at all.
    NoDriver,
    /// The loader or the device is older than this backend needs.
    Unsupported(String),
    /// `device_index` is not below the number of devices found.
    NoDevice { index: usize, found: usize },
    /// A Vulkan call failed: which call, and its result code.
    Call { what: &'static str, result: vk::Result },
    /// No memory type, or no room, for an allocation.
    OutOfMemory(String),
    /// A buffer is larger than the device lets one binding address (`maxStorageBufferRange`).
    BufferTooLarge { bytes: u64, max: u64 },
    /// Buffers do not fit an op's descriptor (reported by the core's front end).
    Shape(ShapeError),
    /// `write`/`download`: the host slice and the buffer differ in length.
    LengthMismatch { buffer: usize, host: usize },
}

impl fmt::Display for VulkanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VulkanError::NoLoader(why) => {
                write!(f, "no Vulkan loader found (install libvulkan1 and a driver, e.g. mesa-vulkan-drivers): {why}")
            }
            VulkanError::NoDriver => {
                write!(f, "no Vulkan driver found (install one, e.g. mesa-vulkan-drivers for the CPU driver lavapipe)")
            }
            VulkanError::Unsupported(why) => write!(f, "Vulkan: {why}"),
            VulkanError::NoDevice { index, found } => write!(f, "no Vulkan device {index} (found {found})"),
            VulkanError::Call { what, result } => write!(f, "Vulkan call {what} failed: {result:?}"),
            VulkanError::OutOfMemory(why) => write!(f, "Vulkan out of memory: {why}"),
            VulkanError::BufferTooLarge { bytes, max } => {
                write!(f, "a buffer of {bytes} bytes is larger than this device's maxStorageBufferRange ({max} bytes)")
            }
            VulkanError::Shape(e) => write!(f, "{e}"),
            VulkanError::LengthMismatch { buffer, host } => {
                write!(f, "buffer holds {buffer} values but the host slice holds {host}")
            }
        }
    }
}

impl std::error::Error for VulkanError {}

impl From<ShapeError> for VulkanError {
    fn from(e: ShapeError) -> Self {
        VulkanError::Shape(e)
    }
}

/// Turns a `vk::Result` error into [`VulkanError::Call`] naming the call.
pub(crate) trait VkContext<T> {
    fn during(self, what: &'static str) -> Result<T, VulkanError>;
}

impl<T> VkContext<T> for Result<T, vk::Result> {
    fn during(self, what: &'static str) -> Result<T, VulkanError> {
        self.map_err(|result| VulkanError::Call { what, result })
    }
}
