//! The `.gpst` token file: a fixed 48-byte little-endian header followed by the tokens of every
//! patch, nothing else. `docs/FORMAT.md` is the user-facing description; this module is normative.
//!
//! ```text
//! offset size field
//!      0    4 magic            b"GPST"
//!      4    2 version          u16: 1 (square patches) or 2 (any patch height)
//!      6    1 dtype            u8: 0 = f32, 1 = f16, 2 = bf16
//!      7    1 reserved         0
//!      8    4 image_width      u32, pixels of the image the tokens describe
//!     12    4 image_height     u32
//!     16    4 patch_width      u32, width of a patch (256); token coordinates are patch-local
//!     20    4 patches_x        u32 = ceil(image_width / patch_width)
//!     24    4 patches_y        u32 = ceil(image_height / patch_height)
//!     28    4 tokens_per_patch u32, N
//!     32    4 channels         u32, C (feature channels after the five Gaussian parameters)
//!     36    4 kappa            f32, support factor to render with (3.0)
//!     40    4 patch_height     u32 (version 2); version 1: reserved, 0, and the patch is square
//!     44    4 crc32            CRC-32/IEEE (zlib's) of bytes 0..44 followed by the body
//!     48    . body             patches_y * patches_x * N tokens of (5 + C) values in `dtype`,
//!                              patches row-major, tokens in order, values little-endian
//! ```
//!
//! Decoding never trusts the file: every size is checked with checked arithmetic, the buffer
//! length is compared with the header before anything is allocated, the checksum catches
//! corruption, and every decoded token goes through [`validate_tokens`], so downstream code
//! (the renderer divides by sigma and by `1 - rho^2`) never sees a token it cannot render.

use core::fmt;

use half::{bf16, f16};

use crate::token::{validate_tokens, Gaussian, TokenError, DEFAULT_KAPPA, GAUSSIAN_PARAMS};

/// The four bytes every `.gpst` file starts with.
pub const MAGIC: [u8; 4] = *b"GPST";
/// The newest format version: 2 stores the patch height (non-square patches) in the bytes that
/// version 1 reserves. This build reads both; it writes version 1 for square patches (so every
/// reader since version 1 reads them) and version 2 otherwise ([`Header::version`]).
pub const VERSION: u16 = 2;
/// The first version: square patches, `patch_width` is the side and bytes 40..44 are zero.
pub const VERSION_SQUARE: u16 = 1;
/// Size of the fixed header in bytes; the body starts here.
pub const HEADER_LEN: usize = 48;
/// Offset of the CRC-32 field inside the header. The checksum covers every other byte of the file.
pub const CHECKSUM_OFFSET: usize = 44;

// Field offsets (see the module table).
const OFF_VERSION: usize = 4;
const OFF_DTYPE: usize = 6;
const OFF_RESERVED0: usize = 7;
const OFF_IMAGE_WIDTH: usize = 8;
const OFF_IMAGE_HEIGHT: usize = 12;
const OFF_PATCH_WIDTH: usize = 16;
const OFF_PATCHES_X: usize = 20;
const OFF_PATCHES_Y: usize = 24;
const OFF_TOKENS_PER_PATCH: usize = 28;
const OFF_CHANNELS: usize = 32;
const OFF_KAPPA: usize = 36;
/// Version 2's patch height; reserved (zero) in version 1.
const OFF_PATCH_HEIGHT: usize = 40;

/// How token values are stored in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32: lossless.
    F32,
    /// IEEE binary16 (round to nearest even): 11 significant bits, max 65504.
    F16,
    /// bfloat16 (round to nearest even): 8 significant bits, the f32 exponent range.
    BF16,
}

impl DType {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Parses the names [`DType::name`] returns: `"f32"`, `"f16"`, `"bf16"`.
    pub fn parse(name: &str) -> Option<DType> {
        match name {
            "f32" => Some(DType::F32),
            "f16" => Some(DType::F16),
            "bf16" => Some(DType::BF16),
            _ => None,
        }
    }

    /// The lower-case name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// The header's dtype byte.
    pub fn code(self) -> u8 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::BF16 => 2,
        }
    }

    /// The dtype for a header byte, `None` for codes this version does not know.
    pub fn from_code(code: u8) -> Option<DType> {
        match code {
            0 => Some(DType::F32),
            1 => Some(DType::F16),
            2 => Some(DType::BF16),
            _ => None,
        }
    }

    /// Rounds `v` to this dtype and back, i.e. the value a reader will see.
    pub fn round_trip(self, v: f32) -> f32 {
        match self {
            DType::F32 => v,
            DType::F16 => f16::from_f32(v).to_f32(),
            DType::BF16 => bf16::from_f32(v).to_f32(),
        }
    }

    fn write(self, v: f32, out: &mut [u8]) {
        match self {
            DType::F32 => out.copy_from_slice(&v.to_le_bytes()),
            DType::F16 => out.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
            DType::BF16 => out.copy_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes()),
        }
    }

    /// Reads one value from a chunk of exactly [`DType::bytes`] bytes.
    fn read(self, b: &[u8]) -> f32 {
        match (self, b) {
            (DType::F32, &[b0, b1, b2, b3]) => f32::from_le_bytes([b0, b1, b2, b3]),
            (DType::F16, &[b0, b1]) => f16::from_bits(u16::from_le_bytes([b0, b1])).to_f32(),
            (DType::BF16, &[b0, b1]) => bf16::from_bits(u16::from_le_bytes([b0, b1])).to_f32(),
            // Callers only pass `chunks_exact(self.bytes())`; NaN would be caught by validation anyway.
            _ => f32::NAN,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the header says about the token set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    pub dtype: DType,
    /// Width in pixels of the image the tokens describe (after any resize or crop).
    pub image_width: u32,
    pub image_height: u32,
    /// Width and height of the patch each token set was encoded from; token coordinates are in
    /// the patch's normalised `[-1, 1]` frame on both axes (x over its width, y over its height).
    pub patch_width: u32,
    pub patch_height: u32,
    /// Patch grid, row-major: patch `k = row * patches_x + column`.
    pub patches_x: u32,
    pub patches_y: u32,
    /// Tokens per patch (N).
    pub tokens_per_patch: u32,
    /// Feature channels per token (C); a token holds `5 + C` values.
    pub channels: u32,
    /// Support factor kappa the tokens are meant to be rendered with.
    pub kappa: f32,
}

/// Sizes derived from a header, all in `usize` and all checked.
struct Sizes {
    values: usize,
    file_len: usize,
}

impl Header {
    /// The header for an image tiled into the smallest grid of `patch_size` square patches that
    /// covers it, rendered with the default kappa (3).
    pub fn for_image(
        dtype: DType,
        image_width: u32,
        image_height: u32,
        patch_size: u32,
        tokens_per_patch: u32,
        channels: u32,
    ) -> Header {
        Self::for_image_with_patch(
            dtype,
            image_width,
            image_height,
            (patch_size, patch_size),
            tokens_per_patch,
            channels,
        )
    }

    /// [`Header::for_image`] with `(patch_width, patch_height)` patches.
    pub fn for_image_with_patch(
        dtype: DType,
        image_width: u32,
        image_height: u32,
        (patch_width, patch_height): (u32, u32),
        tokens_per_patch: u32,
        channels: u32,
    ) -> Header {
        Header {
            dtype,
            image_width,
            image_height,
            patch_width,
            patch_height,
            patches_x: image_width.div_ceil(patch_width.max(1)),
            patches_y: image_height.div_ceil(patch_height.max(1)),
            tokens_per_patch,
            channels,
            kappa: DEFAULT_KAPPA,
        }
    }

    /// The version this header is written with: 1 for a square patch, else 2.
    pub fn version(&self) -> u16 {
        if self.patch_width == self.patch_height {
            VERSION_SQUARE
        } else {
            VERSION
        }
    }

    /// Number of patches, `patches_x * patches_y` (saturating: meaningful for a valid header).
    pub fn patches(&self) -> usize {
        (self.patches_x as usize).saturating_mul(self.patches_y as usize)
    }

    /// Number of tokens in the file (saturating: meaningful for a valid header).
    pub fn total_tokens(&self) -> usize {
        self.patches().saturating_mul(self.tokens_per_patch as usize)
    }

    /// Values per token, `5 + C`.
    pub fn token_stride(&self) -> usize {
        GAUSSIAN_PARAMS.saturating_add(self.channels as usize)
    }

    /// Number of f32 values the tokens occupy once decoded (saturating).
    pub fn total_values(&self) -> usize {
        self.total_tokens().saturating_mul(self.token_stride())
    }

    /// Body size in bytes (saturating).
    pub fn body_len(&self) -> usize {
        self.total_values().saturating_mul(self.dtype.bytes())
    }

    /// Whole file size in bytes (saturating).
    pub fn file_len(&self) -> usize {
        self.body_len().saturating_add(HEADER_LEN)
    }

    /// Checks the header on its own (not against a buffer):
    ///
    /// * `image_width`, `image_height`, `tokens_per_patch` >= 1; `channels` may be 0 (a layout
    ///   file holding only Gaussians, e.g. Algorithm 1's initialisation);
    /// * `patch_width`, `patch_height` >= 2, because normalised coordinates divide by `side - 1`;
    /// * `patches_x == ceil(image_width / patch_width)` and likewise for y: the grid is the
    ///   smallest one covering the image, so there are no empty patches and no missing ones;
    /// * `kappa` finite and > 0;
    /// * the file size fits in `isize::MAX` on this platform (so on 32-bit targets, files over
    ///   2 GiB are refused rather than wrapping around).
    pub fn validate(&self) -> Result<(), GpstError> {
        self.sizes().map(|_| ())
    }

    fn sizes(&self) -> Result<Sizes, GpstError> {
        let bad = |msg| Err(GpstError::InvalidHeader(msg));
        if self.image_width == 0 || self.image_height == 0 {
            return bad("image width and height must be at least 1");
        }
        if self.patch_width < 2 || self.patch_height < 2 {
            return bad("patch width and height must be at least 2");
        }
        if self.tokens_per_patch == 0 {
            return bad("tokens per patch must be at least 1");
        }
        if self.patches_x != self.image_width.div_ceil(self.patch_width) {
            return bad("patches_x is not ceil(image_width / patch_width)");
        }
        if self.patches_y != self.image_height.div_ceil(self.patch_height) {
            return bad("patches_y is not ceil(image_height / patch_height)");
        }
        if !(self.kappa.is_finite() && self.kappa > 0.0) {
            return bad("kappa must be finite and > 0");
        }
        let values = usize::try_from(self.patches_x)
            .ok()
            .zip(usize::try_from(self.patches_y).ok())
            .and_then(|(px, py)| px.checked_mul(py))
            .and_then(|p| p.checked_mul(usize::try_from(self.tokens_per_patch).ok()?))
            .and_then(|t| {
                let stride = usize::try_from(self.channels).ok()?.checked_add(GAUSSIAN_PARAMS)?;
                t.checked_mul(stride)
            });
        let file_len = values
            .and_then(|v| v.checked_mul(self.dtype.bytes()))
            .and_then(|b| b.checked_add(HEADER_LEN))
            .filter(|&len| len <= isize::MAX as usize);
        match (values, file_len) {
            (Some(values), Some(file_len)) => Ok(Sizes { values, file_len }),
            _ => bad("token count too large for this platform"),
        }
    }
}

mod codec;
mod crc;
mod error;
#[cfg(all(test, feature = "alloc"))]
mod tests;

pub use codec::*;
pub use crc::*;
pub use error::*;
