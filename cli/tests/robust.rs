//! The reported robustness problems of issue 11, one test per reproduction: silent garbage
//! (NaN weights, a diverged fit, a truncated JPEG), outputs that overwrite inputs or fail after
//! the work, damaged checkpoints, misleading messages, and a batch too large for memory.
//! `render` never trusts a `.gpst` header's image size: the reported files (an 80-byte file
//! whose size overflows, one that asks for 51 GB, a 4-bit corruption that asked for a
//! 2,097,408-pixel-wide PNG) end with a one-line error, and a one-pixel-wide image renders.
//! (`fuzz_parsers.rs` and `tests/tests/gpst_format.rs` fuzz the parsers.)

use gpstoken_core::gpst::{self, DType, Header};
use gpstoken_core::model::ModelConfig;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gpstoken(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(args).output().expect("cannot run gpstoken")
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpstoken-robust-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Failure with one line on stderr naming the problem, exit code 1, no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error must be one line: {err}");
    assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
}

/// A folder of small photos (PNG) for training.
fn photos(dir: &Path, count: u32) -> PathBuf {
    let data = dir.join("photos");
    std::fs::create_dir_all(&data).unwrap();
    for k in 0..count {
        let img = image::RgbImage::from_fn(72, 70, |x, y| {
            image::Rgb([(x * 3 + k * 20) as u8, ((x / 8 + y / 8) % 2 * 200) as u8, y as u8])
        });
        img.save(data.join(format!("p{k}.png"))).unwrap();
    }
    data
}

fn train(data: &Path, out: &Path, steps: u32, extra: &[&str]) -> Output {
    let steps = steps.to_string();
    let mut args =
        vec!["train", "--config", "tiny64", "--data", s(data), "--out", s(out), "--steps", &steps, "--quiet"];
    args.extend_from_slice(extra);
    gpstoken(&args)
}

/// The JPEG of a sample photo cut in half: the decoder alone would fill the rest with grey.
fn truncated_jpeg(path: &Path) {
    let img = image::open(repo("samples/coffee.png")).unwrap().to_rgb8();
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

#[test]
fn nan_weights_are_refused_naming_the_tensor() {
    let dir = scratch("nan");
    let mut bytes = std::fs::read(repo("models/tiny64.safetensors")).unwrap();
    let data = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[data..data + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let model = dir.join("nan.safetensors");
    std::fs::write(&model, &bytes).unwrap();
    let out = dir.join("out.png");
    let o = gpstoken(&["reconstruct", s(&repo("samples/coffee.png")), "--model", s(&model), "-o", s(&out), "--json"]);
    assert_clean_error(&o, "non-finite");
    assert!(stderr(&o).contains("tensor '"), "{}", stderr(&o));
    assert!(o.stdout.is_empty() && !out.exists());
}

#[test]
fn a_diverged_fit_is_an_error() {
    let o = gpstoken(&[
        "fit",
        s(&repo("samples/coffee.png")),
        "--tokens",
        "16",
        "--steps",
        "5",
        "--size",
        "32",
        "--lr",
        "1e30",
        "--lr-features",
        "1e30",
        "--json",
    ]);
    assert_clean_error(&o, "diverged");
    assert!(o.stdout.is_empty(), "no result is printed: {}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn truncated_images_are_errors_and_skipped_in_training() {
    let dir = scratch("truncated");
    let cut = dir.join("cut.jpg");
    truncated_jpeg(&cut);
    assert_clean_error(&gpstoken(&["partition", s(&cut), "--tokens", "8"]), "truncated JPEG");
    let out = dir.join("out.png");
    assert_clean_error(&gpstoken(&["reconstruct", s(&cut), "-o", s(&out)]), "truncated JPEG");
    // In a training folder: skipped with a warning, and counted in the log.
    let data = photos(&dir, 2);
    truncated_jpeg(&data.join("cut.jpg"));
    let run = dir.join("run");
    let o = train(&data, &run, 1, &["--batch", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("truncated JPEG"), "{}", stderr(&o));
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!((first["skipped"].as_u64(), first["images"].as_u64()), (Some(1), Some(2)), "{log}");
}

#[test]
fn outputs_never_overwrite_inputs_and_are_checked_before_the_work() {
    let dir = scratch("outputs");
    let photo = dir.join("in.png");
    std::fs::copy(repo("samples/coffee.png"), &photo).unwrap();
    let original = std::fs::read(&photo).unwrap();
    // The same file under another spelling.
    let same = dir.join(".").join("in.png");
    assert_clean_error(&gpstoken(&["reconstruct", s(&photo), "-o", s(&same)]), "is an input");
    assert_eq!(std::fs::read(&photo).unwrap(), original);
    let viz_same = gpstoken(&["reconstruct", s(&photo), "-o", s(&dir.join("r.png")), "--viz", s(&dir.join("r.png"))]);
    assert_clean_error(&viz_same, "same file");
    // fit -o A --recon missing/B: nothing is written, and the message names --recon.
    let a = dir.join("a.gpst");
    let missing = dir.join("missing").join("b.png");
    let o = gpstoken(&[
        "fit",
        s(&photo),
        "--tokens",
        "16",
        "--steps",
        "3",
        "--size",
        "32",
        "-o",
        s(&a),
        "--recon",
        s(&missing),
    ]);
    assert_clean_error(&o, "--recon");
    assert!(!a.exists());
    // A bad output folder is reported before anything else is even opened (here: a missing model).
    let o = gpstoken(&["reconstruct", s(&photo), "--model", s(&dir.join("nope.safetensors")), "-o", s(&missing)]);
    assert_clean_error(&o, "-o");
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn damaged_checkpoints_are_refused_on_resume_and_export() {
    let dir = scratch("checkpoint");
    let data = photos(&dir, 2);
    let run = dir.join("run");
    let o = train(&data, &run, 1, &["--batch", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = run.join("checkpoint.safetensors");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let data_at = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // 20 bytes flipped across the tensors (not NaN-making: only the low mantissa bit).
    for k in 0..20 {
        let at = data_at + 4 * (k * 9973 % ((bytes.len() - data_at) / 4));
        bytes[at] ^= 1;
    }
    std::fs::write(&ckpt, &bytes).unwrap();
    let o = train(&data, &run, 3, &["--resume"]);
    assert_clean_error(&o, "checksum mismatch");
    assert!(stderr(&o).contains(s(&ckpt)), "{}", stderr(&o));
    let o = gpstoken(&["export", s(&ckpt), "-o", s(&dir.join("w.safetensors"))]);
    assert_clean_error(&o, "checksum mismatch");
    assert!(!dir.join("w.safetensors").exists());
}

/// A `.gpst` file of learned tokens for tiny64 with `n` tokens per patch on `grid` x `grid` patches.
fn tiny64_tokens(path: &Path, n: u32, grid: u32) {
    let cfg = ModelConfig::builtin("tiny64").unwrap();
    let (patch, c) = (cfg.image_hw.0 as u32, cfg.gps.gps_c as u32);
    let h = Header::for_image(DType::F32, grid * patch, grid * patch, patch, n, c);
    let token: Vec<f32> = [0.2, 0.2, 0.0, 0.0, 0.0].into_iter().chain((0..c).map(|_| 0.1)).collect();
    let tokens: Vec<f32> = (0..h.total_tokens()).flat_map(|_| token.clone()).collect();
    std::fs::write(path, gpst::to_bytes(&h, &tokens).unwrap()).unwrap();
}

#[test]
fn messages_name_the_flag_or_file_that_is_wrong() {
    let dir = scratch("messages");
    let out = dir.join("out.png");
    // decode: the token count and the grid come from the file, not from --tokens or --size.
    let many = dir.join("many.gpst");
    tiny64_tokens(&many, 5_000, 1);
    let o = gpstoken(&["decode", s(&many), "-o", s(&out)]);
    assert_clean_error(&o, "many.gpst' holds 5000 tokens per patch");
    assert!(!stderr(&o).contains("--tokens"), "{}", stderr(&o));
    let wide = dir.join("wide.gpst");
    tiny64_tokens(&wide, 1, 129);
    let o = gpstoken(&["decode", s(&wide), "-o", s(&out)]);
    assert_clean_error(&o, "wide.gpst': the image is 8256x8256 pixels");
    assert!(!stderr(&o).contains("--size"), "{}", stderr(&o));
    // train --eval with a bad folder names --eval, not "the data folder".
    let data = photos(&dir, 1);
    let o = train(&data, &dir.join("run"), 1, &["--eval", s(&dir.join("no-such-folder"))]);
    assert_clean_error(&o, "--eval folder");
    // --config that contradicts the model's own config.
    let o = gpstoken(&["reconstruct", s(&repo("samples/coffee.png")), "--config", "m128", "-o", s(&out)]);
    assert_clean_error(&o, "--config m128 differs from config 'tiny64'");
    assert!(!out.exists());
}

#[test]
fn an_empty_model_variable_counts_as_unset() {
    let dir = scratch("env");
    let out = dir.join("out.png");
    let o = Command::new(env!("CARGO_BIN_EXE_gpstoken"))
        .args(["reconstruct", s(&repo("samples/coffee.png")), "-o", s(&out), "--size", "64"])
        .env("GPSTOKEN_MODEL", "")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.is_file());
}

#[test]
fn a_batch_too_large_for_memory_is_a_one_line_error() {
    let dir = scratch("batch");
    let data = photos(&dir, 1);
    // 100,000 images of activations: terabytes on any machine (the report's 1000 was enough there).
    let o = train(&data, &dir.join("run"), 1, &["--batch", "100000"]);
    assert_clean_error(&o, "--batch 100000 needs about");
}

#[test]
fn exif_orientation_is_applied_and_alpha_is_composited_onto_white() {
    // A 4 x 2 JPEG, left half black and right half white, with EXIF orientation 6 (rotate 90°
    // clockwise to display): it is read as 2 x 4, black on top.
    let img = image::RgbImage::from_fn(4, 2, |x, _| if x < 2 { image::Rgb([0, 0, 0]) } else { image::Rgb([255; 3]) });
    let mut jpeg = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    // APP1 "Exif": a little-endian TIFF header and one IFD entry, Orientation (0x0112) SHORT = 6.
    let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec();
    tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut with_exif = jpeg[..2].to_vec();
    with_exif.extend_from_slice(&[0xFF, 0xE1]);
    with_exif.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    with_exif.extend_from_slice(&app1);
    with_exif.extend_from_slice(&jpeg[2..]);
    let rotated = gpstoken_cli::imageio::decode_rgb8(&with_exif).unwrap();
    assert_eq!((rotated.width, rotated.height), (2, 4));
    assert!(rotated.data[..6].iter().all(|&v| v < 60), "{:?}", rotated.data);
    assert!(rotated.data[18..].iter().all(|&v| v > 200), "{:?}", rotated.data);
    // Transparent red, half-transparent black, opaque blue over white.
    let rgba = image::RgbaImage::from_raw(3, 1, vec![255, 0, 0, 0, 0, 0, 0, 128, 0, 0, 255, 255]).unwrap();
    let mut png = Vec::new();
    rgba.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let flat = gpstoken_cli::imageio::decode_rgb8(&png).unwrap();
    assert_eq!(flat.data, vec![255, 255, 255, 127, 127, 127, 0, 0, 255]);
}

// ---------------------------------------------------------------------------------------------
// render
// ---------------------------------------------------------------------------------------------

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
