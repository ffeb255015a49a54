//! One behaviour, every language: each case of `tests/languages/cases.txt` runs through
//! `wasmpbx script simulate` with the Rust `front-door` and `flip-policy` and with the
//! examples in other languages (JavaScript, Python and C), which must give the same actions
//! (router) or decision (flip policy). The examples are built by `examples/<language>/build.sh` into
//! `target/examples/<language>/` — `tests/run.sh` does that before `cargo test`.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    name: String,
    script: String,
    args: Vec<String>,
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The table, one case a line: `name | script | simulate arguments` (double quotes group
/// words).
fn cases() -> Vec<Case> {
    let table = std::fs::read_to_string(repo().join("tests/languages/cases.txt")).unwrap();
    table
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            let [name, script, args] = fields[..] else {
                panic!("cases.txt: not `name | script | arguments`: {line}");
            };
            Case {
                name: name.to_owned(),
                script: script.to_owned(),
                args: words(args),
            }
        })
        .collect()
}

/// Split on spaces, keeping what double quotes enclose together.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The table's config with a compilation cache of this run's own, so a big guest
/// compiles once for all the cases, and a generous deadline: the table compares
/// decisions, not speed, and a busy machine (other tests beside it) must not turn a slow
/// Python decision into a fallback.
fn config(dir: &Path) -> PathBuf {
    let table = std::fs::read_to_string(repo().join("tests/languages/config.toml")).unwrap();
    let path = dir.join("config.toml");
    let cache = dir.join("cache");
    let store = dir.join("wasmpbx.db");
    std::fs::write(
        &path,
        format!(
            "{table}\n[scripts]\ncache_dir = \"{}\"\ndeadline_ms = 1000\n[store]\npath = \"{}\"\n",
            cache.display(),
            store.display()
        ),
    )
    .unwrap();
    path
}

/// What a component decides in one case: the router's steps or the flip decision.
fn decide(component: &Path, case: &Case, config: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
        .args(["script", "simulate"])
        .arg(component)
        .args(&case.args)
        .arg("--config")
        .arg(config)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{}: {}: not JSON ({e}): {stdout}\n{}",
            case.name,
            component.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    match case.script.as_str() {
        "front-door" => report["steps"].take(),
        "flip-policy" => report["decision"].take(),
        other => panic!("cases.txt: unknown script {other}"),
    }
}

fn rust(script: &str) -> PathBuf {
    PathBuf::from(match script {
        "front-door" => test_components::FRONT_DOOR,
        "flip-policy" => test_components::FLIP_POLICY,
        other => panic!("cases.txt: unknown script {other}"),
    })
}

/// Every case of the table gives `language`'s scripts the Rust scripts' actions.
fn behaves_like_rust(language: &str) {
    let built = repo().join("target/examples").join(language);
    for script in ["front-door", "flip-policy"] {
        assert!(
            built.join(format!("{script}.wasm")).is_file(),
            "{}/{script}.wasm is missing: build it with examples/{language}/build.sh {} \
             (tests/run.sh does)",
            built.display(),
            built.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut differ = Vec::new();
    let cases = cases();
    for case in &cases {
        let expected = decide(&rust(&case.script), case, &config);
        let got = decide(&built.join(format!("{}.wasm", case.script)), case, &config);
        if got != expected {
            differ.push(format!(
                "{}:\n  rust: {expected}\n  {language}: {got}",
                case.name
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} cases differ:\n{}",
        differ.len(),
        cases.len(),
        differ.join("\n")
    );
}

#[test]
fn javascript_scripts_behave_like_the_rust_ones() {
    behaves_like_rust("javascript");
}

#[test]
fn python_scripts_behave_like_the_rust_ones() {
    behaves_like_rust("python");
}

#[test]
fn c_scripts_behave_like_the_rust_ones() {
    behaves_like_rust("c");
}

#[test]
fn the_table_has_its_cases() {
    // A table that lost its cases would pass vacuously.
    let cases = cases();
    let scripts = |name: &str| cases.iter().filter(|c| c.script == name).count();
    assert!(scripts("front-door") >= 20, "front-door cases");
    assert!(scripts("flip-policy") >= 8, "flip-policy cases");
}
