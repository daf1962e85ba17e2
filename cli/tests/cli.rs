//! End-to-end tests of the `gpstoken` binary: outputs, determinism, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gpstoken(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(args).output().expect("cannot run gpstoken")
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples").join(name).to_string_lossy().into_owned()
}

/// A fresh scratch folder per test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpstoken-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failing run: non-zero exit, one line on stderr naming the problem, no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error must be one line: {err}");
    assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
}

#[test]
fn partition_json_has_the_documented_shape() {
    let o = gpstoken(&["partition", &sample("coffee.png"), "--tokens", "64", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
    assert_eq!(v["width"], 256);
    assert_eq!(v["height"], 256);
    assert_eq!(v["patch"], 256);
    assert_eq!(v["tokens"], 64);
    let g = v["gaussians"].as_array().unwrap();
    let b = v["boxes"].as_array().unwrap();
    assert_eq!((g.len(), b.len()), (64, 64));
    for (g, b) in g.iter().zip(b) {
        let g: Vec<f64> = g.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let b: Vec<f64> = b.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!((g.len(), b.len()), (5, 4));
        assert!(g[0] > 0.0 && g[1] > 0.0 && g[2] == 0.0);
        // The mean lies inside the box, which lies inside [-1, 1].
        assert!(b[0] >= -1.0 && b[2] <= 1.0 && b[0] < g[3] && g[3] < b[2]);
        assert!(b[1] >= -1.0 && b[3] <= 1.0 && b[1] < g[4] && g[4] < b[3]);
    }
}

#[test]
fn partition_full_and_viz() {
    let dir = scratch("partition-full");
    let viz = dir.join("viz.png");
    let o = gpstoken(&[
        "partition",
        &sample("coffee.png"),
        "--tokens",
        "32",
        "--full",
        "--json",
        "--viz",
        viz.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let (w, h) = (v["width"].as_u64().unwrap() as usize, v["height"].as_u64().unwrap() as usize);
    assert!(w % 256 == 0 && h % 256 == 0 && w * h > 256 * 256, "{w}x{h}");
    assert_eq!(v["gaussians"].as_array().unwrap().len(), 32 * (w / 256) * (h / 256));
    let pic = image::open(&viz).expect("viz is a PNG");
    assert!(pic.width() as usize >= w);
}

#[test]
fn fit_writes_tokens_that_render_back_and_is_deterministic_across_threads() {
    let dir = scratch("fit");
    let (t1, t2) = (dir.join("one.gpst"), dir.join("two.gpst"));
    let recon = dir.join("recon.png");
    let common = ["fit", &sample("astronaut.png"), "--tokens", "48", "--steps", "40", "--json"];
    let o1 = gpstoken(&[&["--threads", "1"], &common[..], &["-o", t1.to_str().unwrap()]].concat());
    assert!(o1.status.success(), "{}", stderr(&o1));
    let o2 = gpstoken(
        &[&["--threads", "2"], &common[..], &["-o", t2.to_str().unwrap(), "--recon", recon.to_str().unwrap()]].concat(),
    );
    assert!(o2.status.success(), "{}", stderr(&o2));
    assert_eq!(std::fs::read(&t1).unwrap(), std::fs::read(&t2).unwrap(), "token files differ between 1 and 2 threads");
    let v: serde_json::Value = serde_json::from_str(stdout(&o1).trim()).unwrap();
    assert_eq!(v["tokens"], 48);
    assert_eq!(v["steps"], 40);
    assert_eq!(v["init"], "adaptive");
    let psnr = v["psnr"].as_f64().unwrap();
    assert!(psnr > 10.0 && psnr < 60.0, "psnr {psnr}");
    assert!(v["ssim"].as_f64().unwrap() > 0.0);
    // Rendering the token file reproduces the reconstruction written by fit.
    let rendered = dir.join("render.png");
    let o = gpstoken(&["render", t2.to_str().unwrap(), "-o", rendered.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(image::open(&rendered).unwrap().to_rgb8(), image::open(&recon).unwrap().to_rgb8());
    // And at another size.
    let o = gpstoken(&["render", t2.to_str().unwrap(), "-o", rendered.to_str().unwrap(), "--size", "100x60"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&rendered).unwrap();
    assert_eq!((img.width(), img.height()), (100, 60));
}

#[test]
fn info_lists_backends() {
    let o = gpstoken(&["info", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["backends"]["cpu"]["usable"], true);
    assert_eq!(v["backends"]["cuda"]["compiled"], cfg!(feature = "cuda"));
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    // Every device a backend sees, in the order --device numbers them: the CPU is cpu device 0.
    let devices = v["devices"].as_array().expect("a devices array");
    let cpu: Vec<&serde_json::Value> = devices.iter().filter(|d| d["backend"] == "cpu").collect();
    assert_eq!(cpu.len(), 1, "{devices:?}");
    assert_eq!((&cpu[0]["index"], &cpu[0]["type"], &cpu[0]["usable"]), (&0.into(), &"cpu".into(), &true.into()));
    assert!(cpu[0]["name"].as_str().is_some_and(|n| !n.is_empty()), "{devices:?}");
    if v["backends"]["cuda"]["usable"] == false {
        assert!(devices.iter().all(|d| d["backend"] != "cuda" || d["usable"] == false), "{devices:?}");
    }
    let o = gpstoken(&["info"]);
    assert!(o.status.success() && stdout(&o).contains("device 0: "), "{}", stdout(&o));
}

/// `--backend`/`--device` choose where the work runs; what this build cannot run is one line.
#[test]
fn backend_and_device_selection_errors_are_one_line() {
    let fit = ["fit", &sample("coffee.png"), "--tokens", "8", "--steps", "1"];
    for backend in ["vulkan", "cuda"] {
        let o = gpstoken(&[&["--backend", backend][..], &fit[..]].concat());
        let info: serde_json::Value = serde_json::from_str(stdout(&gpstoken(&["info", "--json"])).trim()).unwrap();
        let built = info["backends"][backend]["compiled"] == true;
        if !built {
            assert_clean_error(&o, &format!("the {backend} backend is not built into this gpstoken ("));
        } else if !o.status.success() {
            // Built in but no device or driver here (CUDA without an NVIDIA driver): one line naming it.
            assert_clean_error(
                &o,
                &format!("cannot open {} device 0", if backend == "cuda" { "CUDA" } else { "Vulkan" }),
            );
        }
    }
    assert_clean_error(&gpstoken(&[&["--device", "1"][..], &fit[..]].concat()), "--device 1");
    assert_clean_error(&gpstoken(&[&["--threads", "0"][..], &fit[..]].concat()), "--threads must be at least 1");
    let o = gpstoken(&[&["--backend", "cpu", "--device", "0", "--threads", "1"][..], &fit[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_input_gets_one_line_errors() {
    let dir = scratch("bad");
    let missing = dir.join("missing.png");
    assert_clean_error(&gpstoken(&["partition", missing.to_str().unwrap(), "--tokens", "8"]), "does not exist");
    let text = dir.join("notes.png");
    std::fs::write(&text, b"this is not an image").unwrap();
    assert_clean_error(&gpstoken(&["partition", text.to_str().unwrap(), "--tokens", "8"]), "not a readable");
    assert_clean_error(&gpstoken(&["partition", &sample("coffee.png"), "--tokens", "0"]), "tokens");
    assert_clean_error(&gpstoken(&["partition", &sample("coffee.png"), "--tokens", "5000"]), "5000");
    assert_clean_error(&gpstoken(&["fit", &sample("coffee.png"), "--tokens", "70000", "--steps", "1"]), "70000");
    let needle = if cfg!(feature = "vulkan") { "Vulkan device 7" } else { "vulkan" };
    let args = ["--backend", "vulkan", "--device", "7", "fit", &sample("coffee.png"), "--tokens", "8"];
    assert_clean_error(&gpstoken(&args), needle);
    // A corrupt token file, and no half-written output.
    let good = dir.join("good.gpst");
    let o = gpstoken(&["fit", &sample("coffee.png"), "--tokens", "16", "--steps", "2", "-o", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut bytes = std::fs::read(&good).unwrap();
    let out = dir.join("out.png");
    for (i, corrupt) in
        [bytes[..bytes.len() - 3].to_vec(), b"GPSX".iter().chain(&bytes[4..]).copied().collect()].iter().enumerate()
    {
        let bad = dir.join(format!("bad{i}.gpst"));
        std::fs::write(&bad, corrupt).unwrap();
        assert_clean_error(&gpstoken(&["render", bad.to_str().unwrap(), "-o", out.to_str().unwrap()]), "gpst");
        assert!(!out.exists(), "a failed render left an output file");
    }
    bytes.truncate(10);
    let bad = dir.join("short.gpst");
    std::fs::write(&bad, &bytes).unwrap();
    assert_clean_error(&gpstoken(&["render", bad.to_str().unwrap(), "-o", out.to_str().unwrap()]), "gpst");
    // Output into a folder that does not exist.
    let nowhere = dir.join("no/such/folder/out.gpst");
    assert_clean_error(
        &gpstoken(&["fit", &sample("coffee.png"), "--tokens", "8", "--steps", "1", "-o", nowhere.to_str().unwrap()]),
        "does not exist",
    );
}

/// PSNR rises while fitting (smoothed over 10 steps), on a real photo of the eval set.
#[test]
fn fit_raises_psnr_monotonically_on_an_eval_photo() {
    let Some(shared) = gpstoken_tests::shared_dir("fit_raises_psnr_monotonically_on_an_eval_photo") else { return };
    let path = shared.join("data/eval/chelsea.png");
    let photo = gpstoken_cli::imageio::load_rgb8(&path).unwrap();
    let framed = gpstoken_cli::imageio::frame(&photo, gpstoken_cli::imageio::Framing::CentreCrop, 256).unwrap();
    let pixels = gpstoken_cli::imageio::to_unit(&framed);
    let opts = gpstoken_cli::fit::FitOptions::new(128, 200, gpstoken_cli::fit::Init::Adaptive);
    let backend = gpstoken_backend_cpu::CpuBackend::new();
    let result = gpstoken_cli::fit::fit(&backend, &pixels, 256, 256, &opts, None, &mut |_, _| {}).unwrap();
    let trace = &result.psnr_trace;
    let smooth: Vec<f64> = trace.windows(10).map(|w| w.iter().sum::<f64>() / 10.0).collect();
    for (i, w) in smooth.windows(2).enumerate() {
        assert!(w[1] >= w[0], "smoothed PSNR fell at step {}: {} -> {}", i + 10, w[0], w[1]);
    }
    assert!(
        trace[trace.len() - 1] > trace[0] + 3.0,
        "fit gained too little: {} -> {}",
        trace[0],
        trace[trace.len() - 1]
    );
}

/// `gpstoken partition ... | head -1` must not panic when the reader goes away.
#[test]
fn closed_stdout_is_not_a_panic() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpstoken"))
        .args(["partition", &sample("coffee.png"), "--tokens", "256"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then the pipe closes
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// `encode` then `decode` gives exactly the image `reconstruct --overlap 0` gives (shipped
/// default model; token files lay patches side by side).
#[test]
fn encode_then_decode_equals_reconstruct() {
    let dir = scratch("decode");
    let (t, dec, rec) = (dir.join("t.gpst"), dir.join("dec.png"), dir.join("rec.png"));
    let o = gpstoken(&["encode", &sample("coffee.png"), "-o", t.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = gpstoken(&["decode", t.to_str().unwrap(), "-o", dec.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = gpstoken(&["reconstruct", &sample("coffee.png"), "--overlap", "0", "-o", rec.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rec = image::open(&rec).unwrap().to_rgb8();
    assert_eq!(image::open(&dec).unwrap().to_rgb8(), rec);
    assert_eq!((rec.width(), rec.height()), (600, 400), "the whole photo comes back at its own size");
    // RGB tokens from `fit` do not fit the model: a one-line error naming the mismatch.
    let rgb = dir.join("rgb.gpst");
    let o = gpstoken(&["fit", &sample("coffee.png"), "--tokens", "32", "--steps", "1", "-o", rgb.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_clean_error(&gpstoken(&["decode", rgb.to_str().unwrap(), "-o", dec.to_str().unwrap()]), "feature channels");
    assert_clean_error(
        &gpstoken(&["decode", t.to_str().unwrap(), "--tokens", "16", "-o", dec.to_str().unwrap()]),
        "does not match",
    );
}

/// Reads the f32 body of a `.gpst` file.
fn gpst_values(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    gpstoken_core::gpst::from_bytes(&bytes).unwrap().1
}

/// Crops larger than the model's patch (spec 2.4 / 3.6): a 128x128 photo with the 64x64 shipped
/// model is 2x2 patches. Each patch is encoded on its own (the tokens are those of the quadrant
/// encoded alone); tiled decoding equals the four quadrant reconstructions put side by side;
/// merged decoding is what `encode` + `decode --multi-patch merged` gives.
#[test]
fn multi_patch_crops_follow_the_patch_grid() {
    let dir = scratch("multipatch");
    let photo = image::open(sample("coffee.png")).unwrap().to_rgb8();
    let big = image::imageops::crop_imm(&photo, 40, 30, 128, 128).to_image();
    let big_path = dir.join("big.png");
    big.save(&big_path).unwrap();
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let o = gpstoken(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    let o = run(&[
        "reconstruct",
        &p("big.png"),
        "--size",
        "128",
        "--multi-patch",
        "tiled",
        "-o",
        &p("tiled.png"),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["size"].as_u64(), v["patches"].as_u64(), v["multi_patch"].as_str()),
        (Some(128), Some(4), Some("tiled"))
    );
    run(&["encode", &p("big.png"), "--size", "128", "-o", &p("big.gpst")]);
    let tokens = gpst_values(&dir.join("big.gpst"));
    let tiled = image::open(dir.join("tiled.png")).unwrap().to_rgb8();
    let mut quadrant_tokens = Vec::new();
    for (k, (x, y)) in [(0, 0), (64, 0), (0, 64), (64, 64)].into_iter().enumerate() {
        let q = p(&format!("q{k}.png"));
        image::imageops::crop_imm(&big, x, y, 64, 64).to_image().save(&q).unwrap();
        run(&["reconstruct", &q, "--size", "64", "-o", &p(&format!("r{k}.png"))]);
        run(&["encode", &q, "--size", "64", "-o", &p(&format!("q{k}.gpst"))]);
        quadrant_tokens.extend(gpst_values(&dir.join(format!("q{k}.gpst"))));
        let r = image::open(dir.join(format!("r{k}.png"))).unwrap().to_rgb8();
        assert_eq!(image::imageops::crop_imm(&tiled, x, y, 64, 64).to_image(), r, "quadrant {k}");
    }
    assert_eq!(tokens, quadrant_tokens, "patch k of the grid is encoded like quadrant k alone");
    run(&["reconstruct", &p("big.png"), "--size", "128", "--multi-patch", "merged", "-o", &p("merged.png")]);
    run(&["decode", &p("big.gpst"), "--multi-patch", "merged", "-o", &p("merged_dec.png")]);
    let merged = image::open(dir.join("merged.png")).unwrap().to_rgb8();
    assert_eq!(merged, image::open(dir.join("merged_dec.png")).unwrap().to_rgb8());
    assert_eq!((merged.width(), merged.height()), (128, 128));
    assert_ne!(merged, tiled, "the merged canvas is decoded as one image, not per patch");
    assert_clean_error(&gpstoken(&["reconstruct", &p("big.png"), "--size", "100", "-o", &p("x.png")]), "multiple");
    assert!(!dir.join("x.png").exists());
}

/// Whole photos of any shape: a folder is reconstructed photo by photo into the -o folder, each
/// output the size of its photo; a patch reconstructed alone equals the same patch of the whole
/// photo (tiled, no overlap); overlap blends; merged needs a square grid; overlap is for whole photos.
#[test]
fn whole_photos_of_any_shape_and_folders() {
    let dir = scratch("whole");
    let photos = dir.join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    let coffee = image::open(sample("coffee.png")).unwrap().to_rgb8();
    let wide = image::imageops::crop_imm(&coffee, 100, 50, 130, 70).to_image();
    wide.save(photos.join("wide.png")).unwrap();
    image::imageops::crop_imm(&coffee, 300, 100, 64, 64).to_image().save(photos.join("sub/tile.png")).unwrap();
    std::fs::write(photos.join("broken.png"), b"not a png").unwrap();
    let out = dir.join("out");
    let p = |path: &Path| path.to_str().unwrap().to_string();
    let o = gpstoken(&["reconstruct", &p(&photos), "--overlap", "0", "-o", &p(&out), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipping"), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[1]["width"].as_u64(), lines[1]["height"].as_u64(), lines[1]["patches"].as_u64()),
        (Some(130), Some(70), Some(6))
    );
    let wide_out = image::open(out.join("wide.png")).unwrap().to_rgb8();
    assert_eq!((wide_out.width(), wide_out.height()), (130, 70));
    let tile_out = image::open(out.join("sub/tile.png")).unwrap().to_rgb8();
    assert_eq!(image::imageops::crop_imm(&wide_out, 0, 0, 64, 64).to_image().dimensions(), tile_out.dimensions());
    // The top-left patch of `wide` alone (its own 64x64 photo) is reconstructed as in the whole photo.
    let corner = dir.join("corner.png");
    image::imageops::crop_imm(&wide, 0, 0, 64, 64).to_image().save(&corner).unwrap();
    let o = gpstoken(&["reconstruct", &p(&corner), "--overlap", "0", "-o", &p(&dir.join("corner_out.png"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        image::open(dir.join("corner_out.png")).unwrap().to_rgb8(),
        image::imageops::crop_imm(&wide_out, 0, 0, 64, 64).to_image()
    );
    // Overlap (a quarter patch by default): same size, different pixels.
    let o = gpstoken(&["reconstruct", &p(&photos.join("wide.png")), "-o", &p(&dir.join("o16.png"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o16 = image::open(dir.join("o16.png")).unwrap().to_rgb8();
    assert_eq!(o16.dimensions(), (130, 70));
    assert_ne!(o16, wide_out);
    let wide_path = p(&photos.join("wide.png"));
    // Merged on tiny64 warns (single-patch model) and then fails: a 3x2 grid is not square.
    let o = gpstoken(&["reconstruct", &wide_path, "--multi-patch", "merged", "-o", &p(&dir.join("m.png"))]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("trained for merged") && stderr(&o).contains("square grid"), "{}", stderr(&o));
    assert_clean_error(
        &gpstoken(&["reconstruct", &wide_path, "--crop", "64", "--overlap", "8", "-o", &p(&dir.join("m.png"))]),
        "--overlap",
    );
    assert_clean_error(
        &gpstoken(&["reconstruct", &wide_path, "--overlap", "40", "-o", &p(&dir.join("m.png"))]),
        "half",
    );
    assert_clean_error(
        &gpstoken(&["reconstruct", &wide_path, "--batch", "1000000", "-o", &p(&dir.join("m.png"))]),
        "forward pass",
    );
    // A whole-photo token file keeps the photo's size and decodes to it.
    let t = dir.join("wide.gpst");
    let o = gpstoken(&["encode", &wide_path, "-o", &p(&t)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = gpstoken(&["decode", &p(&t), "-o", &p(&dir.join("wide_dec.png"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(image::open(dir.join("wide_dec.png")).unwrap().to_rgb8(), wide_out);
    // partition --full keeps every row: 600x400 is padded to 768x512, not cropped to 512x256.
    let o = gpstoken(&["partition", &sample("coffee.png"), "--tokens", "8", "--full", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(768), Some(512)));
    let _ = std::fs::remove_dir_all(&dir);
}
