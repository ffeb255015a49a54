//! Call flip on the sans-IO core, interleaving by interleaving: a PSTN call forwarded to
//! Alice, whose desk phone answers; then pulls and pushes with the far end, the old
//! device and the targets acting in every order that matters. Devices are SIP messages
//! written here; the policy's decisions are handed in by hand; time is a fake clock.

use std::time::Duration;

use super::world::{DESK, FAR_END, MOBILE, SDP, TABLET, TRUNK, World, addr};
use crate::call::testing::Did;
use crate::flip::{FlipDecision, FlipResult};
use crate::media::Side;

/// The `o=` line's session id and version in an SDP body.
fn origin_of(message: &str) -> (String, u64) {
    let line = message
        .lines()
        .find(|l| l.starts_with("o="))
        .unwrap_or_else(|| panic!("no o= line in {message}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[1].to_owned(), fields[2].parse().unwrap())
}

#[test]
fn dialogs_behind_record_routing_proxies_send_their_requests_through_them() {
    let carrier = "Record-Route: <sip:127.0.0.9;lr>\r\nRecord-Route: <sip:127.0.0.8;lr>\r\n";
    let edge = "Record-Route: <sip:127.0.0.7;lr>, <sip:127.0.0.6;lr>\r\n";
    let mut w = World::connected_through(carrier, edge);
    // The far end learns the route set from the host's 200 (RFC 3261 §12.1.1).
    let rr: Vec<&str> = w
        .far_answer
        .lines()
        .filter(|l| l.starts_with("Record-Route"))
        .collect();
    assert_eq!(rr.len(), 2, "{}", w.far_answer);
    // The desk hangs up: the BYE to the far end goes through its proxies in order, the
    // Request-URI its Contact.
    w.device_hangs_up(DESK);
    let bye = w.last_to(FAR_END, "BYE ");
    assert!(
        bye.starts_with("BYE sip:far@127.0.0.2:5060 SIP/2.0\r\n"),
        "{bye}"
    );
    let routes: Vec<&str> = bye.lines().filter(|l| l.starts_with("Route:")).collect();
    assert_eq!(
        routes,
        ["Route: <sip:127.0.0.9;lr>", "Route: <sip:127.0.0.8;lr>"]
    );

    // The far end hangs up instead: the BYE to the desk takes the desk's proxies in
    // reverse of its 200's Record-Route.
    let mut w = World::connected_through(carrier, edge);
    w.far_end_hangs_up();
    let bye = w.last_to(DESK, "BYE ");
    let routes: Vec<&str> = bye.lines().filter(|l| l.starts_with("Route:")).collect();
    assert_eq!(
        routes,
        ["Route: <sip:127.0.0.6;lr>", "Route: <sip:127.0.0.7;lr>"]
    );
}

#[test]
fn hold_and_resume_are_new_versions_of_the_same_sdp_session() {
    let mut w = World::connected();
    let (desk_session, first) = origin_of(&w.invites[&addr(DESK)]);
    assert_eq!(first, 1);
    let (far_session, _) = origin_of(&w.far_answer);
    for (cseq, direction, version) in [(2, "sendonly", 2), (3, "sendrecv", 3)] {
        let sdp = SDP.replace("a=rtpmap:101", &format!("a={direction}\r\na=rtpmap:101"));
        let reinvite = w.far_end_reinvite(cseq, &sdp);
        w.deliver(FAR_END, &reinvite);
        let to_desk = w.last_to(DESK, "INVITE ");
        assert!(to_desk.contains(&format!("a={direction}")), "{to_desk}");
        assert_eq!(origin_of(&to_desk), (desk_session.clone(), version));
        w.respond(DESK, &to_desk, 200);
        // The desk's answer does not change: the far end sees the same version again.
        let answer = w.last_to(FAR_END, "SIP/2.0 200");
        assert_eq!(origin_of(&answer), (far_session.clone(), 1));
    }
}

#[test]
fn a_reinvite_without_an_offer_gets_the_session_offered_again_unchanged() {
    let mut w = World::connected();
    let reinvite = w.far_end_reinvite(2, "");
    w.deliver(FAR_END, &reinvite);
    let ok = w.last_to(FAR_END, "SIP/2.0 200");
    assert!(ok.contains("CSeq: 2 INVITE"), "{ok}");
    assert!(
        ok.contains("\r\nContact: "),
        "a 2xx to an INVITE has a Contact: {ok}"
    );
    let offer = ok.split("\r\n\r\n").nth(1).unwrap_or_default();
    let last = w.far_answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(!offer.is_empty(), "an offer: {ok}");
    assert_eq!(offer, last, "the session as last described, same version");
    assert_eq!(w.count_to(DESK, "INVITE "), 0, "nothing passed on");
}

#[test]
fn a_reinvite_being_passed_on_when_the_call_ends_is_answered() {
    let mut w = World::connected();
    let reinvite = w.far_end_reinvite(2, SDP);
    w.deliver(FAR_END, &reinvite);
    assert_eq!(w.count_to(DESK, "INVITE "), 1, "passed on to the desk");
    // The desk hangs up instead of answering it.
    w.device_hangs_up(DESK);
    let refused = w.last_to(FAR_END, "SIP/2.0 487");
    assert!(refused.contains("CSeq: 2 INVITE"), "{refused}");
}

/// A connected call in which the far end re-INVITEd from a new Contact and the desk
/// answered it from one of its own.
fn both_moved() -> World {
    let mut w = World::connected();
    let reinvite = w.far_end_reinvite(2, SDP).replace(
        "Contact: <sip:far@127.0.0.2:5060>",
        "Contact: <sip:moved@127.0.0.2:5070>",
    );
    w.deliver(FAR_END, &reinvite);
    let to_desk = w.last_to(DESK, "INVITE ");
    let moved = "Contact: <sip:desk-moved@127.0.0.5:5090>\r\n";
    w.respond_with(DESK, &to_desk, 200, moved);
    w
}

#[test]
fn a_reinvite_and_its_answer_refresh_the_remote_targets() {
    // RFC 3261 §12.2.2 and §12.2.1.2: a re-INVITE's Contact, and the Contact of a 2xx to
    // one, replace the dialog's remote target (a softphone that moved networks).
    let mut w = both_moved();
    let ack = w.last_to(DESK, "ACK ");
    assert!(
        ack.starts_with("ACK sip:desk-moved@127.0.0.5:5090 SIP/2.0"),
        "{ack}"
    );
    w.device_hangs_up(DESK);
    let bye = w.last_to(FAR_END, "BYE ");
    assert!(
        bye.starts_with("BYE sip:moved@127.0.0.2:5070 SIP/2.0"),
        "{bye}"
    );

    let mut w = both_moved();
    w.far_end_hangs_up();
    let bye = w.last_to(DESK, "BYE ");
    assert!(
        bye.starts_with("BYE sip:desk-moved@127.0.0.5:5090 SIP/2.0"),
        "{bye}"
    );
}

#[test]
fn a_cancelled_reinvite_is_cancelled_on_the_other_leg_and_answered_with_its_answer() {
    let mut w = World::connected();
    let reinvite = w.far_end_reinvite(2, SDP);
    w.deliver(FAR_END, &reinvite);
    let to_desk = w.last_to(DESK, "INVITE ");
    w.respond(DESK, &to_desk, 100);
    let (head, _) = reinvite.split_once("Contact: ").unwrap();
    let cancel = format!("{head}Content-Length: 0\r\n\r\n")
        .replacen("INVITE ", "CANCEL ", 1)
        .replace("CSeq: 2 INVITE", "CSeq: 2 CANCEL");
    w.deliver(FAR_END, &cancel);
    assert!(w.last_to(FAR_END, "SIP/2.0 200").contains("CSeq: 2 CANCEL"));
    let cancelled = w.last_to(DESK, "CANCEL ");
    let branch = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("Via: "))
            .map(str::to_owned)
    };
    assert_eq!(
        branch(&cancelled),
        branch(&to_desk),
        "the re-INVITE's transaction"
    );
    w.respond(DESK, &cancelled, 200);
    w.respond(DESK, &to_desk, 487);
    let refused = w.last_to(FAR_END, "SIP/2.0 487");
    assert!(refused.contains("CSeq: 2 INVITE"), "{refused}");
    assert_eq!(w.pbx.calls.count(), 1, "the call goes on");
}

#[test]
fn a_second_dialog_answering_the_same_invite_is_acknowledged_and_hung_up() {
    // A forking proxy in front of the desk let two branches answer (RFC 3261 §13.2.2.4).
    let mut w = World::connected();
    let invite = w.invites[&addr(DESK)].clone();
    w.respond_tagged(DESK, &invite, 200, "", "other");
    let ack = w.last_to(DESK, "ACK ");
    assert!(ack.contains(";tag=other"), "{ack}");
    let bye = w.last_to(DESK, "BYE ");
    assert!(bye.contains(";tag=other"), "{bye}");
    assert_eq!(w.count_to(DESK, "BYE "), 1, "the answered dialog stays");
    assert_eq!(w.pbx.calls.count(), 1, "the call goes on");
    // Its 2xx again (the ACK lost): acknowledged again, no second BYE.
    w.respond_tagged(DESK, &invite, 200, "", "other");
    assert_eq!(w.count_to(DESK, "BYE "), 1);
    assert!(w.last_to(DESK, "ACK ").contains(";tag=other"));
    w.far_end_hangs_up();
    assert_eq!(w.count_to(DESK, "BYE "), 2);
    assert!(w.last_to(DESK, "BYE ").contains(";tag=dev"));
}

#[test]
fn a_request_older_than_one_its_side_sent_since_is_refused_500() {
    // RFC 3261 §12.2.2: a late BYE (CSeq 3) after an INFO (CSeq 5) ends nothing.
    let mut w = World::connected();
    let info = w.far_end_request("INFO", 5);
    w.deliver(FAR_END, &info);
    let late = w.far_end_request("BYE", 3);
    w.deliver(FAR_END, &late);
    assert!(w.last_to(FAR_END, "SIP/2.0 500").contains("CSeq: 3 BYE"));
    assert_eq!(w.pbx.calls.count(), 1, "the call goes on");
    assert_eq!(w.count_to(DESK, "BYE "), 0);
    let bye = w.far_end_request("BYE", 6);
    w.deliver(FAR_END, &bye);
    assert_eq!(w.pbx.calls.count(), 0);
}

#[test]
fn a_second_reinvite_before_the_first_is_answered_gets_500_and_a_crossing_one_491() {
    // RFC 3261 §14.2.
    let mut w = World::connected();
    let first = w.far_end_reinvite(2, SDP);
    w.deliver(FAR_END, &first);
    assert_eq!(w.count_to(DESK, "INVITE "), 1, "passed on");
    let second = w.far_end_reinvite(3, SDP);
    w.deliver(FAR_END, &second);
    let refused = w.last_to(FAR_END, "SIP/2.0 500");
    assert!(refused.contains("CSeq: 3 INVITE"), "{refused}");
    let after: u32 = refused
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Retry-After");
    assert!(after <= 10);
    // The desk's own re-INVITE crosses the one the host sent it.
    w.device_request(DESK, "INVITE", 2, "");
    assert!(w.last_to(DESK, "SIP/2.0 491").contains("CSeq: 2 INVITE"));
}

#[test]
fn a_reinvite_passed_on_to_a_device_pulled_away_from_is_asked_again() {
    // The far end puts the call on hold; before the desk answers, the mobile pulls.
    let mut w = World::connected();
    let reinvite = w.far_end_reinvite(2, SDP);
    w.deliver(FAR_END, &reinvite);
    let to_desk = w.last_to(DESK, "INVITE ");
    w.pull_from(MOBILE);
    w.decide(World::allow());
    let refused = w.last_to(FAR_END, "SIP/2.0 500");
    assert!(refused.contains("CSeq: 2 INVITE"), "{refused}");
    assert!(refused.contains("Retry-After: "), "{refused}");
    // The desk's late answer changes nothing: nothing goes to the mobile for it, nor to
    // the far end.
    let (to_mobile, to_far) = (w.count_to(MOBILE, ""), w.count_to(FAR_END, ""));
    w.respond(DESK, &to_desk, 200);
    assert_eq!(
        w.count_to(MOBILE, ""),
        to_mobile,
        "{}",
        w.last_to(MOBILE, "")
    );
    assert_eq!(
        w.count_to(FAR_END, ""),
        to_far,
        "{}",
        w.last_to(FAR_END, "")
    );
    // Asked again, the far end's re-INVITE reaches the mobile.
    let again = w.far_end_reinvite(3, SDP);
    w.deliver(FAR_END, &again);
    assert!(w.last_to(MOBILE, "INVITE ").contains("a=rtpmap"));
}

#[test]
fn a_reinvite_from_a_device_pulled_away_from_is_answered_by_the_far_end_and_goes_nowhere() {
    let mut w = World::connected();
    let hold = SDP.replace("a=rtpmap:101", "a=sendonly\r\na=rtpmap:101");
    w.device_reinvite(DESK, 2, &hold);
    let to_far = w.last_to(FAR_END, "INVITE ");
    w.pull_from(MOBILE);
    w.decide(World::allow());
    // The far end answers the desk's hold: acknowledged, and the desk's transaction ends.
    let acks = w.count_to(FAR_END, "ACK ");
    w.respond(FAR_END, &to_far, 200);
    assert_eq!(w.count_to(FAR_END, "ACK "), acks + 1);
    assert!(w.last_to(DESK, "SIP/2.0 487").contains("CSeq: 2 INVITE"));
    // The mobile's dialog is the mobile's: the far end's BYE reaches it there, not at
    // the Contact the desk re-INVITEd from.
    w.far_end_hangs_up();
    let bye = w.last_to(MOBILE, "BYE ");
    assert!(!bye.contains("-moved@"), "{bye}");
}

#[test]
fn a_pull_takes_the_call_without_touching_the_far_end() {
    let mut w = World::connected();
    w.pull_from(MOBILE);
    w.decide(World::allow());
    let ok = w.last_to(MOBILE, "SIP/2.0 200");
    assert!(
        ok.contains("m=audio 20004 RTP/AVP 0 101"),
        "the call's codec: {ok}"
    );
    assert_eq!(w.count_to(DESK, "BYE "), 1, "the desk is released");
    assert_eq!(w.media.take(), [Did::Reserve, Did::Switch(Side::B)]);
    assert_eq!(
        w.count_to(FAR_END, "INVITE "),
        0,
        "no re-INVITE to the far end"
    );
    assert_eq!(w.count_to(FAR_END, "UPDATE "), 0);
    let record = w.far_end_hangs_up();
    assert_eq!(
        w.count_to(MOBILE, "BYE "),
        1,
        "the far end's BYE reaches the mobile"
    );
    assert_eq!(record.flips.len(), 1);
    assert_eq!(record.flips[0].result, FlipResult::Done);
    assert_eq!(record.flips[0].targets, ["mobile"]);
}

/// Another node sharing the store holds alice's call.
struct AliceOnNodeA;

impl crate::flip::CallOwners for AliceOnNodeA {
    fn owner_of(&self, user_id: &str) -> Option<String> {
        (user_id == "alice").then(|| "sip:10.0.0.11:5060".into())
    }
}

#[test]
fn a_pull_for_a_call_another_node_holds_is_redirected_there() {
    let mut w = World::new();
    w.pbx.set_owners(std::sync::Arc::new(AliceOnNodeA));
    w.pull_from(MOBILE);
    let moved = w.last_to(MOBILE, "SIP/2.0 302");
    assert!(
        moved.contains("Contact: <sip:*77@10.0.0.11:5060>"),
        "the pull code at the node holding the call: {moved}"
    );
    // With no call anywhere, the pull is refused here as before.
    let mut alone = World::new();
    alone.pull_from(MOBILE);
    assert_eq!(alone.count_to(MOBILE, "SIP/2.0 404"), 1);
}

#[test]
fn a_connected_call_names_its_users() {
    let w = World::connected();
    let users = w.pbx.calls.users_in_calls();
    assert_eq!(users.keys().collect::<Vec<_>>(), ["alice"]);
    assert_eq!(
        users["alice"],
        w.session().arrived_at(),
        "when her call arrived"
    );
    assert!(World::new().pbx.calls.users_in_calls().is_empty());
}

#[test]
fn of_two_pulls_at_once_exactly_one_wins() {
    let mut w = World::connected();
    w.pull_from(MOBILE);
    w.pull_from(TABLET);
    assert!(
        w.last_to(TABLET, "SIP/2.0 491")
            .contains("A Flip Is Already In Progress"),
        "the second pull is refused while the first is decided"
    );
    w.decide(World::allow());
    assert_eq!(w.count_to(MOBILE, "SIP/2.0 200"), 1);
    assert_eq!(w.count_to(TABLET, "SIP/2.0 200"), 0);
}

#[test]
fn a_pull_cancelled_while_the_policy_decides_leaves_the_call_alone() {
    let mut w = World::connected();
    w.pull_from(MOBILE);
    // The mobile hangs up before the policy answers: a CANCEL of its authenticated INVITE.
    let port = addr(MOBILE).port();
    let cancel = format!(
        "CANCEL sip:*77@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {MOBILE};branch=z9hG4bK-pull-{port}-2\r\n\
From: <sip:2001@pbx.test>;tag=p{port}\r\nTo: <sip:*77@pbx.test>\r\nCall-ID: pull-{port}\r\n\
CSeq: 2 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    w.deliver(MOBILE, &cancel);
    assert_eq!(w.count_to(MOBILE, "SIP/2.0 200"), 1, "the CANCEL's 200");
    assert_eq!(w.count_to(MOBILE, "SIP/2.0 487"), 1, "the INVITE's 487");
    // The policy allows it, too late: nothing happens.
    w.decide(World::allow());
    assert_eq!(
        w.count_to(MOBILE, "SIP/2.0 200"),
        1,
        "no 200 for the INVITE"
    );
    assert_eq!(w.count_to(DESK, "BYE "), 0, "the desk keeps the call");
    assert!(w.media.take().is_empty(), "no ports reserved");
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(DESK, "BYE "), 1, "the desk still had the call");
    assert_eq!(record.flips.len(), 1);
    assert_eq!(record.flips[0].result, FlipResult::Cancelled);
}

#[test]
fn a_device_that_pulls_and_never_acks_ends_the_call_for_both_parties() {
    let mut w = World::connected();
    w.pull_from(MOBILE);
    w.decide(World::allow());
    assert_eq!(w.count_to(DESK, "BYE "), 1, "the desk is released");
    // The mobile never acknowledges its 200 (it lost its network): after 64·T1 the
    // host ends the session (RFC 3261 §13.3.1.4) — the far end is not left talking to
    // nobody.
    for _ in 0..10 {
        w.advance(Duration::from_secs(4));
    }
    // (Each BYE retransmitted, unanswered here.)
    assert!(w.count_to(FAR_END, "BYE ") > 0, "the far end is hung up");
    assert!(w.count_to(MOBILE, "BYE ") > 0, "and the silent mobile");
    let record = w.records.last().expect("the call's record");
    assert_eq!(record.flips[0].result, FlipResult::Done);
    assert_eq!(
        record.end_reason,
        "no ACK from the device that took the call"
    );
}

#[test]
fn a_device_that_pulls_a_placed_call_and_never_acks_is_not_taken_for_the_caller() {
    // The pulling device takes side A, the caller's side, over.
    let mut w = World::placed("0299990000");
    w.pull_from(MOBILE);
    w.decide(World::allow());
    assert_eq!(w.count_to(DESK, "BYE "), 1, "the desk is released");
    for _ in 0..10 {
        w.advance(Duration::from_secs(4));
    }
    assert!(w.count_to(TRUNK, "BYE ") > 0, "the far end is hung up");
    assert!(w.count_to(MOBILE, "BYE ") > 0, "and the silent mobile");
    let record = w.records.last().expect("the call's record");
    assert_eq!(
        record.end_reason,
        "no ACK from the device that took the call"
    );
}

#[test]
fn a_denied_pull_leaves_the_call_alone() {
    let mut w = World::connected();
    w.pull_from(MOBILE);
    w.decide(Ok(FlipDecision::Deny {
        reason: "not during meetings".into(),
    }));
    assert_eq!(w.count_to(MOBILE, "SIP/2.0 403"), 1);
    assert_eq!(w.count_to(DESK, "BYE "), 0);
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(DESK, "BYE "), 1, "the desk still had the call");
    assert_eq!(
        record.flips[0].result,
        FlipResult::Denied("not during meetings".into())
    );
}

#[test]
fn a_push_rings_the_other_devices_and_the_first_answer_takes_the_call() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::allow());
    assert_eq!(w.media.take(), [Did::Reserve]);
    let to_mobile = w.last_to(MOBILE, "INVITE ");
    let to_tablet = w.last_to(TABLET, "INVITE ");
    assert!(
        to_mobile.contains("m=audio 20004 RTP/AVP 0 101"),
        "{to_mobile}"
    );
    assert_eq!(
        w.count_to(DESK, "BYE "),
        0,
        "the desk keeps the call while they ring"
    );
    w.respond(MOBILE, &to_mobile, 200);
    assert_eq!(w.media.take(), [Did::Switch(Side::B)]);
    assert_eq!(
        w.count_to(DESK, "BYE "),
        1,
        "released once the mobile answered"
    );
    assert_eq!(w.count_to(TABLET, "CANCEL "), 1, "the tablet stops ringing");
    w.respond(TABLET, &to_tablet, 487);
    assert_eq!(w.count_to(FAR_END, "INVITE "), 0);
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(MOBILE, "BYE "), 1);
    assert_eq!(record.flips[0].targets, ["mobile"]);
    assert_eq!(record.flips[0].result, FlipResult::Done);
}

#[test]
fn a_push_target_answering_as_it_is_cancelled_is_hung_up_and_the_call_stays() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::allow());
    let to_mobile = w.last_to(MOBILE, "INVITE ");
    let to_tablet = w.last_to(TABLET, "INVITE ");
    w.respond(MOBILE, &to_mobile, 200);
    assert_eq!(w.count_to(TABLET, "CANCEL "), 1, "the tablet stops ringing");
    // The tablet answered too: its 200 crossed the CANCEL.
    w.respond(TABLET, &to_tablet, 200);
    assert_eq!(w.count_to(TABLET, "ACK "), 1, "its answer acknowledged");
    assert_eq!(w.count_to(TABLET, "BYE "), 1, "and hung up");
    let bye = w.last_to(TABLET, "BYE ");
    w.respond(TABLET, &bye, 200);
    assert_eq!(w.count_to(MOBILE, "BYE "), 0, "the call is on the mobile");
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(MOBILE, "BYE "), 1);
    assert_eq!(record.flips[0].targets, ["mobile"]);
    let left = w.tables_left();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_request_on_a_dialog_its_call_left_behind_gets_481_and_the_entry_goes() {
    let mut w = World::connected();
    let id = w.session();
    w.far_end_hangs_up();
    // A leg's Call-ID still pointing at the ended call: no known path leaves one (the
    // last, a side-A device hanging up during its flip, is mended in `take_over`), but
    // should one, its requests are answered, not left to retransmit.
    w.pbx.calls.by_call_id.insert("far-call".into(), id);
    let bye = w.far_end_request("BYE", 3);
    w.deliver(FAR_END, &bye);
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 481"), 1, "{:?}", w.sent);
    assert!(w.pbx.calls.by_call_id.is_empty());
}

#[test]
fn the_far_end_hanging_up_while_targets_ring_cancels_them() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::allow());
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(DESK, "BYE "), 1);
    assert_eq!(w.count_to(MOBILE, "CANCEL "), 1);
    assert_eq!(w.count_to(TABLET, "CANCEL "), 1);
    assert_eq!(record.flips[0].result, FlipResult::Cancelled);
}

#[test]
fn the_old_device_hanging_up_while_targets_ring_leaves_the_call_to_them() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::allow());
    w.media.take();
    w.device_hangs_up(DESK);
    assert_eq!(w.count_to(FAR_END, "BYE "), 0, "the far end stays");
    assert_eq!(
        w.media.take(),
        [
            Did::Answer(Side::A, crate::media::Codec::Pcmu),
            Did::Ringback
        ],
        "the far end hears ringback while it waits"
    );
    let to_mobile = w.last_to(MOBILE, "INVITE ");
    w.respond(MOBILE, &to_mobile, 200);
    assert_eq!(w.media.take(), [Did::Switch(Side::B), Did::Silence]);
    assert_eq!(w.count_to(DESK, "BYE "), 0, "the desk is already gone");
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(MOBILE, "BYE "), 1, "the mobile had the call");
    assert_eq!(record.flips[0].result, FlipResult::Done);
}

#[test]
fn a_push_nobody_answers_leaves_the_call_where_it_was() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::allow());
    w.media.take();
    w.advance(Duration::from_secs(31)); // flip.ring_timeout_ms is 30 s by default
    assert_eq!(w.count_to(MOBILE, "CANCEL "), 1);
    assert_eq!(w.count_to(DESK, "BYE "), 0);
    assert_eq!(
        w.media.take(),
        [
            Did::Release,
            Did::Answer(Side::B, crate::media::Codec::Pcmu),
            Did::Play("no-answer".into())
        ],
        "the desk hears that nobody took it"
    );
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(DESK, "BYE "), 1, "the desk still had the call");
    assert_eq!(record.flips[0].result, FlipResult::NoAnswer);
}

#[test]
fn nobody_answering_after_the_old_device_left_ends_the_call() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::allow());
    w.device_hangs_up(DESK);
    w.advance(Duration::from_secs(31));
    assert_eq!(
        w.count_to(FAR_END, "BYE "),
        1,
        "nobody is left for the far end"
    );
    let record = w.records.pop().unwrap();
    assert_eq!(record.flips[0].result, FlipResult::NoAnswer);
}

#[test]
fn a_pull_while_a_push_rings_is_refused() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::allow());
    w.pull_from(TABLET);
    assert_eq!(w.count_to(TABLET, "SIP/2.0 491"), 1);
}

#[test]
fn one_flip_at_a_time_and_a_failing_policy_denies() {
    let mut w = World::connected();
    w.push().unwrap();
    assert_eq!(
        w.push().unwrap_err().0,
        491,
        "a second push while one is decided"
    );
    w.decide(Err("trap: boom".into()));
    assert_eq!(w.count_to(MOBILE, "INVITE "), 0);
    let record = w.far_end_hangs_up();
    assert!(matches!(&record.flips[0].result, FlipResult::Denied(r) if r.contains("boom")));
}

#[test]
fn the_push_code_from_the_device_in_the_call_pushes() {
    let mut w = World::connected();
    for digit in ['*', '8'] {
        w.pbx.handle_media_event(
            w.ambient(),
            crate::media::MediaEvent::Digit {
                session: w.session(),
                side: Side::B,
                digit,
            },
        );
    }
    w.drain();
    assert_eq!(w.flips.len(), 1, "the code asked the policy");
}

#[test]
fn a_target_that_answers_and_hangs_up_at_once_ends_the_call_cleanly() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::allow());
    let to_mobile = w.last_to(MOBILE, "INVITE ");
    w.respond(MOBILE, &to_mobile, 200);
    w.device_hangs_up(MOBILE);
    assert_eq!(w.count_to(FAR_END, "BYE "), 1, "the far end is told");
    let record = w.records.pop().expect("the call ended");
    assert_eq!(record.flips[0].result, FlipResult::Done);
    assert_eq!(record.end_reason, "callee hung up");
}

#[test]
fn a_pull_that_needs_the_pin_takes_the_call_only_after_it() {
    let mut w = World::connected();
    w.pull_from(MOBILE);
    w.decide(World::require_pin());
    let ok = w.last_to(MOBILE, "SIP/2.0 200");
    assert!(ok.contains("m=audio 20004 RTP/AVP 0 101"), "{ok}");
    assert_eq!(
        w.media.take(),
        [Did::Reserve, Did::PromptReserved("enter-pin".into())],
        "the mobile hears the prompt on its own ports"
    );
    w.keys_on_reserved_ports("12");
    assert_eq!(
        w.count_to(DESK, "BYE "),
        0,
        "the desk keeps the call meanwhile"
    );
    w.keys_on_reserved_ports("34");
    assert_eq!(w.media.take(), [Did::Switch(Side::B)]);
    assert_eq!(w.count_to(DESK, "BYE "), 1, "released after the right PIN");
    assert_eq!(w.count_to(FAR_END, "INVITE "), 0);
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(MOBILE, "BYE "), 1, "the mobile had the call");
    assert_eq!(record.flips[0].result, FlipResult::Done);
    assert_eq!(record.flips[0].targets, ["mobile"]);
}

#[test]
fn three_wrong_pins_deny_the_push_and_release_the_new_device() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::require_pin());
    let to_mobile = w.last_to(MOBILE, "INVITE ");
    w.respond(MOBILE, &to_mobile, 200);
    assert_eq!(
        w.count_to(TABLET, "CANCEL "),
        1,
        "one device enters the PIN"
    );
    assert_eq!(
        w.media.take(),
        [Did::Reserve, Did::PromptReserved("enter-pin".into())]
    );
    w.keys_on_reserved_ports("9999");
    // The second try by SIP INFO, ended early by '#'.
    w.device_request(MOBILE, "INFO", 2, "Signal=5\r\nDuration=160\r\n");
    w.device_request(MOBILE, "INFO", 3, "Signal=#\r\nDuration=160\r\n");
    assert_eq!(w.count_to(MOBILE, "BYE "), 0, "two tries so far");
    w.advance(Duration::from_secs(16)); // the third try runs out
    assert_eq!(w.count_to(MOBILE, "BYE "), 1, "the mobile is released");
    assert_eq!(
        w.media.take(),
        [
            Did::PromptReserved("enter-pin".into()),
            Did::PromptReserved("enter-pin".into()),
            Did::Release
        ]
    );
    assert_eq!(w.count_to(DESK, "BYE "), 0, "the call stays on the desk");
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(DESK, "BYE "), 1);
    assert_eq!(
        record.flips[0].result,
        FlipResult::Denied("no PIN entered (3 tries)".into())
    );
}

#[test]
fn the_far_end_hanging_up_during_the_pin_releases_the_new_device() {
    let mut w = World::connected();
    w.pull_from(MOBILE);
    w.decide(World::require_pin());
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(DESK, "BYE "), 1);
    assert_eq!(w.count_to(MOBILE, "BYE "), 1);
    assert_eq!(record.flips[0].result, FlipResult::Cancelled);
}

#[test]
fn the_new_device_hanging_up_during_the_pin_leaves_the_call_alone() {
    let mut w = World::connected();
    w.push().unwrap();
    w.decide(World::require_pin());
    let to_mobile = w.last_to(MOBILE, "INVITE ");
    w.respond(MOBILE, &to_mobile, 200);
    w.device_hangs_up(MOBILE);
    assert_eq!(w.count_to(FAR_END, "BYE "), 0);
    assert_eq!(w.count_to(DESK, "BYE "), 0);
    // A new flip may start.
    w.push().unwrap();
    assert_eq!(w.flips.len(), 1);
    w.decide(Ok(FlipDecision::Deny {
        reason: "enough".into(),
    }));
    let record = w.far_end_hangs_up();
    assert_eq!(record.flips[0].result, FlipResult::Cancelled);
}

#[test]
fn the_old_device_leaving_during_the_pin_leaves_the_call_to_the_new_one() {
    let mut w = World::connected();
    w.pull_from(MOBILE);
    w.decide(World::require_pin());
    w.media.take();
    w.device_hangs_up(DESK);
    assert_eq!(w.count_to(FAR_END, "BYE "), 0, "the far end waits");
    assert_eq!(
        w.media.take(),
        [
            Did::Answer(Side::A, crate::media::Codec::Pcmu),
            Did::Ringback
        ]
    );
    w.keys_on_reserved_ports("1234");
    assert_eq!(w.media.take(), [Did::Switch(Side::B), Did::Silence]);
    let record = w.far_end_hangs_up();
    assert_eq!(w.count_to(MOBILE, "BYE "), 1);
    assert_eq!(record.flips[0].result, FlipResult::Done);
}

#[test]
fn a_pin_the_user_does_not_have_denies() {
    let verdict = super::pin::verdict(World::require_pin(), None);
    assert_eq!(
        verdict.unwrap_err(),
        "the policy wants a PIN and the user has none"
    );
}

#[test]
fn a_call_the_user_placed_is_pulled_and_pushed_without_touching_the_far_end() {
    let mut w = World::placed("0299990000");
    w.pull_from(MOBILE);
    w.decide(World::allow());
    assert_eq!(w.media.take(), [Did::Reserve, Did::Switch(Side::A)]);
    assert!(w.last_to(MOBILE, "SIP/2.0 200").contains("m=audio 20004"));
    assert_eq!(w.count_to(DESK, "BYE "), 1, "the desk is released");
    // The mobile pushes it on with the push code; the tablet answers.
    for digit in ['*', '8'] {
        w.pbx.handle_media_event(
            w.ambient(),
            crate::media::MediaEvent::Digit {
                session: w.session(),
                side: Side::A,
                digit,
            },
        );
    }
    w.drain();
    w.decide(World::allow());
    let to_tablet = w.last_to(TABLET, "INVITE ");
    assert!(
        to_tablet.contains("sip:0299990000@"),
        "the tablet sees who: {to_tablet}"
    );
    assert_eq!(w.count_to(DESK, "INVITE "), 1, "the desk (gone) rings too");
    w.respond(TABLET, &to_tablet, 200);
    assert_eq!(w.media.take(), [Did::Reserve, Did::Switch(Side::A)]);
    assert_eq!(w.count_to(MOBILE, "BYE "), 1, "the mobile is released");
    assert_eq!(
        w.count_to(TRUNK, "INVITE "),
        0,
        "no re-INVITE to the far end"
    );
    // The far end hangs up: the tablet has the call.
    let record = w.placed_call_far_end_hangs_up();
    assert_eq!(w.count_to(TABLET, "BYE "), 1, "the tablet had the call");
    let flips: Vec<_> = record
        .flips
        .iter()
        .map(|f| (f.from_device.as_str(), f.targets.clone(), f.result.clone()))
        .collect();
    assert_eq!(
        flips,
        [
            ("desk", vec!["mobile".to_owned()], FlipResult::Done),
            ("mobile", vec!["tablet".to_owned()], FlipResult::Done)
        ]
    );
}

#[test]
fn an_emergency_call_the_user_placed_cannot_be_flipped() {
    let mut w = World::placed("911");
    w.pull_from(MOBILE);
    assert!(
        w.last_to(MOBILE, "SIP/2.0 403")
            .contains("Emergency Calls Cannot Be Flipped")
    );
    assert!(w.flips.is_empty(), "the policy is not even asked");
    assert_eq!(w.count_to(DESK, "BYE "), 0);
}

#[test]
fn the_placing_device_hanging_up_while_targets_ring_leaves_the_call_to_them() {
    let mut w = World::placed("0299990000");
    let id = w.session();
    w.pbx.request_push(w.ambient(), id, Vec::new()).unwrap();
    w.drain();
    w.decide(World::allow());
    w.media.take();
    w.device_in_placed_dialog(DESK, "BYE", 3);
    assert_eq!(w.count_to(TRUNK, "BYE "), 0, "the far end stays");
    assert_eq!(
        w.media.take(),
        [
            Did::Answer(Side::B, crate::media::Codec::Pcmu),
            Did::Ringback
        ],
        "the far end (side B) hears ringback"
    );
    let to_mobile = w.last_to(MOBILE, "INVITE ");
    w.respond(MOBILE, &to_mobile, 200);
    assert_eq!(w.media.take(), [Did::Switch(Side::A), Did::Silence]);
    assert_eq!(w.count_to(DESK, "BYE "), 0, "the desk is already gone");
    // The tablet, cancelled, says so.
    let to_tablet = w.last_to(TABLET, "INVITE ");
    w.respond(TABLET, &to_tablet, 487);
    let record = w.placed_call_far_end_hangs_up();
    assert_eq!(w.count_to(MOBILE, "BYE "), 1, "the mobile had the call");
    assert_eq!(record.flips[0].result, FlipResult::Done);
    let left = w.tables_left();
    assert!(
        left.is_empty(),
        "the desk's dialog is forgotten too: {left:?}"
    );
}

#[test]
fn a_push_to_a_device_that_is_not_the_users_is_refused() {
    let mut w = World::connected();
    let refusal = w
        .pbx
        .request_push(w.ambient(), w.session(), vec!["bobs-phone".into()])
        .unwrap_err();
    assert_eq!(refusal, (403, "Not A Device Of This User".into()));
    assert!(w.flips.is_empty(), "the policy is not asked");
}

#[test]
fn a_browser_taking_the_call_releases_the_old_device_once_it_is_heard() {
    let mut w = World::connected();
    let id = w.session();
    w.over_ws.push(addr(MOBILE)); // the "mobile" is a browser here
    w.pull_from(MOBILE);
    w.decide(World::allow());
    assert_eq!(w.count_to(MOBILE, "SIP/2.0 200"), 1);
    assert_eq!(
        w.count_to(DESK, "BYE "),
        0,
        "the desk stays until the browser is heard (the far end hears it meanwhile)"
    );
    // The desk hanging up meanwhile does not end the call.
    w.device_hangs_up(DESK);
    assert_eq!(w.pbx.calls.count(), 1);
    assert_eq!(w.count_to(FAR_END, "BYE "), 0);
    // The browser is heard: nothing left to release (the desk already went).
    browser_heard(&mut w, id);
    assert_eq!(w.count_to(DESK, "BYE "), 0);
}

#[test]
fn an_old_device_is_let_go_when_the_browser_is_heard_or_after_three_seconds() {
    for heard in [true, false] {
        let mut w = World::connected();
        let id = w.session();
        w.over_ws.push(addr(MOBILE));
        w.pull_from(MOBILE);
        w.decide(World::allow());
        assert_eq!(w.count_to(DESK, "BYE "), 0);
        if heard {
            browser_heard(&mut w, id);
        } else {
            w.advance(Duration::from_millis(2_999));
            assert_eq!(w.count_to(DESK, "BYE "), 0);
            w.advance(Duration::from_millis(1));
        }
        assert_eq!(w.count_to(DESK, "BYE "), 1, "heard: {heard}");
        // The call goes on with the browser; the far end's BYE reaches it.
        w.far_end_hangs_up();
        assert_eq!(w.count_to(MOBILE, "BYE "), 1);
    }
}

/// Alice's call pulled to her "mobile", a browser here, whose audio has not come yet:
/// the desk is still on the call.
fn pulled_to_a_browser_not_yet_heard() -> World {
    let mut w = World::connected();
    w.over_ws.push(addr(MOBILE));
    w.pull_from(MOBILE);
    w.decide(World::allow());
    assert_eq!(
        w.count_to(DESK, "BYE "),
        0,
        "the desk waits for the browser's audio"
    );
    w
}

#[test]
fn a_denied_flip_while_the_old_device_waits_for_the_browser_does_not_keep_it() {
    let mut w = pulled_to_a_browser_not_yet_heard();
    // A second of no audio from the browser; the tablet's pull is denied meanwhile.
    w.advance(Duration::from_secs(1));
    w.pull_from(TABLET);
    w.decide(Ok(FlipDecision::Deny {
        reason: "one at a time".into(),
    }));
    // The browser is never heard: three seconds after the flip the desk goes anyway.
    w.advance(Duration::from_secs(2));
    assert_eq!(w.count_to(DESK, "BYE "), 1, "let go at its deadline");
    let record = w.far_end_hangs_up();
    assert_eq!(record.flips.len(), 2);
}

#[test]
fn a_phone_taking_the_call_from_a_browser_lets_the_device_before_go_too() {
    let mut w = pulled_to_a_browser_not_yet_heard();
    // Before the browser is heard, the tablet (a phone) takes the call over.
    w.pull_from(TABLET);
    w.decide(World::allow());
    assert_eq!(w.count_to(MOBILE, "BYE "), 1, "the browser is let go");
    assert_eq!(
        w.count_to(DESK, "BYE "),
        1,
        "and the desk, still waiting, too"
    );
}

/// The relay reports the browser now on side B heard (its first packet).
fn browser_heard(w: &mut World, id: crate::call::SessionId) {
    let heard = crate::media::MediaEvent::Heard {
        session: id,
        side: Side::B,
    };
    w.pbx.handle_media_event(w.ambient(), heard);
    w.drain();
}
