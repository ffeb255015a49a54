//! Build every guest (default scripts and test guests) for `wasm32-wasip2` with a nested
//! cargo, into `target/guests` (its own lock, so it cannot deadlock with the build that
//! runs this script), and write their paths as constants.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, constant name).
const GUESTS: [(&str, &str); 8] = [
    ("listen", "LISTEN"),
    ("front-door", "FRONT_DOOR"),
    ("flip-policy", "FLIP_POLICY"),
    ("misbehave", "MISBEHAVE"),
    ("other-world", "OTHER_WORLD"),
    ("old-version", "OLD_VERSION"),
    ("built-for-0-1", "BUILT_FOR_0_1"),
    ("speaker", "SPEAKER"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("tests/components is two levels deep")
        .to_owned();
    for watched in [
        "wit",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "scripts/listen",
        "scripts/front-door",
        "scripts/flip-policy",
        "tests/guests",
        "host/script/wit",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
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
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    let status = cmd.status().expect("running cargo to build the guests");
    if !status.success() {
        panic!(
            "building the guests for wasm32-wasip2 failed (is the target installed? rustup target add wasm32-wasip2)"
        );
    }
    let out_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut constants = String::new();
    for (package, constant) in GUESTS {
        let path = out_dir.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(path.exists(), "{} was not built", path.display());
        constants.push_str(&format!(
            "/// The `{package}` guest.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("components.rs");
    std::fs::write(out, constants).expect("writing components.rs");
}
