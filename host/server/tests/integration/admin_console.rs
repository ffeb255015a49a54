//! The admin console at `/admin` in a real browser (Chromium through playwright, like
//! `/phone`): sign in with the token, see devices and the live call, flip the call to the
//! user's other device, put a location in night mode.
// A test is an I/O edge: it waits on real time.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use crate::common::browser;
use crate::common::server::{Server, SippServer, credentials, free_port, sipp};

#[test]
fn the_console_flips_a_live_call_and_turns_night_mode_on() {
    let server = Server::start_with_scripts(
        "[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"sesame\"\n[[locations]]\nname = \"New York\"\nflip_number = \"+12120000001\"\nscript = \"listen\"\nfallback_number = \"+12120000099\"\n",
        &[("flip-policy", test_components::FLIP_POLICY)],
    );
    // Alice's desk and, once the desk has her call, her mobile (SIPp), each answering
    // one call.
    let register = |port: u16| {
        let registered = sipp(
            server.udp,
            "register.xml",
            &credentials("2001", "s3cret"),
            &["-m", "1", "-p", &port.to_string()],
        );
        assert_eq!(registered, 0, "{}", server.log());
    };
    let (desk_port, mobile_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    register(desk_port);
    let desk = SippServer::start_on("device_answers.xml", desk_port, &["-m", "1"]);
    // The browser first, signed in before the call starts: its start took 25 s once on a
    // busy machine, longer than the call.
    let http = server.http.port().to_string();
    let mut page = browser::Running::start("admin_console.mjs", &[&http, "sesame", "New York"]);
    page.until("signed in", &server);

    std::thread::scope(|scope| {
        // Bob calls Alice; her desk answers.
        let bob = scope.spawn(|| {
            sipp(
                server.udp,
                "device_caller.xml",
                &credentials("2002", "b0b-secret"),
                &["-s", "2001", "-m", "1", "-d", "15000", "-rtp_echo"],
            )
        });
        std::thread::sleep(Duration::from_millis(1500));
        register(mobile_port);
        let mobile = SippServer::start_on("device_answers.xml", mobile_port, &["-m", "1"]);
        page.say("go");
        let report = page.finish(&server);
        assert!(report.contains("live call: "), "{report}");
        assert!(
            report.contains("flip-policy"),
            "the scripts table: {report}"
        );
        assert_eq!(bob.join().unwrap(), 0, "bob's call went on to his BYE");
        assert_eq!(
            mobile.wait(Duration::from_secs(15)),
            0,
            "the mobile took the call"
        );
    });
    assert_eq!(
        desk.wait(Duration::from_secs(15)),
        0,
        "the desk was released"
    );
    let cdr = &server.cdrs()[0];
    let flips = cdr["flips"].as_array().unwrap();
    assert_eq!(
        (
            flips[0]["kind"].as_str(),
            flips[0]["trigger"].as_str(),
            flips[0]["result"].as_str()
        ),
        (Some("push"), Some("api"), Some("done")),
        "{cdr}"
    );
    let (_, kv) =
        crate::common::server::http(server.http, "GET", "/api/kv/New%20York", Some("sesame"), "");
    assert_eq!(kv, "{\"override\":\"closed\"}");
    // For the hour the console asked, by the audit log.
    let (_, audit) =
        crate::common::server::http(server.http, "GET", "/api/audit", Some("sesame"), "");
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert_eq!(audit[0]["action"], "set");
    let (set, expires) = (
        audit[0]["at"].as_str().unwrap(),
        audit[0]["expires_at"].as_str().unwrap(),
    );
    let (set, expires): (jiff::Timestamp, jiff::Timestamp) =
        (set.parse().unwrap(), expires.parse().unwrap());
    assert_eq!(
        expires.duration_since(set),
        jiff::SignedDuration::from_hours(1)
    );
}
