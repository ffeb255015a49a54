//! Draining on the fake clock: new calls and OPTIONS refused with 503 and Retry-After,
//! live calls and their flips going on, and the end of the drain hanging up the rest.

use super::world::{DESK, FAR_END, MOBILE, World};
use crate::routing::Disposition;

#[test]
fn draining_refuses_new_calls_and_options_but_not_the_live_call_or_its_pull() {
    let mut w = World::connected();
    w.pbx.start_draining(60);
    w.far_end_calls("0401", "100", "new-call");
    let refusal = w.last_to(FAR_END, "SIP/2.0 503");
    assert!(refusal.contains("Call-ID: new-call"), "{refusal}");
    assert!(refusal.contains("Retry-After: 60\r\n"), "{refusal}");
    assert_eq!(w.pbx.calls.count(), 1, "only the live call");
    let options = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-opt\r\n\
From: <sip:lb@127.0.0.2>;tag=lb\r\nTo: <sip:127.0.0.1>\r\nCall-ID: opt\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    w.deliver(FAR_END, &options);
    assert!(w.last_to(FAR_END, "SIP/2.0 503").contains("Call-ID: opt"));
    // The user pulls the live call to the mobile: a flip, not a new call.
    w.pull_from(MOBILE);
    assert_eq!(w.flips.len(), 1, "the pull reached the flip policy");
}

#[test]
fn the_end_of_a_drain_hangs_up_both_sides_and_writes_the_record() {
    let mut w = World::connected();
    w.pbx.start_draining(60);
    w.pbx.hang_up_all(w.ambient());
    w.drain();
    assert_eq!(w.count_to(FAR_END, "BYE "), 1);
    assert_eq!(w.count_to(DESK, "BYE "), 1);
    assert_eq!(w.pbx.calls.count(), 0);
    let record = w.records.last().expect("a record");
    assert_eq!(record.disposition, Disposition::Answered);
    assert_eq!(record.end_reason, "server shutting down");
}

#[test]
fn overload_refuses_new_calls_at_once_and_live_calls_go_on() {
    let mut w = World::connected();
    w.pbx.set_refused_share(1.0);
    w.far_end_calls("0401", "100", "while-overloaded");
    let refusal = w.last_to(FAR_END, "SIP/2.0 503");
    assert!(refusal.contains("Call-ID: while-overloaded"), "{refusal}");
    assert!(refusal.contains("Retry-After: 1\r\n"), "{refusal}");
    assert_eq!(w.pbx.counters().refused_overloaded, 1);
    assert!(
        w.routed.len() == 1,
        "no script was asked about the refused call"
    );
    // Its retransmission is the same transaction's: the same 503, not a second refusal.
    w.far_end_calls("0401", "100", "while-overloaded");
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 503"), 2);
    assert_eq!(w.pbx.counters().refused_overloaded, 1);
    // The live call ends normally.
    let record = w.far_end_hangs_up();
    assert_eq!(record.disposition, Disposition::Answered);
    // Half: some calls are taken, some refused; none once the wait is short again.
    w.pbx.set_refused_share(0.5);
    for n in 0..40 {
        w.far_end_calls("0402", "100", &format!("half-{n}"));
    }
    let refused = w.pbx.counters().refused_overloaded - 1;
    assert!((5..35).contains(&refused), "{refused} of 40 refused");
    w.pbx.set_refused_share(0.0);
    w.far_end_calls("0403", "100", "calm-again");
    assert_eq!(w.pbx.counters().refused_overloaded - 1, refused);
}
