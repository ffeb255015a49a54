//! SIP over TLS on a `tls:` listener: registration and keep-alives on one connection, a
//! certificate replaced on disk while connections live, and what is not TLS (plain SIP,
//! a client with no cipher in common) refused and counted. baresip over TLS, with audio,
//! is in `baresip.rs`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use wasmpbx::clock::monotonic_now;

use crate::common::server::{Server, http, metric};
use crate::common::tls::{Certs, TestCa, TlsClient};

/// A server with a `tls:` listener presenting a test CA's certificate (and UDP, TCP as
/// usual).
fn tls_server() -> (Certs, Server) {
    let certs = Certs::new();
    let server = Server::start(&format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\n\
         tls_cert = {:?}\ntls_key = {:?}\n",
        certs.cert.display().to_string(),
        certs.key.display().to_string()
    ));
    (certs, server)
}

fn options(client: &TlsClient, cseq: u32) -> String {
    let local = client.local_addr();
    format!(
        "OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-opt-{cseq}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@pbx.test>;tag=o{cseq}\r\nTo: <sip:pbx.test>\r\n\
Call-ID: tls-options-{}\r\nCSeq: {cseq} OPTIONS\r\nContent-Length: 0\r\n\r\n",
        local.port()
    )
}

#[test]
fn a_phone_registers_over_tls_and_its_keepalives_are_answered() {
    let (certs, server) = tls_server();
    let ca = &certs.ca;

    let mut phone = TlsClient::connect(server.tls(), &ca.pem(), "127.0.0.1").unwrap();
    let ok = phone.register("2001", "s3cret", "pbx.test");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}\n{}", server.log());
    let (_, registrations) = http(server.http, "GET", "/api/registrations", None, "");
    let registrations: serde_json::Value = serde_json::from_str(&registrations).unwrap();
    let binding = &registrations[0];
    assert_eq!(binding["transport"], "tls", "{registrations}");
    // Requests to the phone go back over the connection it registered on.
    assert_eq!(
        binding["source"],
        phone.local_addr().to_string(),
        "{registrations}"
    );

    // RFC 5626 §3.5.1: a CRLFCRLF ping gets a CRLF pong, and the connection lives on.
    phone.send(b"\r\n\r\n");
    assert_eq!(phone.read_raw(Duration::from_secs(5)), b"\r\n");
    phone.send(options(&phone, 1).as_bytes());
    let answer = phone.read_message(Duration::from_secs(5)).unwrap();
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
}

#[test]
fn a_new_certificate_is_presented_without_a_restart_and_live_connections_stay() {
    let (certs, server) = tls_server();
    let ca = &certs.ca;
    let mut live = TlsClient::connect(server.tls(), &ca.pem(), "127.0.0.1").unwrap();
    let first = live.server_certificate();

    // Half a file (a copy still being written): refused, the old certificate stays.
    std::fs::write(&certs.cert, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    let deadline = monotonic_now() + Duration::from_secs(10);
    while !server.log().contains("keeping the current certificate") {
        assert!(monotonic_now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let meanwhile = TlsClient::connect(server.tls(), &ca.pem(), "127.0.0.1").unwrap();
    assert_eq!(meanwhile.server_certificate(), first);

    // The renewed certificate, moved into place: new connections get it.
    let (renewed, renewed_key) = ca.issue(&["127.0.0.1"], certs.dir.path(), "renewed");
    std::fs::rename(&renewed_key, &certs.key).unwrap();
    std::fs::rename(&renewed, &certs.cert).unwrap();
    let deadline = monotonic_now() + Duration::from_secs(10);
    loop {
        let client = TlsClient::connect(server.tls(), &ca.pem(), "127.0.0.1").unwrap();
        if client.server_certificate() != first {
            break;
        }
        assert!(
            monotonic_now() < deadline,
            "still the old certificate\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        server
            .log()
            .contains("sip.tls_cert: the certificate changed")
    );
    // The connection made before still works.
    live.send(options(&live, 2).as_bytes());
    let answer = live.read_message(Duration::from_secs(5)).unwrap();
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
}

#[test]
fn plain_sip_and_a_client_without_a_common_cipher_are_refused_and_counted() {
    let (certs, server) = tls_server();
    let ca = &certs.ca;

    // Plain SIP on the TLS port: no SIP answer, the connection closed.
    let mut plain = TcpStream::connect(server.tls()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = plain.write_all(
        b"OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKp\r\n\
From: <sip:x@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\nCall-ID: plain\r\nCSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n",
    );
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"SIP/2.0"), "{answer:?}");

    // OpenSSL offering only a TLS 1.2 cipher suite the host does not take (RSA key
    // exchange, CBC): the handshake fails.
    let openssl = Command::new("openssl")
        .args(["s_client", "-connect", &server.tls().to_string()])
        .args(["-tls1_2", "-cipher", "AES128-SHA", "-CAfile"])
        .arg(certs.ca_file())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    assert!(
        !openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stdout)
    );

    // A client that does not trust the host's CA gives up (its side of the handshake).
    let stranger = TestCa::new("some other CA");
    assert!(TlsClient::connect(server.tls(), &stranger.pem(), "127.0.0.1").is_err());

    let deadline = monotonic_now() + Duration::from_secs(5);
    let failed = loop {
        let failed = metric(server.http, "wasmpbx_sip_tls_handshakes_failed_total").unwrap_or(0);
        if failed >= 3 || monotonic_now() > deadline {
            break failed;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(failed >= 3, "{failed}\n{}", server.log());
    assert!(server.log().contains("sip tls: handshake failed"));

    // And the listener still serves a phone that speaks TLS.
    let mut phone = TlsClient::connect(server.tls(), &ca.pem(), "127.0.0.1").unwrap();
    let ok = phone.register("2001", "s3cret", "pbx.test");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
}
