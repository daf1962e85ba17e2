//! The generators' data: a folder with one sub-folder per class (`DIR/<class>/*.png`), each image
//! made into one `S x S` patch, and the tokens the tokenizer gives it, cached in the run folder.
//!
//! Cut-outs with an alpha channel (the tuxpaint stamps) are composited onto white and padded to a
//! square with white before the square is resized to the tokenizer's patch size `S` (a plain
//! background: the generator should learn the object, not a random backdrop). Every image is
//! used as it is and mirrored (the only augmentation: the tokens are computed once and cached).
//! Every `hold_out`-th image of a class (in file-name order) is held out of training.

use crate::imageio::Rgb8;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One image of a labelled folder, ready for the tokenizer.
pub struct LabelledImage {
    pub path: PathBuf,
    pub class: u32,
    pub held_out: bool,
    /// `S x S`, RGB.
    pub image: Rgb8,
}

/// A labelled folder in memory.
pub struct LabelledImages {
    /// Class names (sub-folder names, sorted); label `k` is `classes[k]`.
    pub classes: Vec<String>,
    pub images: Vec<LabelledImage>,
}

/// The class sub-folders of `dir`, sorted by name, each with its images (sorted).
pub fn class_folders(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    if !dir.is_dir() {
        bail!("data folder '{}' does not exist or is not a folder", dir.display());
    }
    let mut folders = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list '{}'", dir.display()))? {
        let path = e.with_context(|| format!("cannot list '{}'", dir.display()))?.path();
        if path.is_dir() {
            let name = path.file_name().and_then(|n| n.to_str()).map(str::to_string);
            let name = name.with_context(|| format!("class folder '{}' is not valid UTF-8", path.display()))?;
            if let Ok(images) = crate::data::list_images(&path) {
                folders.push((name, images));
            }
        }
    }
    folders.sort();
    if folders.is_empty() {
        bail!("data folder '{}' has no class sub-folders with images (expected DIR/<class>/*.png)", dir.display());
    }
    Ok(folders)
}

/// Loads every image of every class as an `S x S` patch; unreadable images are skipped with a
/// warning. `hold_out` 0 holds nothing out; a class keeps at least one training image.
pub fn load_labelled(dir: &Path, size: usize, hold_out: usize) -> Result<LabelledImages> {
    let folders = class_folders(dir)?;
    let mut classes = Vec::new();
    let mut images = Vec::new();
    for (k, (name, paths)) in folders.into_iter().enumerate() {
        classes.push(name);
        let count = paths.len();
        for (i, path) in paths.into_iter().enumerate() {
            match load_patch(&path, size) {
                Ok(image) => {
                    let held_out = hold_out > 0 && count > 1 && i % hold_out == hold_out - 1;
                    images.push(LabelledImage { path, class: k as u32, held_out, image });
                }
                Err(e) => eprintln!("gpstoken: warning: skipping {e:#}"),
            }
        }
    }
    Ok(LabelledImages { classes, images })
}

/// The square white-padded, white-composited image at `size x size`.
pub fn load_patch(path: &Path, size: usize) -> Result<Rgb8> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image '{}'", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image '{}'", path.display()))?
        .decode()
        .map_err(|e| anyhow::anyhow!("'{}' is not a readable PNG/JPEG image: {e}", path.display()))?
        .to_rgba8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        bail!("image '{}' is empty", path.display());
    }
    let side = w.max(h);
    let (ox, oy) = ((side - w) / 2, (side - h) / 2);
    let mut square = image::RgbImage::from_pixel(side as u32, side as u32, image::Rgb([255, 255, 255]));
    for (x, y, p) in img.enumerate_pixels() {
        let a = u32::from(p[3]);
        let mix = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
        square.put_pixel(x + ox as u32, y + oy as u32, image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])]));
    }
    let small = image::imageops::resize(&square, size as u32, size as u32, image::imageops::FilterType::Triangle);
    Ok(Rgb8 { width: size, height: size, data: small.into_raw() })
}

/// The image mirrored left to right.
pub fn mirrored(img: &Rgb8) -> Rgb8 {
    let mut data = img.data.clone();
    for row in data.chunks_exact_mut(img.width * 3) {
        for x in 0..img.width / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (img.width - 1 - x) * 3 + c);
            }
        }
    }
    Rgb8 { width: img.width, height: img.height, data }
}
