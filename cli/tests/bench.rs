//! `gpstoken bench`: the structure of `--quick --json` (not the timings), and bad input.

use std::process::Command;

fn gpstoken(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gpstoken")).args(args).output().expect("cannot run gpstoken")
}

#[test]
fn quick_json_has_every_row() {
    let out = gpstoken(&["bench", "--quick", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert!(v["cpu"]["model"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(v["cpu"]["logical_cpus"].as_u64().is_some_and(|n| n >= 1));
    assert!(v["cpu"]["flags"].is_array());
    assert_eq!(v["quick"], true);
    let rows = v["rows"].as_array().expect("rows");
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().expect("id")).collect();
    let mut want = vec!["algorithm1", "splat_64", "splat_256", "train_step"];
    for n in ["gemm_512", "gemm_1024", "gemm_2048"] {
        want.extend([n, n]);
    }
    assert_eq!(ids, want);
    for r in rows {
        assert!(r["median_ms"].as_f64().is_some_and(|t| t.is_finite() && t > 0.0), "{r}");
        assert!(r["reps"].as_u64().is_some_and(|n| n >= 1), "{r}");
        let threads = r["threads"].as_u64().expect("threads");
        let gemm = r["id"].as_str().unwrap().starts_with("gemm");
        assert_eq!(r["gflops"].is_f64(), gemm, "{r}");
        match r["id"].as_str().unwrap() {
            "train_step" => assert_eq!(threads, 2),
            id if id.starts_with("gemm") => assert!(threads == 1 || threads == 2),
            _ => assert_eq!(threads, 1),
        }
    }
}

#[test]
fn bad_input_is_a_one_line_error() {
    for args in [&["bench", "--image", "no-such-photo.png"][..], &["--backend", "vulkan", "bench", "--quick"]] {
        let out = gpstoken(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("gpstoken: error:"), "{args:?}: {err}");
    }
}
