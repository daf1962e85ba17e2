//! Data-parallel training (`train --devices`): ranks on the CPU (threads of one process, their
//! gradients averaged through the host) give the same run as one rank with the whole batch, to
//! float rounding; bad combinations are one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gpstoken(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpstoken"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("cannot run gpstoken")
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpstoken-dp-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Four small photos with edges (so that Algorithm 1 has something to split).
fn photos(dir: &Path) -> PathBuf {
    let data = dir.join("photos");
    std::fs::create_dir_all(&data).unwrap();
    for k in 0..4u32 {
        let img = image::RgbImage::from_fn(80 + 4 * k, 70, |x, y| {
            let edge = if (x / (5 + k) + y / 7) % 2 == 0 { 30 } else { 210 };
            image::Rgb([((x * 3 + y * (k + 2)) % 256) as u8, edge, (y * 3) as u8])
        });
        img.save(data.join(format!("p{k}.png"))).unwrap();
    }
    data
}

fn train(data: &Path, out: &Path, batch: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let (d, o) = (data.to_string_lossy().into_owned(), out.to_string_lossy().into_owned());
    let mut args = vec!["--threads", "1", "train", "--config", "tiny64", "--data", &d, "--out", &o];
    args.extend(["--steps", "3", "--batch", batch, "--quiet"]);
    args.extend(extra);
    gpstoken(&args, env)
}

/// The `loss` of every step in a run's log.
fn losses(out: &Path) -> Vec<f64> {
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    log.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.get("loss").and_then(|x| x.as_f64())
        })
        .collect()
}

#[test]
fn two_cpu_ranks_train_as_one_rank_with_the_whole_batch() {
    let dir = scratch("same");
    let data = photos(&dir);
    let one = train(&data, &dir.join("one"), "4", &[], &[]);
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    let two = train(&data, &dir.join("two"), "4", &["--devices", "0,0"], &[]);
    assert!(two.status.success(), "{}", String::from_utf8_lossy(&two.stderr));
    assert!(String::from_utf8_lossy(&two.stderr).contains("batch 4 (2 ranks x 2)"));
    let (a, b) = (losses(&dir.join("one")), losses(&dir.join("two")));
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    // Step 1 compares the losses of the same weights (the mean of two half-batch means, logged
    // through f32); steps 2 and 3 also show that the averaged gradients moved the weights alike.
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "step {}: one rank {x}, two ranks {y}", step + 1);
    }
    assert!(a[2] < a[0], "the run should learn: {a:?}");
    // Only rank 0 writes: one log line per step, and the final weights.
    assert!(dir.join("two/weights.safetensors").is_file());

    // Buckets of 1/64 MiB: the gradients go over in about 70 exchanges per step instead of 2
    // (tiny64 has 7.5 MiB of gradients). The mean of each value does not depend on the
    // grouping, so the run is the same to the bit.
    let small = train(&data, &dir.join("small"), "4", &["--devices", "0,0", "--bucket-mb", "0.015625"], &[]);
    assert!(small.status.success(), "{}", String::from_utf8_lossy(&small.stderr));
    assert_eq!(losses(&dir.join("small")), b);
    let weights = |run: &str| std::fs::read(dir.join(run).join("weights.safetensors")).unwrap();
    assert!(weights("small") == weights("two"), "the weights differ with smaller buckets");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_rank_setups_are_one_line_errors() {
    let dir = scratch("bad");
    let data = photos(&dir);
    let check = |o: Output, needle: &str| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    };
    let out = dir.join("run");
    let o = train(&data, &out, "3", &["--devices", "0,0"], &[]);
    check(o, "--batch 3 does not split evenly over 2 devices");
    let o = train(&data, &out, "4", &["--devices", "0,0"], &[("WORLD_SIZE", "2"), ("RANK", "0")]);
    check(o, "cannot be combined with WORLD_SIZE");
    let o = train(&data, &out, "4", &[], &[("WORLD_SIZE", "2"), ("RANK", "1")]);
    check(o, "training across processes needs --backend cuda (NCCL)");
    let o = train(&data, &out, "4", &[], &[("WORLD_SIZE", "2"), ("RANK", "2")]);
    check(o, "RANK=2 is not below WORLD_SIZE=2");
    let o = train(&data, &out, "4", &["--devices", "0,1"], &[]);
    check(o, "the cpu backend has one device, 0 (--devices 0,0 runs two ranks");
    let o = train(&data, &out, "4", &["--devices", "0,0", "--bucket-mb", "0"], &[]);
    check(o, "--bucket-mb 0: give a positive number of MiB");
    let _ = std::fs::remove_dir_all(&dir);
}
