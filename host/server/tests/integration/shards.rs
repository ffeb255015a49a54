//! Signalling on several shards (`sip.shards`): calls spread over the shards by Call-ID,
//! registrations made on the home shard serve calls on the others, a pull takes the
//! user's most recent call whichever shard holds it, and a guesser's failures count
//! together over the shards.

use std::time::Duration;

use wasmpbx::sip::shards::shard_of;

use crate::common::callers::{FLIP, return_trunk, sydney, trunk_calls_with};
use crate::common::server::{
    Server, SippServer, credentials, metric, register_device, sipp, tcp_read_after,
};

const SHARDS: usize = 2;

/// A Call-ID (for SIPp's `-cid_str`) that hashes to `shard` of [`SHARDS`].
fn call_id_on(shard: usize, name: &str) -> String {
    (0..)
        .map(|n| format!("{name}-{n}@sharded.test"))
        .find(|id| shard_of(id.as_bytes(), SHARDS) == shard)
        .unwrap()
}

/// Alice's mobile (on `port`) dials the pull code with Call-ID `call_id`, takes a call
/// and talks until it ends: SIPp's exit code.
fn mobile_pulls(server: &Server, port: u16, call_id: &str) -> i32 {
    let port = port.to_string();
    sipp(
        server.udp,
        "device_pull.xml",
        &credentials("2001", "s3cret"),
        &["-s", "*77", "-m", "1", "-p", &port, "-cid_str", call_id],
    )
}

#[test]
fn a_pull_landing_on_another_shard_takes_the_call_from_the_shard_holding_it() {
    let server = Server::start_with_scripts(
        "[sip]\nshards = 2\n",
        &[("flip-policy", test_components::FLIP_POLICY)],
    );
    // Both of Alice's phones register on the home shard (0).
    let desk_port = register_device(&server, "2001", "s3cret");
    let mobile_port = register_device(&server, "2001", "s3cret");
    let desk = SippServer::start_on("device_answers.xml", desk_port, &["-m", "1"]);
    // Bob's call lands on shard 1, which rings the desk from its copy of the home's
    // bindings; the mobile's pull lands on shard 0, which has no call of Alice's.
    let (bob_call, pull_call) = (call_id_on(1, "bob"), call_id_on(0, "pull"));
    std::thread::scope(|scope| {
        let bob = scope.spawn(|| {
            sipp(
                server.udp,
                "device_caller.xml",
                &credentials("2002", "b0b-secret"),
                &["-s", "2001", "-m", "1", "-d", "5000", "-cid_str", &bob_call],
            )
        });
        std::thread::sleep(Duration::from_millis(1500));
        let pulled = mobile_pulls(&server, mobile_port, &pull_call);
        assert_eq!(
            pulled,
            0,
            "the pull took the call to its end\n{}",
            server.log()
        );
        assert_eq!(bob.join().unwrap(), 0, "bob's call went on to its end");
    });
    assert_eq!(
        desk.wait(Duration::from_secs(15)),
        0,
        "the desk was released"
    );
    let log = server.log();
    assert!(
        log.contains("pull: handed to shard 1, which may hold a more recent call"),
        "{log}"
    );
    let cdr = &server.cdrs()[0];
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    let flips = cdr["flips"].as_array().unwrap();
    assert_eq!(flips.len(), 1, "{cdr}");
    assert_eq!(flips[0]["kind"], "pull", "{cdr}");
    assert_eq!(flips[0]["result"], "done", "{cdr}");
}

#[test]
fn a_pull_takes_the_users_most_recent_call_though_the_shard_it_lands_on_holds_an_older_one() {
    let server = Server::start_with_scripts(
        "[sip]\nshards = 2\n",
        &[("flip-policy", test_components::FLIP_POLICY)],
    );
    let desk_port = register_device(&server, "2001", "s3cret");
    let mobile_port = register_device(&server, "2001", "s3cret");
    let desk = SippServer::start_on("device_answers.xml", desk_port, &["-m", "2"]);
    // Bob calls Alice's desk twice: first on shard 0, a second later on shard 1. The
    // mobile's pull lands on shard 0, which holds the older call.
    let (older, newer) = (call_id_on(0, "bob-older"), call_id_on(1, "bob-newer"));
    let pull_call = call_id_on(0, "pull");
    let bob = |call_id: &str, hold_ms: &str| {
        sipp(
            server.udp,
            "device_caller.xml",
            &credentials("2002", "b0b-secret"),
            &["-s", "2001", "-m", "1", "-d", hold_ms, "-cid_str", call_id],
        )
    };
    std::thread::scope(|scope| {
        let first = scope.spawn(|| bob(&older, "7000"));
        std::thread::sleep(Duration::from_millis(1000));
        let second = scope.spawn(|| bob(&newer, "5000"));
        std::thread::sleep(Duration::from_millis(1500));
        let pulled = mobile_pulls(&server, mobile_port, &pull_call);
        assert_eq!(
            pulled,
            0,
            "the pull took a call to its end\n{}",
            server.log()
        );
        assert_eq!(
            first.join().unwrap(),
            0,
            "the older call went on to its end"
        );
        assert_eq!(
            second.join().unwrap(),
            0,
            "the newer call went on to its end"
        );
    });
    assert_eq!(
        desk.wait(Duration::from_secs(15)),
        0,
        "the desk's two calls ended"
    );
    let log = server.log();
    assert!(
        log.contains("pull: handed to shard 1, which may hold a more recent call"),
        "{log}"
    );
    let cdrs = server.cdrs();
    let of = |call_id: &str| {
        cdrs.iter()
            .find(|cdr| cdr["call_ids"][0] == call_id)
            .unwrap_or_else(|| panic!("a record of {call_id}: {cdrs:?}"))
    };
    let flips = of(&newer)["flips"].as_array().unwrap().clone();
    assert_eq!(flips.len(), 1, "{}", of(&newer));
    assert_eq!(flips[0]["kind"], "pull");
    assert_eq!(flips[0]["result"], "done");
    assert_eq!(of(&older)["flips"], serde_json::json!([]), "{}", of(&older));
}

#[test]
fn a_guesser_is_blocked_after_ten_failures_whichever_shards_its_calls_reach() {
    let server = Server::start("[sip]\nshards = 2\n");
    // SIPp numbers the calls' Call-IDs: these ten fall on both shards.
    let call_ids = "guess-%u@shards.test";
    let on_shard_1 = (1..=10)
        .filter(|n| shard_of(format!("guess-{n}@shards.test").as_bytes(), SHARDS) == 1)
        .count();
    assert!(
        (1..10).contains(&on_shard_1),
        "{on_shard_1} of 10 on shard 1"
    );
    // Ten calls from 127.0.0.7 with a wrong password, each refused with 403 ...
    let guessed = sipp(
        server.udp,
        "device_pull_refused.xml",
        &credentials("2001", "guess"),
        &[
            "-s",
            "*77",
            "-m",
            "10",
            "-i",
            "127.0.0.7",
            "-cid_str",
            call_ids,
        ],
    );
    assert_eq!(guessed, 0, "{}", server.log());
    // ... and now even the right password is refused from there, on the home shard.
    let blocked = sipp(
        server.udp,
        "register_blocked.xml",
        &credentials("2001", "s3cret"),
        &["-m", "1", "-i", "127.0.0.7"],
    );
    assert_eq!(blocked, 0, "{}", server.log());
    let failures = metric(server.http, "wasmpbx_auth_failures_total{kind=\"sip\"}");
    assert_eq!(failures, Some(10), "counted over both shards");
}

#[test]
fn listen_mode_calls_on_both_shards_all_complete_with_media_both_ways() {
    let ret = SippServer::start("return_number.xml", &["-rtp_echo", "-m", "100"]);
    let config = format!(
        "[sip]\nshards = 2\n[media]\nrtp_ports = \"20000-29999\"\n{}{}",
        return_trunk(ret.port),
        sydney("listen")
    );
    let server = Server::start_with_scripts(&config, &[("listen", test_components::LISTEN)]);
    // SIPp numbers its calls: these Call-IDs fall on both shards.
    let on_shard_1 = (1..=100)
        .filter(|n| shard_of(format!("{n}-sharded@127.0.0.2").as_bytes(), SHARDS) == 1)
        .count();
    assert!(
        (20..=80).contains(&on_shard_1),
        "{on_shard_1} of 100 on shard 1"
    );
    let code = trunk_calls_with(&server, FLIP, 100, &["-cid_str", "%u-sharded@127.0.0.2"]);
    assert_eq!(code, 0, "{}", server.log());
    assert_eq!(
        ret.wait(Duration::from_secs(30)),
        0,
        "the return side saw every call"
    );
    let cdrs = server.cdrs();
    assert_eq!(cdrs.len(), 100);
    for cdr in &cdrs {
        assert_eq!(cdr["disposition"], "answered", "{cdr}");
        let (to_return, to_caller) = (&cdr["rtp_packets_in"], &cdr["rtp_packets_out"]);
        assert!(
            to_return.as_u64().unwrap() > 50,
            "caller → return side: {cdr}"
        );
        assert!(
            to_caller.as_u64().unwrap() > 50,
            "return side → caller: {cdr}"
        );
    }
    // The admin API gathers every shard's counters.
    let messages = metric(server.http, "wasmpbx_sip_messages_total").expect("in /metrics");
    assert!(
        messages >= 400,
        "INVITE, ACK, BYE, the return side's answers: {messages}"
    );
}

#[test]
fn a_message_that_does_not_parse_closes_its_tcp_connection_whichever_shard_reads_it() {
    let server = Server::start("[sip]\nshards = 2\n");
    // Framed (it has a Content-Length), so the framing keeps it; the shard that parses it
    // closes the connection, which every shard could write on.
    let garbage = b"NOT SIP AT ALL\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";
    assert!(
        matches!(tcp_read_after(server.tcp, garbage), Ok(0)),
        "the connection is closed"
    );
    // A well-behaved client on TCP is served, by both shards' registrar copy.
    assert_eq!(
        sipp(
            server.tcp,
            "register.xml",
            &credentials("2001", "s3cret"),
            &["-m", "1", "-t", "t1"]
        ),
        0
    );
}
