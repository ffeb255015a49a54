//! Transaction timers on a fake clock: a 32-second Timer B runs in microseconds.
// `Instant::now()` only gives the fake clock a base; time then moves by hand.
#![allow(clippy::disallowed_methods)]

use super::*;

fn peer(transport: Transport) -> Peer {
    Peer {
        transport,
        addr: "127.0.0.1:5070".parse().unwrap(),
    }
}

fn request(method: &str, branch: &str) -> Request {
    let text = format!(
        "{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: c-{branch}\r\n\
CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    match message::parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

fn response(request: &Request, code: u16) -> SipMessage {
    SipMessage::Response(message::response_to(request, code, Some("b1")))
}

fn drain(layer: &mut TransactionLayer) -> Vec<Output> {
    std::iter::from_fn(|| layer.poll_output()).collect()
}

fn transmits(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit { bytes, .. } => Some(
                String::from_utf8_lossy(bytes)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            ),
            _ => None,
        })
        .collect()
}

/// The server transaction of the request handed up in `outputs`.
fn request_txn(outputs: &[Output]) -> ServerTxnId {
    outputs
        .iter()
        .find_map(|o| match o {
            Output::Request { txn, .. } => Some(*txn),
            _ => None,
        })
        .expect("a request was handed up")
}

/// Advance the clock timer by timer until `until`, collecting the times of transmits.
fn run_until(
    layer: &mut TransactionLayer,
    start: Instant,
    until: Duration,
) -> Vec<(Duration, Output)> {
    let mut seen = Vec::new();
    while let Some(at) = layer.poll_timeout() {
        if at > start + until {
            break;
        }
        layer.handle_timeout(at);
        for output in drain(layer) {
            seen.push((at - start, output));
        }
    }
    seen
}

#[test]
fn client_invite_over_udp_retransmits_on_timer_a_and_times_out_on_b() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let id = layer.send_request(now, request("INVITE", "z9hG4bK-a"), peer(Transport::Udp));
    assert_eq!(transmits(&drain(&mut layer)).len(), 1);
    let seen = run_until(&mut layer, now, Duration::from_secs(40));
    let retransmits: Vec<u64> = seen
        .iter()
        .filter(|(_, o)| matches!(o, Output::Transmit { .. }))
        .map(|(t, _)| t.as_millis() as u64)
        .collect();
    assert_eq!(retransmits, [500, 1500, 3500, 7500, 15500, 31500]);
    let timeouts: Vec<_> = seen
        .iter()
        .filter(|(_, o)| matches!(o, Output::Timeout { txn } if *txn == id))
        .collect();
    assert_eq!(timeouts.len(), 1);
    assert_eq!(timeouts[0].0, 64 * T1);
    assert!(layer.is_empty());
}

#[test]
fn a_ringing_invite_waits_past_timer_b_until_its_cancel_has_had_64_t1() {
    // RFC 3261 §17.1.1.2: Timer B runs only in Calling; §9.1: a CANCEL unanswered by
    // a final response ends the INVITE 64·T1 later.
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let invite = request("INVITE", "z9hG4bK-r");
    let id = layer.send_request(now, invite.clone(), peer(Transport::Udp));
    drain(&mut layer);
    let ringing = now + Duration::from_millis(200);
    layer.handle_message(ringing, response(&invite, 180), peer(Transport::Udp));
    assert_eq!(drain(&mut layer).len(), 1, "the 180 goes up");
    let seen = run_until(&mut layer, now, Duration::from_secs(120));
    assert!(
        seen.iter()
            .all(|(_, o)| !matches!(o, Output::Timeout { .. })),
        "still ringing at two minutes: {seen:?}"
    );
    let cancelled_at = now + Duration::from_secs(120);
    layer.send_request(
        cancelled_at,
        request("CANCEL", "z9hG4bK-r"),
        peer(Transport::Udp),
    );
    drain(&mut layer);
    let seen = run_until(&mut layer, now, Duration::from_secs(120 + 40));
    let ended: Vec<_> = seen
        .iter()
        .filter(|(_, o)| matches!(o, Output::Timeout { txn } if *txn == id))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(ended, [Duration::from_secs(120) + 64 * T1]);
}

#[test]
fn client_invite_over_tcp_never_retransmits() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    layer.send_request(now, request("INVITE", "z9hG4bK-t"), peer(Transport::Tcp));
    drain(&mut layer);
    let seen = run_until(&mut layer, now, Duration::from_secs(40));
    assert!(
        seen.iter()
            .all(|(_, o)| !matches!(o, Output::Transmit { .. }))
    );
    assert!(
        seen.iter()
            .any(|(_, o)| matches!(o, Output::Timeout { .. }))
    );
}

#[test]
fn client_non_invite_caps_retransmissions_at_t2() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    layer.send_request(now, request("OPTIONS", "z9hG4bK-o"), peer(Transport::Udp));
    drain(&mut layer);
    let seen = run_until(&mut layer, now, Duration::from_secs(12));
    let times: Vec<u64> = seen
        .iter()
        .filter(|(_, o)| matches!(o, Output::Transmit { .. }))
        .map(|(t, _)| t.as_millis() as u64)
        .collect();
    assert_eq!(times, [500, 1500, 3500, 7500, 11500]);
}

#[test]
fn client_invite_acks_a_failure_and_absorbs_its_retransmission() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let invite = request("INVITE", "z9hG4bK-f");
    let id = layer.send_request(now, invite.clone(), peer(Transport::Udp));
    drain(&mut layer);
    layer.handle_message(now, response(&invite, 180), peer(Transport::Udp));
    let outputs = drain(&mut layer);
    assert!(matches!(&outputs[..], [Output::Response { txn, .. }] if *txn == id));
    layer.handle_message(now, response(&invite, 486), peer(Transport::Udp));
    let outputs = drain(&mut layer);
    assert_eq!(transmits(&outputs), ["ACK sip:bob@127.0.0.1 SIP/2.0"]);
    assert!(outputs.iter().any(
        |o| matches!(o, Output::Response { response, .. } if response.status_code.code() == 486)
    ));
    // The 486 again: ACKed again, not passed up again.
    layer.handle_message(now, response(&invite, 486), peer(Transport::Udp));
    let outputs = drain(&mut layer);
    assert_eq!(transmits(&outputs).len(), 1);
    assert!(!outputs.iter().any(|o| matches!(o, Output::Response { .. })));
    // No timer A after the provisional; the transaction ends after timer D.
    let seen = run_until(&mut layer, now, Duration::from_secs(33));
    assert!(seen.is_empty());
    assert!(layer.is_empty());
}

#[test]
fn a_lost_ack_for_2xx_is_sent_again_when_the_2xx_is_retransmitted() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let invite = request("INVITE", "z9hG4bK-2");
    layer.send_request(now, invite.clone(), peer(Transport::Udp));
    drain(&mut layer);
    layer.handle_message(now, response(&invite, 200), peer(Transport::Udp));
    assert_eq!(drain(&mut layer).len(), 1);
    layer.send_ack(now, ack_for_2xx("c-z9hG4bK-2", "b1"), peer(Transport::Udp));
    assert_eq!(
        transmits(&drain(&mut layer)),
        ["ACK sip:bob@127.0.0.1 SIP/2.0"]
    );
    layer.handle_message(now, response(&invite, 200), peer(Transport::Udp));
    assert_eq!(
        transmits(&drain(&mut layer)),
        ["ACK sip:bob@127.0.0.1 SIP/2.0"]
    );
}

/// An ACK for a 2xx to the INVITE of `call_id` whose To tag was `tag`.
fn ack_for_2xx(call_id: &str, tag: &str) -> Request {
    let mut ack = request("ACK", "z9hG4bK-ack");
    ack.headers
        .retain(|h| !matches!(h, Header::CallId(_) | Header::To(_)));
    ack.headers
        .push(Header::CallId(rsip::headers::CallId::new(call_id)));
    ack.headers.push(Header::To(rsip::headers::To::new(format!(
        "<sip:bob@127.0.0.1>;tag={tag}"
    ))));
    ack
}

#[test]
fn a_2xx_from_another_dialog_after_the_first_is_handed_up_and_its_retransmissions_acked() {
    // RFC 6026: a forking proxy let two branches answer one INVITE.
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let invite = request("INVITE", "z9hG4bK-3");
    layer.send_request(now, invite.clone(), peer(Transport::Udp));
    drain(&mut layer);
    layer.handle_message(now, response(&invite, 200), peer(Transport::Udp));
    assert_eq!(drain(&mut layer).len(), 1);
    layer.send_ack(now, ack_for_2xx("c-z9hG4bK-3", "b1"), peer(Transport::Udp));
    drain(&mut layer);
    let second = SipMessage::Response(message::response_to(&invite, 200, Some("b2")));
    layer.handle_message(now, second.clone(), peer(Transport::Udp));
    let outputs = drain(&mut layer);
    assert!(
        matches!(
            &outputs[..],
            [Output::AnotherAnswer { response, .. }]
                if message::to_tag(&SipMessage::Response(response.clone())).as_deref() == Some("b2")
        ),
        "{outputs:?}"
    );
    // The user acknowledges that one too: each dialog's 2xx now gets its own ACK.
    layer.send_ack(now, ack_for_2xx("c-z9hG4bK-3", "b2"), peer(Transport::Udp));
    drain(&mut layer);
    for (again, tag) in [(second, "b2"), (response(&invite, 200), "b1")] {
        layer.handle_message(now, again, peer(Transport::Udp));
        let outputs = drain(&mut layer);
        let [Output::Transmit { bytes, .. }] = &outputs[..] else {
            panic!("{outputs:?}")
        };
        let ack = String::from_utf8_lossy(bytes).into_owned();
        assert!(ack.contains(&format!("tag={tag}")), "{ack}");
    }
}

#[test]
fn server_invite_sends_trying_absorbs_retransmissions_and_retransmits_failure_until_ack() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let invite = request("INVITE", "z9hG4bK-s");
    layer.handle_message(
        now,
        SipMessage::Request(invite.clone()),
        peer(Transport::Udp),
    );
    let outputs = drain(&mut layer);
    assert_eq!(transmits(&outputs), ["SIP/2.0 100 Trying"]);
    let txn = request_txn(&outputs);
    // The INVITE again: the 100 again, nothing new for the user.
    layer.handle_message(
        now,
        SipMessage::Request(invite.clone()),
        peer(Transport::Udp),
    );
    assert_eq!(transmits(&drain(&mut layer)), ["SIP/2.0 100 Trying"]);
    layer.send_response(now, txn, message::response_to(&invite, 486, Some("b1")));
    assert_eq!(transmits(&drain(&mut layer)), ["SIP/2.0 486 Busy Here"]);
    let seen = run_until(&mut layer, now, Duration::from_millis(1600));
    assert_eq!(seen.len(), 2, "timer G at 0.5 s and 1.5 s");
    let mut ack = request("ACK", "z9hG4bK-s");
    ack.headers.retain(|h| !matches!(h, Header::CallId(_)));
    ack.headers
        .push(Header::CallId(rsip::headers::CallId::new("c-z9hG4bK-s")));
    layer.handle_message(
        now + Duration::from_millis(1600),
        SipMessage::Request(ack),
        peer(Transport::Udp),
    );
    assert!(
        drain(&mut layer).is_empty(),
        "the ACK of a failure is absorbed"
    );
    let seen = run_until(&mut layer, now, Duration::from_secs(40));
    assert!(seen.is_empty(), "no retransmission after the ACK: {seen:?}");
    assert!(layer.is_empty());
}

#[test]
fn server_2xx_is_retransmitted_until_acked_then_the_ack_goes_up() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let invite = request("INVITE", "z9hG4bK-ok");
    layer.handle_message(
        now,
        SipMessage::Request(invite.clone()),
        peer(Transport::Udp),
    );
    let txn = request_txn(&drain(&mut layer));
    layer.send_response(now, txn, message::response_to(&invite, 200, Some("b1")));
    drain(&mut layer);
    let seen = run_until(&mut layer, now, Duration::from_millis(3600));
    assert_eq!(seen.len(), 3, "2xx at 0.5, 1.5, 3.5 s");
    let mut ack = request("ACK", "z9hG4bK-new-branch");
    ack.headers.retain(|h| !matches!(h, Header::CallId(_)));
    ack.headers
        .push(Header::CallId(rsip::headers::CallId::new("c-z9hG4bK-ok")));
    layer.handle_message(
        now + Duration::from_millis(3600),
        SipMessage::Request(ack),
        peer(Transport::Udp),
    );
    assert!(matches!(&drain(&mut layer)[..], [Output::Ack { .. }]));
    let seen = run_until(&mut layer, now, Duration::from_secs(40));
    assert!(seen.is_empty(), "{seen:?}");
}

#[test]
fn an_unacknowledged_2xx_is_reported() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let invite = request("INVITE", "z9hG4bK-noack");
    layer.handle_message(
        now,
        SipMessage::Request(invite.clone()),
        peer(Transport::Udp),
    );
    let txn = request_txn(&drain(&mut layer));
    layer.send_response(now, txn, message::response_to(&invite, 200, Some("b1")));
    drain(&mut layer);
    let seen = run_until(&mut layer, now, Duration::from_secs(40));
    assert!(
        seen.iter()
            .any(|(t, o)| *t == 64 * T1 && matches!(o, Output::AckTimeout { cseq: 1, .. }))
    );
    assert!(layer.is_empty());
}

#[test]
fn server_non_invite_answers_retransmissions_from_its_cache() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let register = request("REGISTER", "z9hG4bK-r");
    layer.handle_message(
        now,
        SipMessage::Request(register.clone()),
        peer(Transport::Udp),
    );
    let txn = request_txn(&drain(&mut layer));
    layer.send_response(now, txn, message::response_to(&register, 401, Some("x")));
    assert_eq!(transmits(&drain(&mut layer)), ["SIP/2.0 401 Unauthorized"]);
    layer.handle_message(now, SipMessage::Request(register), peer(Transport::Udp));
    assert_eq!(transmits(&drain(&mut layer)), ["SIP/2.0 401 Unauthorized"]);
    run_until(&mut layer, now, Duration::from_secs(33));
    assert!(layer.is_empty());
}

#[test]
fn a_transport_failure_ends_the_waiting_transactions_towards_that_peer_only() {
    let now = Instant::now();
    let mut layer = TransactionLayer::new();
    let to_failed = layer.send_request(now, request("INVITE", "z9hG4bKf1"), peer(Transport::Tcp));
    let other = Peer {
        transport: Transport::Tcp,
        addr: "127.0.0.1:5071".parse().unwrap(),
    };
    layer.send_request(now, request("OPTIONS", "z9hG4bKf2"), other);
    drain(&mut layer);
    layer.transport_failed(peer(Transport::Tcp));
    let outputs = drain(&mut layer);
    assert!(matches!(outputs[..], [Output::Timeout { txn }] if txn == to_failed));
    // Nothing more of it: no second timeout at Timer B.
    layer.handle_timeout(now + 64 * T1);
    let later = drain(&mut layer);
    assert_eq!(
        later.len(),
        1,
        "only the other peer's OPTIONS times out: {later:?}"
    );
}

#[test]
fn an_abandoned_transaction_says_nothing_more() {
    let now = Instant::now();
    let mut layer = TransactionLayer::new();
    let txn = layer.send_request(now, request("INVITE", "z9hG4bKab"), peer(Transport::Udp));
    drain(&mut layer);
    layer.abandon(txn);
    layer.handle_timeout(now + 64 * T1);
    assert!(
        drain(&mut layer).is_empty(),
        "no retransmission, no timeout"
    );
}

#[test]
fn a_forgotten_invite_is_never_answered_and_its_retransmission_comes_up_anew() {
    let mut layer = TransactionLayer::new();
    let now = Instant::now();
    let invite = request("INVITE", "z9hG4bKgone");
    layer.handle_message(
        now,
        SipMessage::Request(invite.clone()),
        peer(Transport::Udp),
    );
    let first = drain(&mut layer);
    assert_eq!(transmits(&first), ["SIP/2.0 100 Trying"]);
    layer.forget_server(request_txn(&first));
    assert!(layer.is_empty());
    assert!(run_until(&mut layer, now, Duration::from_secs(64)).is_empty());
    // Its retransmission, had it come here, is a new request (its new shard's job).
    layer.handle_message(now, SipMessage::Request(invite), peer(Transport::Udp));
    request_txn(&drain(&mut layer));
}
