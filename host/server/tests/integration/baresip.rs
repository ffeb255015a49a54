//! Real phones: baresip instances register and call through wasmpbx, with audio checked
//! by what each phone recorded. baresip takes its media address from the default route,
//! so each test runs in a network namespace of its own whose only interface is loopback
//! (root needed, as in CI).

use std::path::Path;
use std::process::Command;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Run `tests/e2e/{script}` with `args` in a fresh namespace named after `name`; its
/// report, after asserting it passed.
fn run_in_namespace(name: &str, script: &str, args: &[&str]) -> String {
    let ns = format!("wasmpbx-{name}-{}", std::process::id());
    assert!(
        ip(&["netns", "add", &ns]),
        "creating a network namespace needs root (CI runs as root)"
    );
    assert!(ip(&["-n", &ns, "link", "set", "lo", "up"]));
    assert!(ip(&["-n", &ns, "route", "add", "default", "dev", "lo"]));
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e");
    let output = Command::new("ip")
        .args(["netns", "exec", &ns, "python3"])
        .arg(e2e.join(script))
        .args(args)
        .output()
        .expect("python3 and baresip are installed (tests/run.sh installs them)");
    ip(&["netns", "del", &ns]);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    report
}

#[test]
fn baresip_phones_ring_answer_and_talk_through_the_host() {
    let report = run_in_namespace(
        "phones",
        "baresip_call.py",
        &[env!("CARGO_BIN_EXE_wasmpbx")],
    );
    assert!(
        report.contains("the desk phone answered; the mobile stopped ringing"),
        "{report}"
    );
    assert!(
        report.contains("both phones answered the host's keep-alive OPTIONS"),
        "{report}"
    );
}

#[test]
fn a_baresip_caller_hears_the_welcome_and_its_key_reaches_billing() {
    let department = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sipp/department.xml");
    let report = run_in_namespace(
        "menu",
        "baresip_menu.py",
        &[
            env!("CARGO_BIN_EXE_wasmpbx"),
            test_components::FRONT_DOOR,
            department.to_str().unwrap(),
        ],
    );
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

#[test]
fn a_call_flips_between_baresip_phones_four_ways_and_the_far_end_notices_nothing() {
    let report = run_in_namespace(
        "flip",
        "baresip_flip.py",
        &[env!("CARGO_BIN_EXE_wasmpbx"), test_components::FLIP_POLICY],
    );
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

#[test]
fn a_flip_that_needs_the_pin_waits_for_the_right_one_from_a_baresip_phone() {
    let report = run_in_namespace(
        "pin",
        "baresip_pin.py",
        &[env!("CARGO_BIN_EXE_wasmpbx"), test_components::FLIP_POLICY],
    );
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

#[test]
fn calls_a_user_placed_flip_too_but_not_emergency_calls() {
    let department = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sipp/department.xml");
    let report = run_in_namespace(
        "placed",
        "baresip_flip_placed.py",
        &[
            env!("CARGO_BIN_EXE_wasmpbx"),
            test_components::FLIP_POLICY,
            department.to_str().unwrap(),
        ],
    );
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

#[test]
fn flip_races_with_baresip_phones_end_cleanly() {
    let report = run_in_namespace(
        "races",
        "baresip_flip_races.py",
        &[env!("CARGO_BIN_EXE_wasmpbx"), test_components::MISBEHAVE],
    );
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

#[test]
fn a_call_flips_between_a_baresip_desk_phone_and_the_browser_phone() {
    let report = run_in_namespace(
        "browser",
        "baresip_browser_flip.py",
        &[env!("CARGO_BIN_EXE_wasmpbx"), test_components::FLIP_POLICY],
    );
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

/// Run an end-to-end script that serves SIP over TLS: its arguments are the binary, a
/// certificate for 127.0.0.1 with its key and the CA that issued it, then `more`.
fn run_with_certificates(name: &str, script: &str, more: &[&str]) -> String {
    let certs = crate::common::tls::Certs::new();
    let ca = certs.ca_file();
    let mut args = vec![
        env!("CARGO_BIN_EXE_wasmpbx"),
        certs.cert.to_str().unwrap(),
        certs.key.to_str().unwrap(),
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    run_in_namespace(name, script, &args)
}

#[test]
fn a_baresip_phone_on_tls_calls_and_is_called_with_nothing_readable_on_the_wire() {
    let report = run_with_certificates("tls", "baresip_tls.py", &[]);
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

#[test]
fn baresip_phones_on_srtp_talk_to_plain_and_srtp_phones_and_flip_with_one_stream() {
    let report = run_with_certificates("srtp", "baresip_srtp.py", &[test_components::FLIP_POLICY]);
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

/// Several nodes behind the shipped edge, with phones registered at the edge: a pull
/// reaches the node holding the call, found in the shared database; a push rings the
/// user's other phone alone, through the edge.
#[test]
fn phones_behind_the_edge_pull_and_push_their_users_call_on_the_node_holding_it() {
    let edge =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy/kamailio/kamailio.cfg");
    let report = run_in_namespace(
        "edge",
        "baresip_edge_flip.py",
        &[
            env!("CARGO_BIN_EXE_wasmpbx"),
            test_components::FLIP_POLICY,
            edge.to_str().unwrap(),
        ],
    );
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}
