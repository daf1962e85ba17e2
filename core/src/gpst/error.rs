//! What can be wrong with a `.gpst` file, one message each.

use super::*;

/// Everything that can be wrong with a `.gpst` file or with a request to write one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GpstError {
    /// The first four bytes are not `GPST`.
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion(u16),
    /// A dtype byte this version does not define.
    UnknownDType(u8),
    /// The buffer ends before the header or the body does (`expected`/`got` are byte counts).
    Truncated { expected: usize, got: usize },
    /// The buffer goes on after the body.
    TrailingBytes { expected: usize, got: usize },
    /// The stored CRC-32 does not match the bytes: the file is corrupt.
    ChecksumMismatch,
    /// A header field is inconsistent; the message says which rule failed.
    InvalidHeader(&'static str),
    /// Token `index` (counted over the whole file, patch-major) is not a valid Gaussian or has a
    /// non-finite feature.
    InvalidToken { index: usize, error: TokenError },
    /// Token `index` is valid in f32 but not once rounded to `dtype` (sigma underflowing to 0,
    /// `|rho|` rounding up to 1, a value overflowing to infinity); `error` describes the rounded
    /// value.
    Unrepresentable { index: usize, dtype: DType, error: TokenError },
    /// A caller's buffer has the wrong size: the token slice (in f32 values) or the output
    /// buffer (in bytes).
    Length { expected: usize, got: usize },
}

impl fmt::Display for GpstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GpstError::BadMagic => f.write_str("not a .gpst file (bad magic)"),
            GpstError::UnsupportedVersion(v) => {
                write!(f, "unsupported .gpst version {v} (this build reads versions {VERSION_SQUARE} and {VERSION})")
            }
            GpstError::UnknownDType(code) => write!(f, "unknown .gpst dtype code {code}"),
            GpstError::Truncated { expected, got } => {
                write!(f, "truncated .gpst file: expected {expected} bytes, got {got}")
            }
            GpstError::TrailingBytes { expected, got } => {
                write!(f, "trailing bytes after the .gpst body: expected {expected} bytes, got {got}")
            }
            GpstError::ChecksumMismatch => f.write_str("corrupt .gpst file (checksum mismatch)"),
            GpstError::InvalidHeader(msg) => write!(f, "invalid .gpst header: {msg}"),
            GpstError::InvalidToken { index, error } => {
                write!(f, "invalid token {index}: {}", TokenMessage(error))
            }
            GpstError::Unrepresentable { index, dtype, error } => {
                write!(f, "token {index} does not survive conversion to {dtype}: {}", TokenMessage(error))
            }
            GpstError::Length { expected, got } => {
                write!(f, "buffer length mismatch: expected {expected}, got {got}")
            }
        }
    }
}

impl core::error::Error for GpstError {}

/// Formats a [`TokenError`], naming feature channels itself: `validate_tokens` reports a
/// non-finite feature with `index >= 5`, which `TokenError`'s own `Display` only names for the
/// five Gaussian parameters.
struct TokenMessage(TokenError);

impl fmt::Display for TokenMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            TokenError::NotFinite { index, value } if index >= GAUSSIAN_PARAMS => {
                write!(f, "feature {} is not finite ({value})", index - GAUSSIAN_PARAMS)
            }
            error => error.fmt(f),
        }
    }
}
