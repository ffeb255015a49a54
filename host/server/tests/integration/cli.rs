//! The `wasmpbx` binary as users run it: exit codes, one-line errors, JSON output.
// A test is an I/O edge: it waits on real time.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run the binary with `args` in a folder of its own: `script simulate` keeps its
/// compilation cache beside the store, which the embedded config puts in the working
/// folder.
fn wasmpbx(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run wasmpbx");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn script_check_prints_exports_or_one_clear_error() {
    let (code, out, _) = wasmpbx(&["script", "check", test_components::FRONT_DOOR]);
    assert_eq!(code, 0);
    assert!(
        out.contains("exports  wasmpbx:script/router@0.2.0"),
        "{out}"
    );

    let (code, out, _) = wasmpbx(&["script", "check", "--json", test_components::MISBEHAVE]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["exports"],
        serde_json::json!(["router", "flip-policy"])
    );

    for (path, expected) in [
        (test_components::OTHER_WORLD, "exports neither"),
        (
            test_components::OLD_VERSION,
            "wasmpbx:script/router@0.0.9, built for another version",
        ),
        ("/nonexistent/x.wasm", "cannot read /nonexistent/x.wasm"),
    ] {
        let (code, out, err) = wasmpbx(&["script", "check", path]);
        assert_eq!(code, 1, "{path}");
        assert!(out.is_empty());
        assert!(err.contains(expected), "{path}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn simulate_follows_a_menu_choice_to_the_department() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmpbx.toml");
    std::fs::write(&config, crate::common::CONFIG).unwrap();
    let config = config.to_str().unwrap();
    // The binary's answer to a simulation of a call to Sydney, with `extra` arguments.
    let run = |extra: &[&str]| {
        let mut args = vec![
            "script",
            "simulate",
            test_components::FRONT_DOOR,
            "--from",
            "+61400000001",
            "--to",
            "+61290000001",
            "--config",
            config,
            "--json",
        ];
        args.extend_from_slice(extra);
        wasmpbx(&args)
    };
    let simulate = |extra: &[&str]| {
        let (code, out, err) = run(extra);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let forwards = |sim: &serde_json::Value| -> Vec<String> {
        sim["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["action"]["action"] == "forward")
            .map(|s| {
                s["action"]["target"]["value"]
                    .as_str()
                    .unwrap_or("fallback")
                    .to_string()
            })
            .collect()
    };
    // Monday 10:00 in Sydney, caller presses 2: billing.
    let sim = simulate(&["--at", "2026-11-23T10:00:00+11:00", "--digits", "2"]);
    assert_eq!(sim["location"], "sydney");
    assert_eq!(forwards(&sim), ["+61290000020"]);
    // Nothing pressed twice: operator.
    assert_eq!(
        forwards(&simulate(&[
            "--at",
            "2026-11-23T10:00:00+11:00",
            "--digits",
            ","
        ])),
        ["+61290000030"]
    );
    // Billing busy: the fallback number.
    assert_eq!(
        forwards(&simulate(&[
            "--at",
            "2026-11-23T10:00:00+11:00",
            "--digits",
            "2",
            "--fail-forward",
            "486"
        ])),
        ["+61290000020", "fallback"]
    );
    // A failed forward's reason is the one the live host gives the script.
    let not_found = simulate(&[
        "--at",
        "2026-11-23T10:00:00+11:00",
        "--digits",
        "2",
        "--fail-forward",
        "404",
    ]);
    assert!(
        not_found.to_string().contains("\"reason\":\"Not Found\""),
        "{not_found}"
    );
    // Night mode set by an admin: no menu, no forward.
    let night = simulate(&[
        "--at",
        "2026-11-23T10:00:00+11:00",
        "--kv",
        "override=closed",
    ]);
    assert!(forwards(&night).is_empty());
    assert!(night.to_string().contains("\"prompt\":\"closed\""));
    // An engine's intent during the welcome: billing, without a key.
    let heard = simulate(&[
        "--at",
        "2026-11-23T10:00:00+11:00",
        "--event",
        "intent=billing",
    ]);
    assert_eq!(forwards(&heard), ["+61290000020"], "{heard}");
    assert!(
        heard.to_string().contains("\"event\":\"external\""),
        "{heard}"
    );
    // An intent with no department goes nowhere: the menu goes on and takes the key.
    assert_eq!(
        forwards(&simulate(&[
            "--at",
            "2026-11-23T10:00:00+11:00",
            "--event",
            "intent=refund",
            "--digits",
            "1"
        ])),
        ["+61290000010"]
    );
    let (code, _, err) = run(&["--event", "intent"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--event \"intent\": expected NAME=VALUE"),
        "{err}"
    );
}

#[test]
fn simulate_a_flip_decision() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmpbx.toml");
    std::fs::write(&config, crate::common::CONFIG).unwrap();
    let (code, out, err) = wasmpbx(&[
        "script",
        "simulate",
        test_components::FLIP_POLICY,
        "--config",
        config.to_str().unwrap(),
        "--flip",
        "push",
        "--user",
        "alice",
        "--device",
        "desk",
        "--other-device",
        "lobby-3",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("decision require-pin targets [\"lobby-3\"]"),
        "{out}"
    );
}

#[test]
fn config_errors_name_the_key_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\nrealm = \"x\"\n",
            "sip.realm: unknown field `realm`",
        ),
        (
            "[scripts]\ndeadline_ms = 0\n",
            "scripts.deadline_ms: 0 is out of range",
        ),
        ("[media]\npublic_ip = \"not-an-ip\"\n", "media.public_ip"),
        (
            "[[users]]\nid = \"a\"\nextension = \"x1\"\npassword = \"p\"\n",
            "users[0].extension",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = wasmpbx(&[
            "script",
            "simulate",
            test_components::LISTEN,
            "--from",
            "1",
            "--to",
            "2",
            "--config",
            path.to_str().unwrap(),
        ]);
        assert_ne!(code, 0);
        assert!(err.contains(expected), "{text}: {err}");
        assert!(err.contains("bad.toml"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        let (code, out, checked) = wasmpbx(&["config", "check", path.to_str().unwrap()]);
        assert_ne!(code, 0);
        assert_eq!(
            (out.as_str(), checked),
            ("", err),
            "config check says what run would"
        );
    }
}

#[test]
fn run_loads_the_folder_and_reloads_a_dropped_script() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    std::fs::copy(test_components::LISTEN, scripts.join("listen.wasm")).unwrap();
    let config = dir.path().join("wasmpbx.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n[scripts]\ndir = {:?}\n[store]\npath = {:?}\n",
            scripts.display().to_string(),
            dir.path().join("test.db").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let banner: Vec<String> = stdout.lines().take(3).map(Result::unwrap).collect();
    assert!(
        banner.iter().any(|l| l.contains("listen [router]")),
        "{banner:?}"
    );

    std::thread::sleep(Duration::from_millis(200));
    std::fs::copy(test_components::FRONT_DOOR, scripts.join("front-door.wasm")).unwrap();
    std::fs::write(scripts.join("broken.wasm"), b"nope").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut loaded, mut rejected) = (false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(loaded && rejected) && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            loaded |= line.contains("script front-door loaded");
            rejected |= line.contains("rejected") && line.contains("broken.wasm");
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(loaded && rejected, "loaded {loaded} rejected {rejected}");
}

#[test]
fn run_without_a_config_serves_the_embedded_default() {
    // The embedded default listens on the fixed ports 5060 and 8080 of 127.0.0.1.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::copy(
        test_components::LISTEN,
        dir.path().join("scripts/listen.wasm"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
        .arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let last = line.contains("demo user extension 2002");
        lines.push(line);
        if last {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let banner = lines.join("\n");
    assert!(banner.contains("on the embedded default"), "{banner}");
    assert!(banner.contains("SIP       udp:127.0.0.1:5060"), "{banner}");
    assert!(
        banner.contains("HTTP      http://127.0.0.1:8080"),
        "{banner}"
    );
    assert!(
        banner.contains("demo user extension 2001 password "),
        "{banner}"
    );
    assert!(dir.path().join("wasmpbx.db").exists());
    assert!(dir.path().join(".wasmpbx-cache").is_dir());
}

#[test]
fn run_refuses_certificates_it_cannot_use_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    // A certificate with another certificate's key.
    let ca = crate::common::tls::TestCa::new("cli test CA");
    let (cert, _) = ca.issue(&["127.0.0.1"], dir.path(), "one");
    let (_, other_key) = ca.issue(&["127.0.0.1"], dir.path(), "two");
    for (sections, expected) in [
        (
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = {missing:?}\ntls_key = {missing:?}\n"
            ),
            vec!["http.tls_cert", "missing.pem"],
        ),
        (
            format!(
                "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\ntls_cert = {cert:?}\ntls_key = {other_key:?}\n"
            ),
            vec!["sip.tls_cert", "do not go together"],
        ),
        (
            "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\n".to_owned(),
            vec!["sip.tls_cert", "needs a certificate"],
        ),
        (
            format!(
                "[[trunks]]\nname = \"carrier\"\nhost = \"127.0.0.1\"\ntransport = \"tls\"\ntls_ca = {missing:?}\n"
            ),
            vec!["carrier", "tls_ca", "missing.pem"],
        ),
    ] {
        let sip = match sections.contains("[sip]") {
            true => String::new(),
            false => "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n".into(),
        };
        let http = match sections.contains("[http]") {
            true => String::new(),
            false => "[http]\nlisten = \"127.0.0.1:0\"\n".into(),
        };
        let path = dir.path().join("tls.toml");
        std::fs::write(
            &path,
            format!(
                "{sip}{http}[scripts]\ndir = {:?}\n[store]\npath = {:?}\n{sections}",
                dir.path().join("scripts"),
                dir.path().join("db"),
            ),
        )
        .unwrap();
        let (code, _, err) = wasmpbx(&["run", "--config", path.to_str().unwrap()]);
        assert_ne!(code, 0);
        for part in expected {
            assert!(err.contains(part), "{sections}: {err}");
        }
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        let (code, _, checked) = wasmpbx(&["config", "check", path.to_str().unwrap()]);
        assert_ne!(code, 0);
        assert_eq!(checked, err, "config check says what run would");
    }
}

#[test]
fn script_deploy_waits_for_the_running_servers_load_and_refuses_a_broken_file() {
    let server = crate::common::server::Server::start(
        "[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"sesame\"\n",
    );
    // The server's config as an admin's deploy reads it: its scripts folder, and where
    // its admin API answers (the fixture's port 0 was chosen at start).
    let text = std::fs::read_to_string(&server.config).unwrap().replace(
        "listen = \"127.0.0.1:0\"\ntoken",
        &format!("listen = \"{}\"\ntoken", server.http),
    );
    let config = server.dir.path().join("deploy.toml");
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();

    // (Cargo names the built file front_door.wasm: the script is served by --name.)
    let (code, out, err) = wasmpbx(&[
        "script",
        "deploy",
        test_components::FRONT_DOOR,
        "--name",
        "front-door",
        "--config",
        config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("front-door: loaded by the server (version "),
        "{out}"
    );
    let (_, scripts) =
        crate::common::server::http(server.http, "GET", "/api/scripts", Some("sesame"), "");
    assert!(scripts.contains("\"name\":\"front-door\""), "{scripts}");
    // Under another name, too.
    let (code, out, _) = wasmpbx(&[
        "script",
        "deploy",
        test_components::LISTEN,
        "--name",
        "night",
        "--config",
        config,
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("night: loaded by the server"), "{out}");

    // A file that is not a component: refused here, never copied.
    let broken = server.dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0").unwrap();
    let (code, _, err) = wasmpbx(&[
        "script",
        "deploy",
        broken.to_str().unwrap(),
        "--config",
        config,
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("broken.wasm") && err.contains("component"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!server.dir.path().join("scripts/broken.wasm").exists());
    assert!(
        std::fs::read_dir(server.dir.path().join("scripts"))
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.')),
        "no partial file left"
    );
    // A name with a path in it would land outside the folder: refused.
    let (code, _, err) = wasmpbx(&[
        "script",
        "deploy",
        test_components::LISTEN,
        "--name",
        "../escaped",
        "--config",
        config,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("\"../escaped\" is not a script name"), "{err}");
    assert!(!server.dir.path().join("escaped.wasm").exists());
}
