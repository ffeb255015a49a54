//! `wasmpbx script new` for every language and world: the project is written outside the
//! repository, its own `build.sh` builds it with the language's real toolchain
//! (cargo, componentize-js, componentize-py, clang), and the result passes `script
//! check` and decides as the template says in `script simulate`. `tests/run.sh`
//! installs the toolchains (Node.js, Python's venv, clang with wasi-libc).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .unwrap()
}

/// Run `wasmpbx` in `dir`; (exit code, stdout, stderr).
fn wasmpbx(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run wasmpbx");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `script new`, then the project's `build.sh` with `env`; the built component.
fn new_and_build(lang: &str, world: &str, env: &[(&str, PathBuf)]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("my-{lang}-{world}");
    let sdk = repo().join("guest-sdk");
    let (code, out, err) = wasmpbx(
        tmp.path(),
        &[
            "script",
            "new",
            &name,
            "--lang",
            lang,
            "--world",
            world,
            "--sdk-path",
            sdk.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "script new: {err}");
    assert!(out.contains("./build.sh"), "says what to do next: {out}");
    let project = tmp.path().join(&name);
    let build = Command::new(project.join("build.sh"))
        .current_dir(&project)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run build.sh");
    assert!(
        build.status.success(),
        "{lang} {world}: build.sh failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = project.join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{lang} {world}: no {}", wasm.display());
    (tmp, wasm)
}

/// The built router and flip policy pass `script check` and decide as the templates say.
fn check_both(lang: &str, env: &[(&str, PathBuf)]) {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("wasmpbx.toml");
    std::fs::write(&config, crate::common::CONFIG).unwrap();
    let config = config.to_str().unwrap();

    let (_keep, router) = new_and_build(lang, "router", env);
    let router = router.to_str().unwrap();
    let (code, out, err) = wasmpbx(config_dir.path(), &["script", "check", "--json", router]);
    assert_eq!(code, 0, "{lang}: {err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["exports"], serde_json::json!(["router"]), "{lang}");
    // The template forwards to the location's return_number.
    let (code, out, err) = wasmpbx(
        config_dir.path(),
        &[
            "script",
            "simulate",
            router,
            "--config",
            config,
            "--from",
            "+61400000001",
            "--to",
            "+61290000001",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{lang}: {err}");
    let sim: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        sim["steps"][1]["action"]["action"], "forward",
        "{lang}: {sim}"
    );
    assert_eq!(
        sim["steps"][1]["action"]["target"]["value"], "+61290000098",
        "{lang}: {sim}"
    );

    let (_keep, policy) = new_and_build(lang, "flip-policy", env);
    let policy = policy.to_str().unwrap();
    let (code, out, err) = wasmpbx(config_dir.path(), &["script", "check", "--json", policy]);
    assert_eq!(code, 0, "{lang}: {err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["exports"],
        serde_json::json!(["flip-policy"]),
        "{lang}"
    );
    let (code, out, err) = wasmpbx(
        config_dir.path(),
        &[
            "script",
            "simulate",
            policy,
            "--config",
            config,
            "--flip",
            "push",
            "--user",
            "alice",
            "--device",
            "desk",
            "--other-device",
            "lobby-3",
        ],
    );
    assert_eq!(code, 0, "{lang}: {err}");
    assert!(
        out.contains("decision allow targets [\"lobby-3\"]"),
        "{lang}: {out}"
    );
}

#[test]
fn a_new_rust_script_builds_outside_the_repo_on_the_sdk() {
    // One target folder for both projects and every CI run: the SDK's dependencies
    // compile once.
    check_both(
        "rust",
        &[("CARGO_TARGET_DIR", repo().join("target/templates"))],
    );
}

#[test]
fn a_new_javascript_script_builds_with_componentize_js() {
    check_both("js", &[]);
}

#[test]
fn a_new_python_script_builds_with_componentize_py() {
    check_both("python", &[]);
}

#[test]
fn a_new_c_script_builds_with_clang() {
    let built = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "wasmpbx-c-componentize"])
        .current_dir(repo())
        .status()
        .expect("cargo build");
    assert!(built.success());
    let tool = repo().join("target/debug/wasmpbx-c-componentize");
    check_both("c", &[("WASMPBX_C_COMPONENTIZE", tool)]);
}

#[test]
fn script_new_refuses_a_bad_name_and_a_used_folder_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = wasmpbx(tmp.path(), &["script", "new", "../up", "--lang", "rust"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a script name"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::create_dir(tmp.path().join("taken")).unwrap();
    std::fs::write(tmp.path().join("taken/notes.txt"), "mine").unwrap();
    let (code, _, err) = wasmpbx(tmp.path(), &["script", "new", "taken", "--lang", "c"]);
    assert_eq!(code, 1);
    assert!(err.contains("taken exists and is not empty"), "{err}");
    let (code, _, err) = wasmpbx(tmp.path(), &["script", "new", "x", "--lang", "cobol"]);
    assert_eq!(code, 2, "clap's usage error");
    assert!(err.contains("invalid value 'cobol'"), "{err}");
}
