//! The file checksum: CRC-32/IEEE, zlib's.

use super::*;

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
