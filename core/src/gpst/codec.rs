//! Writing and reading headers and token bodies, every size checked before anything is allocated.

use super::*;

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
