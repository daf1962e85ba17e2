//! What can go wrong on the CUDA backend: one line each, never a panic.

use gpstoken_core::shape::ShapeError;
use std::fmt;

/// An error of the CUDA backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaError {
    /// No CUDA driver library could be opened (or it failed to initialise).
    NoDriver(String),
    /// `device` is not below the number of devices found.
    NoDevice { index: usize, found: usize },
    /// A driver call failed (the call, the driver's message).
    Driver(String),
    /// A cuBLAS call failed.
    Blas(String),
    /// A kernel of the committed PTX could not be loaded or launched.
    Kernel(String),
    /// A size does not fit the kernels' 32-bit indices (or cuBLAS's `int`).
    Unsupported(String),
    /// `write`/`download`: the host slice and the buffer differ in length.
    LengthMismatch { buffer: usize, host: usize },
    /// Buffers do not fit an op's descriptor.
    Shape(ShapeError),
    /// NCCL (data-parallel training) could not be opened or a collective failed.
    Nccl(String),
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::NoDriver(why) => write!(f, "no CUDA driver found (libcuda.so.1 {why})"),
            CudaError::NoDevice { index, found } => write!(f, "no CUDA device {index} (found {found})"),
            CudaError::Driver(why) => write!(f, "CUDA driver error: {why}"),
            CudaError::Blas(why) => write!(f, "cuBLAS error: {why}"),
            CudaError::Kernel(why) => write!(f, "CUDA kernel error: {why}"),
            CudaError::Unsupported(why) => write!(f, "CUDA: {why}"),
            CudaError::LengthMismatch { buffer, host } => {
                write!(f, "buffer holds {buffer} values but the host slice holds {host}")
            }
            CudaError::Shape(e) => write!(f, "{e}"),
            CudaError::Nccl(why) => write!(f, "NCCL: {why}"),
        }
    }
}

impl std::error::Error for CudaError {}

impl From<ShapeError> for CudaError {
    fn from(e: ShapeError) -> Self {
        CudaError::Shape(e)
    }
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}

impl From<cudarc::cublas::result::CublasError> for CudaError {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        CudaError::Blas(format!("{e:?}"))
    }
}
