//! SDES-SRTP on a carrier's leg, end to end over real sockets: a caller on the carrier's
//! address offers `RTP/SAVP` with its key; the host answers with a key of its own;
//! what the caller sends encrypted reaches the return side (SIPp, echoing, plain RTP)
//! and comes back encrypted with the host's key. Forged and replayed packets are
//! dropped and counted; offers the leg's policy cannot take get 488. (baresip.rs has
//! phones doing SRTP with libre's own implementation.)
#![allow(clippy::disallowed_methods)] // a test's own deadlines run on the real clock

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use base64::Engine as _;
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

use crate::common::callers::{FLIP, sydney};
use crate::common::server::{Server, SippServer};

/// The caller's master key and salt.
const CALLER_KEY: [u8; 30] = [7; 30];

/// A carrier whose calls must be encrypted (calls from 127.0.0.2 are its), and a plain
/// return trunk to `return_port`.
fn config(return_port: u16) -> String {
    let location =
        sydney("listen").replace("[locations.vars]", "trunk = \"return\"\n[locations.vars]");
    format!(
        r#"
[[trunks]]
name = "carrier"
uri = "sip:127.0.0.2:5999"
inbound = ["127.0.0.2"]
srtp = "required"

[[trunks]]
name = "return"
uri = "sip:127.0.0.1:{return_port}"
srtp = "off"
{location}"#
    )
}

/// The carrier's caller: SIP and RTP sockets on 127.0.0.2.
struct Caller {
    sip: UdpSocket,
    rtp: UdpSocket,
    server: SocketAddr,
}

impl Caller {
    fn new(server: &Server) -> Self {
        let bind = || {
            let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            socket
        };
        Caller {
            sip: bind(),
            rtp: bind(),
            server: server.udp,
        }
    }

    /// Offer `media_lines` (the audio line and its attributes) in an INVITE to the flip
    /// number; the final response.
    fn invite(&self, call_id: &str, media_lines: &str) -> String {
        let rtp = self.rtp.local_addr().unwrap();
        let sdp = format!(
            "v=0\r\no=carrier 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n{}",
            media_lines.replace("PORT", &rtp.port().to_string())
        );
        let local = self.sip.local_addr().unwrap();
        let invite = format!(
            "INVITE sip:{FLIP}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\n\
From: <sip:0400@127.0.0.2>;tag={call_id}\r\nTo: <sip:{FLIP}@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:caller@{local}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        self.sip.send_to(invite.as_bytes(), self.server).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sip.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code: u16 = text[8..11].parse().unwrap_or(0);
            if code >= 200 {
                return text;
            }
        }
        panic!("no final response to {call_id}");
    }

    /// ACK or BYE in the dialog the host's 200 `ok` made.
    fn in_dialog(&self, ok: &str, method: &str, cseq: u32) {
        let header = |name: &str| {
            ok.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap()
                .to_owned()
        };
        let local = self.sip.local_addr().unwrap();
        let request = format!(
            "{method} sip:wasmpbx@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{method}{cseq}\r\n\
From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            header("From"),
            header("To"),
            header("Call-ID")
        );
        self.sip.send_to(request.as_bytes(), self.server).unwrap();
    }
}

fn context(key: &[u8]) -> Context {
    Context::new(
        &key[..16],
        &key[16..],
        ProtectionProfile::Aes128CmHmacSha1_80,
        None,
        None,
    )
    .unwrap()
}

/// A PCMA packet with payload bytes `fill`.
fn audio(sequence: u16, fill: u8) -> Vec<u8> {
    let mut packet = vec![0x80, 8];
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
    packet.extend_from_slice(&0x5eed_u32.to_be_bytes());
    packet.extend_from_slice(&[fill; 160]);
    packet
}

fn metric(server: &Server, name: &str) -> u64 {
    crate::common::server::metric(server.http, name)
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

const SRTP_AUDIO: &str =
    "m=audio PORT RTP/SAVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

#[test]
fn an_encrypted_carrier_leg_is_decrypted_to_a_plain_one_and_back() {
    let ret = SippServer::start("return_number.xml", &["-rtp_echo", "-m", "1"]);
    let server = Server::start(&config(ret.port));
    let caller = Caller::new(&server);
    let key = base64::engine::general_purpose::STANDARD.encode(CALLER_KEY);
    let ok = caller.invite(
        "srtp-call",
        &format!("{SRTP_AUDIO}a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"),
    );
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    caller.in_dialog(&ok, "ACK", 1);
    assert!(ok.contains("RTP/SAVP 8 101"), "{ok}");
    assert!(
        !ok.contains(&key),
        "the caller's key never comes back: {ok}"
    );
    let host_key = ok
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:"))
        .expect("the host's key, for the offered tag");
    let host_key = base64::engine::general_purpose::STANDARD
        .decode(host_key)
        .unwrap();
    let port: u16 = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next()?.parse().ok())
        .unwrap();
    let host = SocketAddr::from(([127, 0, 0, 1], port));

    let mut to_host = context(&CALLER_KEY);
    let mut from_host = context(&host_key);
    let rejected_before = metric(&server, "wasmpbx_srtp_packets_rejected_total");
    let mut buf = [0u8; 2048];
    let mut echoed = 0;
    for sequence in 1..=50u16 {
        let sent = to_host.encrypt_rtp(&audio(sequence, 0x55)).unwrap();
        caller.rtp.send_to(&sent, host).unwrap();
        // Now and then a forged packet (one bit of the payload flipped), and a replay.
        if sequence % 10 == 0 {
            let mut forged = to_host
                .encrypt_rtp(&audio(sequence + 1000, 0x66))
                .unwrap()
                .to_vec();
            forged[30] ^= 1;
            caller.rtp.send_to(&forged, host).unwrap();
            caller.rtp.send_to(&sent, host).unwrap();
        }
        while let Ok(n) = caller.rtp.recv(&mut buf) {
            let packet = from_host
                .decrypt_rtp(&buf[..n])
                .expect("what the host sends decrypts with its key");
            assert_eq!(
                packet[12..],
                [0x55; 160],
                "the echo of what the caller sent"
            );
            echoed += 1;
            if echoed == sequence {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        echoed >= 45,
        "{echoed} of 50 packets came back through the plain leg"
    );
    let rejected = metric(&server, "wasmpbx_srtp_packets_rejected_total") - rejected_before;
    assert_eq!(
        rejected, 10,
        "5 forged and 5 replayed packets dropped and counted"
    );
    caller.in_dialog(&ok, "BYE", 2);
    assert_eq!(
        ret.wait(Duration::from_secs(10)),
        0,
        "the return side saw the call end"
    );
}

#[test]
fn offers_the_leg_cannot_take_are_refused_with_488() {
    let server = Server::start(&config(5999));
    let caller = Caller::new(&server);
    let plain = "m=audio PORT RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    let refused = caller.invite("plain", plain);
    assert!(
        refused.starts_with("SIP/2.0 488"),
        "plain RTP to a required leg: {refused}"
    );
    let bad_key = caller.invite(
        "bad-key",
        &format!("{SRTP_AUDIO}a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:bm90IGEga2V5\r\n"),
    );
    assert!(
        bad_key.starts_with("SIP/2.0 488"),
        "a key that is no key: {bad_key}"
    );
    let log = server.log();
    assert!(
        log.contains("plain RTP offered, and srtp is required"),
        "{log}"
    );
    assert!(log.contains("the key is not 30 bytes of base64"), "{log}");
    assert!(!log.contains("bm90IGEga2V5"), "keys are never logged");
}
