//! SIGTERM drains: SIPp callers through the `listen` script to a SIPp return side; new
//! calls get 503 with Retry-After the moment the signal arrives, live calls run on to
//! their end (or the drain timeout hangs them up with BYE to both sides), every call has
//! its record, and the server exits 0.

use std::time::Duration;

use crate::common::callers::{Callers, FLIP, records_by_call_id, return_trunk, sydney};
use crate::common::server::{Server, SippServer, http, sipp};

/// The tag the script sets at `call-ended` (to the call's duration).
const LAST_WORD: &str = "ended_after_ms";

/// The location forwards like `listen`; its script tags each call at `call-ended`.
fn config(return_port: u16, drain_timeout_s: u32) -> String {
    format!(
        "[server]\ndrain_timeout_s = {drain_timeout_s}\n{}{}tag_at_end = \"{LAST_WORD}\"\n",
        return_trunk(return_port),
        sydney("misbehave"),
    )
}

fn start(config: &str) -> Server {
    Server::start_with_scripts(config, &[("misbehave", test_components::MISBEHAVE)])
}

/// The record has the tag the script set at `call-ended`: its last word was not lost
/// to the shutdown.
fn assert_last_word(record: &serde_json::Value) {
    let tagged = record["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t[0] == LAST_WORD && t[1].as_str().is_some_and(|v| v.parse::<u64>().is_ok()));
    assert!(tagged, "no {LAST_WORD} tag: {record}");
}

/// `calls` PSTN calls running `scenario` from the trunk, in a thread: SIPp's exit code.
fn callers(server: &Server, scenario: &'static str, calls: u32) -> std::thread::JoinHandle<i32> {
    let udp = server.udp;
    std::thread::spawn(move || {
        let calls = calls.to_string();
        sipp(
            udp,
            scenario,
            "",
            &["-i", "127.0.0.2", "-s", FLIP, "-m", &calls, "-r", "20"],
        )
    })
}

/// `/api/health`, and `/healthz`'s status code.
fn health(server: &Server) -> (serde_json::Value, u16) {
    let (_, body) = http(server.http, "GET", "/api/health", None, "");
    let (healthz, _) = http(server.http, "GET", "/healthz", None, "");
    (serde_json::from_str(&body).unwrap(), healthz)
}

/// The records of the calls, read by starting the server again on its folder.
fn records_after(dir: tempfile::TempDir, config: &str) -> Vec<serde_json::Value> {
    let server = Server::start_in(dir, config);
    server.cdrs()
}

#[test]
fn sigterm_refuses_new_calls_lets_live_ones_end_and_exits_0() {
    let ret = SippServer::start("return_number.xml", &["-m", "10"]);
    let config = config(ret.port, 30);
    let server = start(&config);
    let (before, healthz) = health(&server);
    assert_eq!((before["status"].as_str(), healthz), (Some("ok"), 200));
    // Ten calls, each held 3 s by the caller, all up within half a second.
    let live = callers(&server, "trunk_caller.xml", 10);
    std::thread::sleep(Duration::from_millis(1500));
    server.terminate();
    std::thread::sleep(Duration::from_millis(300));
    let (during, healthz) = health(&server);
    assert_eq!(during["status"], "draining", "{during}");
    assert!(during["live_calls"].as_u64().unwrap() > 0, "{during}");
    assert_eq!(healthz, 503, "load balancers move away");
    // A new call now: 503 (with Retry-After, checked in the core's tests).
    let refused = sipp(
        server.udp,
        "caller_fails.xml",
        "",
        &["-i", "127.0.0.2", "-s", FLIP, "-m", "1"],
    );
    assert_eq!(refused, 0, "the new call heard 503: {}", server.log());
    assert_eq!(
        live.join().unwrap(),
        0,
        "no live call was cut: {}",
        server.log()
    );
    assert_eq!(ret.wait(Duration::from_secs(10)), 0);
    let log = server.log();
    let (code, dir) = server.exited(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit 0 once the last call ended: {log}");
    assert!(log.contains("draining: new calls get 503"), "{log}");
    let records = records_after(dir, &config);
    let answered = records
        .iter()
        .filter(|r| r["disposition"] == "answered")
        .count();
    assert_eq!(answered, 10, "{records:#?}");
    records.iter().for_each(assert_last_word);
    assert!(
        records
            .iter()
            .all(|r| r["end_reason"] != "server shutting down")
    );
}

#[test]
fn sigterm_under_steady_load_refuses_every_new_call_and_cuts_none() {
    let ret = SippServer::start("return_number.xml", &["-m", "100000"]);
    let config = config(ret.port, 30);
    let server = start(&config);
    // 20 calls a second for 5 s, each held 4 s; SIGTERM at 3 s, so new calls keep
    // arriving for 2 s into the drain, which ends when the last answered call does.
    let load = Callers::start(&server, FLIP, 100, 20, 4000);
    std::thread::sleep(Duration::from_secs(3));
    server.terminate();
    let (code, seen) = load.finish();
    let log = server.log();
    assert_eq!(code, 0, "every call answered and ended, or refused: {log}");
    assert!(
        seen.answered.len() >= 40,
        "{} answered",
        seen.answered.len()
    );
    assert!(seen.refused.len() >= 20, "{} refused", seen.refused.len());
    assert!(
        seen.answered.values().all(|ended| *ended),
        "no call was cut"
    );
    let (exit, dir) = server.exited(Duration::from_secs(15));
    assert_eq!(exit, Some(0), "{log}");
    let records = records_after(dir, &config);
    let by_call_id = records_by_call_id(&records);
    for call_id in seen.answered.keys() {
        let record = by_call_id[call_id.as_str()];
        assert_eq!(record["state"], "ended", "{record}");
        assert_eq!(record["end_reason"], "caller hung up", "{record}");
        assert_last_word(record);
    }
    for call_id in &seen.refused {
        assert!(
            by_call_id
                .get(call_id.as_str())
                .is_none_or(|r| r["disposition"] != "answered"),
            "a refused call was never answered"
        );
    }
}

#[test]
fn the_drain_timeout_hangs_up_both_sides_with_records() {
    let log = hung_up_at_the_end(1, false);
    assert!(
        log.contains("drain timeout: hanging up what is left"),
        "{log}"
    );
}

#[test]
fn a_second_signal_ends_the_wait() {
    let log = hung_up_at_the_end(600, true);
    assert!(
        log.contains("second signal: hanging up what is left"),
        "{log}"
    );
}

/// Two calls that stay until the server hangs up; SIGTERM with `drain_timeout_s`, and a
/// second SIGTERM if asked: both sides get a BYE, both calls a record, the server exits
/// 0. Its log.
fn hung_up_at_the_end(drain_timeout_s: u32, second_signal: bool) -> String {
    let ret = SippServer::start("return_number.xml", &["-m", "2"]);
    let config = config(ret.port, drain_timeout_s);
    let server = start(&config);
    let live = callers(&server, "caller_waits_bye.xml", 2);
    std::thread::sleep(Duration::from_millis(1000));
    server.terminate();
    if second_signal {
        std::thread::sleep(Duration::from_millis(500));
        server.terminate();
    }
    assert_eq!(
        live.join().unwrap(),
        0,
        "both callers got a BYE: {}",
        server.log()
    );
    assert_eq!(
        ret.wait(Duration::from_secs(10)),
        0,
        "the return side got its BYEs"
    );
    let log = server.log();
    let (code, dir) = server.exited(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    let records = records_after(dir, &config);
    assert_eq!(records.len(), 2, "{records:#?}");
    for record in &records {
        assert_eq!(record["disposition"], "answered", "{record}");
        assert_eq!(record["end_reason"], "server shutting down", "{record}");
        assert_last_word(record);
    }
    log
}
