//! Dialog keep-alive on the fake clock: a connected call asks both parties every
//! `dialog_keepalive_s` (120 s by default) with an OPTIONS in their dialogs; a party
//! that answers anything but 481 is still there; 481 or silence ends the call as that
//! party's hang-up; an old device's answer after a flip says nothing.

use std::time::Duration;

use super::world::{CONFIG, DESK, FAR_END, MOBILE, World};

const ROUND: Duration = Duration::from_secs(120);

/// The header `name`'s value in `message`.
fn header<'m>(message: &'m str, name: &str) -> &'m str {
    message
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

#[test]
fn a_connected_call_asks_both_parties_and_goes_on_while_they_answer() {
    let mut w = World::connected();
    w.advance(ROUND - Duration::from_secs(1));
    assert_eq!(w.count_to(FAR_END, "OPTIONS "), 0, "not before its time");
    w.advance(Duration::from_secs(1));
    let to_far = w.last_to(FAR_END, "OPTIONS ");
    let to_desk = w.last_to(DESK, "OPTIONS ");
    // In each party's own dialog: its Call-ID, its tags, its Contact.
    assert!(
        to_far.starts_with("OPTIONS sip:far@127.0.0.2:5060 "),
        "{to_far}"
    );
    assert_eq!(header(&to_far, "Call-ID"), "far-call");
    assert!(header(&to_far, "To").contains(";tag=far"), "{to_far}");
    assert_eq!(header(&to_far, "CSeq"), "1 OPTIONS", "{to_far}");
    assert!(
        to_desk.starts_with("OPTIONS sip:wasmpbx@127.0.0.1:6001 "),
        "{to_desk}"
    );
    // A 200, and a 405 from a phone that does not do OPTIONS: both are still there.
    w.respond(FAR_END, &to_far, 200);
    w.respond(DESK, &to_desk, 405);
    w.advance(ROUND);
    assert_eq!(w.count_to(FAR_END, "OPTIONS "), 2, "asked again");
    assert_eq!(w.count_to(DESK, "OPTIONS "), 2);
    assert_eq!(w.count_to(FAR_END, "BYE "), 0);
    assert_eq!(w.count_to(DESK, "BYE "), 0);
    let record = w.far_end_hangs_up();
    assert_eq!(record.end_reason, "caller hung up");
}

#[test]
fn a_party_whose_dialog_is_gone_ends_the_call() {
    let mut w = World::connected();
    w.advance(ROUND);
    let to_far = w.last_to(FAR_END, "OPTIONS ");
    w.respond(FAR_END, &to_far, 200);
    // The desk restarted (or its BYE was lost): it knows no such dialog.
    let to_desk = w.last_to(DESK, "OPTIONS ");
    w.respond(DESK, &to_desk, 481);
    assert_eq!(w.count_to(FAR_END, "BYE "), 1, "the far end is told");
    let record = w.records.pop().expect("the call ended");
    assert_eq!(
        record.end_reason,
        "the callee left: its dialog is gone (481 to a keep-alive)"
    );
    assert_eq!(w.pbx.calls.count(), 0);
}

#[test]
fn a_party_that_no_longer_answers_ends_the_call() {
    let mut w = World::connected();
    w.advance(ROUND);
    let to_desk = w.last_to(DESK, "OPTIONS ");
    w.respond(DESK, &to_desk, 200);
    // The far end says nothing: the OPTIONS is sent again (Timer E) until Timer F.
    for _ in 0..64 {
        w.advance(Duration::from_millis(500));
    }
    assert!(w.count_to(FAR_END, "OPTIONS ") > 1, "retransmitted");
    assert_eq!(w.count_to(DESK, "BYE "), 1, "the desk is told");
    let record = w.records.pop().expect("the call ended");
    assert_eq!(
        record.end_reason,
        "the caller left: no answer to a keep-alive"
    );
}

#[test]
fn the_answer_of_a_device_a_flip_left_says_nothing_about_the_call() {
    let mut w = World::connected();
    w.advance(ROUND);
    let to_far = w.last_to(FAR_END, "OPTIONS ");
    w.respond(FAR_END, &to_far, 200);
    let to_desk = w.last_to(DESK, "OPTIONS ");
    // The mobile takes the call over; the desk is let go, then answers the OPTIONS
    // it had: no such dialog (any more).
    w.pull_from(MOBILE);
    w.decide(World::allow());
    assert_eq!(w.count_to(DESK, "BYE "), 1);
    w.respond(DESK, &to_desk, 481);
    assert_eq!(w.count_to(FAR_END, "BYE "), 0, "the call goes on");
    assert_eq!(w.pbx.calls.count(), 1);
    // The next round asks the mobile.
    w.advance(ROUND);
    assert_eq!(w.count_to(MOBILE, "OPTIONS "), 1);
}

#[test]
fn zero_turns_it_off() {
    let config = CONFIG.replacen("[sip]\n", "[sip]\ndialog_keepalive_s = 0\n", 1);
    let mut w = World::connected_with_config(&config);
    w.advance(ROUND * 3);
    assert_eq!(w.count_to(FAR_END, "OPTIONS "), 0);
    assert_eq!(w.count_to(DESK, "OPTIONS "), 0);
    assert_eq!(w.pbx.calls.count(), 1);
}
