//! Media streams to speech and AI engines, end to end: a SIPp caller on the trunk and a
//! SIPp return side each sending a tone, the `listen` script forwarding, and the
//! location's `stream_url` pointing at a WebSocket engine (the `tungstenite` library)
//! that checks the Twilio Media Streams format and hears both tones.

use std::path::Path;
use std::time::Duration;

use crate::common::callers::{FLIP, return_trunk, sydney};
use crate::common::engine::{
    Behaviour, Engine, Tls, scenario_with_tone, tone_share, tone_wav, track_samples,
};
use crate::common::server::{Server, SippServer, http, sipp};

const CALLER_HZ: f64 = 440.0;
const RETURN_HZ: f64 = 1000.0;

/// A server whose location streams to `url`, its return side a SIPp sending a tone;
/// then one call of `hold_ms` from a SIPp caller sending another. SIPp's exit code.
fn call_with_stream(dir: &Path, url: &str, hold_ms: u32) -> (Server, i32) {
    call_with_stream_env(dir, url, hold_ms, &[], |_| {})
}

/// [`call_with_stream`], the server's process given `env`, and `during` run while the
/// call goes on.
fn call_with_stream_env(
    dir: &Path,
    url: &str,
    hold_ms: u32,
    env: &[(&str, &str)],
    during: impl FnOnce(&Server),
) -> (Server, i32) {
    let (caller_wav, return_wav) = (dir.join("caller.wav"), dir.join("return.wav"));
    tone_wav(&caller_wav, CALLER_HZ, 20);
    tone_wav(&return_wav, RETURN_HZ, 20);
    let caller = scenario_with_tone(dir, "stream_caller.xml", &caller_wav);
    let answerer = scenario_with_tone(dir, "stream_return.xml", &return_wav);
    let ret = SippServer::start(answerer.to_str().unwrap(), &["-m", "1"]);
    let location = sydney("listen").replace(
        "fallback_number = \"+61290000099\"",
        &format!("fallback_number = \"+61290000099\"\nstream_url = \"{url}\""),
    );
    let config = format!("{}{location}", return_trunk(ret.port));
    let server = Server::start_with_env(&config, &[("listen", test_components::LISTEN)], env);
    let hold = hold_ms.to_string();
    let udp = server.udp;
    let code = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            sipp(
                udp,
                caller.to_str().unwrap(),
                "",
                &["-i", "127.0.0.2", "-s", FLIP, "-m", "1", "-d", &hold],
            )
        });
        during(&server);
        caller.join().unwrap()
    });
    assert_eq!(
        ret.wait(Duration::from_secs(20)),
        0,
        "the return side's call"
    );
    (server, code)
}

fn metric(server: &Server, name: &str) -> u64 {
    crate::common::server::metric(server.http, name)
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// While the call goes on, the engine's word on it: `intent=billing` for the call its
/// `start` named; and what bad events get.
fn post_intent(server: &Server, engine: &Engine) {
    let started = engine
        .wait_for(Duration::from_secs(10), |m| m.len() >= 2)
        .unwrap_or_else(|| panic!("no start: {}", server.log()));
    let call = started[1]["start"]["callSid"].as_str().unwrap().to_owned();
    let post = |path: &str, body: &str| http(server.http, "POST", path, None, body);
    let events = format!("/api/calls/{call}/events");
    let (status, body) = post(
        &events,
        r#"{"name": "intent", "value": "billing", "confidence": 0.92}"#,
    );
    assert_eq!(status, 202, "{body}");
    for bad in [
        "not json",
        r#"{"name": "intent"}"#,
        r#"{"name": "in tent", "value": "x"}"#,
        r#"{"name": "intent", "value": "x", "confidence": 3}"#,
    ] {
        let (status, body) = post(&events, bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let unknown = "/api/calls/0193a6c4-0000-7000-8000-000000000000/events";
    let (status, _) = post(unknown, r#"{"name": "intent", "value": "x"}"#);
    assert_eq!(status, 404);
}

#[test]
fn a_listen_mode_call_streams_both_tracks_to_the_engine_and_its_record_lists_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(Behaviour::Listen);
    let (server, code) = call_with_stream_env(dir.path(), &engine.url, 3000, &[], |server| {
        post_intent(server, &engine)
    });
    assert_eq!(code, 0, "the caller's call: {}", server.log());
    let messages = engine
        .wait_for(Duration::from_secs(10), |m| {
            m.last().is_some_and(|m| m["event"] == "stop")
        })
        .unwrap_or_else(|| panic!("no stop: {:?}", engine.connections()));

    // The format: connected, start, media…, stop; sequence numbers count every message.
    assert_eq!(messages[0]["event"], "connected", "{}", messages[0]);
    assert_eq!(messages[0]["protocol"], "Call");
    let start = &messages[1];
    assert_eq!(start["event"], "start", "{start}");
    let stream_sid = start["streamSid"].as_str().unwrap();
    assert!(stream_sid.starts_with("MZ"), "{start}");
    assert_eq!(
        start["start"]["tracks"],
        serde_json::json!(["inbound", "outbound"])
    );
    assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
    assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 8000);
    let parameters = &start["start"]["customParameters"];
    assert_eq!(parameters["location"], "sydney", "{start}");
    for (i, m) in messages[1..].iter().enumerate() {
        assert_eq!(m["sequenceNumber"], (i + 1).to_string(), "{m}");
        assert_eq!(m["streamSid"], stream_sid, "{m}");
    }
    let media: Vec<_> = messages.iter().filter(|m| m["event"] == "media").collect();
    for track in ["inbound", "outbound"] {
        let chunks: Vec<u64> = media
            .iter()
            .filter(|m| m["media"]["track"] == track)
            .map(|m| m["media"]["chunk"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            chunks,
            (1..=chunks.len() as u64).collect::<Vec<_>>(),
            "{track}"
        );
    }
    let timestamps: Vec<u64> = media
        .iter()
        .map(|m| m["media"]["timestamp"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        timestamps.windows(2).all(|w| w[0] <= w[1]),
        "{timestamps:?}"
    );

    // What the engine hears: the caller's tone inbound, the return side's outbound.
    let inbound = track_samples(&messages, "inbound");
    let outbound = track_samples(&messages, "outbound");
    assert!(
        inbound.len() >= 2 * 8000,
        "{} inbound samples",
        inbound.len()
    );
    assert!(
        outbound.len() >= 2 * 8000,
        "{} outbound samples",
        outbound.len()
    );
    assert!(
        tone_share(&inbound, CALLER_HZ) > 0.5,
        "{}",
        tone_share(&inbound, CALLER_HZ)
    );
    assert!(tone_share(&inbound, RETURN_HZ) < 0.05);
    assert!(
        tone_share(&outbound, RETURN_HZ) > 0.5,
        "{}",
        tone_share(&outbound, RETURN_HZ)
    );
    assert!(tone_share(&outbound, CALLER_HZ) < 0.05);

    let stop = messages.last().unwrap();
    assert_eq!(stop["stop"]["callSid"], start["start"]["callSid"]);

    // The record names the call the engine was told of, and lists the stream without
    // the URL's token; the token is in no log line either.
    let records = server.cdrs();
    let record = &records[0];
    assert_eq!(record["session"], start["start"]["callSid"], "{record}");
    assert_eq!(parameters["caller"], record["caller"]);
    assert_eq!(parameters["dialed"], record["dialed"]);
    let listed = &record["streams"][0];
    let url = engine.url.split('?').next().unwrap();
    assert_eq!(listed["url"], url, "{record}");
    assert_eq!(listed["tracks"], "both");
    assert!(
        listed["frames"].as_u64().unwrap() >= media.len() as u64,
        "{record}"
    );
    assert_eq!(listed["dropped"], 0, "{record}");
    assert!(
        !server.log().contains("engine-secret"),
        "the token was logged"
    );
    assert!(metric(&server, "wasmpbx_media_stream_frames_sent_total") >= media.len() as u64);
    assert_eq!(metric(&server, "wasmpbx_media_streams"), 0);

    // The engine's intent is in the record (and its tags), and in the summaries.
    assert_eq!(record["events"][0]["name"], "intent", "{record}");
    assert_eq!(record["events"][0]["value"], "billing");
    assert_eq!(record["events"][0]["confidence"], 0.92);
    assert!(
        record["tags"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["intent", "billing"])),
        "{record}"
    );
    let (status, body) = http(server.http, "GET", "/api/intents/sydney", None, "");
    assert_eq!(status, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["by_intent"]["billing"], 1, "{summary}");
    assert_eq!(summary["by_hour"][0]["intents"]["billing"], 1, "{summary}");
    let (status, _) = http(server.http, "GET", "/api/intents/nowhere", None, "");
    assert_eq!(status, 404);
    let listed = server.cdr_list(&["--intents"]);
    assert!(listed.contains("sydney  billing  1 call"), "{listed}");
    // The call is over: no more events for it.
    let events = format!("/api/calls/{}/events", record["session"].as_str().unwrap());
    let (status, _) = http(
        server.http,
        "POST",
        &events,
        None,
        r#"{"name": "intent", "value": "x"}"#,
    );
    assert_eq!(status, 404);
}

#[test]
fn an_engine_that_stops_reading_loses_frames_never_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(Behaviour::Stall);
    let (server, code) = call_with_stream(dir.path(), &engine.url, 8000);
    assert_eq!(
        code,
        0,
        "the call went as if nothing streamed: {}",
        server.log()
    );
    let records = server.cdrs();
    let record = &records[0];
    assert_eq!(record["disposition"], "answered", "{record}");
    assert_eq!(record["end_reason"], "caller hung up", "{record}");
    let listed = &record["streams"][0];
    assert!(listed["dropped"].as_u64().unwrap() > 0, "{record}");
    assert!(metric(&server, "wasmpbx_media_stream_frames_dropped_total") > 0);
    assert!(server.log().contains("media stream: "), "{}", server.log());
}

#[test]
fn an_engine_that_refuses_the_connection_is_logged_once_and_the_call_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of loopback: every connection is refused.
    let (server, code) = call_with_stream(dir.path(), "ws://127.0.0.1:1/stream", 3000);
    assert_eq!(code, 0, "{}", server.log());
    let log = server.log();
    assert_eq!(
        log.matches("media stream: connecting to").count(),
        1,
        "{log}"
    );
    let records = server.cdrs();
    let listed = &records[0]["streams"][0];
    let (frames, dropped) = (
        listed["frames"].as_u64().unwrap(),
        listed["dropped"].as_u64().unwrap(),
    );
    assert!(frames > 100, "{listed}");
    // All lost but the last few, still on their way to the stream's task at the end.
    assert!(dropped * 100 >= frames * 95, "{listed}");
    assert!(
        metric(&server, "wasmpbx_media_stream_failures_total") >= 2,
        "retried"
    );
}

#[test]
fn a_wss_engine_is_trusted_through_the_system_trust_store() {
    let dir = tempfile::tempdir().unwrap();
    let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let ca = dir.path().join("trusted.pem");
    std::fs::write(&ca, issued.cert.pem()).unwrap();
    let engine = Engine::start_tls(Tls {
        cert: issued.cert.der().to_vec(),
        key: issued.signing_key.serialize_der(),
    });
    // SSL_CERT_FILE stands in for the system's store, as for other TLS clients.
    let env = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    let (server, code) = call_with_stream_env(dir.path(), &engine.url, 2000, &env, |_| {});
    assert_eq!(code, 0, "{}", server.log());
    let messages = engine
        .wait_for(Duration::from_secs(10), |m| {
            m.last().is_some_and(|m| m["event"] == "stop")
        })
        .unwrap_or_else(|| panic!("no stop over wss: {}", server.log()));
    assert!(
        track_samples(&messages, "inbound").len() >= 8000,
        "a second of the caller"
    );
    assert_eq!(server.cdrs()[0]["streams"][0]["dropped"], 0);
}
