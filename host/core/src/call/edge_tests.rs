//! Phones behind the edge (`[cluster] edge`): the edge registers and authenticates them,
//! a node takes its word for who calls, and rings a user's phones through it.

use std::time::Duration;

use super::world::{CONFIG, DESK, FAR_END, World, addr, to_alice};
use crate::flip::FlipResult;
use crate::registrar::EdgePhone;
use crate::routing::{Action, ForwardTarget};

const EDGE: &str = "127.0.0.9:5060";
/// Another edge, listed after [`EDGE`].
const SECOND_EDGE: &str = "127.0.0.10:5060";

/// The world's config with an edge at [`EDGE`], and Carol, whose phones are behind it.
fn behind_the_edge() -> String {
    format!(
        "{CONFIG}\n[[users]]\nid = \"carol\"\nextension = \"2003\"\npassword = \"c\"\n\
         devices = {{ desk = \"Yealink\" }}\n\
         [store]\nurl = \"postgres://db/pbx\"\n\
         [cluster]\nnode = \"a\"\nedge = [\"sip:{EDGE}\"]\n"
    )
}

#[test]
fn a_pull_through_the_edge_is_taken_on_its_word_and_nobody_elses() {
    let mut w = World::connected_with_config(&behind_the_edge());
    let sdp = w.sdp.clone();
    let pull = |from: &str| {
        format!(
            "INVITE sip:*77@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{from}\r\n\
Via: SIP/2.0/UDP 127.0.0.1:7002;branch=z9hG4bK-phone\r\n\
From: <sip:2001@pbx.test>;tag=m\r\nTo: <sip:*77@pbx.test>\r\nCall-ID: pull-via-{from}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:2001@127.0.0.1:7002>\r\nUser-Agent: Grandstream GXP\r\n\
P-Asserted-Identity: <sip:2001@pbx.test>\r\nMax-Forwards: 69\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    };
    // Anyone else claiming to be the edge is challenged like any device.
    w.deliver("127.0.0.8:5060", &pull("127.0.0.8:5060"));
    assert_eq!(w.count_to("127.0.0.8:5060", "SIP/2.0 407"), 1);
    assert!(w.flip_requests.is_empty());
    w.deliver(EDGE, &pull(EDGE));
    assert_eq!(
        w.count_to(EDGE, "SIP/2.0 407"),
        0,
        "the edge authenticated it"
    );
    let request = w.flip_requests.last().expect("the pull put to the policy");
    assert_eq!(request.user_id, "alice");
    assert_eq!(request.requesting_device, "grandstream@127.0.0.1:7002");
    assert_eq!(
        request.candidates.len(),
        1,
        "the device the edge vouched for"
    );
    assert_eq!(request.candidates[0].name, "grandstream@127.0.0.1:7002");
    w.decide(World::allow());
    assert_eq!(w.count_to(EDGE, "SIP/2.0 200"), 1, "pulled");
}

/// Carol's phones as the edge's registrar lists them: her desk (named by the config)
/// and her mobile (named by its User-Agent and contact address).
fn carols_phones() -> Vec<EdgePhone> {
    let phone = |contact: &str, user_agent: &str| EdgePhone {
        username: "2003".into(),
        contact: contact.into(),
        user_agent: Some(user_agent.into()),
        instance: None,
    };
    vec![
        phone("sip:2003@127.0.0.1:7010", "Yealink SIP-T46S"),
        phone("sip:2003-x1@127.0.0.1:7011;transport=udp", "Linphone/5.2"),
        // An extension nobody here has: left out.
        EdgePhone {
            username: "2999".into(),
            ..phone("sip:2999@127.0.0.1:7012", "Yealink")
        },
    ]
}

/// A call from the trunk, forwarded to Carol: her phones ring through the edge.
fn carol_rung(w: &mut World) {
    w.deliver(FAR_END, &World::trunk_invite());
    let id = w.session();
    let to_carol = Action::Forward {
        target: ForwardTarget::User("carol".into()),
        trunk: None,
        ring_timeout_ms: 30_000,
        caller_id: None,
    };
    w.route(id, vec![to_carol]);
    w.drain();
}

/// A call from the trunk to Carol, answered by her desk behind the edge.
fn carol_on_her_desk(w: &mut World) {
    carol_rung(w);
    let invite = w.last_to(EDGE, "INVITE sip:2003@pbx.test SIP/2.0");
    w.respond_with(
        EDGE,
        &invite,
        200,
        "User-Agent: Yealink SIP-T46S\r\nContact: <sip:2003@127.0.0.1:7010>\r\n",
    );
}

#[test]
fn the_phones_are_reached_through_the_next_edge_while_the_first_is_silent() {
    let two_edges = behind_the_edge().replace(
        &format!("edge = [\"sip:{EDGE}\"]"),
        &format!("edge = [\"sip:{EDGE}\", \"sip:{SECOND_EDGE}\"]"),
    );
    let mut w = World::with_config(&two_edges);
    w.pbx.registrar.set_phones_behind_edge(carols_phones());
    let now = w.ambient();
    w.pbx.start_trunks_and_edges(now);
    w.drain();
    let probe = w.last_to(SECOND_EDGE, "OPTIONS sip:127.0.0.10:5060 SIP/2.0");
    w.respond(SECOND_EDGE, &probe, 200);
    assert_eq!(w.count_to(EDGE, "OPTIONS sip:127.0.0.9:5060 SIP/2.0"), 1);
    // The first edge says nothing to its probe within two seconds: it is down.
    w.advance(Duration::from_millis(2_100));
    let probe = w.last_to(SECOND_EDGE, "OPTIONS ");
    w.respond(SECOND_EDGE, &probe, 200);
    carol_rung(&mut w);
    assert_eq!(w.count_to(EDGE, "INVITE "), 0);
    w.last_to(SECOND_EDGE, "INVITE sip:2003@pbx.test SIP/2.0");
    let reached_through =
        |w: &World| -> Vec<_> { w.pbx.registrar.devices("carol").map(|b| b.source).collect() };
    assert_eq!(reached_through(&w), [addr(SECOND_EDGE); 2], "a push too");
    // It answers its next probe: the phones are reached through it again.
    let probe = w.last_to(EDGE, "OPTIONS ");
    w.respond(EDGE, &probe, 200);
    assert_eq!(reached_through(&w), [addr(EDGE); 2]);
}

#[test]
fn a_push_behind_the_edge_rings_the_users_other_phone_at_its_contact() {
    let mut w = World::with_config(&behind_the_edge());
    assert!(w.pbx.registrar.set_phones_behind_edge(carols_phones()));
    assert!(
        !w.pbx.registrar.set_phones_behind_edge(carols_phones()),
        "the same list again changes nothing"
    );
    let devices: Vec<_> = w
        .pbx
        .registrar
        .devices("carol")
        .map(|b| &b.device)
        .collect();
    assert_eq!(devices, ["desk", "linphone-5.2@127.0.0.1:7011"]);
    carol_on_her_desk(&mut w);
    w.push().expect("a push from the desk");
    let request = w.flip_requests.last().expect("the push put to the policy");
    assert_eq!(request.requesting_device, "desk");
    let candidates: Vec<_> = request.candidates.iter().map(|c| &c.name).collect();
    assert_eq!(
        candidates,
        ["linphone-5.2@127.0.0.1:7011"],
        "her other phone, not the desk she is on"
    );
    w.decide(World::allow());
    // The edge relays to the one contact named: the desk, in the call, does not ring.
    let to_mobile = w.last_to(EDGE, "INVITE sip:2003-x1@127.0.0.1:7011;transport=");
    assert!(to_mobile.contains("To: <sip:2003@pbx.test>"), "{to_mobile}");
    assert_eq!(
        w.count_to(EDGE, "INVITE sip:2003@pbx.test"),
        1,
        "only the first call"
    );
    w.respond_with(
        EDGE,
        &to_mobile,
        200,
        "User-Agent: Linphone/5.2\r\nContact: <sip:2003-x1@127.0.0.1:7011>\r\n",
    );
    assert_eq!(
        w.count_to(EDGE, "BYE sip:2003@127.0.0.1:7010"),
        1,
        "the desk let go"
    );
    let record = w.far_end_hangs_up();
    let flip = &record.flips[0];
    assert_eq!(
        (
            flip.from_device.as_str(),
            flip.targets.as_slice(),
            &flip.result
        ),
        (
            "desk",
            &["linphone-5.2@127.0.0.1:7011".to_owned()][..],
            &FlipResult::Done
        )
    );
    // The edge's list is the latest one: a phone gone from it is no device any more.
    assert!(w.pbx.registrar.set_phones_behind_edge(Vec::new()));
    assert_eq!(w.pbx.registrar.devices("carol").count(), 0);
}

#[test]
fn a_user_with_no_phone_here_is_rung_through_the_edge() {
    let mut w = World::with_config(&behind_the_edge());
    carol_rung(&mut w);
    let invite = w.last_to(EDGE, "INVITE sip:2003@pbx.test SIP/2.0");
    w.respond_with(EDGE, &invite, 200, "User-Agent: Yealink SIP-T46S\r\n");
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 200"), 1, "answered");
    let call = &w.pbx.calls.summaries()[0];
    assert_eq!(
        call.forwarded_to.as_deref(),
        Some("carol/desk"),
        "the call is on the phone that answered, named as the config names it"
    );
    let users = w.pbx.calls.users_in_calls();
    assert_eq!(users.keys().collect::<Vec<_>>(), ["carol"]);
    // Alice's phones are registered here: the edge is not asked.
    let mut here = World::with_config(&behind_the_edge());
    here.deliver(FAR_END, &World::trunk_invite());
    let id = here.session();
    here.route(id, vec![to_alice()]);
    here.drain();
    assert_eq!(here.count_to(DESK, "INVITE "), 1);
    assert_eq!(here.count_to(EDGE, "INVITE "), 0);
}
