//! A call's record as it goes: written `live` when the call is answered and after each
//! flip, so that a crash cannot lose an answered call, then `ended` in place.

use super::world::{DESK, FAR_END, MOBILE, TABLET, World};
use crate::call::RecordState;
use crate::flip::FlipResult;
use crate::routing::Disposition;
use crate::routing::{Action, ForwardTarget};

#[test]
fn an_answered_call_is_written_live_at_the_answer_and_after_each_flip() {
    let mut w = World::connected();
    let answered = w
        .live_records
        .first()
        .expect("written at the answer")
        .clone();
    assert_eq!(answered.state, RecordState::Live);
    assert_eq!(answered.disposition, Disposition::Answered);
    assert!(answered.answered_at.is_some());
    assert_eq!(answered.ended_at, None);
    assert_eq!(answered.legs.last().map(|l| l.1), Some(200));
    assert_eq!(w.live_records.len(), 1, "once, not per message");

    w.pull_from(MOBILE);
    w.decide(World::allow());
    let flipped = w.live_records.last().expect("written after the flip");
    assert_eq!(w.live_records.len(), 2);
    assert_eq!(flipped.session, answered.session);
    assert_eq!(flipped.flips.len(), 1);
    assert_eq!(flipped.flips[0].result, FlipResult::Done);

    let ended = w.far_end_hangs_up();
    assert_eq!(ended.session, answered.session, "the same record, replaced");
    assert_eq!(ended.state, RecordState::Ended);
    assert!(ended.ended_at.is_some());
    assert_eq!(ended.updated_at, ended.ended_at.unwrap());
    assert_eq!(w.live_records.len(), 2, "nothing live after the end");
}

#[test]
fn a_call_never_answered_is_written_once_when_it_ends() {
    let mut w = World::new();
    w.far_end_calls("0400", "100", "unanswered");
    let id = w.session();
    w.route(id, vec![Action::Hangup]);
    w.drain();
    assert!(w.live_records.is_empty(), "{:?}", w.live_records);
    let record = w.records.last().expect("written when it ended");
    assert_eq!(record.state, RecordState::Ended);
    assert_eq!(record.answered_at, None);
}

#[test]
fn the_live_record_has_the_tags_the_script_set_before_the_answer() {
    let mut w = World::new();
    w.far_end_calls("0400", "100", "tagged");
    let id = w.session();
    let actions = vec![
        Action::SetTag {
            name: "department".into(),
            value: "sales".into(),
        },
        Action::Forward {
            target: ForwardTarget::User("alice".into()),
            trunk: None,
            ring_timeout_ms: 30_000,
            caller_id: None,
        },
    ];
    w.route(id, actions);
    w.drain();
    let desk_invite = w.last_to(DESK, "INVITE ");
    w.respond(DESK, &desk_invite, 200);
    let live = w.live_records.last().expect("written at the answer");
    assert_eq!(live.tags, [("department".to_owned(), "sales".to_owned())]);
}

/// A long soak grew the host by ~50 bytes a call: nothing of an ended call may stay in
/// the calls' tables once its last transaction is done.
#[test]
fn an_ended_call_leaves_nothing_behind() {
    for (far_end_hangs_up, pulled) in [(true, false), (false, false), (true, true)] {
        let mut w = World::connected();
        let device = if pulled {
            w.pull_from(MOBILE);
            w.decide(World::allow());
            let released = w.last_to(DESK, "BYE ");
            w.respond(DESK, &released, 200);
            MOBILE
        } else {
            DESK
        };
        if far_end_hangs_up {
            w.far_end_hangs_up();
            let bye = w.last_to(device, "BYE ");
            w.respond(device, &bye, 200);
        } else {
            w.device_hangs_up(device);
            let bye = w.last_to(super::world::FAR_END, "BYE ");
            w.respond(super::world::FAR_END, &bye, 200);
        }
        let left = w.tables_left();
        assert!(
            left.is_empty(),
            "far end hung up: {far_end_hangs_up}, pulled: {pulled}: {left:?}"
        );
    }
}

#[test]
fn an_external_event_joins_the_record_and_sets_its_tag() {
    let mut w = World::connected();
    let id = w.session();
    let live_before = w.live_records.len();
    let ambient = w.ambient();
    w.pbx
        .call_event(ambient, id, "intent".into(), "billing".into(), Some(0.92))
        .unwrap();
    w.drain();
    let live = w
        .live_records
        .last()
        .expect("written again: the call is answered");
    assert_eq!(w.live_records.len(), live_before + 1);
    assert_eq!(live.events.len(), 1);
    assert_eq!(live.events[0].name, "intent");
    assert_eq!(live.events[0].value, "billing");
    assert_eq!(live.events[0].confidence, Some(0.92));
    assert!(
        live.tags.contains(&("intent".into(), "billing".into())),
        "{:?}",
        live.tags
    );

    for n in 1..wasmpbx_types::record::MAX_EVENTS_PER_CALL {
        let ambient = w.ambient();
        w.pbx
            .call_event(ambient, id, "sentiment".into(), n.to_string(), None)
            .unwrap();
    }
    let ambient = w.ambient();
    let refused = w
        .pbx
        .call_event(ambient, id, "sentiment".into(), "more".into(), None)
        .unwrap_err();
    assert_eq!(refused.0, 429, "an engine posting in a loop is capped");
    w.drain();
    let ended = w.far_end_hangs_up();
    assert_eq!(
        ended.events.len(),
        wasmpbx_types::record::MAX_EVENTS_PER_CALL,
        "kept to the end"
    );
    assert!(ended.tags.contains(&("intent".into(), "billing".into())));
    let ambient = w.ambient();
    let refused = w
        .pbx
        .call_event(ambient, id, "intent".into(), "sales".into(), None)
        .unwrap_err();
    assert_eq!(refused.0, 404, "the call is over");
}

#[test]
fn a_caller_who_never_acks_the_answer_is_hung_up_with_the_device_and_the_call_failed() {
    let mut w = World::ringing_alice();
    let desk_invite = w.last_to(DESK, "INVITE ");
    w.respond(DESK, &desk_invite, 200);
    for device in [MOBILE, TABLET] {
        let cancel = w.last_to(device, "CANCEL ");
        w.respond(device, &cancel, 200);
        let invite = w.last_to(device, "INVITE ");
        w.respond(device, &invite, 487);
    }
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 200"), 1, "answered");
    // The far end never ACKs: after 64·T1, BYE to both (RFC 3261 §13.3.1.4).
    for _ in 0..10 {
        w.advance(std::time::Duration::from_secs(4));
    }
    assert!(w.count_to(DESK, "BYE ") > 0, "the desk is hung up");
    assert!(w.count_to(FAR_END, "BYE ") > 0, "and the silent caller");
    let record = w.records.last().expect("the call's record");
    assert_eq!(record.disposition, Disposition::Failed);
    assert_eq!(record.end_reason, "no ACK from the caller");
}

#[test]
fn a_caller_hanging_up_its_early_dialog_has_its_invite_answered_and_the_devices_cancelled() {
    // RFC 3261 §15: a caller may BYE an early dialog; its INVITE still gets a final
    // response (487), or the server transaction waits for ever.
    let mut w = World::ringing_alice();
    let desk_invite = w.last_to(DESK, "INVITE ");
    w.respond(DESK, &desk_invite, 180);
    let ringing = w.last_to(FAR_END, "SIP/2.0 180");
    let to = crate::sip::message::parse(ringing.as_bytes()).unwrap();
    w.a_tag = crate::sip::message::to_tag(&to).expect("the host's tag in the 180");
    let bye = w.far_end_request("BYE", 2);
    w.deliver(FAR_END, &bye);
    assert!(w.last_to(FAR_END, "SIP/2.0 487").contains("CSeq: 1 INVITE"));
    assert_eq!(w.count_to(DESK, "CANCEL "), 1);
    let record = w.records.last().expect("the call's record");
    assert_eq!(record.disposition, Disposition::Abandoned, "{record:?}");
}

#[test]
fn a_device_declining_stops_the_others_ringing_and_the_forward_fails_with_its_decline() {
    let mut w = World::ringing_alice();
    let desk_invite = w.last_to(DESK, "INVITE ");
    w.respond(DESK, &desk_invite, 603);
    for device in [MOBILE, TABLET] {
        assert_eq!(w.count_to(device, "CANCEL "), 1, "{device} stops ringing");
    }
    assert!(
        matches!(
            w.routed.last(),
            Some(crate::routing::Event::ForwardFailed { status: 603, .. })
        ),
        "{:?}",
        w.routed
    );
}
