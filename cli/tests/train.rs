//! `gpstoken train` and the model commands end to end, on a few tiny generated photos:
//! checkpoints and logs, bit-exact resume, SIGKILL safety, bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn gpstoken(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(args).output().expect("cannot run gpstoken")
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpstoken-train-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Failure with one line on stderr naming the problem, exit code 1, no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error must be one line: {err}");
    assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
}

/// A folder of small smooth-plus-edges photos (PNG), one in a subfolder (the search is recursive).
fn photos(dir: &Path, count: usize) -> PathBuf {
    let data = dir.join("photos");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    for k in 0..count {
        let (w, h) = (72 + 8 * k as u32, 66 + 4 * k as u32);
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let c = ((x * (k as u32 + 3) + y * 5) % 256) as u8;
            let edge = if (x / 9 + y / 7) % 2 == 0 { 40 } else { 200 };
            image::Rgb([c, edge, (x * 255 / w) as u8])
        });
        let path = if k == 0 { data.join("sub").join("p0.png") } else { data.join(format!("p{k}.png")) };
        img.save(path).unwrap();
    }
    data
}

fn train(data: &Path, out: &Path, steps: u32, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["train".into(), "--config".into(), "tiny64".into(), "--data".into(), s(data)];
    args.extend(["--out".into(), s(out), "--steps".into(), steps.to_string(), "--batch".into(), "2".into()]);
    args.push("--quiet".into());
    args.extend(extra.iter().map(|e| e.to_string()));
    Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(&args).output().expect("cannot run gpstoken")
}

/// The losses of the log, as written (exact decimal strings of the f64 losses).
fn losses(run: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v.get("step")?.as_u64()?, v["loss"].to_string()))
        })
        .collect()
}

/// The step recorded in a checkpoint's safetensors metadata.
fn checkpoint_step(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]["step"].as_str().unwrap().parse().unwrap()
}

#[test]
fn train_writes_checkpoint_log_and_evaluates() {
    let dir = scratch("basic");
    let data = photos(&dir, 3);
    let run = dir.join("run");
    let o = train(&data, &run, 3, &["--eval", &s(&data), "--eval-every", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("images/s"), "{}", stdout(&o));
    let l = losses(&run);
    assert_eq!(l.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    let text = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for k in ["step", "loss", "psnr", "seconds"] {
        assert!(first.get(k).is_some(), "log line lacks {k}: {first}");
    }
    assert!(text.contains("\"eval\":3"), "{text}");
    assert!(run.join("eval_000003.png").is_file());
    assert_eq!(checkpoint_step(&run.join("checkpoint.safetensors")), 3);
    // The checkpoint and the weights files are models: eval, reconstruct and encode take them.
    for (model, extra) in [("checkpoint.safetensors", "--ema"), ("weights.safetensors", "--init=adaptive")] {
        let m = s(&run.join(model));
        let o = gpstoken(&["eval", "--model", &m, extra, "--data", &s(&data), "--json", "--tokens", "16"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["tokens"], 16);
        assert_eq!(v["images"], 3);
        assert!(v["psnr"].as_f64().unwrap() > 0.0 && v["ssim"].as_f64().is_some());
    }
    let img = s(&data.join("p1.png"));
    let m = s(&run.join("weights.safetensors"));
    let (recon, viz, gpst) = (dir.join("r.png"), dir.join("v.png"), dir.join("t.gpst"));
    let o = gpstoken(&["reconstruct", &img, "--model", &m, "-o", &s(&recon), "--viz", &s(&viz), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(recon.is_file() && viz.is_file());
    let o = gpstoken(&["encode", &img, "--model", &m, "-o", &s(&gpst)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = gpstoken(&["info", "--config", "tiny64", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["config"].as_str(), v["tokens"].as_u64(), v["image_size"].as_u64()),
        (Some("tiny64"), Some(32), Some(64))
    );
    assert!(v["params"].as_u64().unwrap() > 1_000_000);
}

#[test]
fn resume_is_bit_exact_and_sigkill_loses_at_most_a_checkpoint_interval() {
    let dir = scratch("resume");
    let data = photos(&dir, 3);
    let straight = dir.join("straight");
    assert!(train(&data, &straight, 6, &[]).status.success());
    let reference = losses(&straight);
    assert_eq!(reference.len(), 6);

    // 3 steps, then resume to 6: the same six losses, bit for bit.
    let split = dir.join("split");
    assert!(train(&data, &split, 3, &[]).status.success());
    let o = train(&data, &split, 6, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&split), reference);

    // SIGKILL mid-run (Child::kill), then resume.
    let killed = dir.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpstoken"))
        .args(["train", "--config", "tiny64", "--data", &s(&data), "--out", &s(&killed)])
        .args(["--steps", "400", "--batch", "2", "--quiet", "--checkpoint-every", "2"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while losses_or_empty(&killed).len() < 5 {
        assert!(t0.elapsed() < Duration::from_secs(120), "training made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let logged = losses_or_empty(&killed).last().map_or(0, |l| l.0);
    let ckpt = killed.join("checkpoint.safetensors");
    let c = checkpoint_step(&ckpt);
    assert!(logged - c <= 2, "logged {logged}, checkpoint at {c}");
    // The checkpoint always loads as a model.
    let o = gpstoken(&["eval", "--model", &s(&ckpt), "--data", &s(&data), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(&data, &killed, 6.max(c as u32 + 1), &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = losses(&killed);
    assert_eq!(resumed[..6], reference[..], "resumed losses differ from the straight run");
}

fn losses_or_empty(run: &Path) -> Vec<(u64, String)> {
    let Ok(text) = std::fs::read_to_string(run.join("log.jsonl")) else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v.get("step")?.as_u64()?, v["loss"].to_string()))
        })
        .collect()
}

#[test]
fn bad_input_gets_one_line_errors() {
    let dir = scratch("bad");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_clean_error(&train(&empty, &dir.join("r0"), 2, &[]), "holds no PNG or JPEG");
    assert_clean_error(&train(&dir.join("nope"), &dir.join("r0"), 2, &[]), "does not exist");

    // Only unreadable images: an error; one unreadable among good ones: skipped and counted.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("bad.png"), b"not a png").unwrap();
    assert_clean_error(&train(&broken, &dir.join("r1"), 2, &[]), "none of its 1 image(s) could be read");
    let data = photos(&dir, 2);
    std::fs::write(data.join("bad.jpg"), b"not a jpeg").unwrap();
    let run = dir.join("r2");
    let o = train(&data, &run, 2, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped 1 unreadable image(s)"), "{}", stderr(&o));

    // A finished run is not silently overwritten, and resuming past its end asks for more steps.
    assert_clean_error(&train(&data, &run, 2, &[]), "already holds a checkpoint");
    assert_clean_error(&train(&data, &run, 2, &["--resume"]), "already at step 2");
    assert_clean_error(&train(&data, &run, 4, &["--resume", "--seed", "5"]), "--seed 5 differs");

    // --config against the config the file records is an error, not an override.
    let m = s(&run.join("weights.safetensors"));
    let o = gpstoken(&["eval", "--model", &m, "--config", "golden", "--data", &s(&data)]);
    assert_clean_error(&o, "--config golden differs from config 'tiny64'");
    // Weights of another config (a file that records none): the error names the mismatching keys.
    let bare = dir.join("bare.safetensors");
    let bytes = std::fs::read(run.join("weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    std::fs::write(&bare, safetensors::serialize(st.tensors(), None).unwrap()).unwrap();
    let o = gpstoken(&["eval", "--model", &s(&bare), "--config", "golden", "--data", &s(&data)]);
    assert_clean_error(&o, "attnblocks.2.");
    assert_clean_error(&o, "does not match config 'golden'");

    // Token counts Algorithm 1 cannot make.
    for t in ["0", "100000"] {
        let o = gpstoken(&["eval", "--model", &m, "--data", &s(&data), "--tokens", t]);
        assert_clean_error(&o, "--tokens must be between 1 and");
    }
    let o = gpstoken(&["eval", "--model", &s(&dir.join("missing.safetensors")), "--data", &s(&data)]);
    assert_clean_error(&o, "cannot read model");
    std::fs::write(dir.join("junk.safetensors"), b"junk").unwrap();
    let o = gpstoken(&["eval", "--model", &s(&dir.join("junk.safetensors")), "--data", &s(&data)]);
    assert_clean_error(&o, "not a safetensors file");
}

/// The shipped model reconstructs samples/coffee.png (the whole photo) at 22+ dB; a broken
/// default (random or wrong weights) gives about 10 dB.
const MIN_SHIPPED_PSNR: f64 = 14.0;

/// `models/tiny64.safetensors` (shipped in the repository) is found without `--model`, from the
/// executable's location; `GPSTOKEN_MODEL` overrides it.
#[test]
fn the_shipped_model_is_the_default() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny64.safetensors");
    assert!(shipped.is_file(), "models/tiny64.safetensors is missing");
    let dir = scratch("default");
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/coffee.png");
    let out = dir.join("recon.png");
    let o = Command::new(env!("CARGO_BIN_EXE_gpstoken"))
        .env_remove("GPSTOKEN_MODEL")
        .args(["reconstruct", &s(&photo), "-o", &s(&out), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["tokens"], 32);
    assert!(v["psnr"].as_f64().unwrap() > MIN_SHIPPED_PSNR, "{v}");
    assert!(out.is_file());
    let o = Command::new(env!("CARGO_BIN_EXE_gpstoken"))
        .env("GPSTOKEN_MODEL", dir.join("nope.safetensors"))
        .args(["reconstruct", &s(&photo), "-o", &s(&out)])
        .output()
        .unwrap();
    assert_clean_error(&o, "cannot read model");
}

/// The tensor names of a safetensors file.
fn tensor_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect()
}

#[test]
fn adversarial_stage_logs_its_terms_and_checkpoints_the_discriminator() {
    let dir = scratch("gan");
    let data = photos(&dir, 3);
    let run = dir.join("run");
    // 0-based steps 0, 1: reconstruction only; 2: autoencoder with the GAN term; 3: discriminator; 4: autoencoder.
    let o = train(&data, &run, 5, &["--disc-start", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    for l in &lines[..2] {
        assert!(l.get("phase").is_none() && l.get("g_loss").is_none(), "no GAN before disc_start: {l}");
    }
    let finite = |l: &serde_json::Value, k: &str| l[k].as_f64().is_some_and(f64::is_finite);
    for (l, phase) in lines[2..].iter().zip(["ae", "disc", "ae"]) {
        assert_eq!(l["phase"], phase, "{l}");
        let keys: &[&str] = if phase == "ae" {
            &["g_loss", "d_weight", "logits_fake"]
        } else {
            &["d_loss", "logits_real", "logits_fake"]
        };
        for k in keys {
            assert!(finite(l, k), "{k} missing or not finite: {l}");
        }
    }
    assert!(lines[2]["d_weight"].as_f64().unwrap() > 0.0);
    let names = tensor_names(&run.join("checkpoint.safetensors"));
    for k in [
        "disc.main.0.weight",
        "disc.main.11.bias",
        "disc.main.3.running_mean",
        "disc.main.9.running_var",
        "disc.main.6.num_batches_tracked",
        "disc_adam_m.main.2.weight",
        "disc_adam_v.main.9.bias",
    ] {
        assert!(names.iter().any(|n| n == k), "checkpoint lacks {k}");
    }
    // The checkpoint is still a tokenizer model (the discriminator's tensors are left out).
    let o = gpstoken(&["eval", "--model", &s(&run.join("checkpoint.safetensors")), "--data", &s(&data), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Bad values and mismatches: one-line errors.
    assert_clean_error(
        &train(&data, &dir.join("bad1"), 2, &["--disc-start", "0", "--disc-weight=-1"]),
        "--disc-weight",
    );
    assert_clean_error(
        &train(&data, &dir.join("bad2"), 2, &["--disc-weight", "0.5"]),
        "--disc-weight needs --disc-start",
    );
    assert_clean_error(&train(&data, &run, 7, &["--resume", "--disc-start", "3"]), "--disc-start 3 differs");
}

/// 3 + 3 steps with the adversarial stage on (autoencoder and discriminator steps on both sides of
/// the split) give the straight run's losses and final weights, bit for bit.
#[test]
fn resume_is_bit_exact_with_the_adversarial_stage() {
    let dir = scratch("gan-resume");
    let data = photos(&dir, 3);
    // 0-based steps 0 (autoencoder with the GAN term), 1 (discriminator), 2 | 3, 4, 5: both kinds on both sides.
    let gan = ["--disc-start", "0"];
    let straight = dir.join("straight");
    let o = train(&data, &straight, 6, &gan);
    assert!(o.status.success(), "{}", stderr(&o));
    let split = dir.join("split");
    assert!(train(&data, &split, 3, &gan).status.success());
    let o = train(&data, &split, 6, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = |run: &Path| std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let strip = |text: String| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("seconds");
                o.remove("elapsed");
                v
            })
            .collect()
    };
    assert_eq!(strip(full(&split)), strip(full(&straight)));
    for file in ["weights.safetensors", "weights_ema.safetensors", "checkpoint.safetensors"] {
        let (a, b) = (tensor_bytes(&straight.join(file)), tensor_bytes(&split.join(file)));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{file}: tensor names");
        for (name, bytes) in &a {
            assert!(bytes == &b[name], "{file}: {name} differs between the straight and the resumed run");
        }
        if file == "checkpoint.safetensors" {
            assert!(a.keys().any(|k| k.starts_with("disc_adam_v.")) && a.keys().any(|k| k.ends_with("running_var")));
        }
    }
}

/// Every tensor's raw bytes by name (the JSON header's key order is not fixed).
fn tensor_bytes(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let body = &bytes[8 + n..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let off = &v["data_offsets"];
            let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
            (k.clone(), body[a..b].to_vec())
        })
        .collect()
}
