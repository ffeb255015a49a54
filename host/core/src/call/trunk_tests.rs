//! Calls through a carrier trunk on the fake clock: the carrier's digest challenge, the
//! caller id and Diversion it is shown, failover between its targets.

use std::time::Duration;

use super::world::{DESK, FAR_END, World, addr, to_alice};
use crate::routing::{Action, Event, ForwardTarget};
use crate::sip::message;
use crate::trunks::{Health, ResolvedTarget};

/// The carrier's two edges, as its SRV records give them.
const EDGE_A: &str = "127.0.0.5:5060";
const EDGE_B: &str = "127.0.0.6:5060";

const CARRIER: &str = r#"
[sip]
domain = "pbx.test"

[[trunks]]
name = "carrier"
host = "carrier.test"
username = "acct1"
password = "secret"
send_pai = true
diversion = true
number_format = "+e164"
country_code = "61"
inbound = ["127.0.0.2"]

[[locations]]
name = "sydney"
flip_number = "+61290000001"
script = "x"
fallback_number = "+61290000099"

[[users]]
id = "alice"
extension = "2001"
password = "s3cret"
"#;

/// A world whose carrier resolved to two edges, and a call from the PSTN to the flip
/// number that the script forwards to `0290000099` through the carrier.
fn forwarding() -> World {
    let mut w = World::with_config(CARRIER);
    let targets = [(EDGE_A, 10), (EDGE_B, 20)]
        .map(|(a, priority)| ResolvedTarget {
            addr: addr(a),
            priority,
            weight: 0,
        })
        .to_vec();
    w.pbx.trunk_resolved(w.ambient(), "carrier", Ok(targets));
    w.drain();
    w.far_end_calls("0400000001", "61290000001", "far-call");
    let forward = Action::Forward {
        target: ForwardTarget::Number("0290000099".into()),
        trunk: None,
        ring_timeout_ms: 60_000,
        caller_id: None,
    };
    let id = w.session();
    w.route(id, vec![forward]);
    w.drain();
    w
}

fn header(text: &str, name: &str) -> Option<String> {
    message::header_value(&message::parse(text.as_bytes()).unwrap(), name)
}

fn challenge(w: &mut World, to: &str, invite: &str, nonce: &str) {
    let challenge = format!(
        "Proxy-Authenticate: Digest realm=\"carrier.test\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5\r\n"
    );
    w.respond_with(to, invite, 407, &challenge);
}

#[test]
fn a_flip_number_matches_in_the_carriers_number_format() {
    let w = forwarding();
    assert_eq!(w.pbx.calls.summaries().len(), 1, "{:#?}", w.sent);
    let summary = &w.pbx.calls.summaries()[0];
    assert_eq!(summary.location.as_deref(), Some("sydney"));
}

#[test]
fn the_forward_shows_the_caller_and_the_flip_number_in_the_carriers_format() {
    let w = forwarding();
    let invite = w.last_to(EDGE_A, "INVITE ");
    assert!(
        invite.starts_with("INVITE sip:+61290000099@carrier.test SIP/2.0"),
        "{invite}"
    );
    let from = header(&invite, "From").unwrap();
    assert!(
        from.starts_with("<sip:+61400000001@carrier.test>"),
        "{from}"
    );
    assert_eq!(
        header(&invite, "P-Asserted-Identity").as_deref(),
        Some("<sip:+61400000001@carrier.test>")
    );
    assert_eq!(
        header(&invite, "Diversion").as_deref(),
        Some("<sip:+61290000001@carrier.test>;reason=unconditional")
    );
}

#[test]
fn a_challenged_invite_is_sent_again_with_credentials_and_completes() {
    let mut w = forwarding();
    let first = w.last_to(EDGE_A, "INVITE ");
    challenge(&mut w, EDGE_A, &first, "n1");
    // The transaction layer ACKs the 407; the INVITE goes again, authorised.
    let second = w.last_to(EDGE_A, "INVITE ");
    assert_ne!(first, second);
    let m = message::parse(second.as_bytes()).unwrap();
    assert_eq!(message::cseq(&m).map(|(n, _)| n), Some(2));
    assert_eq!(
        message::call_id(&m),
        message::call_id(&message::parse(first.as_bytes()).unwrap())
    );
    let authorization = header(&second, "Proxy-Authorization").unwrap();
    assert!(
        authorization.contains("username=\"acct1\""),
        "{authorization}"
    );
    assert!(authorization.contains("nc=00000001"), "{authorization}");
    assert!(
        !second.contains("secret"),
        "the password never goes on the wire"
    );
    w.respond(EDGE_A, &second, 200);
    let ack = w.last_to(EDGE_A, "ACK ");
    assert!(ack.contains("CSeq: 2 ACK"), "{ack}");
    assert!(w.last_to(FAR_END, "SIP/2.0 200").contains("CSeq: 1 INVITE"));
}

#[test]
fn a_second_challenge_means_wrong_credentials_and_the_forward_fails() {
    let mut w = forwarding();
    let first = w.last_to(EDGE_A, "INVITE ");
    challenge(&mut w, EDGE_A, &first, "n1");
    let second = w.last_to(EDGE_A, "INVITE ");
    challenge(&mut w, EDGE_A, &second, "n2");
    assert_eq!(w.count_to(EDGE_A, "INVITE "), 2, "no third try");
    assert_eq!(
        w.count_to(EDGE_B, "INVITE "),
        0,
        "wrong credentials are not a dead target"
    );
    // Not a 407 for the caller to answer: the trunk is unavailable.
    assert!(matches!(
        w.routed.last(),
        Some(Event::ForwardFailed { status: 503, reason, .. }) if reason == "Trunk Authentication Failed"
    ));
}

#[test]
fn a_503_moves_the_call_to_the_next_target_and_takes_the_first_out_of_rotation() {
    let mut w = forwarding();
    let first = w.last_to(EDGE_A, "INVITE ");
    w.respond(EDGE_A, &first, 503);
    let next = w.last_to(EDGE_B, "INVITE ");
    assert_eq!(
        message::cseq(&message::parse(next.as_bytes()).unwrap()).map(|(n, _)| n),
        Some(2)
    );
    let status = w.pbx.trunk_status(w.now);
    assert_eq!(status[0].targets[0].state, Health::Down);
    assert!(!status[0].targets[0].in_rotation);
    w.respond(EDGE_B, &next, 200);
    assert!(w.last_to(FAR_END, "SIP/2.0 200").contains("CSeq: 1 INVITE"));
    assert_eq!(w.pbx.trunk_status(w.now)[0].targets[1].state, Health::Up);
}

#[test]
fn a_503_with_retry_after_keeps_the_target_out_of_rotation_that_long() {
    let mut w = forwarding();
    let first = w.last_to(EDGE_A, "INVITE ");
    w.respond_with(EDGE_A, &first, 503, "Retry-After: 120\r\n");
    assert!(w.last_to(EDGE_B, "INVITE ").starts_with("INVITE "));
    let in_rotation = |w: &World| w.pbx.trunk_status(w.now)[0].targets[0].in_rotation;
    assert!(!in_rotation(&w));
    // Past the 30 s a failed target is held; not past the Retry-After.
    w.advance(Duration::from_secs(31));
    assert!(!in_rotation(&w), "held for the Retry-After");
    w.advance(Duration::from_secs(90));
    assert!(in_rotation(&w), "back after 120 s");
}

#[test]
fn a_408_or_504_from_the_carrier_fails_the_forward_without_trying_another_edge() {
    // The carrier answered: nobody picked up behind it (408), or its gateway timed out
    // (504). Another edge of the same carrier would ring the same callee again.
    for code in [408, 504] {
        let mut w = forwarding();
        let first = w.last_to(EDGE_A, "INVITE ");
        w.respond(EDGE_A, &first, code);
        assert_eq!(w.count_to(EDGE_B, "INVITE "), 0, "{code}");
        assert!(
            matches!(w.routed.last(), Some(Event::ForwardFailed { status, .. }) if *status == code),
            "{code}: {:?}",
            w.routed.last()
        );
        let status = w.pbx.trunk_status(w.now);
        assert_eq!(
            status[0].targets[0].state,
            Health::Up,
            "{code}: it answered"
        );
    }
}

#[test]
fn a_silent_target_gets_its_share_of_timer_b_then_the_next_is_tried() {
    let mut w = forwarding();
    assert_eq!(w.count_to(EDGE_A, "INVITE "), 1);
    w.advance(Duration::from_secs(15));
    assert_eq!(
        w.count_to(EDGE_B, "INVITE "),
        0,
        "not before its share (16 s of 32)"
    );
    w.advance(Duration::from_secs(1));
    assert_eq!(w.count_to(EDGE_B, "INVITE "), 1);
    let retransmissions = w.count_to(EDGE_A, "INVITE ");
    w.advance(Duration::from_secs(8));
    assert_eq!(
        w.count_to(EDGE_A, "INVITE "),
        retransmissions,
        "the silent target is let go"
    );
    let next = w.last_to(EDGE_B, "INVITE ");
    w.respond(EDGE_B, &next, 180);
    // 54 s in: past the second INVITE's Timer B (48 s), short of the 60 s ring timeout.
    w.advance(Duration::from_secs(30));
    assert_eq!(
        w.count_to(FAR_END, "SIP/2.0 180"),
        1,
        "the call goes on ringing"
    );
    // Past Timer B: a ringing target is not given up on (RFC 3261 §17.1.1.2).
    assert!(
        !w.routed
            .iter()
            .any(|e| matches!(e, Event::ForwardFailed { .. })),
        "{:?}",
        w.routed
    );
    assert_eq!(w.count_to(EDGE_B, "CANCEL "), 0);
    w.respond(EDGE_B, &next, 200);
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 200"), 1, "answered, 54 s in");
}

#[test]
fn the_dialog_takes_the_tag_of_the_2xx_not_of_the_ringing() {
    // RFC 3261 §12.1.2: a forking element at the carrier rings with one tag and
    // answers with another.
    let mut w = forwarding();
    let invite = w.last_to(EDGE_A, "INVITE ");
    w.respond_tagged(EDGE_A, &invite, 180, "", "early");
    w.respond_tagged(EDGE_A, &invite, 200, "", "final");
    let ack = w.last_to(EDGE_A, "ACK ");
    assert!(ack.contains(";tag=final"), "{ack}");
    assert!(!ack.contains("tag=early"), "{ack}");
}

/// The caller of [`forwarding`] gives up: its CANCEL.
fn caller_cancels(w: &mut World) {
    let cancel = format!(
        "CANCEL sip:61290000001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-far-call\r\n\
From: <sip:0400000001@127.0.0.2>;tag=far-call\r\nTo: <sip:61290000001@127.0.0.1>\r\nCall-ID: far-call\r\n\
CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    w.deliver(FAR_END, &cancel);
}

#[test]
fn a_carrier_answer_crossing_the_callers_cancel_is_acknowledged_and_hung_up() {
    // RFC 3261 §9.1: the 2xx crossed the CANCEL; the UAC must ACK it and BYE, or the
    // carrier bills a call answered into silence.
    let mut w = forwarding();
    let invite = w.last_to(EDGE_A, "INVITE ");
    w.respond(EDGE_A, &invite, 180);
    caller_cancels(&mut w);
    assert_eq!(
        w.count_to(FAR_END, "SIP/2.0 487"),
        1,
        "the caller's INVITE ends"
    );
    assert_eq!(w.count_to(EDGE_A, "CANCEL "), 1);
    assert!(w.records.pop().is_some(), "the call is over");
    w.respond(EDGE_A, &invite, 200);
    assert_eq!(w.count_to(EDGE_A, "ACK "), 1);
    let bye = w.last_to(EDGE_A, "BYE ");
    assert!(bye.contains("tag=dev"), "in the answered dialog: {bye}");
    // The carrier challenges the BYE, as it may any request: answered with credentials.
    challenge(&mut w, EDGE_A, &bye, "n7");
    let again = w.last_to(EDGE_A, "BYE ");
    assert!(header(&again, "Proxy-Authorization").is_some_and(|a| a.contains("nonce=\"n7\"")));
    w.respond(EDGE_A, &again, 200);
    let left = w.tables_left();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn after_a_ring_timeout_the_next_forward_connects_and_the_first_answering_late_is_hung_up() {
    let mut w = forwarding();
    let first = w.last_to(EDGE_A, "INVITE ");
    w.respond(EDGE_A, &first, 180);
    w.advance(Duration::from_secs(61));
    assert_eq!(w.count_to(EDGE_A, "CANCEL "), 1);
    assert!(matches!(
        w.routed.last(),
        Some(Event::ForwardFailed { status: 408, .. })
    ));
    // The script tries alice's devices instead; the carrier's 200 crosses its CANCEL.
    let id = w.session();
    w.route(id, vec![to_alice()]);
    w.drain();
    w.respond(EDGE_A, &first, 200);
    assert_eq!(w.count_to(EDGE_A, "ACK "), 1);
    assert_eq!(w.count_to(EDGE_A, "BYE "), 1, "the late answer is hung up");
    let to_desk = w.last_to(DESK, "INVITE ");
    w.respond(DESK, &to_desk, 200);
    assert_eq!(w.count_to(DESK, "BYE "), 0, "the desk has the call");
    assert_eq!(
        w.count_to(FAR_END, "SIP/2.0 200"),
        1,
        "the caller is connected"
    );
}

#[test]
fn the_last_target_failing_fails_the_forward_with_its_status() {
    let mut w = forwarding();
    let first = w.last_to(EDGE_A, "INVITE ");
    w.respond(EDGE_A, &first, 503);
    let next = w.last_to(EDGE_B, "INVITE ");
    w.respond(EDGE_B, &next, 503);
    assert!(matches!(
        w.routed.last(),
        Some(Event::ForwardFailed { status: 503, .. })
    ));
}

#[test]
fn a_challenged_bye_to_the_carrier_is_sent_again_with_credentials() {
    let mut w = forwarding();
    let invite = w.last_to(EDGE_A, "INVITE ");
    w.respond(EDGE_A, &invite, 200);
    let ok = w.last_to(FAR_END, "SIP/2.0 200");
    w.a_tag = message::to_tag(&message::parse(ok.as_bytes()).unwrap()).unwrap();
    let ack = w.far_end_request("ACK", 1);
    w.deliver(FAR_END, &ack);
    let bye = w.far_end_request("BYE", 2);
    w.deliver(FAR_END, &bye);
    let first = w.last_to(EDGE_A, "BYE ");
    challenge(&mut w, EDGE_A, &first, "n9");
    assert_eq!(w.count_to(EDGE_A, "BYE "), 2);
    let second = w.last_to(EDGE_A, "BYE ");
    let m = message::parse(second.as_bytes()).unwrap();
    let first_cseq = message::cseq(&message::parse(first.as_bytes()).unwrap())
        .unwrap()
        .0;
    assert_eq!(message::cseq(&m).map(|(n, _)| n), Some(first_cseq + 1));
    assert!(header(&second, "Proxy-Authorization").is_some_and(|a| a.contains("nonce=\"n9\"")));
    w.respond(EDGE_A, &second, 200);
    assert_eq!(
        w.count_to(EDGE_A, "BYE "),
        2,
        "no more tries once it is answered"
    );
    assert!(w.pbx.calls.summaries().is_empty());
}

#[test]
fn without_record_route_the_dialog_goes_to_the_far_ends_contact() {
    let mut w = forwarding();
    let invite = w.last_to(EDGE_A, "INVITE ");
    w.respond_with(
        EDGE_A,
        &invite,
        200,
        "Contact: <sip:pstn@127.0.0.7:5070>\r\n",
    );
    assert_eq!(w.count_to("127.0.0.7:5070", "ACK "), 1, "{:#?}", w.sent);
    assert_eq!(w.count_to(EDGE_A, "ACK "), 0);
}

#[test]
fn a_record_routing_carrier_keeps_the_dialog() {
    let mut w = forwarding();
    let invite = w.last_to(EDGE_A, "INVITE ");
    let headers = "Record-Route: <sip:127.0.0.5;lr>\r\nContact: <sip:pstn@127.0.0.7:5070>\r\n";
    w.respond_with(EDGE_A, &invite, 200, headers);
    let ack = w.last_to(EDGE_A, "ACK ");
    assert!(
        ack.starts_with("ACK sip:pstn@127.0.0.7:5070 SIP/2.0"),
        "{ack}"
    );
    assert!(ack.contains("Route: <sip:127.0.0.5;lr>"), "{ack}");
}
