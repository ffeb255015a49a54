//! Which of the host's addresses a leg sees: a phone registered over TLS is called over
//! TLS, and Via and Contact name the TLS listener, so its next request comes back
//! encrypted; UDP legs keep the UDP address.

use super::world::{FAR_END, WALL, World, addr, to_alice};
use crate::registrar::Binding;
use crate::sip::message;
use crate::sip::transaction::Transport;

/// Alice's phone on TLS, connected from this (ephemeral) port.
const TLS_PHONE: &str = "127.0.0.1:40123";

fn with_tls_phone() -> World {
    let mut w = World::new();
    let binding = Binding {
        user_id: "alice".into(),
        device: "tls-phone".into(),
        contact: "sip:2001@127.0.0.1:5071;transport=tls".into(),
        instance: None,
        user_agent: Some("tls-phone".into()),
        transport: Transport::Tls,
        source: addr(TLS_PHONE),
        expires_at: WALL + 3600,
        call_id: "reg-tls".into(),
        cseq: 1,
    };
    w.pbx.registrar.restore(WALL, vec![binding]);
    w
}

#[test]
fn a_phone_registered_over_tls_is_called_and_hung_up_over_tls() {
    let mut w = with_tls_phone();
    w.far_end_calls("0400", "100", "pstn-1");
    let id = w.session();
    w.route(id, vec![to_alice()]);
    w.drain();
    // Sent on the connection it registered from, naming the TLS listener.
    let invite = w.last_to(TLS_PHONE, "INVITE ");
    assert!(
        invite.contains("Via: SIP/2.0/TLS 127.0.0.1:5061;"),
        "{invite}"
    );
    assert!(
        invite.contains("Contact: <sip:wasmpbx@127.0.0.1:5061;transport=tls>"),
        "{invite}"
    );
    // The UDP desk's INVITE keeps the UDP address.
    let desk = w.last_to(super::world::DESK, "INVITE ");
    assert!(desk.contains("Via: SIP/2.0/UDP 127.0.0.1:5060;"), "{desk}");
    assert!(
        desk.contains("Contact: <sip:wasmpbx@127.0.0.1:5060>"),
        "{desk}"
    );

    w.respond(TLS_PHONE, &invite, 200);
    let ok = w.last_to(FAR_END, "SIP/2.0 200");
    assert!(
        ok.contains("<sip:wasmpbx@127.0.0.1:5060>"),
        "the far end is on UDP: {ok}"
    );
    let ack = w.last_to(TLS_PHONE, "ACK ");
    assert!(ack.contains("Via: SIP/2.0/TLS 127.0.0.1:5061;"), "{ack}");
    // The far end (UDP) hangs up: the host's BYE goes to the phone over TLS.
    let a_tag = message::to_tag(&message::parse(ok.as_bytes()).unwrap()).unwrap();
    let bye = format!(
        "BYE sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-far-bye\r\n\
From: <sip:0400@127.0.0.2>;tag=pstn-1\r\nTo: <sip:100@127.0.0.1>;tag={a_tag}\r\nCall-ID: pstn-1\r\n\
CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    w.deliver(FAR_END, &bye);
    let bye = w.last_to(TLS_PHONE, "BYE ");
    assert!(bye.contains("Via: SIP/2.0/TLS 127.0.0.1:5061;"), "{bye}");
}

#[test]
fn a_call_placed_over_tls_is_answered_with_the_tls_contact() {
    let mut w = with_tls_phone();
    w.over_tls.push(addr(TLS_PHONE));
    w.device_invite(TLS_PHONE, "0290000001");
    let out = w.last_to(super::world::TRUNK, "INVITE ");
    assert!(
        out.contains("Via: SIP/2.0/UDP 127.0.0.1:5060;"),
        "the trunk is UDP: {out}"
    );
    w.respond(super::world::TRUNK, &out, 200);
    let ok = w.last_to(TLS_PHONE, "SIP/2.0 200");
    assert!(
        ok.contains("Contact: <sip:wasmpbx@127.0.0.1:5061;transport=tls>"),
        "{ok}"
    );
}
