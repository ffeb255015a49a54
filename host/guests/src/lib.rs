//! Build this workspace's guests for `wasm32-wasip2` from a build script: the `wasmpbx`
//! binary embeds the default scripts, the test crate names the test guests' paths.
//!
//! A nested cargo builds them into `target/guests`, which has its own lock, so it cannot
//! deadlock with the build that runs the build script; two build scripts asking at once
//! simply take turns.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root (this crate is `host/guests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/guests is two levels below the workspace root")
        .to_owned()
}

/// What the guests are built from: a build script prints these as `rerun-if-changed`.
pub const SOURCES: [&str; 9] = [
    "wit",
    "guest-sdk/src",
    "guest-sdk/Cargo.toml",
    "scripts/listen",
    "scripts/front-door",
    "scripts/flip-policy",
    "tests/guests",
    "host/script/wit",
    "Cargo.lock",
];

/// Build `packages` (release, `wasm32-wasip2`) and return each one's `.wasm`, in order.
/// Panics with a clear message when the build fails: this runs in build scripts.
pub fn build(packages: &[&str]) -> Vec<PathBuf> {
    let root = workspace_root();
    for source in SOURCES {
        println!("cargo:rerun-if-changed={}", root.join(source).display());
    }
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // A clean environment: the outer build's CARGO_*, RUSTFLAGS and jobserver settings
    // are for the host target, not for the guests.
    cmd.env_clear();
    for keep in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "TMPDIR",
    ] {
        if let Ok(value) = std::env::var(keep) {
            cmd.env(keep, value);
        }
    }
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    let status = cmd.status().expect("running cargo to build the guests");
    if !status.success() {
        panic!(
            "building the guests for wasm32-wasip2 failed (is the target installed? rustup target add wasm32-wasip2)"
        );
    }
    let out_dir = target_dir.join("wasm32-wasip2").join("release");
    packages
        .iter()
        .map(|package| {
            let path = out_dir.join(format!("{}.wasm", package.replace('-', "_")));
            assert!(path.exists(), "{} was not built", path.display());
            path
        })
        .collect()
}
