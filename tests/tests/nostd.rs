//! The core has no std dependency: a freestanding program (`tests/nostd-probe`: `#![no_std]`,
//! `#![no_main]`, `panic = "abort"`, no libc) that calls Algorithm 1 and the splat links and runs.

use std::path::Path;
use std::process::Command;

#[test]
fn core_links_and_runs_without_std() {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        panic!("the no_std probe is written for x86-64 Linux (it calls exit_group directly)");
    }
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("nostd-probe");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Run from the probe's folder so that its .cargo/config.toml (static, no start files) applies.
    let status = Command::new(&cargo)
        .current_dir(&probe)
        // An explicit --target keeps the freestanding link flags off build scripts and proc macros.
        .args(["build", "--release", "--quiet", "--target", "x86_64-unknown-linux-gnu"])
        .env("CARGO_TARGET_DIR", probe.join("target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "the no_std probe did not build or link");
    let exe = probe.join("target/x86_64-unknown-linux-gnu/release/gpstoken-nostd-probe");
    let out = Command::new(&exe).output().expect("cannot run the probe");
    assert_eq!(out.status.code(), Some(0), "the no_std probe failed check {:?}", out.status.code());
}
