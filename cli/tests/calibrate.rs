//! `gpstoken calibrate` end to end: Algorithm 1 layouts come back unchanged, jittered ones snap
//! back to them, duplicates are repaired on request, and bad layouts are one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn gpstoken(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpstoken"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run gpstoken");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples").join(name).to_string_lossy().into_owned()
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpstoken-calibrate-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `partition --full --json` of coffee (several patches).
fn coffee_layout(tokens: &str) -> String {
    let o = gpstoken(&["partition", &sample("coffee.png"), "--tokens", tokens, "--full", "--json"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn an_algorithm_1_layout_comes_back_unchanged() {
    let layout = coffee_layout("48");
    let v: serde_json::Value = serde_json::from_str(&layout).unwrap();
    assert!(v["width"].as_u64().unwrap() > 256, "the test wants several patches: {}", v["width"]);
    let o = gpstoken(&["calibrate", "-"], Some(&layout));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), layout);
}

#[test]
fn a_jittered_layout_snaps_back_and_duplicates_are_repaired() {
    let layout = coffee_layout("16");
    let mut v: serde_json::Value = serde_json::from_str(&layout).unwrap();
    let gaussians = v["gaussians"].as_array_mut().unwrap();
    for (i, g) in gaussians.iter_mut().enumerate() {
        let g = g.as_array_mut().unwrap();
        let jitter = [0.9, 1.1, 0.0, 0.0, 0.0];
        for (k, value) in g.iter_mut().enumerate() {
            let x = value.as_f64().unwrap();
            *value = match k {
                0 | 1 => (x * jitter[k]).into(),
                2 => 0.3.into(),
                _ => (x + if i % 2 == 0 { 0.004 } else { -0.004 }).into(),
            };
        }
    }
    let dir = scratch("jitter");
    let input = dir.join("jittered.json");
    std::fs::write(&input, v.to_string()).unwrap();
    let out = dir.join("calibrated.json");
    let o = gpstoken(&["calibrate", input.to_str().unwrap(), "-o", out.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), layout);

    // Token 2 of patch 0 made a copy of token 1 (two squares of the same size): the repair
    // moves it to a free rectangle.
    let mut v: serde_json::Value = serde_json::from_str(&layout).unwrap();
    let second = v["gaussians"][1].clone();
    v["gaussians"][2] = second;
    let o = gpstoken(&["calibrate", "-", "--repair"], Some(&v.to_string()));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("moved 1 duplicate"), "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_layouts_are_one_line_errors() {
    let good = coffee_layout("16");
    let mut short: serde_json::Value = serde_json::from_str(&good).unwrap();
    short["gaussians"].as_array_mut().unwrap().pop();
    let mut nan: serde_json::Value = serde_json::from_str(&good).unwrap();
    nan["gaussians"][3][1] = serde_json::Value::Null;
    let mut odd_patch: serde_json::Value = serde_json::from_str(&good).unwrap();
    odd_patch["patch"] = 96.into();
    odd_patch["width"] = 96.into();
    odd_patch["height"] = 96.into();
    odd_patch["gaussians"] = serde_json::Value::Array(vec![serde_json::json!([0.1, 0.1, 0.0, 0.0, 0.0]); 16]);
    let cases = [
        ("{not json", "invalid JSON"),
        ("{\"width\":256}", "\"height\""),
        (&short.to_string(), "Gaussians, but"),
        (&nan.to_string(), "non-finite sigma_y"),
        (&odd_patch.to_string(), "power of two"),
    ];
    for (input, needle) in cases {
        let o = gpstoken(&["calibrate", "-"], Some(input));
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{input}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }
    let o = gpstoken(&["calibrate", "/nonexistent/layout.json"], None);
    assert!(text(&o.stderr).contains("cannot read layout"), "{}", text(&o.stderr));
}
