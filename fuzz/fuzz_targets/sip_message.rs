//! A datagram as the host reads one: parsed, looked into, answered, printed and parsed
//! again, and given to the transaction layer with its timers run out.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wasmpbx_sip::message::{self, SipMessage};
use wasmpbx_sip::transaction::{Peer, TransactionLayer, Transport};

fuzz_target!(|data: &[u8]| {
    let parsed = match message::parse(data) {
        Ok(parsed) => parsed,
        Err(_) => {
            // The host answers garbage that looks like a request with 400.
            let _ = message::bad_request_from_raw(data, "fuzz");
            return;
        }
    };
    let _ = (
        message::branch(&parsed),
        message::call_id(&parsed),
        message::cseq(&parsed),
        message::from_tag(&parsed),
        message::to_tag(&parsed),
        message::from_user(&parsed),
        message::to_user(&parsed),
        message::from_header_display_name(&parsed),
        message::header_values(&parsed, "Via"),
    );
    let source = Peer {
        transport: Transport::Udp,
        addr: "127.0.0.2:5060".parse().unwrap(),
    };
    if let SipMessage::Request(request) = &parsed {
        let mut request = request.clone();
        message::stamp_received(&mut request, source.addr);
        let answer = message::response_to(&request, 486, Some("fuzz"));
        let printed = message::serialize(&SipMessage::Response(answer));
        assert!(
            message::parse(&printed).is_ok(),
            "the host's own answer must parse"
        );
    }
    // What the host prints of a message it accepted, it can read back.
    let printed = message::serialize(&parsed);
    assert!(
        message::parse(&printed).is_ok(),
        "a re-printed message must parse"
    );

    let now = Instant::now();
    let mut layer = TransactionLayer::new();
    layer.handle_message(now, parsed, source);
    while layer.poll_output().is_some() {}
    layer.handle_timeout(now + Duration::from_secs(64));
    while layer.poll_output().is_some() {}
});
