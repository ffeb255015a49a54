//! PSTN forwarding in active mode, end to end: SIPp as the trunk's caller, SIPp UASes as
//! the departments behind the return numbers, wasmpbx with the real `front-door` script
//! answering, playing the built-in prompts, gathering the caller's key and forwarding.
// The RTP probe timestamps packets on real time.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::engine::{Behaviour, Engine, SPOKEN_HZ, tone_share};
use crate::common::server::{Server, SippServer, http, sipp};

const FLIP: &str = "+61290000001";
const SALES: &str = "+61290000040";
const BILLING: &str = "+61290000050";
const OPERATOR: &str = "+61290000060";
const FALLBACK: &str = "+61290000099";
/// A second location, served by the same host with vars of its own.
const MELBOURNE: &str = "+61390000001";
const MELBOURNE_SALES: &str = "+61390000040";
/// The built-in welcome prompt: 2218 ms, so 111 frames of 20 ms.
const WELCOME_FRAMES: usize = 111;
/// The built-in menu prompt: 5839 ms.
const MENU_FRAMES: usize = 292;
/// The built-in transferring prompt: 1949 ms.
const TRANSFERRING_FRAMES: usize = 98;

/// A server whose trunk leads to `department_port`, with `front-door` for the location.
fn server(department_port: u16, vars: &str) -> Server {
    Server::start_with_scripts(
        &format!(
            r#"{sydney}
[[locations]]
name = "melbourne"
flip_number = "{MELBOURNE}"
script = "front-door"
fallback_number = "{FALLBACK}"

[locations.vars]
timezone = "Australia/Melbourne"
sales = "{MELBOURNE_SALES}"
billing = "{BILLING}"
operator = "{OPERATOR}"

[[locations]]
name = "broken"
flip_number = "missing-prompt"
script = "misbehave"
fallback_number = "{FALLBACK}"
"#,
            sydney = sydney_location(department_port, "front-door", "", vars)
        ),
        &[
            ("front-door", test_components::FRONT_DOOR),
            ("misbehave", test_components::MISBEHAVE),
        ],
    )
}

/// A department: answers, echoes the caller's audio for `talk_ms`, hangs up.
fn department(calls: usize, talk_ms: u32) -> SippServer {
    SippServer::start(
        "department.xml",
        &[
            "-m",
            &calls.to_string(),
            "-d",
            &talk_ms.to_string(),
            "-rtp_echo",
            "-trace_msg",
        ],
    )
}

/// One RTP packet the probe received.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    from: std::net::SocketAddr,
    payload: Vec<u8>,
}

/// A UDP socket standing in for the caller's RTP port: it records what the host sends.
struct Probe {
    port: u16,
    packets: mpsc::Receiver<Received>,
    /// The same socket, for sending as the caller.
    socket: UdpSocket,
}

impl Probe {
    fn start() -> Self {
        // The caller (SIPp) runs on 127.0.0.2, the trunk's address, and so does its SDP.
        let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let sender = socket.try_clone().unwrap();
        let (tx, packets) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                let packet = Received {
                    at: Instant::now(),
                    marker: buf[1] & 0x80 != 0,
                    payload_type: buf[1] & 0x7f,
                    sequence: u16::from_be_bytes([buf[2], buf[3]]),
                    timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
                    ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
                    from,
                    payload: buf[12..n].to_vec(),
                };
                if tx.send(packet).is_err() {
                    return;
                }
            }
        });
        Self {
            port,
            packets,
            socket: sender,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.packets.try_iter().collect()
    }
}

fn call(server: &Server, scenario: &str, probe_port: u16) -> i32 {
    call_to(server, FLIP, scenario, probe_port)
}

fn call_to(server: &Server, flip_number: &str, scenario: &str, probe_port: u16) -> i32 {
    sipp(
        server.udp,
        scenario,
        "",
        &[
            "-i",
            "127.0.0.2",
            "-s",
            flip_number,
            "-m",
            "1",
            "-key",
            "probe_port",
            &probe_port.to_string(),
        ],
    )
}

fn tag<'a>(cdr: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    cdr["tags"]
        .as_array()?
        .iter()
        .find(|t| t[0] == name)
        .and_then(|t| t[1].as_str())
}

/// The department's SIPp finished its calls, INVITEs for `numbers`.
fn assert_invited(department: SippServer, numbers: &[&str]) {
    let (code, messages) = department.wait_with_messages(Duration::from_secs(15));
    assert_eq!(code, 0, "{messages}");
    for number in numbers {
        assert!(
            messages.contains(&format!("INVITE sip:{number}@")),
            "{number}: {messages}"
        );
    }
}

/// A caller in a recorded location (`record = "true"`) presses 2 and reaches billing,
/// which answers; `meanwhile` runs on the started server before the call. The server,
/// the probe that was the caller's media, and the call's record.
fn recorded_billing_call(meanwhile: impl FnOnce(&Server)) -> (Server, Probe, serde_json::Value) {
    let billing = department(1, 3000);
    let server = server(billing.port, "record = \"true\"");
    meanwhile(&server);
    let probe = Probe::start();
    assert_eq!(
        call(&server, "active_caller_rfc4733.xml", probe.port),
        0,
        "{}",
        server.log()
    );
    assert_invited(billing, &[BILLING]);
    let cdr = server.cdrs()[0].clone();
    assert_eq!(tag(&cdr, "department"), Some("billing"), "{cdr}");
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    (server, probe, cdr)
}

#[test]
fn the_caller_hears_the_welcome_presses_2_and_reaches_billing_recorded() {
    let (server, probe, cdr) = recorded_billing_call(|_| {});
    let cdr = &cdr;
    assert_eq!(cdr["legs"][0][0], BILLING);
    assert_eq!(cdr["fallback"], false);
    assert!(cdr["digits"].as_str().unwrap().contains('2'), "{cdr}");

    // The welcome: one stream, PCMA (the caller's first choice), marked at its start and
    // again where the menu starts; between the two marks, the prompt's length.
    let packets = probe.received();
    assert!(!packets.is_empty(), "the probe heard the host");
    let host_port = packets[0].from;
    let stream: Vec<Received> = packets
        .into_iter()
        .filter(|p| p.from == host_port)
        .collect();
    assert!(stream.iter().all(|p| p.payload_type == 8));
    assert!(stream.iter().all(|p| p.ssrc == stream[0].ssrc));
    let marks: Vec<usize> = (0..stream.len()).filter(|&i| stream[i].marker).collect();
    assert_eq!(marks[0], 0);
    let welcome = &stream[..marks[1]];
    assert!(
        welcome.len().abs_diff(WELCOME_FRAMES) <= 1,
        "welcome: {} packets, prompt {WELCOME_FRAMES} frames",
        welcome.len()
    );
    for pair in welcome.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
        assert_eq!(pair[1].timestamp, pair[0].timestamp.wrapping_add(160));
    }
    let sent_over = welcome.last().unwrap().at - welcome[0].at;
    assert!(
        sent_over.abs_diff(Duration::from_millis(20 * (WELCOME_FRAMES as u64 - 1)))
            < Duration::from_millis(100),
        "the welcome went out in real time: {sent_over:?}"
    );

    // The recording: as long as the call, caller on the left, the host and the
    // department on the right.
    let path = cdr["recording"].as_str().expect("a recording reference");
    // Served once finished (its writer names it moments after the call's end).
    let served = recording_is_served(&server, cdr);
    assert_eq!(served, std::fs::read(path).unwrap(), "the recording, whole");
    let mut wav = hound::WavReader::open(path).unwrap();
    assert_eq!(wav.spec().channels, 2);
    let length_ms = u64::from(wav.duration()) / 8;
    let call_ms = cdr["duration_ms"].as_u64().unwrap();
    assert!(
        length_ms.abs_diff(call_ms) <= 100,
        "recording {length_ms} ms, call {call_ms} ms"
    );
    let samples: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    let loudness = |channel: usize, from_ms: usize, to_ms: usize| -> f64 {
        let frames = &samples[from_ms * 16..to_ms * 16];
        let sum: f64 = frames
            .iter()
            .skip(channel)
            .step_by(2)
            .map(|&s| f64::from(s).powi(2))
            .sum();
        (sum / (frames.len() / 2) as f64).sqrt()
    };
    // 0.2-2 s: the welcome plays (right), the caller is silent (left).
    assert!(
        loudness(1, 200, 2000) > 500.0,
        "the welcome is on the right"
    );
    assert!(
        loudness(0, 200, 2000) < 50.0,
        "the caller is quiet on the left"
    );
    // The caller talks (g711a.pcap) once connected to billing: the left channel.
    let end = (length_ms as usize).min(call_ms as usize) - 100;
    assert!(
        loudness(0, end - 1500, end) > 500.0,
        "the caller's voice is on the left"
    );
}

#[test]
fn a_recording_that_cannot_be_written_costs_the_call_nothing_and_is_not_in_its_record() {
    let (server, _probe, cdr) = recorded_billing_call(|server| {
        // The recordings' folder turns into a file under the running server.
        let recordings = server.dir.path().join("recordings");
        let _ = std::fs::remove_dir_all(&recordings);
        std::fs::write(&recordings, b"not a folder").unwrap();
    });
    assert_eq!(cdr["recording"], serde_json::Value::Null, "{cdr}");
    let log = server.log();
    assert!(log.contains("cannot record"), "{log}");
}

#[test]
fn an_override_with_a_two_second_expiry_opens_the_location_again_on_its_own() {
    let sales = department(1, 500);
    let server = server(sales.port, "");
    let probe = Probe::start();
    let put = http(
        server.http,
        "PUT",
        "/api/kv/sydney/override",
        None,
        "{\"value\": \"closed\", \"ttl_s\": 2}",
    );
    assert_eq!(put.0, 200, "{put:?}");
    let set_at = Instant::now();
    let (_, locations) = http(server.http, "GET", "/api/locations", None, "");
    let locations: serde_json::Value = serde_json::from_str(&locations).unwrap();
    let sydney = locations
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "sydney")
        .unwrap();
    assert_eq!(sydney["override"], "closed");
    assert!(sydney["override_expires_at"].is_string(), "{sydney}");
    // It goes on its own, two seconds on (the sweep looks four times a second).
    while http(server.http, "GET", "/api/kv/sydney", None, "").1 != "{}" {
        assert!(
            set_at.elapsed() < Duration::from_secs(4),
            "the override did not go"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone_after = set_at.elapsed();
    assert!(gone_after >= Duration::from_millis(1900), "{gone_after:?}");
    // The script sees it at once: the menu, 1 by SIP INFO, sales.
    assert_eq!(call(&server, "active_caller_info.xml", probe.port), 0);
    assert_eq!(tag(&server.cdrs()[0], "hours"), Some("open"));
    assert_invited(sales, &[SALES]);
    // The audit log has both: who set it, and its expiry.
    let (_, audit) = http(server.http, "GET", "/api/audit", None, "");
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["who"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("expired", "expiry"), ("set", "api 127.0.0.1")],
        "{audit}"
    );
    assert_eq!(audit[1]["value"], "closed");
    assert!(audit[1]["expires_at"].is_string(), "{audit}");
    // `wasmpbx audit list` reads the same log from the store, as a table and as CSV.
    let table = server.list("audit", &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("EXPIRES"),
        "{table}"
    );
    assert!(
        lines[1].contains("expiry") && lines[1].contains("\"closed\" → –"),
        "{table}"
    );
    assert!(
        lines[2].contains("api 127.0.0.1") && lines[2].contains("– → \"closed\""),
        "{table}"
    );
    let csv = server.list("audit", &["--csv", "--limit", "1"]);
    assert!(
        csv.starts_with("at,who,action,location,key,old,value,expires_at\r\n"),
        "{csv}"
    );
    assert!(
        csv.contains(",expiry,expired,sydney,override,closed,,"),
        "{csv}"
    );
}

#[test]
fn night_mode_and_holidays_from_the_admin_api_close_one_location_and_reopen_it_live() {
    let sales = department(2, 500);
    let server = server(sales.port, "");
    let probe = Probe::start();
    let put = http(
        server.http,
        "PUT",
        "/api/kv/sydney/override",
        None,
        "closed",
    );
    assert_eq!(put.0, 200, "{put:?}");
    // Closed: the closed prompt, goodbye, and the host hangs up (no after-hours number).
    assert_eq!(call(&server, "active_caller_silent.xml", probe.port), 0);
    let closed = &server.cdrs()[0];
    assert_eq!(tag(closed, "hours"), Some("override-closed"), "{closed}");
    assert_eq!(closed["legs"].as_array().unwrap().len(), 0);
    assert_eq!(closed["end_reason"], "hung up by script");
    let heard = probe.received().len();
    assert!(
        (230..=260).contains(&heard),
        "closed (4.2 s) + goodbye (0.65 s): {heard} packets"
    );

    // The other location is open all the while, with its own sales number.
    assert_eq!(
        call_to(&server, MELBOURNE, "active_caller_info.xml", probe.port),
        0
    );
    let melbourne = &server.cdrs()[0];
    assert_eq!(melbourne["location"], "melbourne");
    assert_eq!(tag(melbourne, "hours"), Some("open"), "{melbourne}");
    assert_eq!(melbourne["legs"][0][0], MELBOURNE_SALES);

    // Override cleared, but today (in Sydney) made a holiday, live: closed again.
    assert_eq!(
        http(server.http, "DELETE", "/api/kv/sydney/override", None, "").0,
        200
    );
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Australia/Sydney").unwrap())
        .date();
    let put = http(
        server.http,
        "PUT",
        "/api/kv/sydney/holidays",
        None,
        &today.to_string(),
    );
    assert_eq!(put.0, 200, "{put:?}");
    assert_eq!(call(&server, "active_caller_silent.xml", probe.port), 0);
    assert_eq!(tag(&server.cdrs()[0], "hours"), Some("holiday"));
    probe.received();

    // Sydney open again: the menu, 1 by SIP INFO, sales.
    assert_eq!(
        http(server.http, "DELETE", "/api/kv/sydney/holidays", None, "").0,
        200
    );
    assert_eq!(call(&server, "active_caller_info.xml", probe.port), 0);
    assert_invited(sales, &[MELBOURNE_SALES, SALES]);
    let open = &server.cdrs()[0];
    assert_eq!(open["location"], "sydney");
    let listed = server.cdr_list(&["--limit", "1"]);
    let (header, row) = listed.split_once('\n').unwrap();
    let location = header.find("LOCATION").unwrap();
    assert!(row[location..].starts_with("sydney "), "{listed}");
    assert!(row.contains("department=sales"), "{listed}");
    assert_eq!(tag(open, "hours"), Some("open"), "{open}");
    assert_eq!(tag(open, "department"), Some("sales"));
    assert_eq!(open["legs"][0][0], SALES);
}

#[test]
fn a_caller_who_presses_nothing_hears_the_menu_twice_and_reaches_the_operator() {
    let operator = department(1, 500);
    let server = server(operator.port, "menu_timeout_ms = \"1000\"");
    let probe = Probe::start();
    assert_eq!(call(&server, "active_caller_silent.xml", probe.port), 0);
    assert_invited(operator, &[OPERATOR]);
    let cdr = &server.cdrs()[0];
    assert_eq!(tag(cdr, "menu_repeated"), Some("true"), "{cdr}");
    assert_eq!(tag(cdr, "department"), Some("operator"));
    // Welcome, menu, menu again, transferring, then ringback while the operator rings
    // (one second): a talk spurt each, each its prompt's length.
    let packets = probe.received();
    let marks: Vec<usize> = (0..packets.len()).filter(|&i| packets[i].marker).collect();
    assert_eq!(marks.len(), 5, "{marks:?} in {} packets", packets.len());
    let lengths: Vec<usize> = marks.windows(2).map(|m| m[1] - m[0]).collect();
    assert_eq!(
        lengths,
        [
            WELCOME_FRAMES,
            MENU_FRAMES,
            MENU_FRAMES,
            TRANSFERRING_FRAMES
        ]
    );
    let ringback = packets.len() - marks[4];
    assert!(
        ringback.abs_diff(50) <= 5,
        "a second of ringback: {ringback} packets"
    );
}

#[test]
fn a_prompt_that_does_not_exist_falls_back_and_names_the_prompt() {
    let fallback = department(1, 500);
    let server = server(fallback.port, "");
    assert_eq!(
        sipp(
            server.udp,
            "caller_waits_bye.xml",
            "",
            &["-i", "127.0.0.2", "-s", "missing-prompt", "-m", "1"],
        ),
        0
    );
    assert_invited(fallback, &[FALLBACK]);
    let cdr = &server.cdrs()[0];
    assert_eq!(cdr["fallback"], true);
    assert!(
        server
            .log()
            .contains(r#"play: no prompt named "no-such-prompt"; falling back"#),
        "{}",
        server.log()
    );
}

/// How long the server takes to answer an OPTIONS.
fn options_round_trip(server: &Server, n: usize) -> Duration {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!(
        "OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-ping{n};rport\r\n\
From: <sip:ping@127.0.0.1>;tag=p\r\nTo: <sip:ping@127.0.0.1>\r\nCall-ID: ping-{n}\r\n\
CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        socket.local_addr().unwrap()
    );
    let sent = Instant::now();
    socket.send_to(request.as_bytes(), server.udp).unwrap();
    let mut buf = [0u8; 4096];
    socket.recv_from(&mut buf).expect("an answer to OPTIONS");
    sent.elapsed()
}

#[test]
fn a_dtmf_flood_does_not_stall_the_host() {
    let billing = department(1, 500);
    let server = server(billing.port, "");
    let probe = Probe::start();
    let caller = std::thread::scope(|scope| {
        let server = &server;
        let probe_port = probe.port;
        let caller = scope.spawn(move || call(server, "active_caller_silent.xml", probe_port));
        // The host's first packet says where its caller-side port is.
        let host = probe
            .packets
            .recv_timeout(Duration::from_secs(10))
            .expect("the welcome")
            .from;
        // Once the menu plays (after the 2.2 s welcome): two seconds of key 2 pressed
        // 500 times a second (each a new event), with the host asked for OPTIONS all
        // along.
        std::thread::sleep(Duration::from_millis(2500));
        let mut slowest = Duration::ZERO;
        for i in 0..1000u32 {
            let mut event = vec![0x80, 101];
            event.extend_from_slice(&(i as u16).to_be_bytes());
            event.extend_from_slice(&(i * 160).to_be_bytes());
            event.extend_from_slice(&[0, 0, 0x0f, 0x1e, 2, 0x80, 0, 160]);
            probe.socket.send_to(&event, host).unwrap();
            if i % 50 == 0 {
                slowest = slowest.max(options_round_trip(server, i as usize));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            slowest < Duration::from_millis(500),
            "SIP kept being answered during the flood: slowest {slowest:?}"
        );
        caller.join().unwrap()
    });
    assert_eq!(caller, 0, "{}", server.log());
    assert_invited(billing, &[BILLING]);
    let cdr = &server.cdrs()[0];
    assert_eq!(tag(cdr, "department"), Some("billing"), "{cdr}");
    assert!(
        cdr["digits"].as_str().unwrap().len() <= 256,
        "the record stays bounded"
    );
}

/// The `front-door` script's serving hash and compile time, from `/api/scripts`.
fn serving_front_door(server: &Server) -> (Option<String>, Option<f64>) {
    let (_, body) = http(server.http, "GET", "/api/scripts", None, "");
    let scripts: serde_json::Value = serde_json::from_str(&body).unwrap();
    let front_door = scripts
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "front-door")
        .cloned()
        .unwrap_or_default();
    (
        front_door["hash"].as_str().map(str::to_owned),
        front_door["compile_ms"].as_f64(),
    )
}

#[test]
fn the_rust_front_door_is_replaced_by_the_javascript_one_in_a_running_server() {
    let javascript = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/examples/javascript/front-door.wasm");
    assert!(
        javascript.is_file(),
        "{} is missing: examples/javascript/build.sh target/examples/javascript builds it \
         (tests/run.sh does)",
        javascript.display()
    );
    let billing = department(2, 1000);
    let server = server(billing.port, "");
    let (rust_hash, _) = serving_front_door(&server);
    let probe = Probe::start();
    assert_eq!(
        call(&server, "active_caller_rfc4733.xml", probe.port),
        0,
        "{}",
        server.log()
    );

    // An admin drops the JavaScript front-door in by rename.
    let scripts = server.dir.path().join("scripts");
    std::fs::copy(&javascript, scripts.join(".front-door.wasm.tmp")).unwrap();
    std::fs::rename(
        scripts.join(".front-door.wasm.tmp"),
        scripts.join("front-door.wasm"),
    )
    .unwrap();
    // It carries a JavaScript engine: the first compile takes seconds.
    let deadline = Instant::now() + Duration::from_secs(240);
    let (javascript_hash, compile_ms) = loop {
        let (hash, compile_ms) = serving_front_door(&server);
        if hash.is_some() && hash != rust_hash {
            break (hash, compile_ms);
        }
        assert!(Instant::now() < deadline, "never loaded: {}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("the JavaScript front-door compiled in {compile_ms:?} ms");

    let probe = Probe::start();
    assert_eq!(
        call(&server, "active_caller_rfc4733.xml", probe.port),
        0,
        "{}",
        server.log()
    );
    assert_invited(billing, &[BILLING, BILLING]);
    let cdrs = server.cdrs();
    let mut hashes: Vec<Option<String>> = cdrs
        .iter()
        .map(|c| c["script_hash"].as_str().map(str::to_owned))
        .collect();
    hashes.sort();
    let mut expected = vec![rust_hash, javascript_hash];
    expected.sort();
    assert_eq!(hashes, expected, "one call on each version");
    for cdr in &cdrs {
        assert_eq!(tag(cdr, "department"), Some("billing"), "{cdr}");
        assert_eq!(cdr["fallback"], false, "{cdr}");
    }
    // What one instance of the JavaScript engine costs, as /api/scripts reports it.
    let (_, body) = http(server.http, "GET", "/api/scripts", None, "");
    let scripts: serde_json::Value = serde_json::from_str(&body).unwrap();
    let memory = scripts[0]["peak_instance_memory"].as_u64().unwrap_or(0);
    assert!(memory > 1 << 20, "{body}");
}

/// A location on [`FLIP`] whose calls stream to `engine_url`, running `script` with
/// `vars`, its trunk leading to `department_port`.
/// The departments' trunk and the Sydney location running `script`, with `location`
/// (more keys of its table) and `vars` (more of its vars).
fn sydney_location(department_port: u16, script: &str, location: &str, vars: &str) -> String {
    format!(
        r#"
[media]
rtp_ports = "30000-39999"

[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:{department_port}"
inbound = ["127.0.0.2"]

[[locations]]
name = "sydney"
flip_number = "{FLIP}"
script = "{script}"
fallback_number = "{FALLBACK}"
{location}

[locations.vars]
timezone = "Australia/Sydney"
sales = "{SALES}"
billing = "{BILLING}"
operator = "{OPERATOR}"
{vars}
"#
    )
}

/// [`sydney_location`] streaming every call to `engine_url`.
fn streamed_location(department_port: u16, engine_url: &str, script: &str, vars: &str) -> String {
    sydney_location(
        department_port,
        script,
        &format!("stream_url = \"{engine_url}\""),
        vars,
    )
}

fn outbound_frames(messages: &[serde_json::Value]) -> usize {
    messages
        .iter()
        .filter(|m| m["event"] == "media" && m["media"]["track"] == "outbound")
        .count()
}

#[test]
fn an_engine_that_hears_the_welcome_sends_the_caller_to_billing_without_a_key() {
    let billing = department(1, 500);
    let engine = Engine::start(Behaviour::Listen);
    let server = Server::start_with_scripts(
        &streamed_location(billing.port, &engine.url, "front-door", ""),
        &[("front-door", test_components::FRONT_DOOR)],
    );
    let probe = Probe::start();
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| call(&server, "active_caller_silent.xml", probe.port));
        // Half a second into the welcome (what the caller hears), the engine says why
        // the caller calls.
        let heard = engine
            .wait_for(Duration::from_secs(10), |m| outbound_frames(m) >= 25)
            .unwrap_or_else(|| panic!("the engine heard no welcome: {}", server.log()));
        let call_id = heard[1]["start"]["callSid"].as_str().unwrap().to_owned();
        let (status, body) = http(
            server.http,
            "POST",
            &format!("/api/calls/{call_id}/events"),
            None,
            r#"{"name": "intent", "value": "billing", "confidence": 0.88}"#,
        );
        assert_eq!(status, 202, "{body}");
        assert_eq!(caller.join().unwrap(), 0, "{}", server.log());
    });
    assert_invited(billing, &[BILLING]);
    let cdr = &server.cdrs()[0];
    assert_eq!(tag(cdr, "department"), Some("billing"), "{cdr}");
    assert_eq!(tag(cdr, "routed_by"), Some("intent"), "{cdr}");
    assert_eq!(tag(cdr, "intent"), Some("billing"), "{cdr}");
    assert_eq!(cdr["events"][0]["value"], "billing", "{cdr}");
    assert_eq!(cdr["digits"], "", "no key was pressed: {cdr}");
    // The welcome was cut short, and "transferring" played whole, in one stream.
    let packets = probe.received();
    let marks: Vec<usize> = (0..packets.len()).filter(|&i| packets[i].marker).collect();
    assert!(marks.len() >= 2, "{marks:?}");
    let welcome = marks[1] - marks[0];
    assert!(
        (20..WELCOME_FRAMES - 20).contains(&welcome),
        "the welcome stopped early: {welcome} of {WELCOME_FRAMES} frames"
    );
    assert!(packets.iter().all(|p| p.ssrc == packets[0].ssrc));
}

/// One call from a silent SIPp caller to the `speaker` guest with `vars`, the location's
/// own stream going nowhere that answers: the server, and what the caller's RTP probe
/// received.
fn speaker_call(vars: &str) -> (Server, Vec<Received>) {
    let server = Server::start_with_scripts(
        &streamed_location(9, "ws://127.0.0.1:1/location", "speaker", vars),
        &[("speaker", test_components::SPEAKER)],
    );
    let probe = Probe::start();
    assert_eq!(
        call(&server, "active_caller_silent.xml", probe.port),
        0,
        "{}",
        server.log()
    );
    let packets = probe.received();
    (server, packets)
}

/// How many 20 ms frames espeak-ng's rendering of `text` makes at 8 kHz.
fn spoken_frames(text: &str) -> usize {
    use std::io::Write;
    let mut child = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "--stdout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("espeak-ng (tests/run.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let wav = child.wait_with_output().unwrap().stdout;
    let samples_22k = (wav.len() - 44) / 2;
    (samples_22k * 8000 / 22050).div_ceil(160)
}

fn alaw_rms(payload: &[u8]) -> f64 {
    let sum: f64 = payload
        .iter()
        .map(|&b| f64::from(wasmpbx::media::g711::alaw_decode(b)).powi(2))
        .sum();
    (sum / payload.len().max(1) as f64).sqrt()
}

#[test]
fn say_speaks_its_text_to_the_caller_and_a_scripts_stream_carries_its_parameters() {
    const GREETING: &str = "Thank you for calling. This message is spoken by the host, from text.";
    let engine = Engine::start(Behaviour::Listen);
    let vars = format!("greeting = \"{GREETING}\"\nengine_url = \"{}\"", engine.url);
    // The script answers, says the greeting and hangs up: the caller gets the BYE.
    let (server, packets) = speaker_call(&vars);
    assert!(packets.iter().all(|p| p.payload_type == 8), "PCMA");
    let expected = spoken_frames(GREETING);
    assert!(
        packets.len().abs_diff(expected) <= 3,
        "{} packets for {expected} frames of speech",
        packets.len()
    );
    // Speech, not silence or a tone: most 20 ms frames carry energy, some pause.
    let loud = packets
        .iter()
        .filter(|p| alaw_rms(&p.payload) > 300.0)
        .count();
    let quiet = packets
        .iter()
        .filter(|p| alaw_rms(&p.payload) < 100.0)
        .count();
    assert!(loud * 2 > packets.len(), "{loud} loud of {}", packets.len());
    assert!(quiet > 0, "no pause between words");

    let messages = engine
        .wait_for(Duration::from_secs(10), |m| {
            m.last().is_some_and(|m| m["event"] == "stop")
        })
        .unwrap_or_else(|| panic!("no stream from the script: {}", server.log()));
    let start = &messages[1]["start"];
    assert_eq!(start["tracks"], serde_json::json!(["inbound"]), "{start}");
    assert_eq!(start["customParameters"]["purpose"], "say-test", "{start}");
    assert_eq!(start["customParameters"]["location"], "sydney", "{start}");
    let cdr = &server.cdrs()[0];
    let streams = cdr["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "the location's and the script's: {cdr}");
    assert!(streams.iter().any(|s| s["tracks"] == "inbound"), "{cdr}");
}

#[test]
fn a_bidirectional_engine_is_heard_by_the_caller_and_its_mark_comes_back() {
    let engine = Engine::start(Behaviour::Speak);
    let vars = format!(
        "greeting = \"Hello.\"\nengine_url = \"{}\"\nengine_audio = \"replace\"",
        engine.url
    );
    let (server, packets) = speaker_call(&vars);
    // The caller heard the engine's second of 1 kHz (in the host's one stream), in
    // place of the greeting it started over.
    let toned = packets
        .iter()
        .filter(|p| {
            let samples: Vec<i16> = p
                .payload
                .iter()
                .map(|&b| wasmpbx::media::g711::alaw_decode(b))
                .collect();
            tone_share(&samples, SPOKEN_HZ) > 0.8
        })
        .count();
    assert!((48..=50).contains(&toned), "{toned} frames of the tone");
    assert!(packets.iter().all(|p| p.ssrc == packets[0].ssrc));
    let messages = engine
        .wait_for(Duration::from_secs(10), |m| {
            m.last().is_some_and(|m| m["event"] == "stop")
        })
        .unwrap_or_else(|| panic!("no stop: {}", server.log()));
    let mark = messages
        .iter()
        .find(|m| m["event"] == "mark")
        .unwrap_or_else(|| panic!("no mark back: {messages:?}"));
    assert_eq!(mark["mark"]["name"], "tone-end");
    let cdr = &server.cdrs()[0];
    let played: Vec<u64> = cdr["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["played"].as_u64().unwrap())
        .collect();
    assert!(played.contains(&50), "{cdr}");
}

/// `GET /api/recordings/{id}`: the whole file (returned), or the part a `Range` asks for;
/// an unknown call is 404.
fn recording_is_served(server: &Server, cdr: &serde_json::Value) -> Vec<u8> {
    use std::io::{Read, Write};
    let get = |path: &str, range: Option<&str>| -> Vec<u8> {
        let mut stream = std::net::TcpStream::connect(server.http).unwrap();
        let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: t\r\n{range}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        response
    };
    let split = |response: &[u8]| -> (String, Vec<u8>) {
        let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&response[..end]).to_lowercase(),
            response[end + 4..].to_vec(),
        )
    };
    let path = format!("/api/recordings/{}", cdr["session"].as_str().unwrap());
    let (head, body) = split(&get(&path, None));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: audio/wav"), "{head}");
    let whole = body;
    let (head, body) = split(&get(&path, Some("bytes=0-3")));
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert_eq!(body, b"RIFF");
    let (head, _) = split(&get(
        "/api/recordings/0190f0e0-0000-7000-8000-000000000000",
        None,
    ));
    assert!(head.starts_with("http/1.1 404"), "{head}");
    whole
}
