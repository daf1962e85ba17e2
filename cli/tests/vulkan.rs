//! The commands on `--backend vulkan` against `--backend cpu`: the same PSNR for `fit` and
//! `reconstruct` (within 0.05 dB), the same training losses (within 1e-3 relative at every step),
//! and the same bits when Vulkan runs twice. Without a Vulkan device each test prints one
//! `SKIPPED` line, unless `GPSTOKEN_REQUIRE_VULKAN=1` (CI), which makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gpstoken(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(args).output().expect("cannot run gpstoken")
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples").join(name).to_string_lossy().into_owned()
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpstoken-vulkan-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether `gpstoken info` finds a usable Vulkan device; `false` after one `SKIPPED` line.
fn vulkan_usable(test: &str) -> bool {
    let o = gpstoken(&["info", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    if v["backends"]["vulkan"]["usable"] == true {
        return true;
    }
    let why = format!("no usable Vulkan device ({})", v["backends"]["vulkan"]);
    if std::env::var("GPSTOKEN_REQUIRE_VULKAN").is_ok_and(|v| v == "1") {
        panic!("{test}: {why}, and GPSTOKEN_REQUIRE_VULKAN=1 forbids skipping");
    }
    println!("SKIPPED: {why} ({test})");
    false
}

/// Runs a command that prints one JSON object and returns it.
fn json(args: &[&str]) -> serde_json::Value {
    let o = gpstoken(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e})"))
}

#[test]
fn fit_gives_the_cpus_psnr_and_the_same_bits_twice() {
    if !vulkan_usable("fit") {
        return;
    }
    let dir = scratch("fit");
    let run = |backend: &str, out: &Path| {
        let out = out.to_str().unwrap();
        let args = ["--backend", backend, "fit", &sample("astronaut.png"), "--tokens", "64", "--steps", "40"];
        json(&[&args[..], &["-o", out, "--json"]].concat())
    };
    let cpu = run("cpu", &dir.join("cpu.gpst"));
    let vk = run("vulkan", &dir.join("vk1.gpst"));
    run("vulkan", &dir.join("vk2.gpst"));
    let (a, b) = (cpu["psnr"].as_f64().unwrap(), vk["psnr"].as_f64().unwrap());
    assert!((a - b).abs() < 0.05, "fit PSNR: cpu {a} dB, vulkan {b} dB");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    assert_eq!(read("vk1.gpst"), read("vk2.gpst"), "two Vulkan runs wrote different tokens");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reconstruct_gives_the_cpus_psnr() {
    if !vulkan_usable("reconstruct") {
        return;
    }
    let dir = scratch("reconstruct");
    let run = |backend: &str| {
        let out = dir.join(format!("{backend}.png"));
        let args = ["--backend", backend, "reconstruct", &sample("coffee.png"), "--size", "64"];
        json(&[&args[..], &["-o", out.to_str().unwrap(), "--json"]].concat())
    };
    let (cpu, vk) = (run("cpu"), run("vulkan"));
    let (a, b) = (cpu["psnr"].as_f64().unwrap(), vk["psnr"].as_f64().unwrap());
    assert!((a - b).abs() < 0.05, "reconstruct PSNR: cpu {a} dB, vulkan {b} dB");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn training_follows_the_cpus_losses() {
    if !vulkan_usable("train") {
        return;
    }
    let dir = scratch("train");
    let data = dir.join("photos");
    std::fs::create_dir_all(&data).unwrap();
    for k in 0..2u32 {
        let img = image::RgbImage::from_fn(80, 72, |x, y| {
            let edge = if (x / 9 + y / 7 + k) % 2 == 0 { 40 } else { 210 };
            image::Rgb([((x * 3 + y * (5 + k)) % 256) as u8, edge, (x * 3) as u8])
        });
        img.save(data.join(format!("p{k}.png"))).unwrap();
    }
    let losses = |backend: &str| -> Vec<f64> {
        let out = dir.join(backend);
        let args = ["--backend", backend, "train", "--config", "tiny64", "--data", data.to_str().unwrap()];
        let o = gpstoken(
            &[&args[..], &["--out", out.to_str().unwrap(), "--steps", "3", "--batch", "1", "--quiet"]].concat(),
        );
        assert!(o.status.success(), "{backend}: {}", String::from_utf8_lossy(&o.stderr));
        let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
        log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64()).collect()
    };
    let (cpu, vk) = (losses("cpu"), losses("vulkan"));
    assert_eq!((cpu.len(), vk.len()), (3, 3), "one loss per step: {cpu:?} {vk:?}");
    for (step, (a, b)) in cpu.iter().zip(&vk).enumerate() {
        assert!((a - b).abs() <= 1e-3 * a.abs(), "step {}: cpu loss {a}, vulkan {b}", step + 1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
