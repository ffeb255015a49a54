//! SDES-SRTP through the call engine: each leg negotiates its own keys (a party's keys
//! never reach the other leg), policies refuse what they must with 488, and a flip
//! gives the new device keys of its own while the far end's leg is left alone.

use super::testing::{Did, host_key};
use super::world::{CONFIG, DESK, FAR_END, MOBILE, SDP, TABLET, TRUNK, World, to_alice};
use crate::media::Side;
use crate::routing::{Action, ForwardTarget};
use crate::sdp::{self, Crypto, SdesKey, SrtpSuite};

/// The far end's (or a device's) key in the SDP below.
const PARTY_KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

/// An SRTP offer or answer: `RTP/SAVP` with one key (tag 1, as the host offers).
fn srtp_sdp() -> String {
    SDP.replace("RTP/AVP", "RTP/SAVP")
        + &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PARTY_KEY}\r\n")
}

/// The host's key line on a leg, as the fake media makes it.
fn host_line(tag: u32, side: Option<Side>) -> String {
    Crypto {
        tag,
        suite: SrtpSuite::AesCm128HmacSha1_80,
        key: host_key(side),
    }
    .line()
}

/// The far end calls Alice's flip number, the script forwards it to Alice: her phones
/// ring.
fn rings_alice(w: &mut World, call_id: &str) {
    w.far_end_calls("0400", "100", call_id);
    let id = w.session();
    w.route(id, vec![to_alice()]);
    w.drain();
}

fn with_policy(policy: &str) -> World {
    World::with_config(&format!("{CONFIG}\n[media]\nsrtp = \"{policy}\"\n"))
}

/// The audio line and keys of the SDP in a message.
fn media_of(message: &str) -> sdp::Media {
    let body = message.split("\r\n\r\n").nth(1).unwrap_or_default();
    sdp::parse(body).unwrap()
}

#[test]
fn an_srtp_caller_gets_the_host_key_and_a_plain_phone_a_plain_offer() {
    let mut w = World::new();
    w.sdp = srtp_sdp();
    rings_alice(&mut w, "srtp-1");
    let invite = w.last_to(DESK, "INVITE ");
    assert!(
        invite.contains("m=audio 20002 RTP/AVP 0 101") && !invite.contains("crypto"),
        "the desk is on UDP, so plain, and never sees the caller's key: {invite}"
    );
    w.sdp = SDP.to_owned();
    w.respond(DESK, &invite, 200);
    let ok = w.last_to(FAR_END, "SIP/2.0 200");
    let answer = media_of(&ok);
    assert!(answer.savp, "{ok}");
    assert!(
        ok.contains(&format!("{}\r\n", host_line(1, Some(Side::A)))),
        "{ok}"
    );
    assert!(!ok.contains(PARTY_KEY), "{ok}");
    assert_eq!(w.media.take(), [Did::Secure(Some(Side::A), true)]);
}

#[test]
fn required_offers_srtp_to_phones_and_takes_their_answer_key() {
    let mut w = with_policy("required");
    w.sdp = srtp_sdp();
    rings_alice(&mut w, "srtp-2");
    let invite = w.last_to(DESK, "INVITE ");
    let offer = media_of(&invite);
    assert!(offer.savp, "{invite}");
    assert_eq!(
        offer.crypto,
        [Crypto {
            tag: 1,
            suite: SrtpSuite::AesCm128HmacSha1_80,
            key: host_key(Some(Side::B)),
        }]
    );
    w.respond(DESK, &invite, 200);
    assert!(w.last_to(FAR_END, "SIP/2.0 200").contains("RTP/SAVP"));
    let did = w.media.take();
    assert_eq!(did.first(), Some(&Did::Secure(Some(Side::A), true)));
    assert!(did.contains(&Did::Secure(Some(Side::B), false)), "{did:?}");
    assert_eq!(
        did.last(),
        Some(&Did::Secure(Some(Side::B), true)),
        "{did:?}"
    );
}

#[test]
fn a_user_that_requires_srtp_gets_it_offered_and_others_keep_plain_offers() {
    // Optional (the default) never guesses: a TLS phone without SRTP must still ring.
    let mut w = World::new();
    rings_alice(&mut w, "plain-tls");
    assert!(!media_of(&w.last_to(DESK, "INVITE ")).savp);
    // Alice's phones are set to SRTP only: her user says so.
    let config = CONFIG.replace("pin = \"1234\"", "pin = \"1234\"\nsrtp = \"required\"");
    let mut w = World::with_config(&config);
    rings_alice(&mut w, "to-alice");
    assert!(media_of(&w.last_to(DESK, "INVITE ")).savp);
    // And a plain pull from one of them is refused.
    w.respond(DESK, &w.last_to(DESK, "INVITE "), 200);
    w.pull_from(MOBILE);
    assert_eq!(w.count_to(MOBILE, "SIP/2.0 488"), 1);
}

#[test]
fn what_a_policy_cannot_take_is_refused_with_488() {
    // Plain RTP to a leg that requires SRTP.
    let mut w = with_policy("required");
    w.far_end_calls("0400", "100", "plain");
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 488"), 1);
    // SRTP to a leg where it is off.
    let mut w = with_policy("off");
    w.sdp = srtp_sdp();
    w.far_end_calls("0400", "100", "savp");
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 488"), 1);
    // A key that is not a key.
    let mut w = World::new();
    w.sdp = srtp_sdp().replace(PARTY_KEY, "c2hvcnQ=");
    w.far_end_calls("0400", "100", "bad-key");
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 488"), 1);
    // RTP/SAVP with keys only in suites the host does not speak.
    let mut w = World::new();
    w.sdp = srtp_sdp().replace("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM");
    w.far_end_calls("0400", "100", "gcm-only");
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 488"), 1);
    assert!(w.pbx.calls.summaries().is_empty());
}

#[test]
fn a_trunk_policy_overrides_the_phones_one() {
    let config = CONFIG.replace(
        "inbound = [\"127.0.0.2\"]",
        "inbound = [\"127.0.0.2\"]\nsrtp = \"off\"",
    );
    let mut w = World::with_config(&format!("{config}\n[media]\nsrtp = \"required\"\n"));
    w.far_end_calls("0400", "100", "plain-carrier");
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 488"), 0);
    let id = w.session();
    w.route(id, vec![to_alice()]);
    w.drain();
    assert!(
        media_of(&w.last_to(DESK, "INVITE ")).savp,
        "phones still get SRTP"
    );
}

#[test]
fn a_leg_placed_again_without_srtp_is_plain_again() {
    // Alice's phones require SRTP, the trunk does not.
    let config = CONFIG.replace("pin = \"1234\"", "pin = \"1234\"\nsrtp = \"required\"");
    let mut w = World::with_config(&config);
    rings_alice(&mut w, "then-the-trunk");
    for device in [DESK, MOBILE, TABLET] {
        let invite = w.last_to(device, "INVITE ");
        w.respond(device, &invite, 486);
    }
    assert!(w.media.take().contains(&Did::Secure(Some(Side::B), false)));
    // Nobody took it: the script forwards it out through the trunk, offered plain.
    let id = w.session();
    w.route(
        id,
        vec![Action::Forward {
            target: ForwardTarget::Number("0290000099".into()),
            trunk: None,
            ring_timeout_ms: 30_000,
            caller_id: None,
        }],
    );
    w.drain();
    assert!(!media_of(&w.last_to(TRUNK, "INVITE ")).savp);
    assert_eq!(w.media.take(), [Did::Plain(Some(Side::B))]);
}

#[test]
fn a_pulling_device_gets_keys_of_its_own_and_the_far_end_keeps_its_leg() {
    let mut w = World::connected();
    w.media.take();
    w.sdp = srtp_sdp();
    w.pull_from(MOBILE);
    w.decide(World::allow());
    let ok = w.last_to(MOBILE, "SIP/2.0 200");
    assert!(
        ok.contains(&format!(
            "m=audio 20004 RTP/SAVP 0 101\r\n{}\r\n",
            host_line(1, None)
        )),
        "{ok}"
    );
    assert_eq!(
        w.media.take(),
        [Did::Reserve, Did::Secure(None, true), Did::Switch(Side::B)]
    );
    assert_eq!(w.count_to(FAR_END, "INVITE "), 0, "nothing renegotiated");
}

#[test]
fn a_pushed_device_is_offered_srtp_when_required_and_its_key_taken() {
    let mut w = with_policy("required");
    w.sdp = srtp_sdp();
    rings_alice(&mut w, "srtp-push");
    let invite = w.last_to(DESK, "INVITE ");
    w.respond(DESK, &invite, 200);
    w.media.take();
    w.push().unwrap();
    w.decide(World::allow());
    let offer = w.last_to(MOBILE, "INVITE ");
    assert!(offer.contains(&host_line(1, None)), "{offer}");
    w.respond(MOBILE, &offer, 200);
    let did = w.media.take();
    assert!(did.contains(&Did::Secure(None, true)), "{did:?}");
    assert_eq!(did.last(), Some(&Did::Switch(Side::B)), "{did:?}");
}

#[test]
fn a_reinvite_may_change_the_key_but_not_drop_srtp() {
    let mut w = World::new();
    w.sdp = srtp_sdp();
    rings_alice(&mut w, "far-call");
    let invite = w.last_to(DESK, "INVITE ");
    w.sdp = SDP.to_owned();
    w.respond(DESK, &invite, 200);
    let ok = w.last_to(FAR_END, "SIP/2.0 200");
    let a_tag =
        crate::sip::message::to_tag(&crate::sip::message::parse(ok.as_bytes()).unwrap()).unwrap();
    w.media.take();
    let reinvite = |cseq: u32, body: &str| {
        format!(
            "INVITE sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-re-{cseq}\r\n\
From: <sip:0400@127.0.0.2>;tag=far-call\r\nTo: <sip:100@127.0.0.1>;tag={a_tag}\r\nCall-ID: far-call\r\n\
CSeq: {cseq} INVITE\r\nContact: <sip:far@{FAR_END}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // A new key from the far end: the relay takes it, and the desk hears nothing of it.
    let new_key = Crypto {
        tag: 1,
        suite: SrtpSuite::AesCm128HmacSha1_80,
        key: SdesKey([5; 30]),
    };
    let rekeyed = srtp_sdp().replace(
        &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PARTY_KEY}"),
        &new_key.line(),
    );
    w.deliver(FAR_END, &reinvite(2, &rekeyed));
    assert_eq!(w.media.take(), [Did::Secure(Some(Side::A), true)]);
    let to_desk = w.last_to(DESK, "INVITE ");
    assert!(!to_desk.contains("crypto"), "{to_desk}");
    w.respond(DESK, &to_desk, 200);
    let answer = w.last_to(FAR_END, "SIP/2.0 200");
    assert!(
        answer.contains(&host_line(1, Some(Side::A))),
        "the host's key stays: {answer}"
    );
    // Plain RTP offered on the SRTP leg: refused.
    w.deliver(FAR_END, &reinvite(3, SDP));
    assert_eq!(w.count_to(FAR_END, "SIP/2.0 488"), 1);
}
