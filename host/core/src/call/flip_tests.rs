//! Call flip on the sans-IO core, interleaving by interleaving: a PSTN call forwarded to
//! Alice, whose desk phone answers; then pulls and pushes with the far end, the old
//! device and the targets acting in every order that matters. Devices are SIP messages
//! written here; the policy's decisions are handed in by hand; time is a fake clock.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::call::CallRecord;
use crate::call::testing::{Did, FakeMedia};
use crate::config::Config;
use crate::flip::{Allow, FlipDecision, FlipResult};
use crate::media::Side;
use crate::pbx::{Ambient, Pbx, PbxOutput};
use crate::registrar::Binding;
use crate::routing::{Action, Decision, ForwardTarget};
use crate::sip::digest::{Algorithm, client_response};
use crate::sip::message::{self, SipMessage};
use crate::sip::transaction::{Peer, Transport};

const WALL: i64 = 1_790_000_000;
const FAR_END: &str = "127.0.0.2:5060";
const DESK: &str = "127.0.0.1:6001";
const MOBILE: &str = "127.0.0.1:6002";
const TABLET: &str = "127.0.0.1:6003";
/// The trunk's far end, for calls Alice places.
const TRUNK: &str = "127.0.0.1:5090";
const SDP: &str = "v=0\r\no=d 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

struct World {
    pbx: Pbx,
    media: FakeMedia,
    now: Instant,
    /// Everything the host sent, with where to: (destination, text).
    sent: Vec<(SocketAddr, String)>,
    flips: Vec<u64>,
    records: Vec<CallRecord>,
    /// The far end's dialog: the To tag the host gave it.
    a_tag: String,
    /// The last INVITE the host sent each device (its dialog with it).
    invites: std::collections::HashMap<SocketAddr, String>,
    /// Fresh randomness for every input (digest nonces differ per challenge).
    random: std::cell::Cell<u64>,
    /// The From, To and Call-ID headers of the call the desk placed, if it did.
    placed_dialog: String,
    /// The host's 200 to the far end's INVITE.
    far_answer: String,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl World {
    /// Alice's desk phone, mobile and tablet registered; a PSTN call forwarded to her;
    /// the desk answers.
    fn connected() -> Self {
        let mut w = World::new();
        let invite = format!(
            "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-far\r\n\
From: <sip:0400@127.0.0.2>;tag=far\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: far-call\r\n\
CSeq: 1 INVITE\r\nContact: <sip:far@{FAR_END}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        );
        w.deliver(FAR_END, &invite);
        let decision = Decision {
            actions: vec![Action::Forward {
                target: ForwardTarget::User("alice".into()),
                trunk: None,
                ring_timeout_ms: 30_000,
                caller_id: None,
            }],
            script: None,
            fallback: None,
        };
        let id = w.session();
        w.pbx.handle_decision(w.ambient(), id, decision, None);
        w.drain();
        let desk_invite = w.last_to(DESK, "INVITE ");
        w.respond(DESK, &desk_invite, 200);
        for device in [MOBILE, TABLET] {
            let cancel = w.last_to(device, "CANCEL ");
            w.respond(device, &cancel, 200);
            let invite = w.last_to(device, "INVITE ");
            w.respond(device, &invite, 487);
        }
        let ok = w.last_to(FAR_END, "SIP/2.0 200");
        w.far_answer = ok.clone();
        let ok = message::parse(ok.as_bytes()).unwrap();
        w.a_tag = message::to_tag(&ok).unwrap();
        let ack = w.far_end_request("ACK", 1);
        w.deliver(FAR_END, &ack);
        w.sent.clear();
        w.media.take();
        w
    }

    /// Alice's desk phone calls `number` out through the trunk, whose far end answers.
    fn placed(number: &str) -> Self {
        let mut w = World::new();
        w.device_invite(DESK, number);
        let out = w.last_to(TRUNK, "INVITE ");
        w.respond(TRUNK, &out, 200);
        let ok = w.last_to(DESK, "SIP/2.0 200");
        let m = message::parse(ok.as_bytes()).unwrap();
        w.placed_dialog = format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\n",
            message::header_value(&m, "From").unwrap(),
            message::header_value(&m, "To").unwrap(),
            message::call_id(&m).unwrap()
        );
        w.device_in_placed_dialog(DESK, "ACK", 2);
        w.sent.clear();
        w.media.take();
        w
    }

    /// Alice's desk phone, mobile and tablet registered; no call yet.
    fn new() -> Self {
        let config = Config::parse(
            r#"
[sip]
domain = "pbx.test"

[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:5090"
inbound = ["127.0.0.2"]

[[locations]]
name = "sydney"
flip_number = "100"
script = "x"
fallback_number = "999"

[[users]]
id = "alice"
extension = "2001"
password = "s3cret"
pin = "1234"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        let media = FakeMedia::default();
        let mut pbx = Pbx::new(
            Arc::new(config),
            [7; 32],
            Box::new(media.clone()),
            addr("127.0.0.1:5060"),
        );
        let bindings = [("desk", DESK), ("mobile", MOBILE), ("tablet", TABLET)]
            .into_iter()
            .map(|(device, source)| Binding {
                user_id: "alice".into(),
                device: device.into(),
                contact: format!("sip:2001@{source}"),
                instance: None,
                user_agent: Some(device.into()),
                transport: Transport::Udp,
                source: addr(source),
                expires_at: WALL + 3600,
                call_id: format!("reg-{device}"),
                cseq: 1,
            })
            .collect();
        pbx.registrar.restore(WALL, bindings);
        World {
            pbx,
            media,
            now: wasmpbx_types::clock::monotonic_now(),
            sent: Vec::new(),
            flips: Vec::new(),
            records: Vec::new(),
            a_tag: String::new(),
            invites: std::collections::HashMap::new(),
            random: std::cell::Cell::new(1),
            placed_dialog: String::new(),
            far_answer: String::new(),
        }
    }

    /// A request from the desk in the dialog of the call it placed.
    fn device_in_placed_dialog(&mut self, device: &str, method: &str, cseq: u32) {
        let request = format!(
            "{method} sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {device};branch=z9hG4bK-{method}-{cseq}-placed\r\n\
{}CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.placed_dialog
        );
        self.deliver(device, &request);
    }

    /// The id of the (one) live call.
    fn session(&self) -> crate::call::SessionId {
        self.pbx.calls.summaries()[0].session
    }

    fn ambient(&self) -> Ambient {
        Ambient {
            now: self.now,
            wall_ms: WALL * 1000,
            random: {
                self.random.set(self.random.get() + 1);
                self.random.get()
            },
        }
    }

    fn deliver(&mut self, from: &str, text: &str) {
        let peer = Peer {
            transport: Transport::Udp,
            addr: addr(from),
        };
        self.pbx.handle_bytes(self.ambient(), text.as_bytes(), peer);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(output) = self.pbx.poll_output() {
            match output {
                PbxOutput::Transmit { peer, bytes } => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    if text.starts_with("INVITE ") {
                        self.invites.insert(peer.addr, text.clone());
                    }
                    self.sent.push((peer.addr, text));
                }
                PbxOutput::DecideFlip { flip, .. } => self.flips.push(flip),
                PbxOutput::Record(record) => self.records.push(record),
                // The script has nothing to add when a call ends: its record follows.
                PbxOutput::Route {
                    session,
                    event: crate::routing::Event::CallEnded { .. },
                    ..
                } => {
                    let nothing = Decision {
                        actions: Vec::new(),
                        script: None,
                        fallback: None,
                    };
                    self.pbx
                        .handle_decision(self.ambient(), session, nothing, None);
                }
                _ => {}
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.pbx.handle_timeout(self.ambient());
        self.drain();
    }

    /// The last message the host sent `to` that starts with `start`.
    fn last_to(&self, to: &str, start: &str) -> String {
        self.sent
            .iter()
            .rev()
            .find(|(a, m)| *a == addr(to) && m.starts_with(start))
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("nothing starting {start:?} sent to {to}: {:#?}", self.sent))
    }

    fn count_to(&self, to: &str, start: &str) -> usize {
        self.sent
            .iter()
            .filter(|(a, m)| *a == addr(to) && m.starts_with(start))
            .count()
    }

    /// `device` answers a request the host sent it (with SDP for a 2xx to an INVITE).
    fn respond(&mut self, device: &str, request: &str, code: u16) {
        let Ok(SipMessage::Request(request)) = message::parse(request.as_bytes()) else {
            panic!("not a request: {request}");
        };
        let mut response = message::response_to(&request, code, Some("dev"));
        if code == 200 && request.method == rsip::Method::Invite {
            super::requests::attach_sdp(&mut response, addr(device), SDP.to_owned());
        }
        let bytes = message::serialize(&SipMessage::Response(response));
        self.deliver(device, &String::from_utf8(bytes).unwrap());
    }

    /// An in-dialog request from the far end.
    fn far_end_request(&self, method: &str, cseq: u32) -> String {
        format!(
            "{method} sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-far-{method}-{cseq}\r\n\
From: <sip:0400@127.0.0.2>;tag=far\r\nTo: <sip:100@127.0.0.1>;tag={}\r\nCall-ID: far-call\r\n\
CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.a_tag
        )
    }

    /// A device hangs up the dialog the host has with it (the host's last INVITE to it
    /// defines the dialog).
    fn device_hangs_up(&mut self, device: &str) {
        self.device_request(device, "BYE", 9, "");
    }

    /// An in-dialog request from a device in the dialog the host's last INVITE to it
    /// made.
    fn device_request(&mut self, device: &str, method: &str, cseq: u32, info: &str) {
        let invite = &self.invites[&addr(device)];
        let Ok(SipMessage::Request(invite)) = message::parse(invite.as_bytes()) else {
            panic!()
        };
        let m = SipMessage::Request(invite);
        let body = if info.is_empty() {
            "Content-Length: 0\r\n\r\n".to_owned()
        } else {
            format!(
                "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{info}",
                info.len()
            )
        };
        let request = format!(
            "{method} sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {device};branch=z9hG4bK-{method}-{cseq}-{}\r\n\
From: {};tag=dev\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{body}",
            addr(device).port(),
            message::header_value(&m, "To").unwrap(),
            message::header_value(&m, "From").unwrap(),
            message::call_id(&m).unwrap()
        );
        self.deliver(device, &request);
    }

    /// Keys from the device on the reserved ports (RFC 4733, as the media reports them).
    fn keys_on_reserved_ports(&mut self, keys: &str) {
        for digit in keys.chars() {
            self.pbx.handle_media_event(
                self.ambient(),
                crate::media::MediaEvent::ReservedDigit {
                    session: self.session(),
                    digit,
                },
            );
        }
        self.drain();
    }

    /// A device of Alice's dials the pull code.
    fn pull_from(&mut self, device: &str) {
        self.device_invite(device, "*77");
    }

    /// A device of Alice's dials `number`, answering the digest challenge.
    fn device_invite(&mut self, device: &str, number: &str) {
        let tag = addr(device).port();
        let invite = |cseq: u32, auth: &str| {
            format!(
                "INVITE sip:{number}@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {device};branch=z9hG4bK-pull-{tag}-{cseq}\r\n\
From: <sip:2001@pbx.test>;tag=p{tag}\r\nTo: <sip:{number}@pbx.test>\r\nCall-ID: pull-{tag}\r\n\
CSeq: {cseq} INVITE\r\nContact: <sip:2001@{device}>\r\nMax-Forwards: 70\r\n{auth}\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
                SDP.len()
            )
        };
        self.deliver(device, &invite(1, ""));
        let challenge = self.last_to(device, "SIP/2.0 407");
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_owned();
        let response = client_response(
            Algorithm::Md5,
            "2001",
            "pbx.test",
            "s3cret",
            "INVITE",
            &format!("sip:{number}@pbx.test"),
            &nonce,
            "00000001",
            "cn",
        );
        let auth = format!(
            "Proxy-Authorization: Digest username=\"2001\", realm=\"pbx.test\", nonce=\"{nonce}\", \
uri=\"sip:{number}@pbx.test\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"cn\"\r\n"
        );
        self.deliver(device, &invite(2, &auth));
    }

    fn decide(&mut self, decision: Result<FlipDecision, String>) {
        let flip = self.flips.pop().expect("a flip waiting for the policy");
        self.pbx
            .handle_flip_decision(self.ambient(), flip, decision);
        self.drain();
    }

    fn allow() -> Result<FlipDecision, String> {
        Ok(FlipDecision::Allow(Allow {
            targets: Vec::new(),
            ring_timeout_ms: 0,
        }))
    }

    fn require_pin() -> Result<FlipDecision, String> {
        Ok(FlipDecision::RequirePin(Allow {
            targets: Vec::new(),
            ring_timeout_ms: 0,
        }))
    }

    fn push(&mut self) -> Result<(), (u16, String)> {
        let id = self.session();
        let result = self.pbx.request_push(self.ambient(), id, Vec::new());
        self.drain();
        result
    }

    /// The far end hangs up; the call's record.
    fn far_end_hangs_up(&mut self) -> CallRecord {
        let bye = self.far_end_request("BYE", 2);
        self.deliver(FAR_END, &bye);
        self.records.pop().expect("the call ended")
    }
}

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
fn hold_and_resume_are_new_versions_of_the_same_sdp_session() {
    let mut w = World::connected();
    let (desk_session, first) = origin_of(&w.invites[&addr(DESK)]);
    assert_eq!(first, 1);
    let (far_session, _) = origin_of(&w.far_answer);
    for (cseq, direction, version) in [(2, "sendonly", 2), (3, "sendrecv", 3)] {
        let sdp = SDP.replace("a=rtpmap:101", &format!("a={direction}\r\na=rtpmap:101"));
        let reinvite = format!(
            "INVITE sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-far-re-{cseq}\r\n\
From: <sip:0400@127.0.0.2>;tag=far\r\nTo: <sip:100@127.0.0.1>;tag={}\r\nCall-ID: far-call\r\n\
CSeq: {cseq} INVITE\r\nContact: <sip:far@{FAR_END}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            w.a_tag,
            sdp.len()
        );
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
    let trunk_invite = w.invites[&addr(TRUNK)].clone();
    let Ok(SipMessage::Request(trunk_invite)) = message::parse(trunk_invite.as_bytes()) else {
        panic!()
    };
    let m = SipMessage::Request(trunk_invite);
    let bye = format!(
        "BYE sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bK-trunk-bye\r\n\
From: {};tag=dev\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 5 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        message::header_value(&m, "To").unwrap(),
        message::header_value(&m, "From").unwrap(),
        message::call_id(&m).unwrap()
    );
    w.deliver(TRUNK, &bye);
    assert_eq!(w.count_to(TABLET, "BYE "), 1, "the tablet had the call");
    let record = w.records.pop().expect("the call ended");
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
