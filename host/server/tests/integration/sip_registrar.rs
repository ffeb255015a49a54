//! The registrar and SIP transport against SIPp and raw sockets on loopback.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::common::server::{Server, credentials, sipp};

/// Send one datagram, return the status line and header names of the answer (if any).
fn ask(server: SocketAddr, bytes: &[u8]) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    socket.send_to(bytes, server).unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn options(branch: &str) -> String {
    format!(
        "OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{branch};rport\r\n\
From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:pbx.test>\r\nCall-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn sipp_registers_over_udp_and_tcp() {
    let server = Server::start("");
    assert_eq!(
        sipp(
            server.udp,
            "register.xml",
            &credentials("2001", "s3cret"),
            &["-m", "1"]
        ),
        0
    );
    assert_eq!(
        sipp(
            server.tcp,
            "register.xml",
            &credentials("2002", "b0b-secret"),
            &["-m", "1", "-t", "t1"]
        ),
        0
    );
}

#[test]
fn wrong_passwords_and_unknown_users_are_refused_alike() {
    let server = Server::start("");
    assert_eq!(
        sipp(
            server.udp,
            "register_refused.xml",
            &credentials("2001", "guess"),
            &["-m", "1"]
        ),
        0
    );
    assert_eq!(
        sipp(
            server.udp,
            "register_refused.xml",
            &credentials("2999", "guess"),
            &["-m", "1"]
        ),
        0
    );
}

#[test]
fn repeated_failures_throttle_the_source() {
    let server = Server::start("");
    // Ten wrong passwords from 127.0.0.7 ...
    assert_eq!(
        sipp(
            server.udp,
            "register_refused.xml",
            &credentials("2001", "guess"),
            &["-m", "10", "-i", "127.0.0.7"]
        ),
        0
    );
    // ... and now even the right one is refused from there,
    assert_eq!(
        sipp(
            server.udp,
            "register_blocked.xml",
            &credentials("2001", "s3cret"),
            &["-m", "1", "-i", "127.0.0.7"]
        ),
        0
    );
    // while another address registers normally.
    assert_eq!(
        sipp(
            server.udp,
            "register.xml",
            &credentials("2001", "s3cret"),
            &["-m", "1", "-i", "127.0.0.8"]
        ),
        0
    );
    // An admin sees the attack in /metrics.
    let (_, metrics) = crate::common::server::http(server.http, "GET", "/metrics", None, "");
    assert!(
        metrics.contains("wasmpbx_auth_failures_total{kind=\"sip\"} 10\n")
            && metrics.contains("wasmpbx_auth_failures_total{kind=\"sip-blocked\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn registrations_survive_a_restart() {
    let server = Server::start("");
    assert_eq!(
        sipp(
            server.udp,
            "register.xml",
            &credentials("2001", "s3cret"),
            &["-m", "1"]
        ),
        0
    );
    let dir = server.stop();
    let again = Server::start_in(dir, "");
    assert!(
        again
            .banner
            .iter()
            .any(|l| l.contains("(1 registrations restored)")),
        "{:?}",
        again.banner
    );
}

#[test]
fn options_is_answered_for_keepalives_and_monitoring() {
    let server = Server::start("");
    let reply = ask(server.udp, options("o1").as_bytes()).expect("an answer");
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains(";received=127.0.0.1;rport="),
        "rport/received stamped: {reply}"
    );
    assert!(reply.contains("Allow: INVITE"), "{reply}");
}

#[test]
fn malformed_and_hostile_input_gets_400_or_silence_and_the_host_serves_on() {
    let server = Server::start("");
    let good = options("ok");
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("truncated", good.as_bytes()[..60].to_vec(), None),
        (
            "missing Call-ID",
            good.replace("Call-ID: probe-ok\r\n", "").into_bytes(),
            None,
        ),
        (
            "bad CSeq",
            good.replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS")
                .into_bytes(),
            Some("SIP/2.0 400 Bad Request"),
        ),
        (
            "Content-Length too big",
            good.replace("Content-Length: 0", "Content-Length: 500")
                .into_bytes(),
            Some("SIP/2.0 400 Bad Request"),
        ),
        // 64 000 bytes of header is within the 64 KiB limit: served.
        (
            "huge header",
            good.replace(
                "Max-Forwards: 70",
                &format!("X-Junk: {}", "a".repeat(64_000)),
            )
            .into_bytes(),
            Some("SIP/2.0 200 OK"),
        ),
        ("garbage", b"\x00\x01\x02garbage\xff\xfe".to_vec(), None),
        ("empty lines", b"\r\n\r\n\r\n".to_vec(), None),
    ];
    for (what, bytes, expected) in cases {
        let reply = ask(server.udp, &bytes);
        match expected {
            Some(status) => {
                let reply = reply.unwrap_or_else(|| panic!("{what}: no answer"));
                assert!(reply.starts_with(status), "{what}: {reply}");
            }
            None => assert!(
                reply
                    .as_deref()
                    .is_none_or(|r| r.starts_with("SIP/2.0 400")),
                "{what}: {reply:?}"
            ),
        }
        let alive = ask(
            server.udp,
            options(what.replace(' ', "-").as_str()).as_bytes(),
        );
        assert!(
            alive.is_some_and(|r| r.starts_with("SIP/2.0 200")),
            "after {what} the host stopped answering"
        );
    }
    let malformed = crate::common::server::metric(server.http, "wasmpbx_sip_malformed_total")
        .expect("in /metrics");
    assert!(
        malformed >= 4,
        "malformed messages are counted: {malformed}"
    );
}

/// Whether an OPTIONS on `stream` is answered (false: the connection was closed).
fn answered_on(stream: &mut std::net::TcpStream, branch: &str) -> bool {
    use std::io::{Read, Write};
    let ask = options(branch).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    if stream.write_all(ask.as_bytes()).is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    matches!(stream.read(&mut reply), Ok(n) if n > 0 && reply.starts_with(b"SIP/2.0 200"))
}

#[test]
fn one_address_holds_at_most_256_sip_connections_and_others_are_still_served() {
    use crate::common::server::{closed_at_once, tcp_from};
    let server = Server::start("");
    let mut held: Vec<_> = (0..256)
        .map(|_| tcp_from("127.0.0.1", server.tcp))
        .collect();
    // The 257th from the same address is closed at once, before it says anything.
    let mut refused = tcp_from("127.0.0.1", server.tcp);
    assert!(
        closed_at_once(&mut refused),
        "the 257th connection from one address is closed"
    );
    // Those held are served, and so is another address.
    assert!(answered_on(&mut held[0], "held-first"));
    assert!(answered_on(&mut held[255], "held-last"));
    assert!(answered_on(
        &mut tcp_from("127.0.0.2", server.tcp),
        "another-address"
    ));
    // One closed gives its place back.
    held.pop();
    let mut again = (0..50)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tcp_from("127.0.0.1", server.tcp)
        })
        .find_map(|mut stream| answered_on(&mut stream, "again").then_some(stream));
    assert!(again.take().is_some(), "a place freed is taken again");
}

#[test]
fn garbage_on_tcp_closes_that_connection_only() {
    use crate::common::server::tcp_read_after;
    let server = Server::start("");
    assert!(
        matches!(
            tcp_read_after(server.tcp, b"NOT SIP AT ALL\r\nno: length\r\n\r\n"),
            Ok(0) | Err(_)
        ),
        "the connection is closed"
    );
    // Over 64 KiB in one message: closed too.
    let huge = options("big").replace(
        "Max-Forwards: 70",
        &format!("X-Junk: {}", "a".repeat(70_000)),
    );
    assert!(
        matches!(tcp_read_after(server.tcp, huge.as_bytes()), Ok(0) | Err(_)),
        "the oversized message's connection is closed"
    );
    // A well-behaved client on TCP is served.
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
