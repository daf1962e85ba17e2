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

/// CRC-32/IEEE (reflected polynomial 0xEDB88320), the one zlib, PNG and gzip use, so
/// `zlib.crc32` can check a file from Python.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Continues a CRC-32: `crc32_update(crc32_update(0, a), b)` is the CRC of `a` followed by `b`.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &byte in data {
        c = CRC_TABLE[((c ^ u32::from(byte)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// The CRC-32 (as `zlib.crc32`) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// The checksum a file's header should hold: the CRC of every byte except the CRC field.
/// `None` if `file` is shorter than the header.
pub fn file_checksum(file: &[u8]) -> Option<u32> {
    let head = file.get(..CHECKSUM_OFFSET)?;
    let body = file.get(HEADER_LEN..)?;
    Some(crc32_update(crc32(head), body))
}

fn put_u32(out: &mut [u8; HEADER_LEN], offset: usize, v: u32) {
    out[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(h: &[u8; HEADER_LEN], offset: usize) -> u32 {
    u32::from_le_bytes([h[offset], h[offset + 1], h[offset + 2], h[offset + 3]])
}

/// Writes the header into `out[..HEADER_LEN]` of a complete file buffer.
///
/// The checksum covers the body, so `out` is the whole file (`out.len() == h.file_len()`) and
/// its body `out[HEADER_LEN..]` must already hold the encoded tokens: write the header last.
/// [`encode`] does both.
pub fn write_header(h: &Header, out: &mut [u8]) -> Result<(), GpstError> {
    let sizes = h.sizes()?;
    if out.len() != sizes.file_len {
        return Err(GpstError::Length { expected: sizes.file_len, got: out.len() });
    }
    let mut head = [0u8; HEADER_LEN];
    head[..4].copy_from_slice(&MAGIC);
    let version = h.version();
    head[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&version.to_le_bytes());
    head[OFF_DTYPE] = h.dtype.code();
    put_u32(&mut head, OFF_IMAGE_WIDTH, h.image_width);
    put_u32(&mut head, OFF_IMAGE_HEIGHT, h.image_height);
    put_u32(&mut head, OFF_PATCH_WIDTH, h.patch_width);
    if version == VERSION {
        put_u32(&mut head, OFF_PATCH_HEIGHT, h.patch_height);
    }
    put_u32(&mut head, OFF_PATCHES_X, h.patches_x);
    put_u32(&mut head, OFF_PATCHES_Y, h.patches_y);
    put_u32(&mut head, OFF_TOKENS_PER_PATCH, h.tokens_per_patch);
    put_u32(&mut head, OFF_CHANNELS, h.channels);
    put_u32(&mut head, OFF_KAPPA, h.kappa.to_bits());
    let (out_head, body) = out.split_at_mut(HEADER_LEN);
    let crc = crc32_update(crc32(&head[..CHECKSUM_OFFSET]), body);
    put_u32(&mut head, CHECKSUM_OFFSET, crc);
    out_head.copy_from_slice(&head);
    Ok(())
}

/// Parses and validates the header at the start of `bytes` (only the first [`HEADER_LEN`]
/// bytes are read: the body and the checksum are not checked, see [`decode`]).
pub fn read_header(bytes: &[u8]) -> Result<Header, GpstError> {
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        // A short prefix of a real file is "truncated"; anything else is not a .gpst file.
        let n = bytes.len().min(MAGIC.len());
        if bytes[..n] != MAGIC[..n] {
            return Err(GpstError::BadMagic);
        }
        return Err(GpstError::Truncated { expected: HEADER_LEN, got: bytes.len() });
    };
    if head[..4] != MAGIC {
        return Err(GpstError::BadMagic);
    }
    let version = u16::from_le_bytes([head[OFF_VERSION], head[OFF_VERSION + 1]]);
    if version != VERSION && version != VERSION_SQUARE {
        return Err(GpstError::UnsupportedVersion(version));
    }
    let dtype = DType::from_code(head[OFF_DTYPE]).ok_or(GpstError::UnknownDType(head[OFF_DTYPE]))?;
    let patch_width = get_u32(head, OFF_PATCH_WIDTH);
    let patch_height = match version {
        VERSION_SQUARE if get_u32(head, OFF_PATCH_HEIGHT) != 0 => {
            return Err(GpstError::InvalidHeader("reserved bytes are not zero"))
        }
        VERSION_SQUARE => patch_width,
        _ => get_u32(head, OFF_PATCH_HEIGHT),
    };
    if head[OFF_RESERVED0] != 0 {
        return Err(GpstError::InvalidHeader("reserved bytes are not zero"));
    }
    let h = Header {
        dtype,
        image_width: get_u32(head, OFF_IMAGE_WIDTH),
        image_height: get_u32(head, OFF_IMAGE_HEIGHT),
        patch_width,
        patch_height,
        patches_x: get_u32(head, OFF_PATCHES_X),
        patches_y: get_u32(head, OFF_PATCHES_Y),
        tokens_per_patch: get_u32(head, OFF_TOKENS_PER_PATCH),
        channels: get_u32(head, OFF_CHANNELS),
        kappa: f32::from_bits(get_u32(head, OFF_KAPPA)),
    };
    h.validate()?;
    Ok(h)
}

/// Encodes `tokens` (`[total_tokens, 5 + C]` row-major f32) into `out`, which must be exactly
/// `h.file_len()` bytes.
///
/// Refuses invalid tokens (the file must decode), and tokens that become invalid once rounded
/// to `h.dtype`: that is [`GpstError::Unrepresentable`], e.g. `rho = 0.99999` (the generation
/// clamp) rounds to 1.0 in f16 and bf16.
pub fn encode(h: &Header, tokens: &[f32], out: &mut [u8]) -> Result<(), GpstError> {
    let sizes = h.sizes()?;
    if tokens.len() != sizes.values {
        return Err(GpstError::Length { expected: sizes.values, got: tokens.len() });
    }
    if out.len() != sizes.file_len {
        return Err(GpstError::Length { expected: sizes.file_len, got: out.len() });
    }
    let channels = h.token_stride() - GAUSSIAN_PARAMS;
    validate_tokens(tokens, channels).map_err(|(index, error)| GpstError::InvalidToken { index, error })?;

    let stride = h.token_stride();
    let width = h.dtype.bytes();
    let body = &mut out[HEADER_LEN..];
    for (index, (token, dst)) in tokens.chunks_exact(stride).zip(body.chunks_exact_mut(stride * width)).enumerate() {
        for (&v, b) in token.iter().zip(dst.chunks_exact_mut(width)) {
            h.dtype.write(v, b);
        }
        if h.dtype != DType::F32 {
            // Check what a reader will get, with the same rules the reader applies.
            let unrepresentable = |error| GpstError::Unrepresentable { index, dtype: h.dtype, error };
            let mut params = [0f32; GAUSSIAN_PARAMS];
            for (p, b) in params.iter_mut().zip(dst.chunks_exact(width)) {
                *p = h.dtype.read(b);
            }
            Gaussian::from_token(&params).validate().map_err(unrepresentable)?;
            for (i, b) in dst.chunks_exact(width).enumerate().skip(GAUSSIAN_PARAMS) {
                let value = h.dtype.read(b);
                if !value.is_finite() {
                    return Err(unrepresentable(TokenError::NotFinite { index: i, value }));
                }
            }
        }
    }
    write_header(h, out)
}

/// Decodes a whole file into `tokens`, which must hold exactly `header.total_values()` values
/// (read the header first with [`read_header`] to size it). Checks the length, the checksum and
/// every token.
pub fn decode(bytes: &[u8], tokens: &mut [f32]) -> Result<Header, GpstError> {
    let h = read_header(bytes)?;
    let sizes = h.sizes()?;
    check_file(bytes, sizes.file_len)?;
    if tokens.len() != sizes.values {
        return Err(GpstError::Length { expected: sizes.values, got: tokens.len() });
    }
    let body = &bytes[HEADER_LEN..];
    for (t, b) in tokens.iter_mut().zip(body.chunks_exact(h.dtype.bytes())) {
        *t = h.dtype.read(b);
    }
    let channels = h.token_stride() - GAUSSIAN_PARAMS;
    validate_tokens(tokens, channels).map_err(|(index, error)| GpstError::InvalidToken { index, error })?;
    Ok(h)
}

/// Length and checksum of a buffer whose header is already valid.
fn check_file(bytes: &[u8], file_len: usize) -> Result<(), GpstError> {
    if bytes.len() < file_len {
        return Err(GpstError::Truncated { expected: file_len, got: bytes.len() });
    }
    if bytes.len() > file_len {
        return Err(GpstError::TrailingBytes { expected: file_len, got: bytes.len() });
    }
    let stored = bytes.get(CHECKSUM_OFFSET..HEADER_LEN).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    if stored.is_none() || stored != file_checksum(bytes) {
        return Err(GpstError::ChecksumMismatch);
    }
    Ok(())
}

/// Encodes into a new buffer of `h.file_len()` bytes.
#[cfg(feature = "alloc")]
pub fn to_bytes(h: &Header, tokens: &[f32]) -> Result<alloc::vec::Vec<u8>, GpstError> {
    let sizes = h.sizes()?;
    // Check before allocating: the header alone could ask for gigabytes.
    if tokens.len() != sizes.values {
        return Err(GpstError::Length { expected: sizes.values, got: tokens.len() });
    }
    let mut out = alloc::vec![0u8; sizes.file_len];
    encode(h, tokens, &mut out)?;
    Ok(out)
}

/// Decodes a whole file into its header and its `[total_tokens, 5 + C]` f32 tokens.
///
/// Allocates only after the buffer length has matched the header, so the allocation is at most
/// twice the input size (f16 and bf16 widen to f32): a lying header cannot exhaust memory.
#[cfg(feature = "alloc")]
pub fn from_bytes(bytes: &[u8]) -> Result<(Header, alloc::vec::Vec<f32>), GpstError> {
    let h = read_header(bytes)?;
    let sizes = h.sizes()?;
    check_file(bytes, sizes.file_len)?;
    let mut tokens = alloc::vec![0f32; sizes.values];
    let h = decode(bytes, &mut tokens)?;
    Ok((h, tokens))
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn header(dtype: DType) -> Header {
        // 300 x 200 pixels in 256 patches: a 2 x 1 grid, 3 tokens per patch, 2 channels.
        Header::for_image(dtype, 300, 200, 256, 3, 2)
    }

    fn tokens(h: &Header) -> Vec<f32> {
        (0..h.total_tokens())
            .flat_map(|i| {
                let t = i as f32;
                [0.05 + 0.01 * t, 0.1, -0.5 + 0.1 * t, 0.25 * t - 0.5, -0.3, 1.5 * t, -2.0]
            })
            .collect()
    }

    fn valid_file(dtype: DType) -> (Header, Vec<f32>, Vec<u8>) {
        let h = header(dtype);
        let t = tokens(&h);
        let bytes = to_bytes(&h, &t).unwrap();
        (h, t, bytes)
    }

    /// Recomputes the checksum so a deliberately edited file reaches the later checks.
    fn reseal(bytes: &mut [u8]) {
        let crc = file_checksum(bytes).unwrap();
        bytes[CHECKSUM_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_every_dtype() {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let (h, t, bytes) = valid_file(dtype);
            assert_eq!(h.patches_x, 2);
            assert_eq!(h.patches_y, 1);
            assert_eq!(bytes.len(), HEADER_LEN + 2 * 3 * 7 * dtype.bytes());
            assert_eq!(bytes.len(), h.file_len());
            let (h2, t2) = from_bytes(&bytes).unwrap();
            assert_eq!(h2, h);
            let expected: Vec<f32> = t.iter().map(|&v| dtype.round_trip(v)).collect();
            assert_eq!(t2, expected, "{dtype}");
            assert_eq!(read_header(&bytes[..HEADER_LEN]), Ok(h));
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let (h, t, bytes) = valid_file(DType::F32);
        assert_eq!(&bytes[..8], b"GPST\x01\x00\x00\x00");
        assert_eq!(bytes[36..40], 3.0f32.to_le_bytes());
        assert_eq!(bytes[40..44], [0; 4]);
        assert_eq!(bytes[HEADER_LEN..HEADER_LEN + 4], t[0].to_le_bytes());
        let stored = u32::from_le_bytes(bytes[44..48].try_into().unwrap());
        let mut whole = Vec::from(&bytes[..44]);
        whole.extend_from_slice(&bytes[48..]);
        assert_eq!(stored, crc32(&whole));
        assert_eq!(h.token_stride(), 7);
    }

    #[test]
    fn no_alloc_encode_decode() {
        let h = header(DType::BF16);
        let t = tokens(&h);
        let mut file = [0u8; HEADER_LEN + 42 * 2];
        encode(&h, &t, &mut file).unwrap();
        let mut back = [0f32; 42];
        assert_eq!(decode(&file, &mut back), Ok(h));
        assert_eq!(decode(&file, &mut back[..41]), Err(GpstError::Length { expected: 42, got: 41 }));
        assert_eq!(encode(&h, &t, &mut file[..50]), Err(GpstError::Length { expected: 132, got: 50 }));
        assert_eq!(encode(&h, &t[..7], &mut file), Err(GpstError::Length { expected: 42, got: 7 }));
    }

    #[test]
    fn framing_errors() {
        let (_, _, bytes) = valid_file(DType::F16);
        assert_eq!(from_bytes(b"PNG\x89").unwrap_err(), GpstError::BadMagic);
        assert_eq!(from_bytes(b"").unwrap_err(), GpstError::Truncated { expected: HEADER_LEN, got: 0 });
        assert_eq!(from_bytes(&bytes[..10]).unwrap_err(), GpstError::Truncated { expected: HEADER_LEN, got: 10 });
        let n = bytes.len();
        assert_eq!(from_bytes(&bytes[..n - 1]).unwrap_err(), GpstError::Truncated { expected: n, got: n - 1 });
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(from_bytes(&long).unwrap_err(), GpstError::TrailingBytes { expected: n, got: n + 1 });

        let mut v = bytes.clone();
        v[4] = 3;
        assert_eq!(from_bytes(&v).unwrap_err(), GpstError::UnsupportedVersion(3));
        let mut d = bytes.clone();
        d[6] = 7;
        assert_eq!(from_bytes(&d).unwrap_err(), GpstError::UnknownDType(7));
        let mut r = bytes.clone();
        r[7] = 1;
        assert_eq!(from_bytes(&r).unwrap_err(), GpstError::InvalidHeader("reserved bytes are not zero"));
        let mut c = bytes.clone();
        c[HEADER_LEN + 3] ^= 0x10;
        assert_eq!(from_bytes(&c).unwrap_err(), GpstError::ChecksumMismatch);
        let mut k = bytes;
        k[36..40].copy_from_slice(&3.5f32.to_le_bytes());
        assert_eq!(from_bytes(&k).unwrap_err(), GpstError::ChecksumMismatch, "the header is covered too");
    }

    #[test]
    fn header_rules() {
        let good = header(DType::F32);
        assert_eq!(good.validate(), Ok(()));
        let cases = [
            Header { image_width: 0, patches_x: 0, ..good },
            Header { patch_width: 1, ..good },
            Header { patch_height: 1, ..good },
            Header { tokens_per_patch: 0, ..good },
            Header { patches_x: 3, ..good },
            Header { patches_y: 0, ..good },
            Header { kappa: f32::NAN, ..good },
            Header { kappa: 0.0, ..good },
            // 2^31 x 2^31 patches of (2^32 - 1) tokens: overflows usize everywhere.
            Header::for_image(DType::F32, u32::MAX, u32::MAX, 2, u32::MAX, u32::MAX),
        ];
        for h in cases {
            assert!(matches!(h.validate(), Err(GpstError::InvalidHeader(_))), "{h:?}");
            assert_eq!(to_bytes(&h, &[]).unwrap_err(), h.validate().unwrap_err());
        }
        // Layout-only files (no features) are allowed.
        assert_eq!(Header { channels: 0, ..good }.validate(), Ok(()));
    }

    #[test]
    fn huge_header_fields_are_refused_not_allocated() {
        let (_, _, mut bytes) = valid_file(DType::F32);
        bytes[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut bytes);
        assert!(matches!(from_bytes(&bytes).unwrap_err(), GpstError::InvalidHeader(_)));
        // Large but representable (8 GiB of f32 on 64-bit targets): refused by the length check
        // before anything is allocated.
        bytes[28..32].copy_from_slice(&(1u32 << 20).to_le_bytes());
        bytes[32..36].copy_from_slice(&1024u32.to_le_bytes());
        reseal(&mut bytes);
        let err = from_bytes(&bytes).unwrap_err();
        if usize::BITS >= 64 {
            assert!(matches!(err, GpstError::Truncated { got: 216, .. }), "{err:?}");
        } else {
            assert!(matches!(err, GpstError::InvalidHeader(_)), "{err:?}");
        }
    }

    #[test]
    fn invalid_tokens_are_refused_both_ways() {
        let h = header(DType::F32);
        let mut t = tokens(&h);
        t[7 * 4 + 1] = 0.0; // sigma_y of token 4
        assert_eq!(
            to_bytes(&h, &t).unwrap_err(),
            GpstError::InvalidToken { index: 4, error: TokenError::NonPositiveSigma { index: 1, value: 0.0 } }
        );
        // A file whose body was edited (and the checksum recomputed) is still refused.
        let (_, _, mut bytes) = valid_file(DType::F32);
        let at = HEADER_LEN + (7 * 2 + 2) * 4; // rho of token 2
        bytes[at..at + 4].copy_from_slice(&1.0f32.to_le_bytes());
        reseal(&mut bytes);
        assert_eq!(
            from_bytes(&bytes).unwrap_err(),
            GpstError::InvalidToken { index: 2, error: TokenError::RhoOutOfRange { value: 1.0 } }
        );
        let at = HEADER_LEN + (7 * 5 + 6) * 4; // last feature of the last token
        bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        reseal(&mut bytes);
        assert!(matches!(
            from_bytes(&bytes).unwrap_err(),
            GpstError::InvalidToken { index: 2, .. } // the earlier bad rho is still reported first
        ));
    }

    #[test]
    fn values_that_do_not_survive_rounding_are_refused() {
        for dtype in [DType::F16, DType::BF16] {
            let h = header(dtype);
            let mut t = tokens(&h);
            t[7 + 2] = 0.99999; // the generation clamp: rounds to 1.0
            assert_eq!(
                to_bytes(&h, &t).unwrap_err(),
                GpstError::Unrepresentable { index: 1, dtype, error: TokenError::RhoOutOfRange { value: 1.0 } }
            );
        }
        let h = header(DType::F16);
        let mut t = tokens(&h);
        t[0] = 1e-9; // below the smallest f16 subnormal
        assert!(matches!(
            to_bytes(&h, &t).unwrap_err(),
            GpstError::Unrepresentable { index: 0, error: TokenError::NonPositiveSigma { index: 0, .. }, .. }
        ));
        let mut t = tokens(&h);
        t[7 * 3 + 5] = 70000.0; // above f16::MAX
        assert!(matches!(
            to_bytes(&h, &t).unwrap_err(),
            GpstError::Unrepresentable { index: 3, error: TokenError::NotFinite { index: 5, .. }, .. }
        ));
        // bf16 has the f32 range, so the same feature is fine there.
        let h = header(DType::BF16);
        assert!(to_bytes(&h, &t).is_ok());
    }

    #[test]
    fn dtype_names() {
        for d in [DType::F32, DType::F16, DType::BF16] {
            assert_eq!(DType::parse(d.name()), Some(d));
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        assert_eq!(DType::parse("f64"), None);
        assert_eq!(DType::from_code(3), None);
    }

    #[test]
    fn messages_are_one_line() {
        use alloc::string::ToString;
        assert_eq!(GpstError::BadMagic.to_string(), "not a .gpst file (bad magic)");
        let e = GpstError::InvalidToken { index: 3, error: TokenError::RhoOutOfRange { value: 1.0 } };
        assert_eq!(e.to_string(), "invalid token 3: rho must satisfy |rho| < 1, got 1");
        assert!(!GpstError::Truncated { expected: 48, got: 1 }.to_string().contains('\n'));
    }
}
