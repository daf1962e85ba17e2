//! Preprocessing against the golden partition inputs (spec 3.1, 3.7).
//!
//! * `grey` computed from each golden `input.png` equals the stored `grey` tensor bit for bit.
//! * The eval photos that are the golden sources (same name, same size as `case.json` records),
//!   run through `preprocess_rgb8` (SmallestMaxSize(256) + CenterCrop(256)), give the golden
//!   `input.png` bytes.

use std::path::Path;

use gpstoken_core::preprocess::{grey, preprocess_rgb8, u8_slice_to_unit};
use gpstoken_tests::{read_json, read_safetensors, shared_dir};

fn load_rgb8(path: &Path) -> (Vec<u8>, usize, usize) {
    // PIL's convert('RGB') on a grey image repeats the value in the three channels, as to_rgb8.
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w as usize, h as usize)
}

fn golden_dirs(shared: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(shared.join("golden/partition"))
        .expect("golden/partition")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.png").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn grey_matches_golden_bit_for_bit() {
    let Some(shared) = shared_dir("preprocess_golden") else { return };
    let dirs = golden_dirs(&shared);
    assert!(!dirs.is_empty());
    for dir in &dirs {
        let (rgb, w, h) = load_rgb8(&dir.join("input.png"));
        let mut unit = vec![0.0f32; rgb.len()];
        u8_slice_to_unit(&rgb, &mut unit);
        let mut g = vec![0.0f32; w * h];
        grey(&unit, &mut g);
        let reference = read_safetensors(&dir.join("data.safetensors"))["grey"].f32();
        let bad = g.iter().zip(&reference).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(bad, 0, "{}: grey differs in {bad} pixels", dir.display());
    }
}

/// The eval photo a golden case was made from (`flower` is `flower_sklearn`).
fn eval_photo(shared: &Path, case: &str) -> Option<std::path::PathBuf> {
    let name = if case == "flower" { "flower_sklearn" } else { case };
    let p = shared.join("data/eval").join(format!("{name}.png"));
    p.is_file().then_some(p)
}

#[test]
fn resize_and_crop_match_golden_inputs() {
    let Some(shared) = shared_dir("preprocess_golden") else { return };
    let mut compared = 0;
    for dir in golden_dirs(&shared) {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let Some(photo) = eval_photo(&shared, &case) else { continue };
        let json = read_json(&dir.join("case.json"));
        let src = &json["source_size_wh_and_mode"][0];
        let (sw, sh) = (src[0].as_u64().unwrap() as usize, src[1].as_u64().unwrap() as usize);
        let (rgb, w, h) = load_rgb8(&photo);
        if (w, h) != (sw, sh) {
            eprintln!("{case}: eval copy is {w}x{h}, the golden source was {sw}x{sh}: not comparable");
            continue;
        }
        let (ours, ow, oh) = preprocess_rgb8(&rgb, w, h, 256).unwrap();
        assert_eq!((ow, oh), (256, 256));
        let (reference, _, _) = load_rgb8(&dir.join("input.png"));
        let diffs: Vec<u8> = ours.iter().zip(&reference).map(|(a, b)| a.abs_diff(*b)).filter(|&d| d > 0).collect();
        let max = diffs.iter().copied().max().unwrap_or(0);
        eprintln!("{case} ({w}x{h}): {} of {} bytes differ, max |diff| {max}", diffs.len(), ours.len());
        assert!(diffs.is_empty(), "{case}: preprocessing is not byte-exact ({} bytes, max {max})", diffs.len());
        compared += 1;
    }
    eprintln!("{compared} golden inputs reproduced from the eval photos");
    assert!(compared >= 1, "no eval photo matched a golden source");
}
