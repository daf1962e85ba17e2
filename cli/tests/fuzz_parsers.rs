//! Deterministic fuzzing of every parser that reads a file the user hands over: images (PNG and
//! JPEG), safetensors weights and training checkpoints (the checksum and NaN checks, the
//! weights/checkpoint split) and the strict weight loader. Every input must give `Ok` or a clean
//! `Err`, never a panic, and no single allocation may exceed the documented bound (a counting
//! global allocator records the largest request of each thread).
//!
//! Inputs tried (the tests assert these counts): images 9,504, small safetensors files 6,571,
//! the tiny64 weights through the strict loader 772. The `.gpst` parser has its own fuzz test in
//! `tests/tests/gpst_format.rs`.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_cli::{imageio, integrity, model_io};
use gpstoken_core::model::{load_safetensors, GpsToken, ModelConfig, WeightsError};
use gpstoken_tests::alloc_count::{largest_request, reset_largest_request, CountingAllocator};
use gpstoken_tests::TestRng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` on `input`, failing on a panic or on an allocation above `bound` bytes.
fn run_bounded<T>(input: &[u8], bound: usize, what: &str, f: impl FnOnce(&[u8]) -> T) -> T {
    reset_largest_request();
    let out = catch_unwind(AssertUnwindSafe(|| f(input))).unwrap_or_else(|_| panic!("panic on {what}"));
    let largest = largest_request();
    assert!(largest <= bound, "{what}: allocated {largest} bytes (bound {bound}) for {} input bytes", input.len());
    out
}

/// Truncations at `cuts` evenly spread lengths, `flips` random 1-4 bit flips, `sets` random
/// bytes set to random values: the generic mutations of a file.
fn mutations(file: &[u8], rng: &mut TestRng, cuts: usize, flips: usize, sets: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for k in 0..cuts {
        out.push(file[..k * file.len() / cuts].to_vec());
    }
    for round in 0..flips + sets {
        let mut f = file.to_vec();
        for _ in 0..1 + rng.next_u64() % 4 {
            let i = (rng.next_u64() % f.len() as u64) as usize;
            if round < flips {
                f[i] ^= 1 << (rng.next_u64() % 8);
            } else {
                f[i] = rng.next_u64() as u8;
            }
        }
        out.push(f);
    }
    out
}

const EXTREMES: [u32; 8] = [0, 1, 2, 255, 32_769, 1 << 16, 1 << 31, u32::MAX];

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
    bytes
}

/// A PNG with its IHDR width and height replaced (and the chunk's CRC recomputed).
fn png_with_size(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut f = png.to_vec();
    // Signature (8), length (4), "IHDR" (4), then width and height; the CRC follows the 13-byte data.
    f[16..20].copy_from_slice(&w.to_be_bytes());
    f[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = gpstoken_core::gpst::crc32(&f[12..29]);
    f[29..33].copy_from_slice(&crc.to_be_bytes());
    f
}

/// A JPEG with its frame header's height and width replaced (16 bits each in the format).
fn jpeg_with_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut f = jpeg.to_vec();
    let sof = f.windows(2).position(|m| m == [0xFF, 0xC0]).expect("baseline JPEG");
    f[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    f[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    f
}

#[test]
fn image_decoding_never_panics_and_stays_within_the_allocation_limit() {
    let mut rng = TestRng::new(11);
    let rgba =
        image::RgbaImage::from_fn(24, 16, |x, y| image::Rgba([(x * 10) as u8, (y * 15) as u8, 90, (x * y) as u8]));
    let png = encode(&image::DynamicImage::ImageRgba8(rgba.clone()), image::ImageFormat::Png);
    let jpeg = encode(&image::DynamicImage::ImageRgba8(rgba).to_rgb8().into(), image::ImageFormat::Jpeg);
    let mut inputs = Vec::new();
    for file in [&png, &jpeg] {
        inputs.extend(mutations(file, &mut rng, 400, 2_000, 2_000));
    }
    for &w in &EXTREMES {
        for &h in &EXTREMES {
            inputs.push(png_with_size(&png, w, h));
            inputs.push(jpeg_with_size(&jpeg, w as u16, h as u16));
            inputs.push(jpeg_with_size(&jpeg, (w >> 16) as u16 | 1, h as u16));
        }
    }
    // Every colour type and bit depth byte of the PNG header.
    for v in 0..=255u8 {
        for at in [24usize, 25] {
            let mut f = png.clone();
            f[at] = v;
            let crc = gpstoken_core::gpst::crc32(&f[12..29]);
            f[29..33].copy_from_slice(&crc.to_be_bytes());
            inputs.push(f);
        }
    }
    let bound = imageio::MAX_IMAGE_BYTES as usize;
    let (mut ok, mut err) = (0, 0);
    for (i, f) in inputs.iter().enumerate() {
        match run_bounded(f, bound, &format!("image input {i}"), imageio::decode_rgb8) {
            Ok(img) => {
                assert_eq!(img.data.len(), img.width * img.height * 3);
                ok += 1;
            }
            Err(e) => {
                assert!(!format!("{e:#}").contains('\n'), "{e:#}");
                err += 1;
            }
        }
    }
    assert_eq!(inputs.len(), 9_504);
    assert!(ok > 100 && err > 1_000, "ok {ok}, err {err}");
}

/// A small checkpoint-like safetensors file: two weights, their EMA copies, a checksum.
fn small_checkpoint() -> Vec<u8> {
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = ["a.weight", "b.bias", "ema.a.weight", "ema.b.bias"]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), vec![2, 3], (0..6).map(|k| (i * 6 + k) as f32 * 0.25).collect()))
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "gpstoken-train-1".to_string());
    meta.insert(model_io::META_CONFIG.to_string(), "tiny64".to_string());
    integrity::seal(&mut meta, &tensors);
    model_io::serialize_f32(&tensors, meta).unwrap()
}

#[test]
fn safetensors_checks_never_panic() {
    let mut rng = TestRng::new(12);
    let file = small_checkpoint();
    let path = Path::new("fuzz.safetensors");
    integrity::verify(&file, path, true).unwrap();
    let mut inputs = mutations(&file, &mut rng, file.len(), 3_000, 3_000);
    // The 8-byte header length set to extremes.
    for v in [0u64, 1, 2, 7, 8, 100, file.len() as u64, 1 << 31, 1 << 32, 1 << 63, u64::MAX] {
        let mut f = file.clone();
        f[..8].copy_from_slice(&v.to_le_bytes());
        inputs.push(f);
    }
    // Shapes and data offsets in the JSON header replaced by extreme numbers (same length or not).
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&file[8..8 + header_len]).unwrap().to_string();
    // The unquoted numbers: shapes and data offsets (metadata values are strings).
    let numbers: Vec<(usize, usize)> = {
        let b = header.as_bytes();
        let (mut v, mut i, mut quoted) = (Vec::new(), 0, false);
        while i < b.len() {
            if b[i] == b'"' {
                quoted = !quoted;
                i += 1;
            } else if !quoted && b[i].is_ascii_digit() {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                v.push((start, i));
            } else {
                i += 1;
            }
        }
        v
    };
    for &(start, end) in &numbers {
        for big in ["0", "1", "4294967296", "18446744073709551615", "99999999999999999999999", "-1"] {
            let json = format!("{}{big}{}", &header[..start], &header[end..]);
            let mut f = (json.len() as u64).to_le_bytes().to_vec();
            f.extend_from_slice(json.as_bytes());
            f.extend_from_slice(&file[8 + header_len..]);
            inputs.push(f);
        }
    }
    let expected = file.len() + 6_000 + 11 + numbers.len() * 6;
    assert_eq!(inputs.len(), expected);
    let (mut ok, mut err) = (0, 0);
    for (i, f) in inputs.iter().enumerate() {
        let bound = 4 * f.len() + (1 << 20);
        let verified = run_bounded(f, bound, &format!("safetensors input {i}"), |f| {
            let v = integrity::verify(f, path, integrity::is_training_checkpoint(f));
            let _ = integrity::first_non_finite(f);
            let _ = model_io::weights_only(f, model_io::Which::Raw);
            let _ = model_io::weights_only(f, model_io::Which::Ema);
            v
        });
        match verified {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().contains('\n'), "{e}");
                err += 1;
            }
        }
    }
    println!("{} safetensors inputs: {ok} accepted, {err} refused", inputs.len());
    assert!(err > 5_000, "ok {ok}, err {err}");
    assert_eq!(expected, 6_571, "the count the module docs state");
}

#[test]
fn strict_weight_loading_never_panics_and_refuses_non_finite_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny64.safetensors");
    let file = std::fs::read(path).unwrap();
    let be = CpuBackend::new();
    let mut model = GpsToken::new(&be, ModelConfig::builtin("tiny64").unwrap()).unwrap();
    load_safetensors(&be, &mut model.params, &file).unwrap();
    let mut rng = TestRng::new(13);
    let header_end = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let mut inputs = Vec::new();
    // Truncations, then bit flips and byte edits inside the JSON header (where sizes live).
    for k in 0..100 {
        inputs.push(file[..k * file.len() / 100].to_vec());
    }
    for round in 0..600 {
        let mut f = file.clone();
        let i = (rng.next_u64() % header_end as u64) as usize;
        if round % 2 == 0 {
            f[i] ^= 1 << (rng.next_u64() % 8);
        } else {
            f[i] = rng.next_u64() as u8;
        }
        inputs.push(f);
    }
    let nan_from = inputs.len();
    // A NaN or an infinity written over a random f32 of the data.
    for round in 0..72 {
        let mut f = file.clone();
        let at = header_end + 4 * (rng.next_u64() as usize % ((file.len() - header_end) / 4));
        let v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][round % 3];
        f[at..at + 4].copy_from_slice(&v.to_le_bytes());
        inputs.push(f);
    }
    assert_eq!(inputs.len(), 772);
    for (i, f) in inputs.iter().enumerate() {
        let bound = 2 * file.len() + (1 << 20);
        let result =
            run_bounded(f, bound, &format!("weights input {i}"), |f| load_safetensors(&be, &mut model.params, f));
        if i >= nan_from {
            assert!(matches!(result, Err(WeightsError::NonFinite { .. })), "input {i}: {result:?}");
            assert!(result.unwrap_err().to_string().contains("tensor '"));
        }
    }
}
