//! `render` never trusts a `.gpst` header's image size: the reported files (an 80-byte file
//! whose size overflows, one that asks for 51 GB, a 4-bit corruption that asked for a
//! 2,097,408-pixel-wide PNG) end with a one-line error, and a one-pixel-wide image, which the
//! format allows, renders.

use gpstoken_core::gpst::{self, DType, Header};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gpstoken(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(args).output().expect("cannot run gpstoken")
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpstoken-robust-render-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_clean_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error must be one line: {err}");
    assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
}

/// One RGB token per patch, centred, with a valid checksum: a file `render` must judge by its header.
fn rgb_file(dir: &Path, name: &str, width: u32, height: u32, patch: u32) -> PathBuf {
    let h = Header::for_image(DType::F32, width, height, patch, 1, 3);
    let tokens: Vec<f32> = (0..h.total_tokens()).flat_map(|_| [0.5, 0.5, 0.0, 0.0, 0.0, 0.8, -0.2, 0.1]).collect();
    let bytes = gpst::to_bytes(&h, &tokens).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn huge_header_sizes_are_refused_before_rendering() {
    let dir = scratch("huge");
    let out = dir.join("out.png");
    // The 80-byte file of the report: a single 2^32-1 pixel patch overflowed the canvas size.
    let overflow = rgb_file(&dir, "overflow.gpst", u32::MAX, u32::MAX, u32::MAX);
    assert_eq!(std::fs::metadata(&overflow).unwrap().len(), 80);
    // 51 GB of canvas in one patch.
    let big = rgb_file(&dir, "big.gpst", 65_535, 65_535, 65_535);
    // The 4-bit corruption of a 256 x 256 fit (checksum recomputed): 2,097,408 pixels wide.
    let mut bytes = std::fs::read(rgb_file(&dir, "fit.gpst", 256, 256, 256)).unwrap();
    bytes[8..12].copy_from_slice(&2_097_408u32.to_le_bytes());
    bytes[16..20].copy_from_slice(&2_097_408u32.to_le_bytes());
    let crc = gpst::file_checksum(&bytes).unwrap();
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    let wide = dir.join("wide.gpst");
    std::fs::write(&wide, &bytes).unwrap();
    for file in [&overflow, &big, &wide] {
        let o = gpstoken(&["render", file.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert_clean_error(&o, "render limit");
        assert!(!out.exists(), "{}", file.display());
    }
    // An explicit --size renders such a file at a sane size.
    let o = gpstoken(&["render", wide.to_str().unwrap(), "-o", out.to_str().unwrap(), "--size", "64x32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = image::open(&out).unwrap();
    assert_eq!((png.width(), png.height()), (64, 32));
}

#[test]
fn size_flag_is_bounded() {
    let dir = scratch("size");
    let file = rgb_file(&dir, "a.gpst", 16, 16, 16);
    let out = dir.join("out.png");
    for size in ["16385x2", "10000x10000", "0x5"] {
        let o = gpstoken(&["render", file.to_str().unwrap(), "-o", out.to_str().unwrap(), "--size", size]);
        assert!(!o.status.success(), "{size}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
        assert!(!out.exists());
    }
}

#[test]
fn one_pixel_axes_render() {
    let dir = scratch("thin");
    for (w, h) in [(1u32, 7u32), (9, 1), (1, 1)] {
        let file = rgb_file(&dir, &format!("{w}x{h}.gpst"), w, h, 16);
        let out = dir.join(format!("{w}x{h}.png"));
        let o = gpstoken(&["render", file.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "{w}x{h}: {}", String::from_utf8_lossy(&o.stderr));
        let png = image::open(&out).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (w, h));
        // The token is reddish (0.8 of [-1, 1] in red): the render is not blank.
        assert!(png.pixels().all(|p| p[0] > p[2]), "{w}x{h}");
    }
}
