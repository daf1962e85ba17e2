//! The official inference's layout cache `initg.pickle` (spec 4.3) as a [`LayoutBank`]:
//! `D[y]` (a dict keyed by class, or a list) holds class `y`'s layouts, NumPy arrays `(N, >= 5)`
//! whose first five columns are `[σx, σy, ρ, x, y]`, consumed from the end (`D[y].pop()`), as
//! the bank consumes its layouts.
//!
//! The pickle is read by serde-pickle, which runs nothing: globals (NumPy's `_reconstruct`,
//! `dtype`, or anything a hostile file names) are left unresolved, and each array arrives as
//! the state NumPy pickles for it, `(1, shape, dtype state, fortran, raw bytes)`. Its element
//! type is told by the bytes per element (4: f32, 8: f64; the spec's arrays are floats) and the
//! byte order by the dtype state where the file spells it out (a dtype pickled once and
//! referred to again arrives as `None`: NumPy writes native little-endian). Protocol 5 stores
//! arrays as buffers this reading cannot see: such files are refused with the way out.

use super::bank::LayoutBank;
use anyhow::{bail, Context, Result};
use serde_pickle::{DeOptions, HashableValue, Value};

/// Largest class index taken from a dict's keys (ImageNet has 1000; this guards the class list
/// against a corrupt key).
const MAX_CLASSES: usize = 1 << 20;

/// The layouts of `bytes` (an `initg.pickle`) for `patch`-pixel patches: one class per index
/// `0..=max`, named by its index; classes a dict lacks hold no layouts.
pub fn bank_from_initg(bytes: &[u8], patch: usize) -> Result<LayoutBank> {
    let top = serde_pickle::value_from_slice(bytes, DeOptions::new().replace_unresolved_globals())
        .context("not a readable pickle")?;
    let by_class: Vec<(usize, Vec<Value>)> = match top {
        Value::Dict(map) => {
            map.into_iter().map(|(k, v)| Ok((class_index(&k)?, layout_list(v, &k)?))).collect::<Result<_>>()?
        }
        Value::List(list) => list
            .into_iter()
            .enumerate()
            .map(|(y, v)| Ok((y, layout_list(v, &HashableValue::I64(y as i64))?)))
            .collect::<Result<_>>()?,
        other => bail!("the pickle holds {}, not a dict or list of classes", kind(&other)),
    };
    let count = by_class.iter().map(|(y, _)| y + 1).max().unwrap_or(0);
    let mut classes: Vec<(String, Vec<f32>)> = (0..count).map(|y| (y.to_string(), Vec::new())).collect();
    let mut tokens = None;
    for (y, layouts) in by_class {
        for (k, array) in layouts.into_iter().enumerate() {
            let (n, values) = gaussians(array).with_context(|| format!("class {y}, layout {k}"))?;
            match tokens {
                None => tokens = Some(n),
                Some(t) if t != n => bail!("class {y}, layout {k} has {n} Gaussians, the layouts before it {t}"),
                Some(_) => {}
            }
            classes[y].1.extend(values);
        }
    }
    let Some(tokens) = tokens else { bail!("the pickle holds no layouts") };
    Ok(LayoutBank { patch, tokens, classes })
}

fn class_index(key: &HashableValue) -> Result<usize> {
    match key {
        HashableValue::I64(y) if (0..MAX_CLASSES as i64).contains(y) => Ok(*y as usize),
        other => bail!("class key {other:?} is not a class index (0 to {})", MAX_CLASSES - 1),
    }
}

fn layout_list(v: Value, class: &HashableValue) -> Result<Vec<Value>> {
    match v {
        Value::List(l) | Value::Tuple(l) => Ok(l),
        other => bail!("class {class:?} holds {}, not a list of layouts", kind(&other)),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None (an object this reader cannot rebuild)",
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Dict(_) => "a dict",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a string",
        _ => "a number or set",
    }
}

/// The `[σx, σy, ρ, x, y]` columns of one pickled NumPy array as f32: `(rows, values)`.
fn gaussians(array: Value) -> Result<(usize, Vec<f32>)> {
    let state = match array {
        Value::Tuple(state) if state.len() == 5 => state,
        Value::None => bail!(
            "an object this converter cannot rebuild, not a NumPy array pickled with protocol 4 or \
             lower (protocol 5 keeps arrays out of band: re-save with pickle.dump(D, f, protocol=4))"
        ),
        other => bail!("{}, not a NumPy array", kind(&other)),
    };
    let shape: Vec<usize> = match &state[1] {
        Value::Tuple(dims) => dims
            .iter()
            .map(|d| match d {
                Value::I64(n) if *n >= 0 => Ok(*n as usize),
                _ => bail!("bad array shape"),
            })
            .collect::<Result<_>>()?,
        _ => bail!("bad array shape"),
    };
    let [rows, cols] = shape[..] else { bail!("an array of shape {shape:?}, not (N, >= 5)") };
    if cols < 5 || rows == 0 {
        bail!("an array of shape ({rows}, {cols}), not (N, >= 5)");
    }
    if let Value::Tuple(dtype) = &state[2] {
        if matches!(dtype.get(1), Some(Value::String(order)) if order == ">") {
            bail!("a big-endian array (convert it with arr.astype('<f4') first)");
        }
    }
    let fortran = matches!(state[3], Value::Bool(true));
    let Value::Bytes(raw) = &state[4] else { bail!("an array without its data bytes") };
    let size = rows * cols;
    let value: fn(&[u8]) -> f32 = match raw.len().checked_div(size) {
        Some(4) if raw.len() == 4 * size => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        Some(8) if raw.len() == 8 * size => {
            |b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }
        _ => bail!("{} data bytes for {size} elements: not f32 or f64", raw.len()),
    };
    let width = raw.len() / size;
    let mut out = Vec::with_capacity(rows * 5);
    for i in 0..rows {
        for j in 0..5 {
            let at = if fortran { j * rows + i } else { i * cols + j };
            let v = value(&raw[at * width..(at + 1) * width]);
            if !v.is_finite() {
                bail!("value ({i}, {j}) is {v}");
            }
            out.push(v);
        }
    }
    Ok((rows, out))
}
