//! The binary as an admin installs it: copied alone into an empty folder, `init` writes
//! a config, `run` writes the default scripts it carries, and a call from the trunk
//! routes through the embedded `listen` script; `config check`; the deployment files
//! in `examples/deploy/` (the systemd unit verified, the image built where Docker runs).
// A test is an I/O edge: it waits on real time.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::server::{Server, SippServer, sipp};

/// Run `binary ARGS` in `dir`: exit code, stdout, stderr.
fn run_in(dir: &Path, binary: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary)
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

/// The binary copied alone into a fresh folder.
fn copied_binary() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("wasmpbx");
    std::fs::copy(env!("CARGO_BIN_EXE_wasmpbx"), &binary).unwrap();
    (dir, binary)
}

/// `init` in `dir`, on loopback and ephemeral ports (an admin takes the detected address
/// and the default ports); what it printed.
fn init_on_loopback(dir: &Path, binary: &Path) -> String {
    let (code, out, err) = run_in(
        dir,
        binary,
        &[
            "init",
            "--address",
            "127.0.0.1",
            "--sip-port",
            "0",
            "--http-port",
            "0",
        ],
    );
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn a_copied_binary_inits_runs_and_routes_a_call_through_its_embedded_listen_script() {
    let (dir, binary) = copied_binary();
    let out = init_on_loopback(dir.path(), &binary);
    assert!(out.contains("wrote ") && out.contains("Next:"), "{out}");
    let config = dir.path().join("wasmpbx.toml");
    let (code, out, err) = run_in(dir.path(), &binary, &["config", "check", "wasmpbx.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("written there on first run"), "{out}");

    // The admin points the trunk at their carrier: here SIPp, as the return number.
    let ret = SippServer::start("return_number.xml", &["-m", "1"]);
    let mut table: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    table["trunks"][0]["uri"] = format!("sip:127.0.0.1:{}", ret.port).into();
    std::fs::write(&config, table.to_string()).unwrap();

    let server = Server::run(&binary, dir, config, &[], &[]);
    let scripts = server.dir.path().join("scripts");
    for name in ["listen", "front-door", "flip-policy"] {
        assert!(scripts.join(format!("{name}.wasm")).exists(), "{name}");
    }
    let banner = server.banner.join("\n");
    assert!(banner.contains("listen [router]"), "{banner}");
    assert!(
        server
            .log()
            .contains("first run: wrote the default scripts")
    );

    let args = ["-i", "127.0.0.2", "-s", "+15550100", "-m", "1"];
    assert_eq!(sipp(server.udp, "trunk_caller.xml", "", &args), 0);
    assert_eq!(
        ret.wait(Duration::from_secs(30)),
        0,
        "the return number answered"
    );
    let cdrs = server.cdrs();
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0]["location"], "main", "{}", cdrs[0]);
    assert_eq!(cdrs[0]["disposition"], "answered", "{}", cdrs[0]);
    assert_eq!(
        cdrs[0]["fallback"], false,
        "the script decided: {}",
        cdrs[0]
    );
    assert_eq!(cdrs[0]["legs"][0][0], "+15550199", "{}", cdrs[0]);
}

#[test]
fn a_scripts_folder_that_exists_is_never_written_to() {
    let (dir, binary) = copied_binary();
    init_on_loopback(dir.path(), &binary);
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    let config = dir.path().join("wasmpbx.toml");
    let server = Server::run(&binary, dir, config, &[], &[]);
    assert!(
        server.banner.join("\n").contains("none yet"),
        "{:?}",
        server.banner
    );
    assert_eq!(std::fs::read_dir(&scripts).unwrap().count(), 0);
}

/// The repository's `examples/deploy/`.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy")
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(probe.status.success());
    // verify wants the unit's ExecStart binary to exist: a folder standing for /usr/local.
    let root = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(deploy_dir().join("wasmpbx.service")).unwrap();
    let binary = root.path().join("wasmpbx");
    std::fs::copy(env!("CARGO_BIN_EXE_wasmpbx"), &binary).unwrap();
    let unit = unit.replace("/usr/local/bin/wasmpbx", binary.to_str().unwrap());
    let path = root.path().join("wasmpbx.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // verify also reports problems it does not fail on; ours must have none.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("wasmpbx.service"))
        .collect();
    assert!(ours.is_empty(), "{ours:#?}");
}

#[test]
fn the_container_image_builds_where_docker_runs() {
    let engine = Command::new("docker").arg("info").output();
    if !engine.is_ok_and(|out| out.status.success()) {
        eprintln!("skipped: no Docker engine here (docker info fails)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("docker")
        .args([
            "build",
            "-f",
            "examples/deploy/Dockerfile",
            "-t",
            "wasmpbx:test",
            ".",
        ])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The image's default command serves; its healthcheck asks /healthz.
    let out = Command::new("docker")
        .args(["run", "--rm", "wasmpbx:test", "--version"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
