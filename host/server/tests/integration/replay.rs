//! Decision replay end to end: real calls from SIPp are recorded with what their script
//! saw; `wasmpbx script replay` runs them again offline, on a copy of the store. With
//! the versions that decided, every decision comes out the same — even when the world
//! has changed since (the key-value entry it read is gone); with another script, the
//! differences are listed.
// Waiting for the journal happens on real time.
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::callers::{FLIP, listen_location, return_trunk, trunk_calls};
use crate::common::server::{Server, SippServer, http, metric, sipp};

/// `wasmpbx script replay ARGS --config CONFIG`: (exit code, stdout, stderr).
fn replay(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
        .args(["script", "replay"])
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Wait until the journal has recorded `n` decisions (`/metrics`).
fn recorded(server: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let so_far = metric(server.http, "wasmpbx_decisions_recorded_total").unwrap_or(0);
        if so_far >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{so_far} of {n} decisions recorded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stop the server and copy its store elsewhere (SQLite in WAL mode: the database with
/// its log), with a config that points at the copy: replay works offline on a copy.
fn offline_copy(server: Server) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = server.stop();
    let copy = tempfile::tempdir().unwrap();
    let store = dir.path().join("wasmpbx.db");
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{}{suffix}", store.display());
        if std::path::Path::new(&from).exists() {
            std::fs::copy(&from, copy.path().join(format!("copy.db{suffix}"))).unwrap();
        }
    }
    let config = std::fs::read_to_string(dir.path().join("wasmpbx.toml")).unwrap();
    let moved = config.replace(
        store.to_str().unwrap(),
        copy.path().join("copy.db").to_str().unwrap(),
    );
    assert_ne!(moved, config, "the config names the store");
    let path = copy.path().join("wasmpbx.toml");
    std::fs::write(&path, moved).unwrap();
    (copy, path)
}

#[test]
fn a_hundred_recorded_calls_replay_the_same_and_another_script_lists_its_changes() {
    const N: usize = 100;
    let ret = SippServer::start("return_number.xml", &["-m", "100"]);
    let server = Server::start_with_scripts(
        &listen_location(ret.port),
        &[("listen", test_components::LISTEN)],
    );
    assert_eq!(trunk_calls(&server, FLIP, N as u32), 0);
    assert_eq!(ret.wait(Duration::from_secs(30)), 0);
    // Two decisions a call: incoming and call-ended.
    recorded(&server, 2 * N as u64);
    let (_copy, config) = offline_copy(server);

    let (code, out, err) = replay(&config, &["--location", "sydney"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "{N} calls, {} decisions replayed with the recorded script",
            2 * N
        )) && out.contains(&format!("{} the same, 0 changed", 2 * N)),
        "{out}"
    );

    // front-door instead: it would have answered every call itself.
    let (code, out, err) = replay(
        &config,
        &[
            "--location",
            "sydney",
            "--script",
            test_components::FRONT_DOOR,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{N} the same, {N} changed")), "{out}");
    assert!(out.contains(&format!("{N}× at incoming")), "{out}");
    assert!(
        out.contains("recorded  set-tag mode=listen · forward number +61290000098"),
        "{out}"
    );
    assert!(out.contains("replayed  set-tag hours="), "{out}");

    // One call, step by step, as JSON too.
    let (_, json, _) = replay(&config, &["--location", "sydney", "--limit", "1", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let session = json["replays"][0]["session"].as_str().unwrap().to_owned();
    let (code, out, _) = replay(&config, &["--cdr", &session]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!(
            "call {session} with recorded script\n  same    incoming"
        )),
        "{out}"
    );
    // Bad input: a call with no decisions, a file that is not a component.
    let (code, _, err) = replay(&config, &["--cdr", "no-such-call"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no recorded decisions for no-such-call"),
        "{err}"
    );
    let (code, _, err) = replay(&config, &["--cdr", &session, "--script", "/dev/null"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/dev/null") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_replay_sees_the_key_value_entry_the_call_saw_though_it_is_gone() {
    let server = Server::start_with_scripts(
        &format!(
            "{}{}",
            return_trunk(9),
            r#"
[[locations]]
name = "sydney"
flip_number = "+61290000001"
script = "front-door"
fallback_number = "+61290000099"
[locations.vars]
timezone = "Australia/Sydney"
hours = "Mon-Sun 00:00-23:59"
"#
        ),
        &[("front-door", test_components::FRONT_DOOR)],
    );
    // Night mode for the calls: the closed prompt, goodbye, and the host hangs up.
    let put = http(
        server.http,
        "PUT",
        "/api/kv/sydney/override",
        None,
        "closed",
    );
    assert_eq!(put.0, 200, "{put:?}");
    assert_eq!(
        sipp(
            server.udp,
            "caller_waits_bye.xml",
            "",
            &["-i", "127.0.0.2", "-s", FLIP, "-m", "3", "-r", "10"],
        ),
        0
    );
    recorded(&server, 6);
    // Open again: a live call now would hear the menu.
    let delete = http(server.http, "DELETE", "/api/kv/sydney/override", None, "");
    assert_eq!(delete.0, 200);
    let (_copy, config) = offline_copy(server);
    let (code, out, err) = replay(&config, &["--location", "sydney"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 calls, 6 decisions") && out.contains("6 the same, 0 changed"),
        "{out}"
    );
    let (_, json, _) = replay(&config, &["--location", "sydney", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let incoming = &json["replays"][0]["steps"][0];
    assert!(
        incoming["replayed"]
            .as_str()
            .unwrap()
            .contains("hours=override-closed"),
        "{incoming}"
    );
}
