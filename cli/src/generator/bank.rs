//! The layout bank: Algorithm 1 layouts of real images, per class, used instead of the layout
//! model (the official inference reads its `g_init` from such a cache, spec 4.3).
//!
//! File: safetensors, one f32 tensor `[K, N, 5]` per class, named by the class, with metadata
//! `classes` (JSON list: the label order), `patch` (the patch side the coordinates refer to) and
//! `tokens`. Layouts are consumed from the end, as the official `D[y].pop()`: the `i`-th sample of
//! a class gets layout `K − 1 − i`; asking for more than `K` is an error.

use super::data::{class_folders, load_patch, mirrored};
use crate::data::{push_layout, Batch, Init, SampleSpec};
use anyhow::{bail, Context, Result};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Layouts per class, in label order.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutBank {
    pub patch: usize,
    pub tokens: usize,
    /// `(class, [K, N, 5])`.
    pub classes: Vec<(String, Vec<f32>)>,
}

impl LayoutBank {
    /// Algorithm 1 (weight `lambda`) on every image of every class of `dir` and on its mirror image.
    pub fn build(dir: &Path, patch: usize, tokens: usize, lambda: f64) -> Result<LayoutBank> {
        crate::model_io::check_tokens(tokens, patch)?;
        let spec = SampleSpec { width: patch, height: patch, tokens, weight: lambda, init: Init::Adaptive };
        let mut classes = Vec::new();
        for (name, paths) in class_folders(dir)? {
            let mut batch = Batch { step: 0, image: Vec::new(), g_init: Vec::new(), regions: Vec::new() };
            for p in &paths {
                match load_patch(p, patch) {
                    Ok(img) => {
                        for im in [mirrored(&img), img] {
                            push_layout(&crate::imageio::to_unit(&im), &spec, None, &mut batch)?;
                        }
                    }
                    Err(e) => eprintln!("gpstoken: warning: skipping {e:#}"),
                }
            }
            if !batch.g_init.is_empty() {
                classes.push((name, batch.g_init));
            }
        }
        Ok(LayoutBank { patch, tokens, classes })
    }

    /// Layouts of class `label`.
    pub fn count(&self, label: usize) -> usize {
        self.classes.get(label).map_or(0, |(_, g)| g.len() / (self.tokens * 5))
    }

    /// The label of a class name.
    pub fn label(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|(c, _)| c == name)
    }

    /// `n` layouts `[n, N, 5]` of class `label`, taken from the end (module docs).
    pub fn take(&self, label: usize, n: usize) -> Result<Vec<f32>> {
        let Some((name, g)) = self.classes.get(label) else {
            bail!("the layout bank has no class {label} (it has {})", self.classes.len())
        };
        let k = self.count(label);
        if n > k {
            bail!("the layout bank holds {k} layouts of class '{name}', {n} requested");
        }
        let per = self.tokens * 5;
        Ok((0..n).flat_map(|i| g[(k - 1 - i) * per..(k - i) * per].iter().copied()).collect())
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let tensors: Vec<_> = self
            .classes
            .iter()
            .map(|(name, g)| (name.clone(), vec![g.len() / (self.tokens * 5), self.tokens, 5], g.clone()))
            .collect();
        let mut meta = HashMap::new();
        let names: Vec<&String> = self.classes.iter().map(|(n, _)| n).collect();
        meta.insert("format".to_string(), "gpstoken-layout-bank-1".to_string());
        meta.insert("classes".to_string(), serde_json::to_string(&names)?);
        meta.insert("patch".to_string(), self.patch.to_string());
        meta.insert("tokens".to_string(), self.tokens.to_string());
        crate::model_io::serialize_f32(&tensors, meta)
    }

    pub fn load(path: &Path) -> Result<LayoutBank> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read layout bank '{}'", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("layout bank '{}'", path.display()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<LayoutBank> {
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e}"))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).with_context(|| format!("no '{k}' in the metadata (not a layout bank)"));
        let names: Vec<String> = serde_json::from_str(get("classes")?).context("bad 'classes'")?;
        let patch: usize = get("patch")?.parse().context("bad 'patch'")?;
        let tokens: usize = get("tokens")?.parse().context("bad 'tokens'")?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e}"))?;
        let mut classes = Vec::new();
        for name in names {
            let t = st.tensor(&name).with_context(|| format!("no tensor for class '{name}'"))?;
            let shape = t.shape();
            if t.dtype() != safetensors::Dtype::F32 || shape.len() != 3 || shape[1] != tokens || shape[2] != 5 {
                bail!("class '{name}' is not an f32 [K, {tokens}, 5] tensor");
            }
            let g: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            if g.iter().any(|v| !v.is_finite()) {
                bail!("class '{name}' has non-finite values");
            }
            classes.push((name, g));
        }
        Ok(LayoutBank { patch, tokens, classes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank() -> LayoutBank {
        // Class "a": 3 layouts of 2 tokens whose values say which layout they are.
        let a: Vec<f32> = (0..3).flat_map(|k| [k as f32; 10]).collect();
        LayoutBank { patch: 64, tokens: 2, classes: vec![("a".into(), a), ("b".into(), vec![7.0; 10])] }
    }

    #[test]
    fn layouts_are_taken_from_the_end_and_running_out_is_an_error() {
        let b = bank();
        assert_eq!(b.count(0), 3);
        let two = b.take(0, 2).unwrap();
        assert_eq!(&two[..10], &[2.0; 10], "the first sample gets the last layout");
        assert_eq!(&two[10..], &[1.0; 10]);
        assert_eq!(b.take(1, 1).unwrap(), vec![7.0; 10]);
        let e = b.take(0, 4).unwrap_err().to_string();
        assert_eq!(e, "the layout bank holds 3 layouts of class 'a', 4 requested");
        assert!(b.take(2, 1).is_err());
        assert_eq!(b.label("b"), Some(1));
    }

    #[test]
    fn the_file_round_trips_and_bad_files_are_errors() {
        let b = bank();
        let bytes = b.to_bytes().unwrap();
        assert_eq!(LayoutBank::from_bytes(&bytes).unwrap(), b);
        assert!(LayoutBank::from_bytes(b"not a bank").is_err());
        let other = crate::model_io::serialize_f32(&[("x".into(), vec![1], vec![0.0])], HashMap::new()).unwrap();
        let e = format!("{:#}", LayoutBank::from_bytes(&other).unwrap_err());
        assert!(e.contains("not a layout bank"), "{e}");
    }
}
