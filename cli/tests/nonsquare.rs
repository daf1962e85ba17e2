//! A model with non-square patches end to end (issue 11): a user's yaml config with
//! `gps_rs: [16, 24]` (48x32 patches, width x height) and weights for it run through `reconstruct`,
//! `encode` (a version-2 `.gpst`), `decode`, `eval`, `--multi-patch merged` and `info`; what
//! takes square patches only (`--crop`, `train`) says so in one line.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::model::{save_safetensors, GpsToken};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const YAML: &str = "model:
  gpsconfig: {rois: 4, gpsenc_n: 2, gpsenc_c: 32, gps_c: 4, gps_num: 12, gps_dmax: 2.5,
              gps_adaptive_w: 2.5, gps_rs: [16, 24]}
  decoderconfig: {double_z: False, z_channels: 4, resolution: 32, in_channels: 3, out_ch: 3,
                  ch: 32, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [], dropout: 0.0}
";

fn gpstoken(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(args).output().expect("cannot run gpstoken")
}

fn ok(args: &[&str]) -> String {
    let o = gpstoken(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "gpstoken {args:?} failed: {err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(args: &[&str], needle: &str) {
    let o = gpstoken(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "gpstoken {args:?}: {err}");
    assert!(!err.contains("panicked") && err.trim_end().lines().count() == 1, "{err}");
    assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The config file and random-init weights for it (seeded, so every run has the same model).
fn model(dir: &Path) -> (PathBuf, PathBuf) {
    let yaml = dir.join("wide.yaml");
    std::fs::write(&yaml, YAML).unwrap();
    let cfg = gpstoken_cli::config::load_config(s(&yaml)).unwrap();
    assert_eq!(cfg.image_hw, (32, 48), "gps_rs [16, 24] times the decoder's upsampling 2");
    let be = CpuBackend::new();
    let mut m = GpsToken::new(&be, cfg).unwrap();
    m.init(&be, 1).unwrap();
    let weights = dir.join("wide.safetensors");
    std::fs::write(&weights, save_safetensors(&be, &m.params).unwrap()).unwrap();
    (yaml, weights)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn png_size(p: &Path) -> (u32, u32) {
    image::image_dimensions(p).unwrap()
}

#[test]
fn a_non_square_patch_model_runs_every_image_command() {
    let dir = std::env::temp_dir().join(format!("gpstoken-nonsquare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (yaml, weights) = model(&dir);
    let m = ["--model", s(&weights), "--config", s(&yaml)];
    // A 150x70 photo: 4x3 patches of 48x32 side by side, the far edges padded.
    let photo = dir.join("photo.png");
    image::RgbImage::from_fn(150, 70, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x / 9 + y / 7) % 2 * 180) as u8])
    })
    .save(&photo)
    .unwrap();

    let recon = dir.join("recon.png");
    let out = ok(&[&["reconstruct", s(&photo), "-o", s(&recon), "--overlap", "0", "--json"][..], &m].concat());
    let v = json(&out);
    assert_eq!((v["width"].as_u64(), v["height"].as_u64(), v["patches"].as_u64()), (Some(150), Some(70), Some(12)));
    assert!(v["psnr"].as_f64().is_some_and(f64::is_finite), "{out}");
    assert_eq!(png_size(&recon), (150, 70));
    // Blended overlap (8 pixels, a quarter of the shorter side, by default).
    let blended = dir.join("blended.png");
    let v = json(&ok(&[&["reconstruct", s(&photo), "-o", s(&blended), "--json"][..], &m].concat()));
    // Columns start at 0, 40, 80, 102 and rows at 0, 24, 38.
    assert_eq!((v["overlap"].as_u64(), v["patches"].as_u64()), (Some(8), Some(12)), "{v}");

    // encode writes a version-2 file with the 48x32 patch; decode gives back the same pixels as
    // reconstruct without overlap.
    let tokens = dir.join("photo.gpst");
    ok(&[&["encode", s(&photo), "-o", s(&tokens)][..], &m].concat());
    let bytes = std::fs::read(&tokens).unwrap();
    let (h, _) = gpstoken_core::gpst::from_bytes(&bytes).unwrap();
    assert_eq!(bytes[4], 2, "version 2");
    assert_eq!((h.patch_width, h.patch_height, h.patches_x, h.patches_y), (48, 32, 4, 3));
    let decoded = dir.join("decoded.png");
    ok(&[&["decode", s(&tokens), "-o", s(&decoded)][..], &m].concat());
    assert_eq!(std::fs::read(&decoded).unwrap(), std::fs::read(&recon).unwrap(), "decode(encode) = reconstruct");

    // A square grid of non-square patches decodes merged onto one canvas (96x64: 2x2 patches).
    let small = dir.join("small.png");
    image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, 90])).save(&small).unwrap();
    let merged = dir.join("merged.png");
    let args = ["reconstruct", s(&small), "-o", s(&merged), "--multi-patch", "merged", "--overlap", "0", "--json"];
    let v = json(&ok(&[&args[..], &m].concat()));
    assert_eq!((v["multi_patch"].as_str(), v["patches"].as_u64()), (Some("merged"), Some(4)), "{v}");
    assert_eq!(png_size(&merged), (96, 64));

    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(&photo, data.join("a.png")).unwrap();
    std::fs::copy(&small, data.join("b.png")).unwrap();
    let v = json(&ok(&[&["eval", "--data", s(&data), "--json"][..], &m].concat()));
    assert_eq!(v["images"].as_u64(), Some(2), "{v}");

    let v = json(&ok(&["info", "--json", "--config", s(&yaml)]));
    assert_eq!(v["image_hw"], serde_json::json!([32, 48]));
    assert!(v["image_size"].is_null(), "{v}");

    // What needs square patches says so.
    fails(&[&["reconstruct", s(&photo), "-o", s(&dir.join("c.png")), "--crop", "96"][..], &m].concat(), "--crop 96");
    let run = dir.join("run");
    fails(&["train", "--config", s(&yaml), "--data", s(&data), "--steps", "1", "--out", s(&run)], "square patches");
    // A file of another patch shape is refused by name.
    let square = dir.join("square.gpst");
    let h = gpstoken_core::gpst::Header::for_image(gpstoken_core::gpst::DType::F32, 48, 48, 48, 12, 4);
    let t: Vec<f32> = (0..h.total_tokens()).flat_map(|_| [0.2, 0.2, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]).collect();
    std::fs::write(&square, gpstoken_core::gpst::to_bytes(&h, &t).unwrap()).unwrap();
    fails(&[&["decode", s(&square), "-o", s(&dir.join("d.png"))][..], &m].concat(), "48x48 pixel patches");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same non-square model on `--backend vulkan` (lavapipe in CI) gives the CPU's PSNR (0.05 dB).
/// Without a Vulkan device: one SKIPPED line, unless `GPSTOKEN_REQUIRE_VULKAN=1`.
#[test]
fn a_non_square_patch_model_on_vulkan_matches_the_cpu() {
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--json"])).unwrap();
    if info["backends"]["vulkan"]["usable"] != true {
        let why = format!("no usable Vulkan device ({})", info["backends"]["vulkan"]);
        assert!(!std::env::var("GPSTOKEN_REQUIRE_VULKAN").is_ok_and(|v| v == "1"), "{why}");
        return println!("SKIPPED: {why} (non-square model on vulkan)");
    }
    let dir = std::env::temp_dir().join(format!("gpstoken-nonsquare-vk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (yaml, weights) = model(&dir);
    let photo = dir.join("photo.png");
    image::RgbImage::from_fn(90, 60, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x / 9 + y / 7) % 2 * 180) as u8])
    })
    .save(&photo)
    .unwrap();
    let psnr = |backend: &str| {
        let out = dir.join(format!("{backend}.png"));
        let args = ["--backend", backend, "reconstruct", s(&photo), "-o", s(&out), "--json"];
        let v = json(&ok(&[&args[..], &["--model", s(&weights), "--config", s(&yaml)]].concat()));
        assert_eq!(png_size(&out), (90, 60));
        v["psnr"].as_f64().expect("psnr")
    };
    let (cpu, vk) = (psnr("cpu"), psnr("vulkan"));
    println!("non-square model, 90x60 photo: cpu {cpu} dB, vulkan {vk} dB");
    assert!((cpu - vk).abs() <= 0.05, "cpu {cpu} dB, vulkan {vk} dB");
    let _ = std::fs::remove_dir_all(&dir);
}
