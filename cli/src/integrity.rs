//! Checksums of the safetensors files `gpstoken train` writes (checkpoints and weights), so a
//! damaged file is refused when it is read back (`train --resume`, `export`, `--model`) with a
//! one-line error naming it, instead of resuming and failing later with a misleading message.
//!
//! The checksum is a CRC-32 (zlib's, as in `.gpst`) over every metadata entry but itself, in key
//! order (key, 0, value, 0), then every tensor in name order: its name, a 0 byte, its dtype name,
//! a 0 byte, each dimension as u64 little-endian, and its data bytes. It is stored as 8 hex
//! digits in the metadata entry [`META_CHECKSUM`]. A flipped byte anywhere in a tensor or in the
//! metadata (step, learning rate, config) changes it; one that breaks the JSON header is caught
//! by the safetensors parser.

use anyhow::{bail, Result};
use gpstoken_core::gpst::crc32_update;
use safetensors::tensor::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Metadata key holding the checksum.
pub const META_CHECKSUM: &str = "gpstoken_crc32";

/// The checksum of the metadata and of `(name, dtype name, shape, data bytes)` tensors.
fn checksum<'a>(meta: &HashMap<String, String>, mut tensors: Vec<(&'a str, String, &'a [usize], &'a [u8])>) -> u32 {
    let mut entries: Vec<(&String, &String)> = meta.iter().filter(|(k, _)| *k != META_CHECKSUM).collect();
    entries.sort();
    let mut crc = 0;
    for (k, v) in entries {
        for part in [k.as_bytes(), &[0], v.as_bytes(), &[0]] {
            crc = crc32_update(crc, part);
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, data) in tensors {
        crc = crc32_update(crc, name.as_bytes());
        crc = crc32_update(crc, &[0]);
        crc = crc32_update(crc, dtype.as_bytes());
        crc = crc32_update(crc, &[0]);
        for &d in shape {
            crc = crc32_update(crc, &(d as u64).to_le_bytes());
        }
        crc = crc32_update(crc, data);
    }
    crc
}

/// Adds the checksum of f32 tensors `(name, shape, values)` to `meta`, before they are serialised.
pub fn seal(meta: &mut HashMap<String, String>, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let dtype = format!("{:?}", safetensors::Dtype::F32);
    let list = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.as_str(), dtype.clone(), s.as_slice(), b.as_slice()))
        .collect();
    let crc = checksum(meta, list);
    meta.insert(META_CHECKSUM.to_string(), format!("{crc:08x}"));
}

/// Checks the checksum of the safetensors file `bytes` read from `path`. A file without one is
/// accepted only when `required` is false (weights files from elsewhere, such as the shipped
/// model); `train`'s checkpoints must have one.
pub fn verify(bytes: &[u8], path: &Path, required: bool) -> Result<()> {
    let bad = |what: &str| anyhow::anyhow!("'{}' is damaged: {what}", path.display());
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(&format!("not a safetensors file ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(&format!("not a safetensors file ({e})")))?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    let Some(stored) = meta.get(META_CHECKSUM) else {
        if required {
            bail!("'{}' has no checksum (not written by this version of gpstoken train)", path.display());
        }
        return Ok(());
    };
    let views = st.tensors();
    let list = views.iter().map(|(n, v)| (n.as_str(), format!("{:?}", v.dtype()), v.shape(), v.data())).collect();
    let actual = format!("{:08x}", checksum(meta, list));
    if *stored != actual {
        return Err(bad(&format!("checksum mismatch (stored {stored}, computed {actual})")));
    }
    Ok(())
}

/// The first non-finite value of any float tensor of a safetensors file, as "tensor 'NAME'
/// holds ... at index I"; `None` if every value is finite (or the file does not parse, which
/// the loader reports itself).
pub fn first_non_finite(bytes: &[u8]) -> Option<String> {
    let st = SafeTensors::deserialize(bytes).ok()?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, v) in views {
        let values: Box<dyn Iterator<Item = f32>> = match v.dtype() {
            safetensors::Dtype::F32 => {
                Box::new(v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            _ => continue,
        };
        if let Some((i, x)) = values.enumerate().find(|(_, x)| !x.is_finite()) {
            return Some(format!("tensor '{name}' holds a non-finite value ({x}) at index {i}"));
        }
    }
    None
}

/// Whether the safetensors file `bytes` is a training checkpoint (its metadata says
/// `format: gpstoken-train-*`), whose checksum is then required.
pub fn is_training_checkpoint(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes).ok().is_some_and(|(_, h)| {
        h.metadata().as_ref().and_then(|m| m.get("format")).is_some_and(|f| f.starts_with("gpstoken-train"))
    })
}
