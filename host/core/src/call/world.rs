//! The one fake-clock world for the call engine's tests (flip, active mode): a `Pbx` on
//! fake media, Alice's desk phone, mobile and tablet registered, a trunk whose far end
//! calls the flip number `100`, the scripts' decisions handed in by hand, and time moved
//! on by hand. Devices are SIP messages written here.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::call::CallRecord;
use crate::call::testing::FakeMedia;
use crate::config::Config;
use crate::flip::{Allow, FlipDecision};
use crate::pbx::{Ambient, Pbx, PbxOutput};
use crate::registrar::Binding;
use crate::registrar::SharedAuth;
use crate::routing::{Action, Decision, Event, ForwardTarget};
use crate::sip::digest::Challenge;
use crate::sip::local::LocalAddrs;
use crate::sip::message::{self, SipMessage};
use crate::sip::shards::Shard;
use crate::sip::transaction::{Peer, Transport};

pub(super) const WALL: i64 = 1_790_000_000;
pub(super) const FAR_END: &str = "127.0.0.2:5060";
pub(super) const DESK: &str = "127.0.0.1:6001";
pub(super) const MOBILE: &str = "127.0.0.1:6002";
pub(super) const TABLET: &str = "127.0.0.1:6003";
/// The trunk's far end, for calls Alice places.
pub(super) const TRUNK: &str = "127.0.0.1:5090";
/// The host's listeners: UDP and TCP on 5060, TLS on 5061.
const LOCALS: LocalAddrs = LocalAddrs {
    udp: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5060),
    tcp: Some(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        5060,
    )),
    tls: Some(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        5061,
    )),
};
/// The world's configuration: a trunk, a location on flip number 100, Alice.
pub(super) const CONFIG: &str = r#"
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
"#;
pub(super) const SDP: &str = "v=0\r\no=d 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

pub(super) struct World {
    pub(super) pbx: Pbx,
    pub(super) media: FakeMedia,
    /// When the world began, on the fake clock.
    pub(super) t0: Instant,
    pub(super) now: Instant,
    /// The events the calls put to their scripts, in order.
    pub(super) routed: Vec<Event>,
    /// Whether the world answers `call-ended` itself (with no actions), so records follow.
    pub(super) answer_call_ended: bool,
    /// Everything the host sent, with where to: (destination, text).
    pub(super) sent: Vec<(SocketAddr, String)>,
    pub(super) flips: Vec<u64>,
    /// What each flip put to the policy, in order.
    pub(super) flip_requests: Vec<crate::flip::FlipRequest>,
    pub(super) records: Vec<CallRecord>,
    /// Answered calls' records as they went (state `live`).
    pub(super) live_records: Vec<CallRecord>,
    /// The far end's dialog: the To tag the host gave it.
    pub(super) a_tag: String,
    /// The last INVITE the host sent each device (its dialog with it).
    pub(super) invites: std::collections::HashMap<SocketAddr, String>,
    /// Fresh randomness for every input (digest nonces differ per challenge).
    pub(super) random: std::cell::Cell<u64>,
    /// The From, To and Call-ID headers of the call the desk placed, if it did.
    pub(super) placed_dialog: String,
    /// The host's 200 to the far end's INVITE.
    pub(super) far_answer: String,
    /// Peers whose messages arrive over TLS, and over WebSocket (browsers); the rest
    /// over UDP.
    pub(super) over_tls: Vec<SocketAddr>,
    pub(super) over_ws: Vec<SocketAddr>,
    /// The SDP the far end offers and devices offer and answer with.
    pub(super) sdp: String,
    /// Requests handed to another shard.
    pub(super) handed_off: Vec<HandedOff>,
    /// The wall clock (Unix milliseconds): a call's session id carries it.
    pub(super) wall_ms: i64,
}

/// A request handed to another shard.
pub(super) struct HandedOff {
    pub(super) shard: usize,
    pub(super) peer: Peer,
    pub(super) bytes: Vec<u8>,
    pub(super) search: crate::call::PullSearch,
}

impl HandedOff {
    /// Give it to `world`, the shard it was handed to.
    pub(super) fn deliver_to(self, world: &mut World) {
        assert_eq!(
            world.pbx.shard().index,
            self.shard,
            "handed to another shard"
        );
        let ambient = world.ambient();
        world
            .pbx
            .handle_handed_off(ambient, &self.bytes, self.peer, self.search);
        world.drain();
    }
}

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The script's forward to all of Alice's devices.
pub(super) fn to_alice() -> Action {
    Action::Forward {
        target: ForwardTarget::User("alice".into()),
        trunk: None,
        ring_timeout_ms: 30_000,
        caller_id: None,
    }
}

impl World {
    /// Alice's desk phone, mobile and tablet registered; a PSTN call forwarded to her;
    /// the desk answers.
    pub(super) fn connected() -> Self {
        Self::connected_through("", "")
    }

    /// [`World::connected`] with `far_headers` in the far end's INVITE and `desk_headers`
    /// in the desk's 200 (each whole lines, CRLF included): proxies that record-route.
    pub(super) fn connected_through(far_headers: &str, desk_headers: &str) -> Self {
        World::new().connect(far_headers, desk_headers)
    }

    /// [`World::connected`] on `config`.
    pub(super) fn connected_with_config(config: &str) -> Self {
        World::with_config(config).connect("", "")
    }

    /// The far end's call to flip number 100, through the trunk.
    pub(super) fn trunk_invite() -> String {
        Self::trunk_invite_with("")
    }

    /// [`World::trunk_invite`] with `far_headers` (whole lines, CRLF included).
    fn trunk_invite_with(far_headers: &str) -> String {
        format!(
            "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-far\r\n{far_headers}\
From: <sip:0400@127.0.0.2>;tag=far\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: far-call\r\n\
CSeq: 1 INVITE\r\nContact: <sip:far@{FAR_END}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        )
    }

    pub(super) fn connect(mut self, far_headers: &str, desk_headers: &str) -> Self {
        let w = &mut self;
        w.deliver(FAR_END, &Self::trunk_invite_with(far_headers));
        let id = w.session();
        w.route(id, vec![to_alice()]);
        w.drain();
        let desk_invite = w.last_to(DESK, "INVITE ");
        w.respond_with(DESK, &desk_invite, 200, desk_headers);
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
        self
    }

    /// Alice's desk phone calls `number` out through the trunk, whose far end answers.
    pub(super) fn placed(number: &str) -> Self {
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

    /// The far end's call through the trunk, routed to alice: her devices ring.
    pub(super) fn ringing_alice() -> Self {
        let mut w = World::new();
        w.deliver(FAR_END, &World::trunk_invite());
        let id = w.session();
        w.route(id, vec![to_alice()]);
        w.drain();
        w
    }

    /// Alice's desk phone, mobile and tablet registered; no call yet.
    pub(super) fn new() -> Self {
        Self::with_config(CONFIG)
    }

    /// [`World::new`] with another configuration (which must have user `alice`).
    pub(super) fn with_config(config: &str) -> Self {
        Self::on_shard(config, Shard::ALONE)
    }

    /// [`World::with_config`] as one of several signalling shards, sharing nothing.
    pub(super) fn on_shard(config: &str, shard: Shard) -> Self {
        Self::on_shard_sharing(config, shard, SharedAuth::default())
    }

    /// [`World::with_config`] as one of several signalling shards, its registrar a copy
    /// of the home's (the same bindings), its nonce-counts and failing sources the other
    /// shards' in `shared`.
    pub(super) fn on_shard_sharing(config: &str, shard: Shard, shared: SharedAuth) -> Self {
        let config = Config::parse(config, Path::new("t.toml")).unwrap();
        let media = FakeMedia::default();
        let mut pbx = Pbx::new(Arc::new(config), [7; 32], Box::new(media.clone()), LOCALS)
            .with_shard(shard, shared);
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
        let t0 = wasmpbx_types::clock::monotonic_now();
        World {
            pbx,
            media,
            t0,
            now: t0,
            routed: Vec::new(),
            answer_call_ended: true,
            sent: Vec::new(),
            flips: Vec::new(),
            flip_requests: Vec::new(),
            records: Vec::new(),
            live_records: Vec::new(),
            a_tag: String::new(),
            invites: std::collections::HashMap::new(),
            random: std::cell::Cell::new(1),
            placed_dialog: String::new(),
            far_answer: String::new(),
            over_tls: Vec::new(),
            over_ws: Vec::new(),
            sdp: SDP.to_owned(),
            handed_off: Vec::new(),
            wall_ms: WALL * 1000,
        }
    }

    /// A request from the desk in the dialog of the call it placed.
    pub(super) fn device_in_placed_dialog(&mut self, device: &str, method: &str, cseq: u32) {
        let request = format!(
            "{method} sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {device};branch=z9hG4bK-{method}-{cseq}-placed\r\n\
{}CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.placed_dialog
        );
        self.deliver(device, &request);
    }

    /// A new call from the far end (the trunk, 127.0.0.2): `caller` dials `number`, its
    /// dialog named `call_id` (also its tags and branch).
    pub(super) fn far_end_calls(&mut self, caller: &str, number: &str, call_id: &str) {
        let invite = format!(
            "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-{call_id}\r\n\
From: <sip:{caller}@127.0.0.2>;tag={call_id}\r\nTo: <sip:{number}@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:far@{FAR_END}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
            self.sdp.len(),
            self.sdp
        );
        self.deliver(FAR_END, &invite);
    }

    /// The id of the (one) live call.
    pub(super) fn session(&self) -> crate::call::SessionId {
        self.pbx.calls.summaries()[0].session
    }

    /// The script's decision for an event of call `session`: these actions.
    pub(super) fn route(&mut self, session: crate::call::SessionId, actions: Vec<Action>) {
        let decision = Decision {
            actions,
            script: None,
            fallback: None,
        };
        self.pbx
            .handle_decision(self.ambient(), session, decision, None);
    }

    /// The script's answer to an external event of call `session`: these actions.
    pub(super) fn external_decided(
        &mut self,
        session: crate::call::SessionId,
        actions: Vec<Action>,
    ) {
        let decision = Decision {
            actions,
            script: None,
            fallback: None,
        };
        self.pbx
            .handle_external_decision(self.ambient(), session, decision);
    }

    /// The script's answer to call `session`'s `call-ended`: these actions.
    pub(super) fn call_ended(&mut self, session: crate::call::SessionId, actions: Vec<Action>) {
        let decision = Decision {
            actions,
            script: None,
            fallback: None,
        };
        self.pbx
            .handle_call_ended_decision(self.ambient(), session, decision);
    }

    pub(super) fn ambient(&self) -> Ambient {
        Ambient {
            now: self.now,
            wall_ms: self.wall_ms,
            random: {
                self.random.set(self.random.get() + 1);
                self.random.get()
            },
        }
    }

    pub(super) fn deliver(&mut self, from: &str, text: &str) {
        let addr = addr(from);
        let transport = if self.over_tls.contains(&addr) {
            Transport::Tls
        } else if self.over_ws.contains(&addr) {
            Transport::Ws
        } else {
            Transport::Udp
        };
        let peer = Peer { transport, addr };
        self.pbx.handle_bytes(self.ambient(), text.as_bytes(), peer);
        self.drain();
    }

    pub(super) fn drain(&mut self) {
        while let Some(output) = self.pbx.poll_output() {
            match output {
                PbxOutput::Transmit { peer, bytes } => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    if text.starts_with("INVITE ") {
                        self.invites.insert(peer.addr, text.clone());
                    }
                    self.sent.push((peer.addr, text));
                }
                PbxOutput::DecideFlip { flip, request, .. } => {
                    self.flips.push(flip);
                    self.flip_requests.push(request);
                }
                PbxOutput::Record(record) | PbxOutput::RecordRewritten(record) => {
                    self.records.push(record)
                }
                PbxOutput::RecordLive(record) => self.live_records.push(record),
                PbxOutput::HandOff {
                    shard,
                    peer,
                    bytes,
                    search,
                } => self.handed_off.push(HandedOff {
                    shard,
                    peer,
                    bytes,
                    search,
                }),
                PbxOutput::Route { session, event, .. } => {
                    let ended = matches!(event, Event::CallEnded { .. });
                    self.routed.push(event);
                    if ended && self.answer_call_ended {
                        // The script has nothing to add when a call ends: its record follows.
                        self.call_ended(session, Vec::new());
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.pbx.handle_timeout(self.ambient());
        self.drain();
    }

    /// The last message the host sent `to` that starts with `start`.
    pub(super) fn last_to(&self, to: &str, start: &str) -> String {
        self.sent
            .iter()
            .rev()
            .find(|(a, m)| *a == addr(to) && m.starts_with(start))
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("nothing starting {start:?} sent to {to}: {:#?}", self.sent))
    }

    pub(super) fn count_to(&self, to: &str, start: &str) -> usize {
        self.sent
            .iter()
            .filter(|(a, m)| *a == addr(to) && m.starts_with(start))
            .count()
    }

    /// `device` answers a request the host sent it (with SDP for a 2xx to an INVITE).
    pub(super) fn respond(&mut self, device: &str, request: &str, code: u16) {
        self.respond_with(device, request, code, "");
    }

    /// [`World::respond`] with `headers` (whole lines) after the status line; a Contact
    /// among them is the device's in a 200 to an INVITE.
    pub(super) fn respond_with(&mut self, device: &str, request: &str, code: u16, headers: &str) {
        self.respond_tagged(device, request, code, headers, "dev");
    }

    /// [`World::respond_with`], the To tag `tag`.
    pub(super) fn respond_tagged(
        &mut self,
        device: &str,
        request: &str,
        code: u16,
        headers: &str,
        tag: &str,
    ) {
        let Ok(SipMessage::Request(request)) = message::parse(request.as_bytes()) else {
            panic!("not a request: {request}");
        };
        let mut response = message::response_to(&request, code, Some(tag));
        let mut headers = headers.to_owned();
        if code == 200 && request.method == rsip::Method::Invite {
            // The device's Contact, unless `headers` gives one.
            let given = headers.lines().find_map(|l| l.strip_prefix("Contact: "));
            let contact = match given {
                Some(contact) => contact.to_owned(),
                None => format!("<sip:wasmpbx@{}>", addr(device)),
            };
            headers = headers.replace(&format!("Contact: {contact}\r\n"), "");
            super::requests::attach_sdp(&mut response, contact, self.sdp.clone());
        }
        let text = String::from_utf8(message::serialize(&SipMessage::Response(response))).unwrap();
        let (status, rest) = text.split_once("\r\n").unwrap();
        self.deliver(device, &format!("{status}\r\n{headers}{rest}"));
    }

    /// An in-dialog request from the far end.
    pub(super) fn far_end_request(&self, method: &str, cseq: u32) -> String {
        format!(
            "{method} sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-far-{method}-{cseq}\r\n\
From: <sip:0400@127.0.0.2>;tag=far\r\nTo: <sip:100@127.0.0.1>;tag={}\r\nCall-ID: far-call\r\n\
CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.a_tag
        )
    }

    /// A re-INVITE from the far end carrying `sdp` (none: an INVITE without an offer).
    pub(super) fn far_end_reinvite(&self, cseq: u32, sdp: &str) -> String {
        let body_headers = match sdp.is_empty() {
            true => String::new(),
            false => "Content-Type: application/sdp\r\n".to_owned(),
        };
        format!(
            "INVITE sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-far-re-{cseq}\r\n\
From: <sip:0400@127.0.0.2>;tag=far\r\nTo: <sip:100@127.0.0.1>;tag={}\r\nCall-ID: far-call\r\n\
CSeq: {cseq} INVITE\r\nContact: <sip:far@{FAR_END}>\r\nMax-Forwards: 70\r\n\
{body_headers}Content-Length: {}\r\n\r\n{sdp}",
            self.a_tag,
            sdp.len()
        )
    }

    /// A device hangs up the dialog the host has with it (the host's last INVITE to it
    /// defines the dialog).
    pub(super) fn device_hangs_up(&mut self, device: &str) {
        self.device_request(device, "BYE", 9, "");
    }

    /// An in-dialog request from a device in the dialog the host's last INVITE to it
    /// made; `info` the body of an INFO (a key), if any.
    pub(super) fn device_request(&mut self, device: &str, method: &str, cseq: u32, info: &str) {
        let body = (!info.is_empty()).then_some(("application/dtmf-relay", info));
        self.device_request_with(device, method, cseq, "", body);
    }

    /// A re-INVITE from a device carrying `sdp`, from a Contact of its own.
    pub(super) fn device_reinvite(&mut self, device: &str, cseq: u32, sdp: &str) {
        let contact = format!("Contact: <sip:{device}-moved@{device}>\r\n");
        let body = Some(("application/sdp", sdp));
        self.device_request_with(device, "INVITE", cseq, &contact, body);
    }

    /// [`World::device_request`] with `headers` (whole lines) and a body of its type.
    fn device_request_with(
        &mut self,
        device: &str,
        method: &str,
        cseq: u32,
        headers: &str,
        body: Option<(&str, &str)>,
    ) {
        let invite = &self.invites[&addr(device)];
        let Ok(SipMessage::Request(invite)) = message::parse(invite.as_bytes()) else {
            panic!()
        };
        let m = SipMessage::Request(invite);
        let body = match body {
            None => "Content-Length: 0\r\n\r\n".to_owned(),
            Some((kind, body)) => format!(
                "Content-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        };
        let request = format!(
            "{method} sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {device};branch=z9hG4bK-{method}-{cseq}-{}\r\n\
From: {};tag=dev\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{headers}{body}",
            addr(device).port(),
            message::header_value(&m, "To").unwrap(),
            message::header_value(&m, "From").unwrap(),
            message::call_id(&m).unwrap()
        );
        self.deliver(device, &request);
    }

    /// Keys from the device on the reserved ports (RFC 4733, as the media reports them).
    pub(super) fn keys_on_reserved_ports(&mut self, keys: &str) {
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
    pub(super) fn pull_from(&mut self, device: &str) {
        self.device_invite(device, "*77");
    }

    /// A device of Alice's dials `number`, answering the digest challenge.
    pub(super) fn device_invite(&mut self, device: &str, number: &str) {
        let tag = addr(device).port();
        let sdp = self.sdp.clone();
        let invite = |cseq: u32, auth: &str| {
            format!(
                "INVITE sip:{number}@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {device};branch=z9hG4bK-pull-{tag}-{cseq}\r\n\
From: <sip:2001@pbx.test>;tag=p{tag}\r\nTo: <sip:{number}@pbx.test>\r\nCall-ID: pull-{tag}\r\n\
CSeq: {cseq} INVITE\r\nContact: <sip:2001@{device}>\r\nMax-Forwards: 70\r\n{auth}\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )
        };
        self.deliver(device, &invite(1, ""));
        let challenge = self.last_to(device, "SIP/2.0 407");
        let value = challenge
            .lines()
            .find_map(|l| l.strip_prefix("Proxy-Authenticate: "))
            .expect("a challenge");
        let answer = Challenge::parse(value).unwrap().answer(
            "2001",
            "s3cret",
            "INVITE",
            &format!("sip:{number}@pbx.test"),
            "cn",
            1,
        );
        let auth = format!("Proxy-Authorization: {answer}\r\n");
        self.deliver(device, &invite(2, &auth));
    }

    pub(super) fn decide(&mut self, decision: Result<FlipDecision, String>) {
        let flip = self.flips.pop().expect("a flip waiting for the policy");
        self.pbx
            .handle_flip_decision(self.ambient(), flip, decision);
        self.drain();
    }

    pub(super) fn allow() -> Result<FlipDecision, String> {
        Ok(FlipDecision::Allow(Allow {
            targets: Vec::new(),
            ring_timeout_ms: 0,
        }))
    }

    pub(super) fn require_pin() -> Result<FlipDecision, String> {
        Ok(FlipDecision::RequirePin(Allow {
            targets: Vec::new(),
            ring_timeout_ms: 0,
        }))
    }

    pub(super) fn push(&mut self) -> Result<(), (u16, String)> {
        let id = self.session();
        let result = self.pbx.request_push(self.ambient(), id, Vec::new());
        self.drain();
        result
    }

    /// The calls' tables still holding entries (none once every call is over and its
    /// last transaction done).
    pub(super) fn tables_left(&self) -> Vec<(&'static str, usize)> {
        let sizes = self.pbx.calls.table_sizes();
        sizes.into_iter().filter(|(_, n)| *n > 0).collect()
    }

    /// The far end hangs up; the call's record.
    pub(super) fn far_end_hangs_up(&mut self) -> CallRecord {
        let bye = self.far_end_request("BYE", 2);
        self.deliver(FAR_END, &bye);
        self.records.pop().expect("the call ended")
    }

    /// The far end of a call the desk placed ([`World::placed`]) hangs up; the call's
    /// record.
    pub(super) fn placed_call_far_end_hangs_up(&mut self) -> CallRecord {
        let trunk_invite = self.invites[&addr(TRUNK)].clone();
        let m = message::parse(trunk_invite.as_bytes()).expect("the host's INVITE parses");
        let bye = format!(
            "BYE sip:wasmpbx@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bK-trunk-bye\r\n\
From: {};tag=dev\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 5 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            message::header_value(&m, "To").unwrap(),
            message::header_value(&m, "From").unwrap(),
            message::call_id(&m).unwrap()
        );
        self.deliver(TRUNK, &bye);
        self.records.pop().expect("the call ended")
    }
}
