//! The generator commands end to end on a tiny labelled folder with the shipped tokenizer:
//! `train-generator` (all stages, bit-exact `--resume`, the token cache), `build-layout-bank`,
//! `generate` (deterministic for a seed, different for another, on any thread count) and
//! one-line errors for bad input.

use std::path::{Path, PathBuf};
use std::process::Output;

fn gpstoken(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(args).output().expect("cannot run gpstoken")
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpstoken-gen-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Failure with one line on stderr naming the problem, exit code 1, no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error must be one line: {err}");
    assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
}

/// Two classes of three RGBA cut-outs (a disc or a bar on transparency).
fn labelled(dir: &Path) -> PathBuf {
    let data = dir.join("labelled");
    for (c, class) in ["bars", "discs"].iter().enumerate() {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for k in 0..3u32 {
            let img = image::RgbaImage::from_fn(40 + 4 * k, 30, |x, y| {
                let inside =
                    if c == 0 { x.abs_diff(20) < 4 + k } else { x.abs_diff(20).pow(2) + y.abs_diff(15).pow(2) < 100 };
                image::Rgba([(x * 6) as u8, 60 * k as u8, 200, if inside { 255 } else { 0 }])
            });
            img.save(data.join(class).join(format!("{k}.png"))).unwrap();
        }
    }
    data
}

fn train(data: &Path, out: &Path, stage: &str, steps: u32, extra: &[&str]) -> Output {
    let mut args =
        vec!["train-generator", "--stage", stage, "--quiet", "--width", "32", "--depth", "1", "--heads", "2"];
    let (d, o, st) = (s(data), s(out), steps.to_string());
    args.extend(["--data", &d, "--out", &o, "--steps", &st, "--batch", "2", "--hold-out", "3"]);
    args.extend(["--samples", "2", "--sample-every", "2", "--checkpoint-every", "2"]);
    args.extend(extra);
    gpstoken(&args)
}

fn losses(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some(format!("{}:{}", v.get("step")?, v["loss"]))
        })
        .collect()
}

/// Same tensors (names, shapes, bytes) and metadata; the header's key order may differ.
fn same_tensors(x: &Path, y: &Path) -> bool {
    let (bx, by) = (std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    let (tx, ty) =
        (safetensors::SafeTensors::deserialize(&bx).unwrap(), safetensors::SafeTensors::deserialize(&by).unwrap());
    let mut names = tx.names();
    names.sort();
    let mut other = ty.names();
    other.sort();
    let meta = |b: &[u8]| safetensors::SafeTensors::read_metadata(b).unwrap().1.metadata().clone();
    names == other
        && meta(&bx) == meta(&by)
        && names.iter().all(|n| {
            let (p, q) = (tx.tensor(n).unwrap(), ty.tensor(n).unwrap());
            p.shape() == q.shape() && p.data() == q.data()
        })
}

fn reuse_tokens(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("tokens.safetensors"), to.join("tokens.safetensors")).unwrap();
}

#[test]
fn generators_train_resume_bit_exactly_and_generate_deterministically() {
    let dir = scratch("all");
    let data = labelled(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    // with an EMA of the weights, which must resume bit-exactly as well
    let ema = ["--ema", "0.9"];
    let first = ok(train(&data, &a, "texture", 4, &ema));
    assert!(String::from_utf8_lossy(&first.stderr).contains("encoding 6 images"));
    for f in [
        "checkpoint.safetensors",
        "generator.safetensors",
        "log.jsonl",
        "tokens.safetensors",
        "samples_000002.png",
        "samples_000004.png",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    // Two steps, then resume to four: the same weights, bit for bit, and the same losses.
    reuse_tokens(&a, &b);
    let half = ok(train(&data, &b, "texture", 2, &ema));
    assert!(!String::from_utf8_lossy(&half.stderr).contains("encoding"), "the token cache is reused");
    ok(train(&data, &b, "texture", 4, &["--resume", "--ema", "0.9"]));
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(losses(&a).len(), 4);
    assert!(
        same_tensors(&a.join("generator.safetensors"), &b.join("generator.safetensors")),
        "resume is not bit-exact"
    );
    assert!(
        same_tensors(&a.join("checkpoint.safetensors"), &b.join("checkpoint.safetensors")),
        "the Adam moments or the EMA weights differ"
    );
    for f in ["generator.safetensors", "checkpoint.safetensors"] {
        let bytes = std::fs::read(a.join(f)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let ema_names = st.names().iter().filter(|n| n.starts_with("ema_model.")).count();
        assert_eq!(
            ema_names * 2,
            st.names().iter().filter(|n| !n.starts_with("adam_")).count(),
            "{f}: one EMA tensor per weight"
        );
    }
    // One CPU thread trains the same bits as several.
    let c = dir.join("c");
    reuse_tokens(&a, &c);
    let mut args = vec!["--threads".to_string(), "1".to_string()];
    args.extend(
        ["train-generator", "--stage", "texture", "--quiet", "--width", "32", "--depth", "1", "--heads", "2"]
            .map(String::from),
    );
    args.extend(
        ["--data", &s(&data), "--out", &s(&c), "--steps", "4", "--batch", "2", "--hold-out", "3", "--samples", "0"]
            .map(String::from),
    );
    args.extend(ema.map(String::from));
    ok(std::process::Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(&args).output().unwrap());
    assert_eq!(losses(&a), losses(&c));
    assert!(
        same_tensors(&a.join("generator.safetensors"), &c.join("generator.safetensors")),
        "thread count changed the weights"
    );
    // Resuming with other settings is refused.
    assert_clean_error(
        &train(&data, &b, "texture", 6, &["--resume", "--lr", "0.001", "--ema", "0.9"]),
        "other settings",
    );
    assert_clean_error(&train(&data, &b, "texture", 6, &["--resume"]), "other settings");
    assert_clean_error(&train(&data, &b, "texture", 6, &["--ema", "1.5"]), "--ema");

    let (layout, one) = (dir.join("layout"), dir.join("one"));
    reuse_tokens(&a, &one);
    let shared_cache = s(&a.join("tokens.safetensors"));
    let made = ok(train(&data, &layout, "layout", 2, &["--token-cache", &shared_cache]));
    assert!(!String::from_utf8_lossy(&made.stderr).contains("encoding"), "--token-cache is read");
    assert!(!layout.join("tokens.safetensors").exists());
    ok(train(&data, &one, "one-stage", 2, &[]));
    let bank = dir.join("bank.safetensors");
    let built = ok(gpstoken(&["build-layout-bank", "--data", &s(&data), "--tokens", "32", "-o", &s(&bank)]));
    assert_eq!(String::from_utf8_lossy(&built.stdout), "bars: 6 layouts\ndiscs: 6 layouts\n");

    let texture = s(&a.join("generator.safetensors"));
    let layout_model = s(&layout.join("generator.safetensors"));
    let generate = |name: &str, seed: &str, extra: &[&str]| -> (Vec<u8>, Vec<u8>) {
        let out = dir.join(format!("{name}.png"));
        let mut args = vec!["generate", "--class", "discs", "-n", "4", "--steps", "8", "--seed", seed, "-o"];
        let o = s(&out);
        args.push(&o);
        args.extend(extra);
        ok(gpstoken(&args));
        (std::fs::read(&out).unwrap(), std::fs::read(out.with_extension("gpst")).unwrap())
    };
    let two_stage = ["--model", &texture, "--layout-model", &layout_model];
    let g1 = generate("g1", "1", &two_stage);
    let with_threads: Vec<&str> = two_stage.iter().copied().chain(["--threads", "1"]).collect();
    assert_eq!(g1, generate("g1t", "1", &with_threads), "same seed, other thread count");
    assert_eq!(g1, generate("g1again", "1", &two_stage), "same seed");
    assert_ne!(g1.1, generate("g2", "2", &two_stage).1, "another seed");
    let repaired: Vec<&str> = two_stage.iter().copied().chain(["--repair-duplicates"]).collect();
    assert_eq!(generate("r1", "1", &repaired), generate("r1again", "1", &repaired));
    let via_bank = ["--model", &texture, "--bank", &s(&bank), "--cfg", "1.5", "--viz", &s(&dir.join("viz.png"))];
    let b1 = generate("bank1", "1", &via_bank);
    assert_eq!(b1, generate("bank1again", "1", &via_bank));
    assert!(dir.join("viz.png").is_file());
    let one_model = s(&one.join("generator.safetensors"));
    let o1 = generate("one", "3", &["--model", &one_model, "--sampler", "ode"]);
    assert_eq!(o1, generate("one-again", "3", &["--model", &one_model, "--sampler", "ode"]));
    // The tokens decode with the tokenizer to the grid (the decoder rounds, generate truncates
    // as the official script: at most one level apart).
    let decoded = dir.join("one-decoded.png");
    ok(gpstoken(&["decode", &s(&dir.join("one.gpst")), "-o", &s(&decoded)]));
    let (x, y) = (image::open(dir.join("one.png")).unwrap().to_rgb8(), image::open(&decoded).unwrap().to_rgb8());
    assert_eq!(x.dimensions(), (128, 128));
    assert!(x.as_raw().iter().zip(y.as_raw()).all(|(p, q)| p.abs_diff(*q) <= 1));

    let out = s(&dir.join("bad.png"));
    let run = |extra: &[&str]| {
        let mut args = vec!["generate", "-o", &out, "--steps", "4"];
        args.extend(extra);
        gpstoken(&args)
    };
    assert_clean_error(&run(&["--class", "cats", "--model", &texture, "--bank", &s(&bank)]), "unknown class 'cats'");
    assert_clean_error(
        &run(&["--class", "bars", "-n", "7", "--model", &texture, "--bank", &s(&bank)]),
        "holds 6 layouts of class 'bars', 7 requested",
    );
    assert_clean_error(&run(&["--class", "bars", "--model", &layout_model]), "is a layout generator");
    assert_clean_error(&run(&["--class", "bars", "--model", &one_model, "--layouts", "bank"]), "one-stage generator");
    assert_clean_error(
        &run(&["--class", "bars", "--model", &texture, "--layout-model", &one_model]),
        "not a layout generator",
    );
    assert_clean_error(&run(&["--class", "bars", "--model", &texture, "--layouts", "bank"]), "needs --bank");
    assert_clean_error(&run(&["--class", "bars", "--model", &texture, "--bank", &s(&bank), "--cfg", "0.5"]), "--cfg");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The f32 values of tensor `name` in a safetensors file.
fn tensor(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn the_ema_follows_its_update_rule_and_generate_chooses_the_weights() {
    let dir = scratch("ema");
    let data = labelled(&dir);
    let run = dir.join("one");
    // one step at a time (resumed), keeping each step's file: ema_k = d ema_(k-1) + (1 - d) w_k
    let mut files = Vec::new();
    for k in 1..=3 {
        ok(train(&data, &run, "one-stage", k, &["--ema", "0.75", "--resume"]));
        let keep = dir.join(format!("step{k}.safetensors"));
        std::fs::copy(run.join("generator.safetensors"), &keep).unwrap();
        files.push(keep);
    }
    // (adaLN-Zero: the blocks' weights get no gradient in the first steps, so EMA = raw there)
    let mut moved = false;
    for name in ["x_embedder.proj.weight", "blocks.0.attn.qkv.weight", "final_layer.linear.weight"] {
        for k in 1..3 {
            let (prev, ema, w) = (
                tensor(&files[k - 1], &format!("ema_model.{name}")),
                tensor(&files[k], &format!("ema_model.{name}")),
                tensor(&files[k], name),
            );
            moved |= ema != w;
            for i in 0..w.len() {
                let expected = 0.75 * prev[i] as f64 + 0.25 * w[i] as f64;
                assert!(
                    (ema[i] as f64 - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
                    "{name}[{i}] step {}",
                    k + 1
                );
            }
        }
    }
    assert!(moved, "the EMA differs from the raw weights");
    let model = s(&files[2]);
    let grid = |weights: &str| {
        let out = dir.join(format!("{weights}.png"));
        let args = ["generate", "--class", "bars", "-n", "2", "--sampler", "ode", "--model", &model, "-o", &s(&out)];
        ok(gpstoken(&[&args[..], &["--weights", weights]].concat()));
        std::fs::read(out.with_extension("gpst")).unwrap()
    };
    let (auto, ema, raw) = (grid("auto"), grid("ema"), grid("raw"));
    assert_eq!(auto, ema, "the EMA weights are the default");
    assert_ne!(ema, raw);
    let plain = dir.join("plain");
    ok(train(&data, &plain, "one-stage", 1, &[]));
    let out = s(&dir.join("x.png"));
    let plain_model = s(&plain.join("generator.safetensors"));
    let args = ["generate", "--class", "bars", "--model", &plain_model, "--weights", "ema", "-o", &out];
    assert_clean_error(&gpstoken(&args), "has no EMA weights");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_generators_work_without_flags() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    assert!(
        models.join("generator-texture.safetensors").is_file() && models.join("generator-layout.safetensors").is_file()
    );
    let dir = scratch("shipped");
    let out = dir.join("birds.png");
    ok(gpstoken(&["generate", "--class", "bird", "-n", "4", "--steps", "10", "-o", &s(&out)]));
    assert_eq!(image::open(&out).unwrap().to_rgb8().dimensions(), (128, 128));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gets_one_line_errors() {
    let dir = scratch("bad");
    let missing = s(&dir.join("missing"));
    let out = s(&dir.join("o.png"));
    assert_clean_error(
        &gpstoken(&["generate", "--class", "x", "--model", &missing, "-o", &out]),
        "cannot read generator",
    );
    let not_model = dir.join("not.safetensors");
    std::fs::write(&not_model, b"garbage").unwrap();
    assert_clean_error(
        &gpstoken(&["generate", "--class", "x", "--model", &s(&not_model), "-o", &out]),
        "not a safetensors file",
    );
    assert_clean_error(&gpstoken(&["generate", "--class", "x", "-n", "0", "-o", &out]), "-n must be");
    assert_clean_error(
        &gpstoken(&["train-generator", "--stage", "layout", "--data", &missing, "--out", &s(&dir.join("r"))]),
        "does not exist",
    );
    let flat = dir.join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    assert_clean_error(
        &gpstoken(&["build-layout-bank", "--data", &s(&flat), "--tokens", "32", "-o", &out]),
        "no class sub-folders",
    );
    let data = labelled(&dir);
    assert_clean_error(
        &gpstoken(&["build-layout-bank", "--data", &s(&data), "--tokens", "1000", "-o", &out]),
        "--tokens must be",
    );
    assert_clean_error(
        &gpstoken(&["train-generator", "--stage", "texture", "--data", &s(&data), "--width", "30", "--heads", "4"]),
        "--width 30",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_bank_of_the_labelled_tuxpaint_folder_has_every_class_and_valid_layouts() {
    let Some(shared) = gpstoken_tests::shared_dir("the_bank_of_the_labelled_tuxpaint_folder") else { return };
    let data = shared.join("data/labelled/tuxpaint");
    let classes = gpstoken_cli::generator::data::class_folders(&data).unwrap();
    assert_eq!(classes.len(), 12);
    let bank = gpstoken_cli::generator::bank::LayoutBank::build(&data, 64, 32, 2.5).unwrap();
    let params = gpstoken_core::calibrate::CalibrateParams::new(64);
    for (k, (name, paths)) in classes.iter().enumerate() {
        assert_eq!(bank.classes[k].0, *name);
        assert_eq!(bank.count(k), 2 * paths.len(), "an image and its mirror image per file");
        // Algorithm 1 layouts are fixed points of Algorithm 2.
        let layout = bank.take(k, 1).unwrap();
        let mut g: Vec<[f32; 5]> = layout.chunks_exact(5).map(|c| [c[0], c[1], c[2], c[3], c[4]]).collect();
        let before = g.clone();
        gpstoken_core::calibrate::calibrate_gaussians(&mut g, &params).unwrap();
        assert_eq!(g, before, "class {name}");
    }
}
