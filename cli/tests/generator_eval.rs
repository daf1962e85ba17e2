//! `train-classifier` and `eval-generator` end to end on a tiny labelled folder: the files and
//! JSON they write, determinism for a seed on any thread count, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::Output;

fn gpstoken(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(args).output().expect("cannot run gpstoken")
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn assert_clean_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error must be one line: {err}");
    assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
}

/// Two classes of three RGBA cut-outs (red bars, blue discs).
fn labelled(dir: &Path) -> PathBuf {
    let data = dir.join("labelled");
    for (c, class) in ["bars", "discs"].iter().enumerate() {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for k in 0..3u32 {
            let img = image::RgbaImage::from_fn(40 + 4 * k, 30, |x, y| {
                let inside =
                    if c == 0 { x.abs_diff(20) < 4 + k } else { x.abs_diff(20).pow(2) + y.abs_diff(15).pow(2) < 100 };
                let colour = if c == 0 { [220, 30, 30] } else { [30, 30, 220] };
                image::Rgba([colour[0], colour[1], colour[2], if inside { 255 } else { 0 }])
            });
            img.save(data.join(class).join(format!("{k}.png"))).unwrap();
        }
    }
    data
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_classifier_trains_and_scores_references_and_samples() {
    let dir = std::env::temp_dir().join(format!("gpstoken-geneval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = labelled(&dir);
    let (clf, log) = (dir.join("clf.safetensors"), dir.join("clf.jsonl"));
    let trained = ok(gpstoken(&[
        "train-classifier",
        "--data",
        &s(&data),
        "--hold-out",
        "3",
        "--steps",
        "30",
        "--batch",
        "4",
        "-o",
        &s(&clf),
        "--log",
        &s(&log),
        "--quiet",
    ]));
    assert!(String::from_utf8_lossy(&trained.stdout).contains("held-out accuracy"));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 30);
    // a generator of the same data: its token cache gives the reconstructions
    let run = dir.join("one");
    ok(gpstoken(&[
        "train-generator",
        "--stage",
        "one-stage",
        "--data",
        &s(&data),
        "--out",
        &s(&run),
        "--steps",
        "2",
        "--batch",
        "2",
        "--hold-out",
        "3",
        "--width",
        "32",
        "--depth",
        "1",
        "--heads",
        "2",
        "--samples",
        "0",
        "--quiet",
    ]));
    let cache = s(&run.join("tokens.safetensors"));
    let base = ["eval-generator", "--classifier", &s(&clf), "--data", &s(&data)];
    let refs = json(&ok(gpstoken(&[&base[..], &["--references", "--token-cache", &cache, "--json"]].concat())));
    // held out: the third image of each class and its mirror image
    assert_eq!(refs["reference_images"], 4);
    assert_eq!(refs["training_images"]["images"], 8);
    assert_eq!(refs["reconstructions"]["images"], 4);
    // red bars and blue discs: 30 steps are enough to tell the real images apart
    assert_eq!(refs["real_accuracy"], 1.0);
    assert!(refs["samples"].is_null());
    let model = s(&run.join("generator.safetensors"));
    let grid = dir.join("grid.png");
    let sample = |threads: &str| {
        let extra =
            ["--model", &model, "--per-class", "3", "--steps", "2", "--seed", "4", "--json", "--threads", threads];
        let mut v = json(&ok(gpstoken(&[&base[..], &extra, &["--grid", &s(&grid), "--grid-columns", "2"]].concat())));
        v["seconds"] = serde_json::Value::Null;
        v
    };
    let one = sample("1");
    assert_eq!(one, sample("2"), "same seed, other thread count");
    let samples = &one["samples"];
    assert_eq!(samples["images"], 6);
    assert!(samples["fd"].as_f64().unwrap() >= -1e-9 && samples["kid"].as_f64().unwrap().is_finite());
    assert_eq!(samples["per_class"].as_object().unwrap().len(), 2);
    let png = image::open(&grid).unwrap();
    assert_eq!((png.width(), png.height()), (128, 128), "2 columns x 2 classes of 64-pixel samples");

    // two-stage: layouts from a layout model (with the duplicate repair) or from the training images
    let train_stage = |stage: &str| {
        let out = dir.join(stage);
        let args =
            ["train-generator", "--stage", stage, "--data", &s(&data), "--out", &s(&out), "--token-cache", &cache];
        let small =
            ["--steps", "2", "--batch", "2", "--hold-out", "3", "--width", "32", "--depth", "1", "--heads", "2"];
        ok(gpstoken(&[&args[..], &small, &["--samples", "0", "--quiet"]].concat()));
        s(&out.join("generator.safetensors"))
    };
    let (layout, texture) = (train_stage("layout"), train_stage("texture"));
    let two = ["--model", &texture, "--per-class", "2", "--steps", "2", "--json"];
    let with_model =
        json(&ok(gpstoken(&[&base[..], &two, &["--layout-model", &layout, "--repair-duplicates"]].concat())));
    assert_eq!(with_model["samples"]["images"], 4);
    let with_real =
        json(&ok(gpstoken(&[&base[..], &two, &["--layouts", "training", "--token-cache", &cache]].concat())));
    assert_eq!(with_real["samples"]["images"], 4);
    assert_clean_error(&gpstoken(&[&base[..], &two].concat()), "needs --layout-model");

    assert_clean_error(&gpstoken(&base), "nothing to evaluate");
    assert_clean_error(
        &gpstoken(&[&base[..], &["--model", &s(&dir.join("none.safetensors"))]].concat()),
        "none.safetensors",
    );
    let not_clf = ["eval-generator", "--classifier", &model, "--data", &s(&data), "--references"];
    assert_clean_error(&gpstoken(&not_clf), "not a gpstoken classifier");
    std::fs::create_dir_all(dir.join("other/cats")).unwrap();
    std::fs::copy(data.join("bars/0.png"), dir.join("other/cats/0.png")).unwrap();
    std::fs::create_dir_all(dir.join("other/dogs")).unwrap();
    std::fs::copy(data.join("discs/0.png"), dir.join("other/dogs/0.png")).unwrap();
    let other = ["eval-generator", "--classifier", &s(&clf), "--data", &s(&dir.join("other")), "--references"];
    assert_clean_error(&gpstoken(&other), "other classes");
    assert_clean_error(&gpstoken(&["train-classifier", "--data", &s(&data), "--size", "12", "-o", &s(&clf)]), "--size");
    let _ = std::fs::remove_dir_all(&dir);
}
