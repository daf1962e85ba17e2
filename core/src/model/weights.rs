//! Checkpoints: safetensors files with the official state-dict names (spec Appendix A).
//!
//! Loading is strict, as the official `load_state_dict(strict=True)`: every parameter must be
//! present with its exact shape and no other tensor may be in the file. One error lists every
//! problem at once. Values may be stored as f32, f16 or bf16 (converted to f32) or f64
//! (rounded to f32).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};

use super::params::ParamStore;
use crate::backend::Buffers;

/// What can go wrong reading or writing a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightsError {
    /// Not a safetensors file.
    Format(String),
    /// The file does not hold exactly the model's parameters.
    Mismatch {
        /// Parameters the file lacks: name and expected shape.
        missing: Vec<(String, Vec<usize>)>,
        /// Tensors the model does not have: name and stored shape.
        unexpected: Vec<(String, Vec<usize>)>,
        /// Name, expected shape, stored shape.
        shape: Vec<(String, Vec<usize>, Vec<usize>)>,
        /// Name and stored dtype, for dtypes that are not floats.
        dtype: Vec<(String, String)>,
    },
    /// The backend refused a transfer.
    Backend(String),
    /// Tensor `name` holds a NaN or an infinity at flat index `index`: such weights would turn
    /// every output into NaN (a black image with `"psnr": null`), so they are refused.
    NonFinite { name: String, index: usize, value: f32 },
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::Format(e) => write!(f, "not a safetensors file: {e}"),
            WeightsError::Backend(e) => write!(f, "backend error: {e}"),
            WeightsError::NonFinite { name, index, value } => {
                write!(f, "tensor '{name}' holds a non-finite value ({value}) at index {index}")
            }
            WeightsError::Mismatch { missing, unexpected, shape, dtype } => {
                write!(f, "checkpoint does not match the model:")?;
                if !missing.is_empty() {
                    write!(f, "\n  {} missing key(s):", missing.len())?;
                    for (n, s) in missing {
                        write!(f, "\n    {n} {s:?}")?;
                    }
                }
                if !unexpected.is_empty() {
                    write!(f, "\n  {} unexpected key(s):", unexpected.len())?;
                    for (n, s) in unexpected {
                        write!(f, "\n    {n} {s:?}")?;
                    }
                }
                if !shape.is_empty() {
                    write!(f, "\n  {} shape mismatch(es):", shape.len())?;
                    for (n, want, got) in shape {
                        write!(f, "\n    {n}: model {want:?}, file {got:?}")?;
                    }
                }
                if !dtype.is_empty() {
                    write!(f, "\n  {} unsupported dtype(s):", dtype.len())?;
                    for (n, d) in dtype {
                        write!(f, "\n    {n}: {d}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl core::error::Error for WeightsError {}

/// Values of a stored tensor as f32, or `None` for a non-float dtype.
fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let raw = view.data();
    Some(match view.dtype() {
        Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        _ => return None,
    })
}

/// Loads every parameter from a safetensors file (strict; see the module docs). Nothing is
/// written unless the whole file matches. Gradients are left as they are.
pub fn load_safetensors<B: Buffers>(be: &B, params: &mut ParamStore<B>, bytes: &[u8]) -> Result<(), WeightsError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
    let mut stored: BTreeMap<String, TensorView<'_>> = st.tensors().into_iter().collect();
    let mut missing = Vec::new();
    let mut shape = Vec::new();
    let mut dtype = Vec::new();
    let mut plan = Vec::with_capacity(params.len());
    for (id, spec) in params.specs().iter().enumerate() {
        match stored.remove(&spec.name) {
            None => missing.push((spec.name.clone(), spec.shape.clone())),
            Some(view) => {
                if view.shape() != spec.shape.as_slice() {
                    shape.push((spec.name.clone(), spec.shape.clone(), view.shape().to_vec()));
                } else if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) {
                    dtype.push((spec.name.clone(), format!("{:?}", view.dtype())));
                } else {
                    plan.push((id, view));
                }
            }
        }
    }
    let unexpected: Vec<_> = stored.into_iter().map(|(n, v)| (n, v.shape().to_vec())).collect();
    if !(missing.is_empty() && unexpected.is_empty() && shape.is_empty() && dtype.is_empty()) {
        return Err(WeightsError::Mismatch { missing, unexpected, shape, dtype });
    }
    // Every value is converted and checked before the first one is written.
    let mut values = Vec::with_capacity(plan.len());
    for (id, view) in plan {
        let host = to_f32(&view).expect("dtype checked above");
        if let Some(index) = host.iter().position(|v| !v.is_finite()) {
            let name = params.specs()[id].name.clone();
            return Err(WeightsError::NonFinite { name, index, value: host[index] });
        }
        values.push((id, host));
    }
    for (id, host) in values {
        be.write(params.value_mut(id), &host).map_err(|e| WeightsError::Backend(e.to_string()))?;
    }
    Ok(())
}

/// Every parameter (f32, official names and shapes) as a safetensors file.
pub fn save_safetensors<B: Buffers>(be: &B, params: &ParamStore<B>) -> Result<Vec<u8>, WeightsError> {
    save_safetensors_with_metadata(be, params, &[])
}

/// [`save_safetensors`] with `(key, value)` text in the header's `__metadata__` (which
/// [`load_safetensors`] ignores; [`read_metadata`] reads it back).
pub fn save_safetensors_with_metadata<B: Buffers>(
    be: &B,
    params: &ParamStore<B>,
    metadata: &[(String, String)],
) -> Result<Vec<u8>, WeightsError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(params.len());
    for (id, spec) in params.specs().iter().enumerate() {
        let mut host = alloc::vec![0.0f32; spec.numel()];
        be.download(params.value(id), &mut host).map_err(|e| WeightsError::Backend(e.to_string()))?;
        let bytes = host.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((spec.name.clone(), spec.shape.clone(), bytes));
    }
    let views = tensors
        .iter()
        .map(|(n, s, b)| Ok((n.as_str(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| WeightsError::Format(e.to_string()))?;
    serialize_safetensors(views, metadata)
}

/// `safetensors::serialize` with the `__metadata__` entries in key order, so that the same
/// tensors and metadata always give the same bytes (see [`sort_metadata`]).
pub fn serialize_safetensors<S, V, I>(tensors: I, metadata: &[(String, String)]) -> Result<Vec<u8>, WeightsError>
where
    S: AsRef<str> + Ord + fmt::Display,
    V: View,
    I: IntoIterator<Item = (S, V)>,
{
    let map = (!metadata.is_empty()).then(|| metadata.iter().cloned().collect());
    let mut file = safetensors::serialize(tensors, map).map_err(|e| WeightsError::Format(e.to_string()))?;
    sort_metadata(&mut file, metadata);
    Ok(file)
}

/// Rewrites the `__metadata__` object of a serialized file with its entries in key order.
/// safetensors keeps them in a `HashMap`, whose order changes from process to process, so the
/// same weights would give files that differ (and checksums that differ). The object comes
/// first in the header and holds the same characters in either order, so it is rewritten in
/// place; a header laid out otherwise is left as it is (still a valid file).
fn sort_metadata(file: &mut [u8], metadata: &[(String, String)]) {
    const OPEN: &[u8] = b"{\"__metadata__\":";
    if metadata.is_empty() {
        return;
    }
    let sorted: BTreeMap<&str, &str> = metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let Ok(json) = serde_json::to_string(&sorted) else { return };
    let start = 8 + OPEN.len();
    let Some(object) = file.get(start..start + json.len()) else { return };
    let mut have = object.to_vec();
    let mut want = json.as_bytes().to_vec();
    have.sort_unstable();
    want.sort_unstable();
    if file[8..].starts_with(OPEN) && have == want && matches!(file.get(start + json.len()), Some(b',' | b'}')) {
        file[start..start + json.len()].copy_from_slice(json.as_bytes());
    }
}

/// The value of `key` in a safetensors file's `__metadata__`, if the file has it.
pub fn read_metadata(bytes: &[u8], key: &str) -> Result<Option<String>, WeightsError> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
    Ok(meta.metadata().as_ref().and_then(|m| m.get(key).cloned()))
}
