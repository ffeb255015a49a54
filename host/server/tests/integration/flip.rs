//! Call flip with SIPp devices: refusals by the host's rules and by the policy, and the
//! call going on unharmed. (The pull that succeeds, with audio and a capture of the far
//! end's stream, is in `baresip.rs`.)

use std::time::Duration;

use crate::common::server::{Server, SippServer, credentials, register_device, sipp};

const TRAP_USER: &str = r#"
[scripts]
flip_policy = "misbehave"

[[users]]
id = "trap"
extension = "2009"
password = "trap-secret"
"#;

/// The device on `port` dials the pull code and is refused.
fn pull_refused(server: &Server, extension: &str, password: &str, port: u16) {
    let code = sipp(
        server.udp,
        "device_pull_refused.xml",
        &credentials(extension, password),
        &["-s", "*77", "-m", "1", "-p", &port.to_string()],
    );
    assert_eq!(code, 0, "{}", server.log());
}

/// Bob calls `callee` (`user`, `password`), whose desk (SIPp) answers; meanwhile a device
/// of `puller` dials the pull code and is refused; Bob's call goes on to its end.
fn pull_refused_during_a_call(server: &Server, callee: (&str, &str), puller: (&str, &str)) {
    let desk_port = register_device(server, callee.0, callee.1);
    let desk = SippServer::start_on("device_answers.xml", desk_port, &["-m", "1"]);
    let puller_port = register_device(server, puller.0, puller.1);
    std::thread::scope(|scope| {
        let bob = scope.spawn(|| {
            sipp(
                server.udp,
                "device_caller.xml",
                &credentials("2002", "b0b-secret"),
                &["-s", callee.0, "-m", "1", "-d", "3000"],
            )
        });
        std::thread::sleep(Duration::from_millis(1500));
        pull_refused(server, puller.0, puller.1, puller_port);
        assert_eq!(bob.join().unwrap(), 0, "bob's call went on to its end");
    });
    assert_eq!(desk.wait(Duration::from_secs(15)), 0);
}

#[test]
fn a_pull_without_a_live_call_is_refused_and_logged() {
    let server = Server::start("");
    let port = register_device(&server, "2001", "s3cret");
    pull_refused(&server, "2001", "s3cret", port);
    assert!(
        server.log().contains("pull refused: No Live Call To Pull"),
        "{}",
        server.log()
    );
    assert!(server.cdrs().is_empty(), "a refused pull is no call");
}

#[test]
fn another_users_pull_cannot_take_a_live_call() {
    const CAROL: &str = r#"
[[users]]
id = "carol"
extension = "2003"
password = "c4rol-secret"
"#;
    let server =
        Server::start_with_scripts(CAROL, &[("flip-policy", test_components::FLIP_POLICY)]);
    // Bob's call with Alice is live; Carol's *77 finds no call of hers.
    pull_refused_during_a_call(&server, ("2001", "s3cret"), ("2003", "c4rol-secret"));
    assert!(
        server.log().contains("pull refused: No Live Call To Pull")
            && server.log().contains("user=\"carol\""),
        "{}",
        server.log()
    );
    let cdr = &server.cdrs()[0];
    assert_eq!(cdr["disposition"], "answered");
    assert!(cdr["flips"].as_array().unwrap().is_empty(), "{cdr}");
}

#[test]
fn a_failing_policy_denies_the_pull_and_the_call_goes_on() {
    // The misbehave guest traps for the user "trap": the flip is denied, not the call.
    let server =
        Server::start_with_scripts(TRAP_USER, &[("misbehave", test_components::MISBEHAVE)]);
    let events = crate::common::server::EventStream::connect(
        server.http,
        None,
        "?types=flip.requested,flip.ended",
    );
    pull_refused_during_a_call(&server, ("2009", "trap-secret"), ("2009", "trap-secret"));
    // The event stream told it as it happened: the request, then the denial.
    let flip = events.until(Duration::from_secs(10), |e| e["type"] == "flip.ended");
    assert_eq!(flip.len(), 2, "{flip:#?}");
    assert_eq!(
        (flip[0]["type"].as_str(), flip[0]["kind"].as_str()),
        (Some("flip.requested"), Some("pull"))
    );
    assert_eq!(flip[0]["user"], "trap");
    assert_eq!(flip[1]["result"], "denied");
    assert!(
        flip[1]["reason"]
            .as_str()
            .unwrap()
            .contains("the flip policy failed")
    );
    let cdr = &server.cdrs()[0];
    assert_eq!(flip[1]["session"], cdr["session"]);
    assert_eq!(cdr["disposition"], "answered");
    let flips = cdr["flips"].as_array().unwrap();
    assert_eq!(flips.len(), 1, "{cdr}");
    assert_eq!(flips[0]["kind"], "pull");
    assert_eq!(flips[0]["result"], "denied");
    assert!(
        flips[0]["reason"]
            .as_str()
            .unwrap()
            .contains("the flip policy failed"),
        "{cdr}"
    );
    assert!(server.log().contains("pull denied"), "{}", server.log());
    let listed = server.cdr_list(&["--limit", "1"]);
    assert!(listed.contains("flip pull (pull-code)"), "{listed}");
    let (_, metrics) = crate::common::server::http(server.http, "GET", "/metrics", None, "");
    assert!(
        metrics.contains("wasmpbx_flips_total{result=\"denied\"} 1"),
        "{metrics}"
    );
}
