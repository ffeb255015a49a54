//! Calls between registered devices: a device calls another user's extension, all of
//! that user's devices ring, the first to answer wins and the others are cancelled.

use std::time::Duration;

use crate::common::server::{Server, SippServer, credentials, sipp};

#[test]
fn a_call_to_a_user_rings_all_their_devices_and_the_first_answer_wins() {
    let server = Server::start("");
    // Alice's two devices: SIPp UASes, registered from the ports they then listen on.
    let mut devices = Vec::new();
    for scenario in ["device_answers.xml", "return_rings.xml"] {
        let port = crate::common::server::free_port("127.0.0.1");
        let register = sipp(
            server.udp,
            "register.xml",
            &credentials("2001", "s3cret"),
            &["-m", "1", "-p", &port.to_string()],
        );
        assert_eq!(register, 0);
        devices.push(SippServer::start_on(scenario, port, &["-m", "1"]));
    }
    // Bob calls 2001 from his device.
    assert_eq!(
        sipp(
            server.udp,
            "device_caller.xml",
            &credentials("2002", "b0b-secret"),
            &["-s", "2001", "-m", "1", "-d", "1000"]
        ),
        0,
        "{}",
        server.log()
    );
    for device in devices {
        assert_eq!(device.wait(Duration::from_secs(15)), 0, "{}", server.log());
    }
    let cdr = &server.cdrs()[0];
    assert_eq!(cdr["disposition"], "answered");
    assert_eq!(cdr["caller"], "2002");
    assert_eq!(cdr["legs"].as_array().unwrap().len(), 2, "{cdr}");
    let (_, metrics) = crate::common::server::http(server.http, "GET", "/metrics", None, "");
    assert!(
        metrics.contains("# TYPE wasmpbx_script_decisions_total counter")
            && !metrics.contains("wasmpbx_script_decisions_total{")
            && !metrics.contains("wasmpbx_script_fallbacks_total{"),
        "device calls run no script: {metrics}"
    );
}

#[test]
fn a_device_with_wrong_credentials_cannot_call() {
    let server = Server::start("");
    // The challenge is answered with a wrong password: 403 instead of the call.
    let code = sipp(
        server.udp,
        "device_caller.xml",
        &credentials("2002", "wrong"),
        &["-s", "2001", "-m", "1", "-d", "1000"],
    );
    assert_ne!(code, 0);
    assert!(
        server.log().contains("authentication failed"),
        "{}",
        server.log()
    );
    assert!(server.cdrs().is_empty());
}
