//! PSTN forwarding in listen mode, end to end: SIPp as the trunk's caller (from
//! 127.0.0.2, the trunk's address) and SIPp as the business's phone system behind the
//! return number, wasmpbx with the real `listen` script in between.

use std::time::Duration;

use crate::common::callers::{FLIP, return_trunk, sydney};
use crate::common::server::{Server, SippServer, sipp};

/// A server whose trunk points at `return_port` and whose location runs `script`.
fn server(return_port: u16, script: &str, path: &str) -> Server {
    Server::start_with_scripts(
        &config(return_port, script),
        &[(script, path), ("misbehave", test_components::MISBEHAVE)],
    )
}

/// The trunk, the locations and the media ports of [`server`].
fn config(return_port: u16, script: &str) -> String {
    format!(
        "[media]\nrtp_ports = \"20000-29999\"\n{}{}{}",
        return_trunk(return_port),
        sydney(script),
        r#"
[[locations]]
name = "broken"
flip_number = "trap"
script = "misbehave"
fallback_number = "+61290000099"
"#
    )
}

fn caller(server: &Server, scenario: &str, extra: &[&str]) -> i32 {
    let mut args = vec!["-i", "127.0.0.2"];
    args.extend_from_slice(extra);
    sipp(server.udp, scenario, "", &args)
}

#[test]
fn two_hundred_calls_at_fifty_per_second_with_media_both_ways() {
    let ret = SippServer::start("return_number.xml", &["-rtp_echo", "-m", "200"]);
    let server = server(ret.port, "listen", test_components::LISTEN);
    assert_eq!(
        caller(
            &server,
            "trunk_caller.xml",
            &["-s", FLIP, "-m", "200", "-r", "50", "-l", "400"]
        ),
        0
    );
    assert_eq!(
        ret.wait(Duration::from_secs(30)),
        0,
        "the return side saw every call"
    );
    let cdrs = server.cdrs();
    assert_eq!(cdrs.len(), 200);
    for cdr in &cdrs {
        assert_eq!(cdr["disposition"], "answered", "{cdr}");
        assert_eq!(cdr["location"], "sydney");
        assert_eq!(cdr["legs"][0][0], "+61290000098");
        assert_eq!(cdr["fallback"], false);
        assert!(
            cdr["rtp_packets_in"].as_u64().unwrap() > 50,
            "caller → return side: {cdr}"
        );
        assert!(
            cdr["rtp_packets_out"].as_u64().unwrap() > 50,
            "return side → caller (echo): {cdr}"
        );
    }
    // /metrics counts by location, and by script and the version that decided.
    let (_, metrics) = crate::common::server::http(server.http, "GET", "/metrics", None, "");
    let (_, scripts) = crate::common::server::http(server.http, "GET", "/api/scripts", None, "");
    let scripts: serde_json::Value = serde_json::from_str(&scripts).unwrap();
    let listen = scripts
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "listen")
        .unwrap();
    let hash = listen["hash"].as_str().unwrap();
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} in {metrics}"))
    };
    assert_eq!(
        value("wasmpbx_location_calls_total{location=\"sydney\",disposition=\"answered\"}"),
        200
    );
    let version = format!("script=\"listen\",version=\"{hash}\"");
    // An incoming event and a call-ended event per call, at least.
    assert!(value(&format!("wasmpbx_script_decisions_total{{{version}}}")) >= 200);
    assert_eq!(
        value(&format!(
            "wasmpbx_script_decision_seconds_count{{{version}}}"
        )),
        value(&format!("wasmpbx_script_decisions_total{{{version}}}"))
    );
    assert_eq!(
        value(&format!(
            "wasmpbx_script_fallbacks_total{{{version},cause=\"trap\"}}"
        )),
        0
    );
}

#[test]
fn call_ids_never_repeat_across_restarts_and_records_name_both_legs_call_ids() {
    let ret = SippServer::start("return_number.xml", &["-m", "2"]);
    let mut server = server(ret.port, "listen", test_components::LISTEN);
    for restart in [false, true] {
        if restart {
            let dir = server.stop();
            server = Server::start_in(dir, &config(ret.port, "listen"));
        }
        assert_eq!(
            caller(&server, "trunk_caller.xml", &["-s", FLIP, "-m", "1"]),
            0
        );
    }
    assert_eq!(ret.wait(Duration::from_secs(15)), 0);
    let cdrs = server.cdrs();
    assert_eq!(cdrs.len(), 2, "{cdrs:?}");
    let (newer, older) = (&cdrs[0], &cdrs[1]);
    assert_ne!(newer["session"], older["session"], "{cdrs:?}");
    assert!(newer["session"].as_str().unwrap() > older["session"].as_str().unwrap());
    for cdr in &cdrs {
        let ids = cdr["call_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 2, "the caller's and the return side's: {cdr}");
        assert_ne!(ids[0], ids[1]);
    }
}

#[test]
fn a_cancel_before_answer_reaches_the_return_side() {
    let ret = SippServer::start("return_rings.xml", &["-m", "1"]);
    let server = server(ret.port, "listen", test_components::LISTEN);
    assert_eq!(
        caller(&server, "caller_cancels.xml", &["-s", FLIP, "-m", "1"]),
        0
    );
    assert_eq!(ret.wait(Duration::from_secs(15)), 0);
    assert_eq!(server.cdrs()[0]["disposition"], "abandoned");
}

/// A listen-mode call whose return side (SIPp running `scenario`) hangs up: both SIPps
/// complete and the record says the callee hung up.
fn the_return_side_hangs_up(scenario: &str) {
    let ret = SippServer::start(scenario, &["-m", "1"]);
    let server = server(ret.port, "listen", test_components::LISTEN);
    assert_eq!(
        caller(&server, "caller_waits_bye.xml", &["-s", FLIP, "-m", "1"]),
        0,
        "{}",
        server.log()
    );
    assert_eq!(ret.wait(Duration::from_secs(15)), 0, "{}", server.log());
    assert_eq!(server.cdrs()[0]["end_reason"], "callee hung up");
}

#[test]
fn a_hang_up_on_the_return_side_reaches_the_caller() {
    the_return_side_hangs_up("return_hangs_up.xml");
}

#[test]
fn a_second_answer_from_a_forking_return_side_is_acknowledged_and_hung_up() {
    // Two branches behind the return number's proxy answer the one INVITE: the host keeps
    // the first and hangs the second up (SIPp checks the BYE names the second's tag).
    the_return_side_hangs_up("return_forks.xml");
}

#[test]
fn a_return_side_that_forgot_the_call_is_found_out_by_the_keep_alive() {
    // The return number answers, then knows the call no more (481 to the host's
    // in-dialog OPTIONS): the caller, who answers OPTIONS itself (SIPp -aa), gets the BYE.
    let ret = SippServer::start("return_forgets.xml", &["-m", "1"]);
    let server = Server::start_with_scripts(
        &format!(
            "[sip]\ndialog_keepalive_s = 1\n{}",
            config(ret.port, "listen")
        ),
        &[("listen", test_components::LISTEN)],
    );
    assert_eq!(
        caller(
            &server,
            "caller_waits_bye.xml",
            &["-s", FLIP, "-m", "1", "-aa"]
        ),
        0,
        "{}",
        server.log()
    );
    assert_eq!(ret.wait(Duration::from_secs(15)), 0);
    let cdr = &server.cdrs()[0];
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(
        cdr["end_reason"],
        "the callee left: its dialog is gone (481 to a keep-alive)"
    );
}

#[test]
fn a_busy_return_number_is_busy_for_the_caller() {
    let ret = SippServer::start("return_busy.xml", &["-m", "1"]);
    let server = server(ret.port, "listen", test_components::LISTEN);
    assert_eq!(
        caller(&server, "caller_busy.xml", &["-s", FLIP, "-m", "1"]),
        0,
        "{}",
        server.log()
    );
    assert_eq!(ret.wait(Duration::from_secs(15)), 0);
    let cdr = &server.cdrs()[0];
    assert_eq!(cdr["disposition"], "failed");
    assert_eq!(cdr["legs"][0][1], 486);
}

#[test]
fn flip_numbers_refuse_callers_outside_the_trunks() {
    let server = server(9, "listen", test_components::LISTEN);
    assert_eq!(
        sipp(
            server.udp,
            "caller_refused.xml",
            "",
            &["-s", FLIP, "-m", "1", "-i", "127.0.0.1"]
        ),
        0
    );
}

#[test]
fn a_trapping_script_falls_back_to_the_fallback_number_and_json_logs_follow_the_call() {
    let ret = SippServer::start("return_number.xml", &["-m", "1"]);
    let server = Server::start_with(
        &config(ret.port, "listen"),
        &[("misbehave", test_components::MISBEHAVE)],
        &[],
        &["--log-format", "json"],
    );
    assert_eq!(
        caller(&server, "trunk_caller.xml", &["-s", "trap", "-m", "1"]),
        0
    );
    assert_eq!(ret.wait(Duration::from_secs(15)), 0);
    let cdr = &server.cdrs()[0];
    assert_eq!(cdr["fallback"], true);
    assert_eq!(cdr["legs"][0][0], "+61290000099");
    assert_eq!(cdr["disposition"], "answered");

    // One JSON object per line; every line about the call — the call engine's, the
    // script's own and the runtime's about the trap — is in the call's span, which names
    // the session as the record does.
    let lines: Vec<serde_json::Value> = server
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        assert!(line["message"].is_string(), "{line}");
    }
    let in_call = |line: &&serde_json::Value| line["span"]["name"] == "call";
    let trapped = lines
        .iter()
        .find(|l| l["script"] == "misbehave" && l["cause"] == "trap")
        .expect("the script's failure is logged");
    assert!(in_call(&trapped), "{trapped}");
    let session = trapped["span"]["session"].as_str().unwrap();
    assert_eq!(session.len(), 12, "{trapped}");
    assert!(
        cdr["session"].as_str().unwrap().ends_with(session),
        "the record's id ends with the logged one: {cdr}"
    );
    let said = lines
        .iter()
        .find(|l| l["message"] == "about to trap")
        .expect("the script's own line");
    assert_eq!(said["script"], "misbehave", "{said}");
    assert_eq!(said["span"]["session"], session, "{said}");
    let about_the_call: Vec<&str> = lines
        .iter()
        .filter(in_call)
        .map(|l| {
            assert_eq!(l["span"]["session"], session, "{l}");
            assert!(l.get("session").is_none(), "the span names it once: {l}");
            l["message"].as_str().unwrap()
        })
        .collect();
    for message in ["incoming call", "forwarding", "answered", "call ended"] {
        assert!(
            about_the_call.contains(&message),
            "{message:?} in the call's span: {about_the_call:#?}"
        );
    }
}

#[test]
fn the_callers_menu_choices_are_observed() {
    let ret = SippServer::start("return_number.xml", &["-m", "1"]);
    let server = server(ret.port, "listen", test_components::LISTEN);
    assert_eq!(
        caller(&server, "trunk_caller_dtmf.xml", &["-s", FLIP, "-m", "1"]),
        0
    );
    assert_eq!(ret.wait(Duration::from_secs(15)), 0);
    assert_eq!(
        server.cdrs()[0]["digits"],
        "21",
        "RFC 4733 digits, each counted once"
    );
}

#[test]
fn a_hold_re_invite_is_passed_to_the_other_side_and_answered() {
    let ret = SippServer::start("return_holds.xml", &["-m", "1"]);
    let server = server(ret.port, "listen", test_components::LISTEN);
    assert_eq!(
        caller(&server, "caller_holds.xml", &["-s", FLIP, "-m", "1"]),
        0,
        "{}",
        server.log()
    );
    assert_eq!(
        ret.wait(Duration::from_secs(15)),
        0,
        "the return side got the hold"
    );
}

#[test]
fn records_are_filtered_paged_and_fetched_by_id_through_the_api_and_the_cli() {
    let ret = SippServer::start("return_number.xml", &["-m", "4"]);
    let server = server(ret.port, "listen", test_components::LISTEN);
    // Three calls to sydney, one to the trapping location (answered by the fallback).
    assert_eq!(
        caller(
            &server,
            "trunk_caller.xml",
            &["-s", FLIP, "-m", "3", "-r", "10"]
        ),
        0
    );
    assert_eq!(
        caller(&server, "trunk_caller.xml", &["-s", "trap", "-m", "1"]),
        0
    );
    assert_eq!(ret.wait(Duration::from_secs(30)), 0);
    let get = |path: &str| -> (u16, serde_json::Value) {
        let (status, body) = crate::common::server::http(server.http, "GET", path, None, "");
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
        )
    };
    let (_, all) = get("/api/cdrs");
    assert_eq!(all.as_array().unwrap().len(), 4);
    let (_, sydney) = get("/api/cdrs?location=sydney&disposition=answered&flipped=false");
    assert_eq!(sydney.as_array().unwrap().len(), 3);
    assert_eq!(get("/api/cdrs?location=broken").1[0]["fallback"], true);
    assert_eq!(get("/api/cdrs?flipped=true").1, serde_json::json!([]));
    assert_eq!(
        get("/api/cdrs?since=2099-01-01T00:00:00Z").1,
        serde_json::json!([])
    );
    // Pages of two, each after the last record of the one before.
    let (_, first) = get("/api/cdrs?limit=2");
    let last = first[1]["session"].as_str().unwrap();
    let (_, second) = get(&format!("/api/cdrs?limit=2&after={last}"));
    let sessions = |page: &serde_json::Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|r| r["session"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut paged = sessions(&first);
    paged.extend(sessions(&second));
    assert_eq!(
        paged,
        sessions(&all),
        "two pages are the whole list, in order"
    );
    // One by id; an unknown id, a bad filter and an unknown cursor are told apart.
    let (status, one) = get(&format!("/api/cdrs/{last}"));
    assert_eq!((status, one["session"].as_str()), (200, Some(last)));
    let unknown = "0190f0e0-0000-7000-8000-000000000000";
    assert_eq!(get(&format!("/api/cdrs/{unknown}")).0, 404);
    assert_eq!(get("/api/cdrs?disposition=great").0, 400);
    assert_eq!(get("/api/cdrs?since=yesterday").0, 400);
    assert_eq!(get(&format!("/api/cdrs?after={unknown}")).0, 400);

    // The CLI takes the same filters: a table, CSV, JSON.
    let table = server.cdr_list(&["--location", "sydney"]);
    assert_eq!(
        table.lines().count(),
        4,
        "a header and three calls: {table}"
    );
    assert!(table.starts_with("TIME "), "{table}");
    let csv = server.cdr_list(&["--csv", "--location", "broken"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[1].contains(",broken,") && rows[1].contains(",true,"),
        "{csv}"
    );
    let page: serde_json::Value =
        serde_json::from_str(&server.cdr_list(&["--json", "--limit", "2", "--after", last]))
            .unwrap();
    assert_eq!(sessions(&page), sessions(&second));
}

#[test]
fn the_event_stream_tells_a_subscriber_about_calls_registrations_scripts_and_fallbacks_in_order() {
    use crate::common::server::{EventStream, credentials};
    let ret = SippServer::start("return_number.xml", &["-m", "2"]);
    let server = server(ret.port, "listen", test_components::LISTEN);
    let stream = EventStream::connect(server.http, None, "");
    let only_ended = EventStream::connect(server.http, None, "?types=call.ended");

    assert_eq!(
        caller(&server, "trunk_caller.xml", &["-s", FLIP, "-m", "1"]),
        0
    );
    let call = stream.until(Duration::from_secs(10), |e| e["event"] == "call.ended");
    let names: Vec<&str> = call.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["call.started", "call.answered", "call.ended"],
        "{call:#?}"
    );
    let session = call[0]["session"].as_str().unwrap();
    assert!(call.iter().all(|e| e["session"] == session), "{call:#?}");
    assert_eq!(call[0]["dialed"], FLIP);
    assert_eq!(call[0]["location"], "sydney");
    assert_eq!(call[2]["disposition"], "answered");
    let ids: Vec<u64> = call.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "numbered in order: {ids:?}"
    );
    assert_eq!(server.cdrs()[0]["session"], session, "the record's session");

    // A script that traps: the fallback is an event of the call.
    assert_eq!(
        caller(&server, "trunk_caller.xml", &["-s", "trap", "-m", "1"]),
        0
    );
    let trapped = stream.until(Duration::from_secs(10), |e| e["event"] == "call.ended");
    let fallback = trapped
        .iter()
        .find(|e| e["type"] == "script.fallback")
        .unwrap_or_else(|| panic!("{trapped:#?}"));
    assert_eq!(
        (fallback["script"].as_str(), fallback["cause"].as_str()),
        (Some("misbehave"), Some("trap"))
    );

    // A phone registers (once: its refresh says nothing new) and unregisters.
    let port = crate::common::server::free_port("127.0.0.1").to_string();
    let register = |scenario: &str| {
        sipp(
            server.udp,
            scenario,
            &credentials("2001", "s3cret"),
            &["-m", "1", "-p", &port],
        )
    };
    assert_eq!(register("register.xml"), 0);
    assert_eq!(register("register.xml"), 0);
    assert_eq!(register("unregister.xml"), 0);
    let registered = stream.until(Duration::from_secs(10), |e| {
        e["event"] == "registration.down"
    });
    let names: Vec<&str> = registered
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["registration.up", "registration.down"],
        "{registered:#?}"
    );
    assert_eq!(registered[0]["user"], "alice");

    // A script dropped into the folder, and a broken one.
    let scripts = server.dir.path().join("scripts");
    std::fs::copy(test_components::FRONT_DOOR, scripts.join("front-door.wasm")).unwrap();
    let loaded = stream.until(Duration::from_secs(20), |e| e["event"] == "script.loaded");
    assert_eq!(loaded.last().unwrap()["script"], "front-door");
    std::fs::write(scripts.join("broken.wasm"), b"not a component").unwrap();
    let failed = stream.until(Duration::from_secs(20), |e| e["event"] == "script.failed");
    assert!(
        failed.last().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("not"),
        "{failed:#?}"
    );

    // The filtered subscriber saw only the two ends.
    let ended = only_ended.until(Duration::from_secs(5), |e| e["session"] != session);
    assert_eq!(ended.len(), 2, "{ended:#?}");
    assert!(ended.iter().all(|e| e["type"] == "call.ended"));
}
