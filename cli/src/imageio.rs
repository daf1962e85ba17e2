//! Reading photos, the official preprocessing, and writing outputs without ever leaving a
//! half-written file behind (write to a temporary file in the same folder, then rename).

use anyhow::{bail, Context, Result};
use gpstoken_core::preprocess;
use std::path::Path;

/// An RGB u8 image, rows top to bottom, interleaved.
#[derive(Clone, Debug)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Largest image side accepted when reading (pixels): a header asking for more is refused
/// before anything is decoded.
pub const MAX_IMAGE_SIDE: u32 = 32_768;
/// Most bytes the image decoder may allocate for one image (1 GiB): a small file whose header
/// claims a huge image is refused instead of exhausting memory.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Reads any PNG or JPEG as RGB u8: grey and palette images become three equal channels, a
/// JPEG's EXIF orientation is applied, and transparent pixels are composited onto white
/// (opaque images are unchanged, exactly as PIL's `convert('RGB')` in the official loader).
/// A truncated file is an error, never a half-grey image.
pub fn load_rgb8(path: &Path) -> Result<Rgb8> {
    if !path.exists() {
        bail!("image '{}' does not exist", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read image '{}'", path.display()))?;
    decode_rgb8(&bytes).map_err(|e| anyhow::anyhow!("'{}' {e}", path.display()))
}

/// [`load_rgb8`] on the bytes of a file. The error completes "'FILE' ...".
pub fn decode_rgb8(bytes: &[u8]) -> Result<Rgb8> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| anyhow::anyhow!("cannot be read: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    reader.limits(limits);
    // The JPEG decoder fills a cut-off scan with grey and reports success.
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        bail!("is a truncated JPEG (no end-of-image marker after its last scan)");
    }
    // The decoders' messages may span lines; errors here are one line.
    let unreadable = |e: image::ImageError| {
        let msg = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        anyhow::anyhow!("is not a readable PNG/JPEG image: {msg}")
    };
    let mut decoder = reader.into_decoder().map_err(unreadable)?;
    let orientation = image::ImageDecoder::orientation(&mut decoder).map_err(unreadable)?;
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    img.apply_orientation(orientation);
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        bail!("is an empty image");
    }
    let data = if img.color().has_alpha() { over_white(&img.to_rgba8().into_raw()) } else { img.to_rgb8().into_raw() };
    Ok(Rgb8 { width, height, data })
}

/// RGBA u8 composited onto a white background: `c·a + 255·(1 - a)`, rounded.
fn over_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = u32::from(px[3]);
        for &c in &px[..3] {
            out.push(((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    out
}

/// Whether a JPEG has an end-of-image marker (`FF D9`) after its last start-of-scan (`FF DA`).
/// Entropy-coded data never holds `FF DA` or `FF D9` (a data `FF` is followed by `00` or a
/// restart marker), so a file cut inside its last scan fails this test; an EXIF thumbnail's
/// own markers come before the main image's scans.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        (None, _) => true, // no scan at all: the decoder reports that itself
        (Some(_), None) => false,
    }
}

/// How an input photo becomes the model's canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The official preprocessing: shortest side to `patch` (bilinear), centre crop to `patch`².
    CentreCrop,
    /// Keep the whole photo, cut into `patch`² tiles (spec 3.6): see `preprocess_rgb8_full`.
    Full,
}

/// Applies the framing to a photo (or a focus mask of the same size).
pub fn frame(img: &Rgb8, framing: Framing, patch: usize) -> Result<Rgb8> {
    let (data, width, height) = match framing {
        Framing::CentreCrop => preprocess::preprocess_rgb8(&img.data, img.width, img.height, patch),
        Framing::Full => preprocess::preprocess_rgb8_full(&img.data, img.width, img.height, patch),
    }
    .map_err(|e| anyhow::anyhow!("cannot preprocess a {}x{} image: {e}", img.width, img.height))?;
    Ok(Rgb8 { width, height, data })
}

/// u8 RGB to the model's [-1, 1] values (spec 0: `f32(u8/127.5 - 1)` in f64), HWC.
pub fn to_unit(img: &Rgb8) -> Vec<f32> {
    img.data.iter().map(|&v| preprocess::u8_to_unit(v)).collect()
}

/// HWC interleaved to CHW planar.
pub fn hwc_to_chw(hwc: &[f32], channels: usize) -> Vec<f32> {
    let pixels = hwc.len() / channels;
    let mut chw = vec![0.0; hwc.len()];
    for (p, px) in hwc.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            chw[c * pixels + p] = v;
        }
    }
    chw
}

/// A [-1, 1] CHW RGB map to u8 RGB (clamped, rounded to nearest).
pub fn chw_unit_to_rgb8(chw: &[f32], width: usize, height: usize) -> Rgb8 {
    let pixels = width * height;
    let mut data = vec![0u8; pixels * 3];
    for p in 0..pixels {
        for c in 0..3 {
            let v = chw[c * pixels + p].clamp(-1.0, 1.0);
            data[p * 3 + c] = ((v + 1.0) * 127.5).round() as u8;
        }
    }
    Rgb8 { width, height, data }
}

/// Writes `bytes` to `path` atomically: a temporary file next to it, flushed, then renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::outputs::write_all(&[(path, bytes)])
}

/// An image encoded as PNG, in memory.
pub fn png_bytes(img: &Rgb8) -> Result<Vec<u8>> {
    let buffer = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
        .context("internal error: image buffer has the wrong size")?;
    let mut bytes = Vec::new();
    buffer.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).context("cannot encode a PNG")?;
    Ok(bytes)
}

/// Encodes a PNG in memory and writes it atomically.
pub fn save_png(path: &Path, img: &Rgb8) -> Result<()> {
    write_atomically(path, &png_bytes(img)?)
}

/// A focus mask (any image the size of the photo; pixels >= 128 in luma are "focus") framed like
/// the photo and turned into the Algorithm 1 bias map (spec 3.5): `strength` on focus pixels,
/// 0 elsewhere. Integer strengths keep the official f32 bias sums exact.
pub fn focus_bias(path: &Path, photo: &Rgb8, framing: Framing, patch: usize, strength: f32) -> Result<Vec<f32>> {
    let mask = load_rgb8(path).context("cannot use the focus mask")?;
    if (mask.width, mask.height) != (photo.width, photo.height) {
        bail!(
            "focus mask '{}' is {}x{} but the image is {}x{}; they must have the same size",
            path.display(),
            mask.width,
            mask.height,
            photo.width,
            photo.height
        );
    }
    let framed = frame(&mask, framing, patch)?;
    Ok(framed
        .data
        .chunks_exact(3)
        .map(|p| {
            let luma = (u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114) / 1000;
            if luma >= 128 {
                strength
            } else {
                0.0
            }
        })
        .collect())
}
