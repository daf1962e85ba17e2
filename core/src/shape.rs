//! The error every op returns when buffers do not fit its shape descriptor.

use core::fmt;

/// A buffer or shape that does not fit an op's descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeError {
    /// Canvas width or height below 2 (the align-corners grid divides by `size - 1`).
    CanvasTooSmall { height: usize, width: usize },
    /// `what` holds `got` values where `expected` were needed.
    Length { what: &'static str, expected: usize, got: usize },
    /// In a multi-tensor op, `what` of tensor number `tensor` holds `got` values where
    /// `expected` were needed.
    TensorLength { tensor: usize, what: &'static str, expected: usize, got: usize },
    /// A descriptor field is out of its domain (`what` says which and why).
    Invalid { what: &'static str },
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ShapeError::CanvasTooSmall { height, width } => {
                write!(f, "canvas {width}x{height} is too small: width and height must be at least 2")
            }
            ShapeError::Length { what, expected, got } => write!(f, "{what} holds {got} values, expected {expected}"),
            ShapeError::TensorLength { tensor, what, expected, got } => {
                write!(f, "tensor {tensor}: {what} holds {got} values, expected {expected}")
            }
            ShapeError::Invalid { what } => write!(f, "invalid shape: {what}"),
        }
    }
}

impl core::error::Error for ShapeError {}

/// `Ok` when `got == expected`, else a [`ShapeError::Length`] naming `what`.
pub fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), ShapeError> {
    if got == expected {
        Ok(())
    } else {
        Err(ShapeError::Length { what, expected, got })
    }
}

/// [`check_len`] for an optional buffer (an output the caller did not ask for is not checked).
pub fn check_optional(what: &'static str, expected: usize, got: Option<usize>) -> Result<(), ShapeError> {
    match got {
        Some(got) => check_len(what, expected, got),
        None => Ok(()),
    }
}

/// `Ok` when `ok`, else [`ShapeError::Invalid`].
pub fn ensure(ok: bool, what: &'static str) -> Result<(), ShapeError> {
    if ok {
        Ok(())
    } else {
        Err(ShapeError::Invalid { what })
    }
}
