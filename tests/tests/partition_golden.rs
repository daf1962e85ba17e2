//! Algorithm 1 against the official `adaptive_initialize` (golden/partition, spec 3.8).
//!
//! Every folder of `shared/golden/partition` is checked: the root complexity and its debug
//! tensors (the 64x64 resize and the histogram), every complexity value the official N=256 run
//! computed (the call log), and for every stored N the regions, Gaussian codes and boxes, in
//! order.
//!
//! With glibc's `log2`/`pow` (what NumPy called) everything is required to be bit-exact. With the
//! portable `MathFns::PORTABLE` (correctly rounded, what `no_std` builds use) the regions, codes
//! and boxes must still be bit-exact; the scores may differ by one ulp where glibc's `pow`
//! misrounds (measured: 9 of 6148 logged calls).

use std::collections::HashMap;
use std::path::Path;

use gpstoken_core::partition::{
    complexity_with, partition_image_with, partition_patch_with, region_box, region_gaussian, resize_region64,
    sobel_histogram, MathFns, PartitionParams, Region, BINS, RS,
};
use gpstoken_tests::{read_json, read_safetensors, shared_dir, Tensor};

/// Distance in units in the last place between two finite f64 of the same sign.
fn ulps(a: f64, b: f64) -> u64 {
    let key = |v: f64| {
        let bits = v.to_bits() as i64;
        if bits < 0 {
            i64::MIN - bits
        } else {
            bits
        }
    };
    key(a).abs_diff(key(b))
}

/// The tensors of a case folder, with `grey` taken from the plain folder of the same source
/// image where the case does not duplicate it (`*_cdbias_*`).
fn load_case(dir: &Path) -> (HashMap<String, Tensor>, serde_json::Value) {
    let mut tensors = read_safetensors(&dir.join("data.safetensors"));
    let case = read_json(&dir.join("case.json"));
    if !tensors.contains_key("grey") {
        let source = case["source_image"].as_str().expect("case.json: source_image");
        let plain = read_safetensors(&dir.parent().unwrap().join(source).join("data.safetensors"));
        tensors.insert("grey".into(), plain["grey"].clone());
    }
    (tensors, case)
}

/// What one pass over the golden cases measured.
#[derive(Debug, Default)]
struct Report {
    runs: usize,
    calls: usize,
    /// Logged or final scores that are not bit-identical.
    score_mismatches: usize,
    max_ulps: u64,
}

fn check_all(shared: &Path, math: &MathFns) -> Report {
    let root = shared.join("golden/partition");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("golden/partition")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("data.safetensors").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no golden partition cases in {}", root.display());

    let mut rep = Report::default();
    let mut score = |name: &str, what: &str, ours: f64, reference: f64| {
        let u = ulps(ours, reference);
        assert!(u <= 1, "{name}: {what}: {ours} vs {reference} ({u} ulps)");
        rep.max_ulps = rep.max_ulps.max(u);
        rep.score_mismatches += usize::from(u != 0);
    };
    let mut runs = 0;
    let mut calls = 0;
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (t, case) = load_case(dir);
        let grey = t["grey"].f32();
        assert_eq!(t["grey"].shape, [256, 256], "{name}: grey shape");
        let (w, h) = (256usize, 256usize);
        let bias = t.get("cdbias").map(Tensor::f32);

        // Root complexity and the debug tensors of the root call.
        let root_c = complexity_with(&grey, w, (0, h - 1, 0, w - 1), 2.5, math);
        score(&name, "root complexity", root_c, t["root_complexity"].data[0]);
        // serde_json (without `float_roundtrip`) may parse the JSON copy an ulp off: loose check.
        let json_root = case["root_complexity"].as_f64().unwrap();
        assert!((root_c - json_root).abs() <= 1e-9 * json_root, "{name}: root complexity (json)");
        let mut img = [0.0f32; RS * RS];
        resize_region64(&grey, w, (0, h - 1, 0, w - 1), &mut img);
        if let Some(r) = t.get("debug_root_resized64") {
            let bad = img.iter().zip(r.f32()).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(bad, 0, "{name}: debug_root_resized64 differs in {bad} pixels");
        }
        let hist = sobel_histogram(&img);
        if let Some(r) = t.get("debug_root_hist") {
            let reference: Vec<u32> = r.data.iter().map(|&v| v as u32).collect();
            assert_eq!(hist.as_slice(), reference.as_slice(), "{name}: debug_root_hist");
            assert_eq!(hist.len(), BINS);
        }

        // Every complexity the official run computed: (row0, col0, height, width) -> value.
        if let (Some(regs), Some(vals)) = (t.get("complexity_call_log_region"), t.get("complexity_call_log_value")) {
            for (k, (r, &v)) in regs.data.chunks_exact(4).zip(&vals.data).enumerate() {
                let [r0, c0, rh, rw] = [r[0], r[1], r[2], r[3]].map(|x| x as usize);
                let c = complexity_with(&grey, w, (r0, r0 + rh - 1, c0, c0 + rw - 1), 2.5, math);
                score(&name, &format!("call {k} region {r:?}"), c, v);
                calls += 1;
            }
        }

        // The partition itself, for every stored N.
        for n in [16usize, 32, 64, 128, 256, 512, 1024] {
            let Some(ranges) = t.get(&format!("ranges_{n}")) else { continue };
            let params = PartitionParams::new(n);
            let mut out = vec![Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; n];
            partition_patch_with(&grey, w, h, &params, bias.as_deref(), math, &mut out).unwrap();
            let ours: Vec<f64> = out.iter().flat_map(|r| [r.y0, r.y1, r.x0, r.x1]).map(f64::from).collect();
            assert_eq!(ours, ranges.data, "{name} N={n}: ranges (row0,row1,col0,col1), in order");

            let codes: Vec<f32> = out.iter().flat_map(|r| region_gaussian(r, w, h)).collect();
            let boxes: Vec<f32> = out.iter().flat_map(|r| region_box(r, w, h)).collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&codes), bits(&t[&format!("gpscodes_{n}")].f32()), "{name} N={n}: gpscodes");
            assert_eq!(bits(&boxes), bits(&t[&format!("regions_{n}")].f32()), "{name} N={n}: regions");

            // The sort key of every final region: complexity (+ the bias sum).
            let cx = &t[&format!("complexity_{n}")].data;
            let bsum = t.get(&format!("cdbias_sum_{n}"));
            for (i, r) in out.iter().enumerate() {
                let key = cx[i] + bsum.map_or(0.0, |b| b.data[i]);
                score(&name, &format!("N={n}: key of region {i}"), r.score, key);
            }

            // The same through the multi-patch entry point (one patch).
            let p = partition_image_with(&grey, w, h, 256, &params, bias.as_deref(), math).unwrap();
            assert_eq!(p.regions, out, "{name} N={n}: partition_image");
            assert_eq!((p.patches_x, p.patches_y, p.tokens_per_patch), (1, 1, n));

            if let Some(opt) = t.get(&format!("ranges_{n}_cvopt")) {
                eprintln!(
                    "{name} N={n}: the IPP (cv2 optimised) order is {}reproduced (expected: not)",
                    if ours == opt.data { "" } else { "NOT " }
                );
            }
            runs += 1;
        }
    }
    assert!(runs >= dirs.len(), "every case has at least one run");
    rep.runs = runs;
    rep.calls = calls;
    rep
}

/// With glibc's functions, which the official run used through NumPy: bit-exact throughout.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn partition_bit_exact_with_glibc_math() {
    let Some(shared) = shared_dir("partition_golden") else { return };
    let rep = check_all(&shared, &MathFns { log2: f64::log2, pow: f64::powf });
    eprintln!("glibc math: {rep:?}");
    assert_eq!(rep.score_mismatches, 0, "every score bit-exact with glibc log2/pow");
    assert!(rep.calls > 6000, "the call logs were checked");
}

/// With the portable correctly rounded functions: identical partitions, scores within one ulp.
#[test]
fn partition_matches_with_portable_math() {
    let Some(shared) = shared_dir("partition_golden") else { return };
    let rep = check_all(&shared, &MathFns::PORTABLE);
    eprintln!("portable math: {rep:?}");
    // Measured: 9 logged calls where glibc's pow(E, 2.5) is misrounded (0.5024 ulp cases), plus
    // the final keys that repeat those values. Bound a little above that.
    assert!(rep.max_ulps <= 1);
    assert!(rep.score_mismatches * 200 <= rep.calls, "{rep:?}");
}
