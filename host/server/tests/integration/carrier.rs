//! Carrier trunks against a carrier nobody here wrote: Kamailio as an ITSP edge (digest
//! auth on INVITE and REGISTER, a registrar for our registration, Record-Route), dnsmasq
//! serving its SRV and A records, SIPp as the PSTN on both sides (tests/carrier/).

use std::path::Path;
use std::time::Duration;

use wasmpbx::clock::monotonic_now;

use crate::common::callers::{FLIP, sydney};
use crate::common::carrier::{Dns, DnsRecord, Kamailio, KamailioTls};
use crate::common::server::{Server, SippServer, free_port, http, sipp};
use crate::common::tls::TestCa;

/// Where "the PSTN" calls from: the carrier sends what comes from here to our
/// registration, and takes everything else as the PBX's outbound calls.
const PSTN_IP: &str = "127.0.0.9";
/// Where a caller straight to wasmpbx calls from: the trunk's `inbound` address.
const CALLER_IP: &str = "127.0.0.8";
const REALM: &str = "carrier.test";

/// A server with the `listen` script on the flip number, forwarding to the return number
/// through `trunk` (the `[[trunks]]` table's keys after its name); `sip` are more keys of
/// its `[sip]` table.
fn server(trunk: &str, sip: &str) -> Server {
    let config = format!(
        r#"
[sip]
{sip}

[[trunks]]
name = "carrier"
{trunk}
{sydney}"#,
        sydney = sydney("listen")
    );
    Server::start_with_scripts(&config, &[("listen", test_components::LISTEN)])
}

fn trunks(server: &Server) -> serde_json::Value {
    let (status, body) = http(server.http, "GET", "/api/trunks", None, "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Poll `/api/trunks` until `check` holds (at most `limit`).
fn wait_for(
    server: &Server,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = monotonic_now() + limit;
    loop {
        let now = trunks(server);
        if check(&now) || monotonic_now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn registration_state(trunks: &serde_json::Value) -> String {
    trunks[0]["registration"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The PSTN's call into the carrier, for the flip number: 0 when it completed.
fn pstn_calls(carrier: &Kamailio, scenario: &str) -> i32 {
    sipp(
        carrier.addr(),
        scenario,
        "",
        &["-i", PSTN_IP, "-s", FLIP, "-m", "1"],
    )
}

/// A call from the trunk's `inbound` address straight to wasmpbx, for the flip number;
/// SIPp's exit code.
fn direct_call(server: &Server, scenario: &str) -> i32 {
    sipp(
        server.udp,
        scenario,
        "",
        &["-i", CALLER_IP, "-s", FLIP, "-m", "1"],
    )
}

/// INVITEs the carrier took from the PBX (its log names each request's source).
fn invites_from_pbx(carrier: &Kamailio) -> usize {
    carrier
        .log()
        .lines()
        .filter(|l| l.contains("<- INVITE") && l.contains("from 127.0.0.1:"))
        .count()
}

#[test]
fn a_call_arrives_on_our_registration_and_goes_out_authenticated_with_diversion_and_pai() {
    let (pstn, edge) = pstn_behind_one_edge(&["-trace_msg"], None);
    registered_call_out_and_back(pstn, &edge, Link::plain("udp", &edge));
}

#[test]
fn over_tcp_the_registration_and_both_calls_use_connections() {
    let (pstn, edge) = pstn_behind_one_edge(&["-trace_msg"], None);
    let server = registered_call_out_and_back(pstn, &edge, Link::plain("tcp", &edge));
    let log = server.log();
    assert!(!log.contains("connect failed"), "{log}");
}

#[test]
fn over_tls_the_carrier_certificate_is_checked_and_both_calls_use_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, pstn, edge) = pstn_behind_a_tls_edge(certs.path(), &["-trace_msg"]);
    // Our own listener, for the carrier's calls to our registration.
    let (our_cert, our_key) = ca.issue(&["127.0.0.1"], certs.path(), "pbx");
    let link = Link {
        transport: "tls",
        edge: edge.tls_addr(),
        trunk: format!("tls_ca = {:?}", ca.write(certs.path(), "ca.pem")),
        sip: format!(
            "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\n\
             tls_cert = {our_cert:?}\ntls_key = {our_key:?}"
        ),
    };
    let server = registered_call_out_and_back(pstn, &edge, link);
    let log = server.log();
    assert!(!log.contains("connect failed"), "{log}");
    // Kamailio saw everything of ours arrive over TLS (the fixture's readiness probe
    // comes from 127.0.0.1 too, over UDP).
    let carrier_log = edge.log();
    let from_us: Vec<&str> = carrier_log
        .lines()
        .filter(|l| l.contains("<- ") && l.contains("from 127.0.0.1:"))
        .filter(|l| !l.contains("(call-id probe-"))
        .collect();
    assert!(from_us.len() >= 4, "{carrier_log}");
    assert!(
        from_us.iter().all(|l| l.ends_with("over tls")),
        "{carrier_log}"
    );
}

#[test]
fn a_tls_carrier_whose_certificate_does_not_check_out_is_refused_in_one_line() {
    let certs = tempfile::tempdir().unwrap();
    let (_ca, _pstn, edge) = pstn_behind_a_tls_edge(certs.path(), &[]);
    // We trust another CA: the carrier's certificate does not chain to it.
    let stranger = TestCa::new("some other CA");
    let server = server(
        &format!(
            r#"host = "{}"
transport = "tls"
tls_ca = {:?}
username = "acct1"
password = "secret"
register = true
inbound = ["{CALLER_IP}"]"#,
            edge.tls_addr(),
            stranger.write(certs.path(), "stranger.pem")
        ),
        "",
    );
    let now = wait_for(&server, Duration::from_secs(10), |t| {
        registration_state(t) == "failing"
    });
    assert_eq!(
        registration_state(&now),
        "failing",
        "{now}
{}",
        server.log()
    );
    // A call the script forwards through the carrier fails at once, never hangs.
    let started = monotonic_now();
    assert_eq!(
        direct_call(&server, "caller_fails.xml"),
        0,
        "{}",
        server.log()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = server.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connect failed") && l.contains("certificate"))
        .collect();
    assert!(!refused.is_empty(), "{log}");
    assert!(
        !edge.log().contains("<- INVITE"),
        "nothing reached the carrier in the clear"
    );
}

/// The PSTN (a SIPp UAS taking one call, with `extra` arguments) behind one carrier edge
/// on 127.0.0.2 that knows account `acct1` / `secret` (on TLS too, with `tls`).
fn pstn_behind_one_edge(extra: &[&str], tls: Option<KamailioTls<'_>>) -> (SippServer, Kamailio) {
    let mut args = vec!["-m", "1"];
    args.extend_from_slice(extra);
    let pstn = SippServer::start("pstn_uas_diversion.xml", &args);
    let pstn_addr = format!("127.0.0.1:{}", pstn.port).parse().unwrap();
    let edge = Kamailio::start_with_tls(
        "127.0.0.2",
        0,
        "edge",
        "acct1",
        "secret",
        REALM,
        pstn_addr,
        PSTN_IP,
        tls,
    );
    (pstn, edge)
}

/// [`pstn_behind_one_edge`] with the edge on TLS too, its certificate (for 127.0.0.2)
/// from a test CA it returns; the files in `certs`.
fn pstn_behind_a_tls_edge(certs: &Path, extra: &[&str]) -> (TestCa, SippServer, Kamailio) {
    let ca = TestCa::new("carrier test CA");
    let (cert, key) = ca.issue(&["127.0.0.2"], certs, "edge");
    let tls = KamailioTls {
        cert: &cert,
        key: &key,
    };
    let (pstn, edge) = pstn_behind_one_edge(extra, Some(tls));
    (ca, pstn, edge)
}

/// How the PBX reaches the carrier's edge: the transport, the edge's address on it, and
/// more keys for the trunk and the `[sip]` table.
struct Link {
    transport: &'static str,
    edge: std::net::SocketAddr,
    trunk: String,
    sip: String,
}

impl Link {
    fn plain(transport: &'static str, edge: &Kamailio) -> Self {
        Link {
            transport,
            edge: edge.addr(),
            trunk: String::new(),
            sip: String::new(),
        }
    }
}

/// Register with the carrier over `link`; a PSTN call comes in on the registration
/// and the `listen` script forwards it back out through the carrier.
fn registered_call_out_and_back(pstn: SippServer, edge: &Kamailio, link: Link) -> Server {
    let Link {
        transport,
        edge: edge_addr,
        trunk,
        sip,
    } = link;
    let server = server(
        &format!(
            r#"host = "{edge_addr}"
transport = "{transport}"
username = "acct1"
password = "secret"
register = true
register_expires = 300
send_pai = true
diversion = true
number_format = "+e164"
{trunk}"#
        ),
        &sip,
    );
    let now = wait_for(&server, Duration::from_secs(10), |t| {
        registration_state(t) == "registered"
    });
    assert_eq!(
        registration_state(&now),
        "registered",
        "{now}\n{}",
        edge.log()
    );
    assert_eq!(
        now[0]["registration"]["registered_with"],
        edge_addr.to_string()
    );

    // The PSTN calls the flip number at the carrier, which sends it to our registration;
    // the listen script forwards it to the return number back through the carrier.
    assert_eq!(
        pstn_calls(edge, "carrier_caller.xml"),
        0,
        "{}",
        server.log()
    );
    let (code, messages) = pstn.wait_with_messages(Duration::from_secs(30));
    assert_eq!(code, 0, "the PSTN saw Diversion and PAI: {messages}");
    assert!(
        messages.contains("Diversion: <sip:+61290000001@pbx.test>;reason=unconditional"),
        "{messages}"
    );
    assert!(
        messages.contains("P-Asserted-Identity: <sip:+61400000001@pbx.test>"),
        "{messages}"
    );
    // One challenge, one answer.
    assert_eq!(invites_from_pbx(edge), 2, "{}", edge.log());
    let log = server.log();
    assert!(!log.contains("secret"), "the password is never logged");
    let cdrs = server.cdrs();
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0]["disposition"], "answered", "{}", cdrs[0]);
    assert_eq!(cdrs[0]["location"], "sydney");
    assert_eq!(cdrs[0]["legs"][0][0], "+61290000098");
    let carrier_log = edge.log();
    let contact = match transport {
        "udp" => format!("<sip:acct1@{}>", server.udp),
        "tcp" => format!("<sip:acct1@{};transport=tcp>", server.tcp),
        _ => format!("<sip:acct1@{};transport={transport}>", server.tls()),
    };
    assert!(
        carrier_log
            .lines()
            .any(|l| l.contains(&format!("registered {contact}"))),
        "no registration of {contact} in {carrier_log}"
    );
    server
}

#[test]
fn wrong_credentials_show_in_the_api_fail_the_call_once_and_back_off() {
    let (_pstn, edge) = pstn_behind_one_edge(&[], None);
    let server = server(
        &format!(
            r#"host = "{}"
username = "acct1"
password = "wrong"
register = true
inbound = ["{CALLER_IP}"]"#,
            edge.addr()
        ),
        "",
    );
    let now = wait_for(&server, Duration::from_secs(10), |t| {
        registration_state(t) == "failing"
    });
    assert_eq!(registration_state(&now), "failing", "{now}");
    let reason = now[0]["registration"]["last_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.starts_with("403"), "{reason}");
    // A call the script forwards through the carrier: challenged, answered once, refused.
    let refused = direct_call(&server, "caller_refused.xml");
    assert_eq!(refused, 0, "the caller heard 403 at once: {}", server.log());
    assert_eq!(invites_from_pbx(&edge), 2, "{}", edge.log());
    let cdrs = server.cdrs();
    assert_eq!(cdrs[0]["legs"][0][1], 403, "{}", cdrs[0]);
    // No retry storm: the registration backs off (5 s, then 10 s).
    std::thread::sleep(Duration::from_secs(6));
    let registers = edge
        .log()
        .lines()
        .filter(|l| l.contains("<- REGISTER"))
        .count();
    assert!(
        (2..=4).contains(&registers),
        "{registers} REGISTERs in 6 s:\n{}",
        edge.log()
    );
    let metrics = http(server.http, "GET", "/metrics", None, "").1;
    assert!(
        metrics.contains("wasmpbx_trunk_registered{trunk=\"carrier\"} 0"),
        "{metrics}"
    );
}

#[test]
fn naptr_and_srv_targets_fail_over_when_one_dies_and_options_bring_it_back() {
    let pstn = SippServer::start("pstn_uas_diversion.xml", &["-m", "3"]);
    let pstn_addr = format!("127.0.0.1:{}", pstn.port).parse().unwrap();
    let (port_a, port_b) = (free_port("127.0.0.2"), free_port("127.0.0.3"));
    let mut edge_a = Kamailio::start(
        "127.0.0.2",
        port_a,
        "edge-a",
        "acct1",
        "secret",
        REALM,
        pstn_addr,
        PSTN_IP,
    );
    let edge_b = Kamailio::start(
        "127.0.0.3",
        port_b,
        "edge-b",
        "acct1",
        "secret",
        REALM,
        pstn_addr,
        PSTN_IP,
    );
    // NAPTR names the SRV records (no SRV sits at the default `_sip._udp.carrier.test`,
    // so only a client that reads the NAPTR finds the edges).
    let dns = Dns::start(&[
        DnsRecord::naptr(
            "carrier.test",
            10,
            10,
            "SIP+D2U",
            "_sip._udp.edges.carrier.test",
        ),
        DnsRecord::srv(
            "_sip._udp.edges.carrier.test",
            "a.carrier.test",
            port_a,
            10,
            50,
        ),
        DnsRecord::srv(
            "_sip._udp.edges.carrier.test",
            "b.carrier.test",
            port_b,
            20,
            50,
        ),
        DnsRecord::a("a.carrier.test", "127.0.0.2"),
        DnsRecord::a("b.carrier.test", "127.0.0.3"),
    ]);
    let server = server(
        &format!(
            r#"host = "carrier.test"
username = "acct1"
password = "secret"
options_interval = 1
send_pai = true
diversion = true
inbound = ["{CALLER_IP}"]"#
        ),
        &format!("dns_servers = [\"{}\"]", dns.addr()),
    );
    let now = wait_for(&server, Duration::from_secs(10), |t| {
        t[0]["targets"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x["state"] == "up"))
    });
    let targets = &now[0]["targets"];
    assert_eq!(
        targets[0]["address"],
        edge_a.addr().to_string(),
        "SRV priority first: {now}"
    );
    assert_eq!(targets[1]["address"], edge_b.addr().to_string());
    assert!(
        targets
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "up"),
        "{now}"
    );
    let call = || direct_call(&server, "carrier_caller.xml");

    assert_eq!(call(), 0, "{}", server.log());
    assert_eq!(
        invites_from_pbx(&edge_a),
        2,
        "the first call takes the first target"
    );

    edge_a.kill();
    let died = monotonic_now();
    assert_eq!(call(), 0, "the call fails over: {}", server.log());
    let failover = died.elapsed();
    println!(
        "failover: {:.1} s from the target's death to the call completed on the next",
        failover.as_secs_f64()
    );
    // Its share of Timer B (32 s over two targets), the call's own second, and slack.
    assert!(failover < Duration::from_secs(16 + 1 + 4), "{failover:?}");
    let now = trunks(&server);
    assert_eq!(now[0]["targets"][0]["state"], "down", "{now}");
    assert_eq!(now[0]["targets"][0]["in_rotation"], false, "{now}");
    let started = monotonic_now();
    assert_eq!(call(), 0, "the next call goes straight to the live target");
    let next_call = started.elapsed();
    println!("the next call: {:.1} s", next_call.as_secs_f64());
    assert!(next_call < Duration::from_secs(6), "{next_call:?}");
    assert_eq!(invites_from_pbx(&edge_b), 4, "{}", edge_b.log());

    edge_a.restart();
    let restarted = monotonic_now();
    let now = wait_for(&server, Duration::from_secs(10), |t| {
        t[0]["targets"][0]["state"] == "up"
    });
    let back = restarted.elapsed();
    println!(
        "back in rotation {:.1} s after its restart",
        back.as_secs_f64()
    );
    assert_eq!(
        now[0]["targets"][0]["state"], "up",
        "OPTIONS found it again: {now}"
    );
    assert_eq!(pstn.wait(Duration::from_secs(10)), 0);
    let log = server.log();
    assert!(
        log.contains("failing over"),
        "each failover is logged: {log}"
    );
    assert!(log.contains("trunk target up again"), "{log}");
}

#[test]
fn a_tcp_trunk_that_refuses_connections_fails_the_forward_at_once() {
    // Nothing listens there.
    let closed = format!("127.0.0.2:{}", free_port("127.0.0.2"));
    let server = server(
        &format!(
            r#"host = "{closed}"
transport = "tcp"
inbound = ["{CALLER_IP}"]"#
        ),
        "",
    );
    let started = monotonic_now();
    let code = direct_call(&server, "caller_fails.xml");
    assert_eq!(code, 0, "the caller hears 408: {}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not Timer B: {:?}",
        started.elapsed()
    );
    let log = server.log();
    assert!(log.contains("tcp connect failed"), "{log}");
    let now = trunks(&server);
    assert_eq!(now[0]["targets"][0]["state"], "down", "{now}");
    assert_eq!(server.cdrs()[0]["legs"][0][1], 408);
}

#[test]
fn a_host_that_does_not_resolve_shows_in_the_api_and_the_forward_fails() {
    let dns = Dns::start(&[DnsRecord::a("edge.carrier.test", "127.0.0.2")]);
    let server = server(
        &format!(
            r#"host = "nowhere.carrier.test"
inbound = ["{CALLER_IP}"]"#
        ),
        &format!("dns_servers = [\"{}\"]", dns.addr()),
    );
    let now = wait_for(&server, Duration::from_secs(10), |t| {
        t[0]["resolve_error"].is_string()
    });
    let error = now[0]["resolve_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("nowhere.carrier.test"),
        "{now}\n{}",
        dns.log()
    );
    let code = direct_call(&server, "caller_fails.xml");
    assert_eq!(code, 0, "the caller hears 503: {}", server.log());
    assert_eq!(
        server.cdrs()[0]["legs"].as_array().map(Vec::len),
        Some(0),
        "no leg was tried"
    );
    let log = server.log();
    assert!(log.contains("trunk host does not resolve"), "{log}");
}

#[test]
fn an_inbound_host_name_keeps_its_addresses_while_the_dns_is_down() {
    let dns = Dns::start(&[DnsRecord::a("calls.carrier.test", CALLER_IP)]);
    let server = server(
        r#"host = "nowhere.carrier.test"
inbound = ["calls.carrier.test"]"#,
        &format!("dns_servers = [\"{}\"]", dns.addr()),
    );
    let refused = |server: &Server| {
        server
            .log()
            .matches("from outside the trunks refused")
            .count()
    };
    // Taken as the carrier's once the name resolved (the forward itself fails: the
    // trunk's own host does not resolve).
    let deadline = monotonic_now() + Duration::from_secs(10);
    loop {
        assert_eq!(direct_call(&server, "caller_fails.xml"), 0);
        if server.cdrs().len() == 1 || monotonic_now() > deadline {
            break;
        }
    }
    assert_eq!(
        server.cdrs().len(),
        1,
        "the call was the carrier's: {}",
        server.log()
    );
    let refused_before = refused(&server);
    // The DNS server goes away; the next lookups (TTL 0: every 5 s) fail.
    drop(dns);
    let deadline = monotonic_now() + Duration::from_secs(90);
    while !server.log().contains("inbound host does not resolve") && monotonic_now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        server.log().contains("inbound host does not resolve"),
        "the lookup failed: {}",
        server.log()
    );
    assert_eq!(direct_call(&server, "caller_fails.xml"), 0);
    assert_eq!(refused(&server), refused_before, "{}", server.log());
    assert_eq!(
        server.cdrs().len(),
        2,
        "still the carrier's, from its last known address: {}",
        server.log()
    );
}
