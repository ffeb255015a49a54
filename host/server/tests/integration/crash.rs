//! `kill -9` mid-load loses no record: SIPp callers through the `listen` script to a
//! SIPp return side, each writing down the calls it saw answered and ended; the server is
//! killed with calls live, started again on the same folder, and every call answered
//! before the kill has a record — `ended` if its caller saw the BYE's 200, else
//! `ended` or `interrupted` — the registrations are back and the next calls work.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::server::{Server, SippServer, credentials, http, sipp};

const FLIP: &str = "+61290000001";

fn config(return_port: u16) -> String {
    format!(
        r#"
[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:{return_port}"
inbound = ["127.0.0.2"]

[[locations]]
name = "sydney"
flip_number = "{FLIP}"
script = "listen"
fallback_number = "+61290000099"

[locations.vars]
return_number = "+61290000098"
"#
    )
}

/// `calls` callers at `rate` a second, each holding 2 s, in a thread; their log file
/// (`answered CALL-ID` / `ended CALL-ID` lines) is at `log`. Against a dead server,
/// a call gives up after 3 s.
fn callers(
    server: &Server,
    calls: u32,
    rate: u32,
    log: std::path::PathBuf,
) -> std::thread::JoinHandle<i32> {
    let udp = server.udp;
    std::thread::spawn(move || {
        let (calls, rate) = (calls.to_string(), rate.to_string());
        let log = log.display().to_string();
        sipp(
            udp,
            "caller_logs.xml",
            "",
            &[
                "-i",
                "127.0.0.2",
                "-s",
                FLIP,
                "-m",
                &calls,
                "-r",
                &rate,
                "-recv_timeout",
                "3000",
                "-trace_logs",
                "-log_file",
                &log,
            ],
        )
    })
}

/// What the callers saw of each call: Call-ID → ended (else only answered).
fn seen(log: &std::path::Path) -> HashMap<String, bool> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut calls = HashMap::new();
    for line in text.lines() {
        if let Some(id) = line.trim().strip_prefix("answered ") {
            calls.entry(id.to_owned()).or_insert(false);
        } else if let Some(id) = line.trim().strip_prefix("ended ") {
            calls.insert(id.to_owned(), true);
        }
    }
    calls
}

#[test]
fn kill_9_mid_load_leaves_a_record_of_every_answered_call() {
    let ret = SippServer::start("return_number.xml", &["-m", "100000"]);
    let config = config(ret.port);
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
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("calls.log");
    // 40 calls a second for 5 s, each held 2 s: about 80 live when the kill comes at 3 s.
    let load = callers(&server, 200, 40, log.clone());
    std::thread::sleep(Duration::from_secs(3));
    let dir = server.crash();
    // The callers give up on the calls the dead server cannot end.
    load.join().unwrap();
    let calls = seen(&log);
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
    let by_call_id: HashMap<&str, &serde_json::Value> = records
        .iter()
        .filter_map(|r| Some((r["call_ids"][0].as_str()?, r)))
        .collect();
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
    let next = work.path().join("next.log");
    assert_eq!(callers(&server, 5, 10, next.clone()).join().unwrap(), 0);
    assert_eq!(seen(&next).values().filter(|ended| **ended).count(), 5);
}
