//! `kill -9` mid-load loses no record: SIPp callers through the `listen` script to a
//! SIPp return side, each writing down the calls it saw answered and ended; the server is
//! killed with calls live, started again on the same folder, and every call answered
//! before the kill has a record — `ended` if its caller saw the BYE's 200, else
//! `ended` or `interrupted` — the registrations are back and the next calls work.

use std::time::Duration;

use crate::common::callers::{Callers, FLIP, listen_location, records_by_call_id};
use crate::common::server::{Server, SippServer, credentials, http, sipp};

#[test]
fn kill_9_mid_load_leaves_a_record_of_every_answered_call() {
    let ret = SippServer::start("return_number.xml", &["-m", "100000"]);
    let config = listen_location(ret.port);
    let server = Server::start_with_scripts(&config, &[("listen", test_components::LISTEN)]);
    for (extension, password, from) in [
        ("2001", "s3cret", "127.0.0.5"),
        ("2002", "b0b-secret", "127.0.0.6"),
    ] {
        let registered = sipp(
            server.udp,
            "register.xml",
            &credentials(extension, password),
            &["-m", "1", "-i", from],
        );
        assert_eq!(registered, 0, "{extension} registers");
    }
    // 40 calls a second for 5 s, each held 2 s: about 80 live when the kill comes at 3 s.
    let load = Callers::start(&server, FLIP, 200, 40, 2000);
    std::thread::sleep(Duration::from_secs(3));
    let dir = server.crash();
    // The callers give up on the calls the dead server cannot end.
    let calls = load.finish().1.answered;
    let answered_before = calls.len();
    assert!(
        answered_before >= 60,
        "load was under way: {answered_before} calls answered"
    );
    assert!(
        calls.values().any(|ended| !ended),
        "calls were live at the kill"
    );

    let server = Server::start_in(dir, &config);
    let log_text = server.log();
    assert!(
        log_text.contains("their records are marked interrupted"),
        "{log_text}"
    );
    let records = server.cdrs();
    let by_call_id = records_by_call_id(&records);
    let mut interrupted = 0;
    for (call_id, ended) in &calls {
        let record = by_call_id
            .get(call_id.as_str())
            .unwrap_or_else(|| panic!("no record of answered call {call_id}"));
        assert_eq!(record["disposition"], "answered", "{record}");
        assert!(record["answered_at"].is_string(), "{record}");
        match (ended, record["state"].as_str()) {
            (true, Some("ended")) | (false, Some("ended")) => {}
            (false, Some("interrupted")) => {
                interrupted += 1;
                assert!(record["ended_at"].is_string(), "{record}");
                assert_eq!(
                    record["end_reason"],
                    "interrupted: the host stopped during the call"
                );
            }
            other => panic!("call {call_id} ({other:?}): {record}"),
        }
    }
    assert!(interrupted > 0, "the live calls are marked interrupted");
    assert!(server.cdr_list(&[]).contains("answered (interrupted)"));
    assert!(
        records.iter().all(|r| r["state"] != "live"),
        "nothing is left live after the start"
    );

    let (_, body) = http(server.http, "GET", "/api/registrations", None, "");
    let registrations: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        registrations.as_array().map(Vec::len),
        Some(2),
        "{registrations}"
    );

    // The next calls work.
    let (code, next) = Callers::start(&server, FLIP, 5, 10, 500).finish();
    assert_eq!(code, 0);
    assert_eq!(next.answered.values().filter(|ended| **ended).count(), 5);
}
