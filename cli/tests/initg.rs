//! `build-layout-bank --from-initg`: the official layout cache `initg.pickle` (spec 4.3) as a
//! layout bank. The fixtures in `tests/data/initg/` were written by NumPy's own pickling
//! (`make_fixtures.py`); layout k of class y holds 1000 y + 100 k + i + j / 8 at (i, j), which is
//! what the bank must hold, layouts taken from the end as the official `D[y].pop()`.

use gpstoken_cli::generator::bank::LayoutBank;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/initg").join(name)
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpstoken-initg-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `build-layout-bank --from-initg NAME --patch 64 -o OUT [extra]` in `dir`: (exit code, stderr).
fn convert(dir: &Path, name: &str, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpstoken"))
        .current_dir(dir)
        .args(["build-layout-bank", "--from-initg"])
        .arg(fixture(name))
        .args(["--patch", "64", "-o", "bank.safetensors"])
        .args(extra)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The first five columns of layout k of class y, as the fixtures made them.
fn layout(y: usize, k: usize) -> Vec<f32> {
    (0..4).flat_map(|i| (0..5).map(move |j| (1000 * y + 100 * k + i) as f32 + j as f32 / 8.0)).collect()
}

#[test]
fn the_official_dict_of_f32_layouts_becomes_a_bank_consumed_from_the_end() {
    let dir = scratch("dict");
    assert_eq!(convert(&dir, "dict_p2.pickle", &[]).0, Some(0));
    let bank = LayoutBank::load(&dir.join("bank.safetensors")).unwrap();
    assert_eq!((bank.patch, bank.tokens), (64, 4));
    let names: Vec<&str> = bank.classes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0", "1", "2"], "class 1, absent from the dict, is there without layouts");
    assert_eq!((bank.count(0), bank.count(1), bank.count(2)), (3, 0, 2));
    // D[0].pop() three times: layouts 2, 1, 0.
    assert_eq!(bank.take(0, 3).unwrap(), [layout(0, 2), layout(0, 1), layout(0, 0)].concat());
    assert_eq!(bank.take(2, 1).unwrap(), layout(2, 1));
    assert!(bank.take(1, 1).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_list_of_f64_layouts_in_either_memory_order_converts_too() {
    let dir = scratch("list");
    assert_eq!(convert(&dir, "list_p4_f64.pickle", &["--tokens", "4"]).0, Some(0));
    let bank = LayoutBank::load(&dir.join("bank.safetensors")).unwrap();
    assert_eq!(bank.take(0, 1).unwrap(), layout(0, 0));
    // Layout 0 of class 1 was stored in Fortran order.
    assert_eq!(bank.take(1, 2).unwrap(), [layout(1, 1), layout(1, 0)].concat());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_it_cannot_read_are_one_line_errors_and_nothing_in_them_runs() {
    let dir = scratch("bad");
    for (name, extra, needle) in [
        ("protocol5.pickle", &[][..], "re-save with pickle.dump(D, f, protocol=4)"),
        ("mixed_tokens.pickle", &[], "class 1, layout 0 has 3 Gaussians, the layouts before it 4"),
        ("big_endian.pickle", &[], "a big-endian array"),
        ("not_arrays.pickle", &[], "class 0, layout 0: a list, not a NumPy array"),
        ("runs_code.pickle", &[], "an object this converter cannot rebuild"),
        ("dict_p2.pickle", &["--tokens", "8"], "holds 4-token layouts, not 8 (--tokens)"),
    ] {
        let (code, err) = convert(&dir, name, extra);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err:?} should say {needle:?}");
        assert!(!dir.join("bank.safetensors").exists(), "{name}: an output was written");
    }
    // `pickle.load` of runs_code.pickle would have created this file (in the working folder).
    assert!(!dir.join("gpstoken-initg-ran-code").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
