//! Calls: a B2BUA session per call, sans-IO.
//!
//! Each session has an inbound leg A (the caller's dialog, the host as UAS) and, while
//! forwarding, an outbound leg B (the host as UAC). Media is anchored: each leg's SDP
//! points at the host's relay ports. The routing script is I/O: the session emits
//! [`PbxOutput::Route`] and takes the decision back through [`Calls::handle_decision`].
//!
//! ```text
//!  INVITE(A) ──▶ Routing ──decision: forward─────────▶ Forwarding ──B 2xx──▶ Connected ──BYE──▶ ended
//!                 │  ▲                                   ▲      │ B fails / ring timeout:
//!   answer, play, │  │ digits-gathered event             │      └ forward-failed event → Routing
//!         gather  ▼  │                                   │
//!                Engaged (the host answered A) ─forward──┘ (ringback until B answers; engaged.rs)
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rsip::prelude::*;

use crate::config::{Config, Location};
use crate::flip::FlipResult;
use crate::media::{
    EngineAudio, MediaAllocator, MediaPorts, Playback, Prompts, Side, StreamRequest, Tracks,
};
use crate::pbx::{Ambient, PbxOutput};
use crate::registrar::Registrar;
use crate::routing::{
    Action, CallInfo, Decision, Disposition, Event, ForwardTarget, MAX_STREAMS_PER_CALL, Origin,
    Speech, fallback_actions,
};
use crate::sdp;
use crate::sip::local::LocalAddrs;
use crate::sip::message::{self, Header, Request, Response, SipMessage};
use crate::sip::shards::Shard;
use crate::sip::transaction::{ClientTxnId, Peer, ServerTxnId, TransactionLayer};
use client_txns::ClientTxns;
use wasmpbx_types::actions::{ActionHost, Forward, Gather, MediaStream};
use wasmpbx_types::script::ScriptVersion;

mod client_txns;
mod engaged;
#[cfg(test)]
mod flip_tests;
mod forks;
mod keepalive;
mod pin;
mod pull;
mod push;
mod requests;
mod srtp;
mod trunk_legs;

use trunk_legs::{Retry, TrunkLeg};
#[cfg(test)]
mod drain_tests;
#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod keepalive_tests;
#[cfg(test)]
mod record_tests;
#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod shard_tests;
#[cfg(test)]
mod span_tests;
#[cfg(test)]
mod srtp_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod transport_tests;
#[cfg(test)]
mod trunk_tests;
#[cfg(test)]
mod world;

pub use pull::PullSearch;
pub use push::Refusal;
use requests::{
    Dialog, InviteParts, Via, addr_spec, attach_sdp, caller_response, cancel_for, dtmf_from_info,
    initial_invite, route_set_of_request, route_set_of_response, tag_of, with_tag,
};
use wasmpbx_types::record::{CallEvent, MAX_EVENTS_PER_CALL};
pub use wasmpbx_types::record::{CallRecord, CallSummary, RecordState, UserCall};

pub use wasmpbx_types::ids::SessionId;

/// How long the devices of a called user ring.
const DEVICE_RING_TIMEOUT_MS: u32 = 60_000;

/// A re-INVITE received on one leg and sent on the other, waiting for its answer.
struct PendingReinvite {
    /// The transaction to answer on the leg it came from.
    server_txn: ServerTxnId,
    request: Request,
    from_a: bool,
    /// The re-INVITE the host sent on the other leg.
    client_txn: ClientTxnId,
    cseq: u32,
}

/// A leg to one of the callee's devices (or a number through a trunk).
struct Outbound {
    dialog: Dialog,
    invite: Request,
    /// The INVITE transaction the host sent; none for a leg the device set up itself (a
    /// device that pulled the call).
    txn: Option<ClientTxnId>,
    target: ForwardTarget,
    number: String,
    answered: bool,
    /// CANCEL sent (ring timeout or caller gave up): its final response is not news.
    cancelled: bool,
    /// A browser's leg: the media bridge that made its WebRTC offer.
    bridge: Option<usize>,
    /// A leg through a carrier trunk: its failover and authentication.
    trunk: Option<TrunkLeg>,
}

impl Outbound {
    /// A device's answer, as the call sees it: a browser's WebRTC answer completes its
    /// bridge and becomes the bridge's plain RTP.
    fn answer_sdp(&self, ctx: &mut Ctx<'_>, id: SessionId, body: String) -> String {
        let Some(bridge) = self.bridge else {
            return body;
        };
        ctx.media
            .answer_webrtc(id, bridge, &body)
            .unwrap_or_else(|e| {
                tracing::warn!("{e}");
                String::new()
            })
    }

    /// Stop this leg ringing: CANCEL its INVITE, once.
    fn cancel(&mut self, ctx: &mut Ctx<'_>, id: SessionId, by_client_txn: &mut ClientTxns) {
        if self.cancelled {
            return;
        }
        self.cancelled = true;
        if let Some(cancel) = cancel_for(&self.invite) {
            let txn = ctx
                .layer
                .send_request(ctx.ambient.now, cancel, self.dialog.peer);
            by_client_txn.insert(txn, id);
        }
    }

    /// End this leg's (answered) dialog: BYE.
    fn hang_up(&mut self, ctx: &mut Ctx<'_>, id: SessionId, by_client_txn: &mut ClientTxns) {
        send_in_dialog(ctx, &mut self.dialog, id, by_client_txn, None);
    }
}

/// A stream of a call's audio: `start.customParameters` names the location, caller and
/// dialled number, then the script's parameters.
fn stream_request(stream: MediaStream, call: &CallInfo) -> StreamRequest {
    let mut parameters = vec![
        ("caller".to_owned(), call.caller.clone()),
        ("dialed".to_owned(), call.dialed.clone()),
    ];
    if let Some(location) = &call.location {
        parameters.insert(0, ("location".to_owned(), location.clone()));
    }
    parameters.extend(stream.parameters);
    StreamRequest {
        url: stream.url,
        tracks: stream.tracks,
        engine_audio: stream.engine_audio,
        call_sid: call.call_id.clone(),
        parameters,
    }
}

/// Send a request with no body of its own in `dialog` — BYE, or with `frag` a NOTIFY
/// carrying that sipfrag status (RFC 3515) — whose responses belong to session `id`.
fn send_in_dialog(
    ctx: &mut Ctx<'_>,
    dialog: &mut Dialog,
    id: SessionId,
    by_client_txn: &mut ClientTxns,
    frag: Option<&str>,
) {
    dialog.local_cseq += 1;
    let request = match frag {
        None => dialog.request(
            "BYE",
            dialog.local_cseq,
            &Via {
                local: ctx.local,
                branch: &ctx.token(),
            },
        ),
        Some(status) => {
            let via = Via {
                local: ctx.local,
                branch: &ctx.token(),
            };
            requests::refer_notify(dialog, dialog.local_cseq, &via, status)
        }
    };
    if let Some(request) = request {
        let txn = ctx.send_in_dialog(request, dialog.peer);
        by_client_txn.insert(txn, id);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the script.
    Routing,
    /// B is ringing.
    Forwarding,
    /// The host answered and is playing or gathering.
    Engaged,
    Connected,
}

struct Session {
    call: CallInfo,
    location: Option<Location>,
    script: String,
    pinned: Option<ScriptVersion>,
    a_invite: Request,
    a_txn: ServerTxnId,
    a_dialog: Dialog,
    /// The offer for outbound legs: the caller's SDP pointing at the host's B port.
    b_offer: String,
    /// A browser caller's SDP answer (its WebRTC, answered by a bridge): what side A is
    /// told instead of the host's plain RTP address.
    a_answer: Option<String>,
    a_answered: bool,
    /// The outbound leg: the one ringing (trunk forwards) or the one that answered.
    b: Option<Outbound>,
    /// Legs ringing in parallel for a forward to a user's devices; the first to answer
    /// becomes `b` and the others are cancelled.
    forks: Vec<Outbound>,
    /// Whether the caller has been sent a ringing response (forks ring only once).
    ringing_sent: bool,
    /// A re-INVITE (hold, resume) being passed from one leg to the other.
    reinvite: Option<Box<PendingReinvite>>,
    ports: MediaPorts,
    phase: Phase,
    record: CallRecord,
    /// Bumped whenever the ring timer is re-armed, so stale timers are ignored.
    ring_generation: u64,
    applying_fallback: bool,
    /// Set once the host answered the caller itself (active mode).
    endpoint: Option<engaged::Endpoint>,
    /// A prompt's end or the caller's digits, in active mode.
    waiting: engaged::Waiting,
    /// Bumped whenever a media timer is armed, so stale ones are ignored.
    media_generation: u64,
    /// When the INVITE arrived, on the monotonic clock (durations to the millisecond).
    arrived: Instant,
    /// The G.711 codec the answering device chose: a device that takes the call over
    /// must speak it too.
    b_codec: Option<crate::media::Codec>,
    /// A flip of this call is being decided (a second one is refused meanwhile).
    flip_pending: bool,
    /// A push whose targets are ringing.
    ringing: Option<Box<push::Ringing>>,
    /// A device that would take the call over, entering the PIN first.
    pin: Option<Box<pin::PinEntry>>,
    /// The user and device on side A, for a call a user's device placed; none for a
    /// trunk call, and once that device hung up while a flip of its side was under way.
    a_device: Option<(String, String)>,
    /// Side A hung up while a flip of its side was under way: the call waits for the
    /// new device.
    a_gone: bool,
    /// The last keys each side's device pressed (for the push code).
    keys: [String; 2],
    /// Media streams started (the location's and the script's).
    streams: usize,
    /// External events that arrived while the script's answer to another event was
    /// awaited: each goes to the script once that answer has been applied.
    held_events: VecDeque<Event>,
    /// The device a flip just moved the call away from, let go once the new device is
    /// heard (a browser's audio starts only after ICE and DTLS).
    releasing: Option<Box<push::Release>>,
    /// Keep-alive OPTIONS out to the parties, waiting for their answers.
    probes: Vec<keepalive::Probe>,
    /// The call's `call{session}` span: entered by every input about the call, carried
    /// to its script runs, and current when its media tasks are spawned, so each line
    /// logged about the call names it once, in the same way.
    span: tracing::Span,
}

/// A flip waiting for the policy's decision.
#[derive(Debug)]
enum PendingFlip {
    Pull(Box<pull::PendingPull>),
    Push(push::PendingPush),
}

impl PendingFlip {
    fn session(&self) -> SessionId {
        match self {
            PendingFlip::Pull(p) => p.session,
            PendingFlip::Push(p) => p.session,
        }
    }
}

impl Session {
    /// Whether a flip of this call is under way (being decided, ringing its targets or
    /// waiting for a PIN): another one is refused meanwhile.
    fn flipping(&self) -> bool {
        self.flip_pending || self.ringing.is_some() || self.pin.is_some()
    }

    /// The user and device on `side`, if a user's device is there and in the call: side
    /// B for a call that rang the user's devices, side A for one a device placed.
    fn device_on(&self, side: Side) -> Option<(String, String)> {
        match side {
            Side::A => self.a_device.clone(),
            Side::B => match self.b.as_ref() {
                Some(Outbound {
                    target: ForwardTarget::User(user),
                    number,
                    answered: true,
                    ..
                }) => Some((user.clone(), pull::device_of(number).to_owned())),
                _ => None,
            },
        }
    }

    /// The side `user_id`'s device is on, if one of the user's devices has this call:
    /// side B for a call that rang them, side A for one they placed.
    fn users_side(&self, user_id: &str) -> Option<Side> {
        [Side::B, Side::A].into_iter().find(|&side| {
            self.device_on(side)
                .is_some_and(|(user, _)| user == user_id)
        })
    }

    /// The dialog with the party on `side`, if it is still in the call.
    fn dialog_mut(&mut self, side: Side) -> Option<&mut Dialog> {
        match side {
            Side::A => (!self.a_gone).then_some(&mut self.a_dialog),
            Side::B => self.b.as_mut().map(|b| &mut b.dialog),
        }
    }
}

/// What a call's timer is for. Timers due at the same instant fire in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// A prompt has played, or a gather timed out (`engaged`).
    Media,
    /// A push's targets rang too long (`push`).
    Push,
    /// A PIN try ran out (`pin`).
    Pin,
    /// A forward rang too long.
    Ring,
    /// The device a flip left has waited long enough for the new one to be heard.
    Release,
    /// A trunk target had its share of Timer B without a word: try the next.
    TrunkTarget,
}

/// The calls' timers, one heap: when, what for, for which session, and a number that
/// tells the current timer from stale ones (a generation, a flip, a try). Stale timers
/// are not removed; they are recognised when they fire.
type Timers = BinaryHeap<Reverse<(Instant, TimerKind, SessionId, u64)>>;

/// The next timer due at `now`, taken off the heap.
fn pop_due(timers: &mut Timers, now: Instant) -> Option<(TimerKind, SessionId, u64)> {
    let Reverse((at, ..)) = timers.peek()?;
    if *at > now {
        return None;
    }
    timers.pop().map(|Reverse((_, kind, id, n))| (kind, id, n))
}

/// The other side.
fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

impl Calls {
    /// Put a flip request to the policy script; the call refuses another flip until the
    /// answer comes back through [`Calls::flip_decided`].
    fn ask_flip_policy(
        &mut self,
        ctx: &mut Ctx<'_>,
        pending: PendingFlip,
        request: crate::flip::FlipRequest,
    ) {
        let mut span = tracing::Span::none();
        if let Some(session) = self.sessions.get_mut(&pending.session()) {
            session.flip_pending = true;
            span = session.span.clone();
        }
        self.next_flip += 1;
        self.flips.insert(self.next_flip, pending);
        ctx.outputs.push_back(PbxOutput::DecideFlip {
            flip: self.next_flip,
            policy: ctx.config.scripts.flip_policy.clone(),
            request,
            span,
        });
    }

    /// The flip policy's answer (an error: the script failed, which denies the flip).
    pub fn flip_decided(
        &mut self,
        ctx: &mut Ctx<'_>,
        flip: u64,
        decision: Result<crate::flip::FlipDecision, String>,
    ) {
        let _span = self.flips.get(&flip).and_then(|p| self.enter(p.session()));
        match self.flips.remove(&flip) {
            Some(PendingFlip::Pull(pull)) => self.pull_decided(ctx, *pull, decision),
            Some(PendingFlip::Push(push)) => self.push_decided(ctx, flip, push, decision),
            None => {} // the call ended meanwhile
        }
    }
}

/// What the calls need from the rest of the core for one input.
pub struct Ctx<'a> {
    pub layer: &'a mut TransactionLayer,
    pub media: &'a mut dyn MediaAllocator,
    pub registrar: &'a mut Registrar,
    pub trunks: &'a mut crate::trunks::Trunks,
    pub outputs: &'a mut VecDeque<PbxOutput>,
    pub config: &'a Config,
    pub prompts: &'a Prompts,
    /// The host's SIP addresses (Via, Contact), one per transport.
    pub local: LocalAddrs,
    pub ambient: Ambient,
    /// The core's randomness (tags, branches, Call-IDs, SDP session ids), this input's
    /// seed mixed in.
    pub entropy: &'a mut crate::entropy::Entropy,
    /// Draining: new calls are refused with 503 and this Retry-After (seconds).
    pub draining: Option<u32>,
    /// The other nodes' calls, for a pull that lands here.
    pub owners: &'a dyn crate::flip::CallOwners,
    /// Which of the host's signalling shards this core is: a pull whose user has no
    /// call here is handed to the next.
    pub shard: Shard,
}

impl Ctx<'_> {
    /// A fresh token for a tag, a branch or a Call-ID.
    pub fn token(&mut self) -> String {
        self.entropy.token()
    }

    /// The host's Contact header value towards a peer reached over `transport`.
    fn contact(&self, transport: crate::sip::transaction::Transport) -> String {
        requests::host_contact(&self.local, transport)
    }

    /// Send a request in a dialog (not ACK); towards a trunk with credentials, a
    /// challenge to it is answered before the call hears of it.
    fn send_in_dialog(&mut self, request: Request, peer: Peer) -> ClientTxnId {
        let txn = self
            .layer
            .send_request(self.ambient.now, request.clone(), peer);
        self.trunks.track_in_dialog(txn, &request, peer);
        txn
    }
}

#[derive(Default)]
pub struct Calls {
    // Boxed: a session is some 4 KiB, and a table of them inline keeps its empty slots
    // at that size too.
    sessions: HashMap<SessionId, Box<Session>>,
    by_call_id: HashMap<String, SessionId>,
    by_a_txn: HashMap<ServerTxnId, SessionId>,
    by_client_txn: ClientTxns,
    timers: Timers,
    /// Flips waiting for the flip policy (see `pull` and `push`).
    flips: HashMap<u64, PendingFlip>,
    next_flip: u64,
    /// Records of ended calls (already written) whose script's `call-ended` answer may
    /// still add tags: then they are written again. With the call's span.
    ending: HashMap<SessionId, (CallRecord, tracing::Span)>,
    /// When each live call next asks its parties whether they are still there.
    keepalives: keepalive::Schedule,
    /// The pull INVITE another shard handed here (its Call-ID) and what the shards
    /// before found: set and cleared around that one input, see [`Calls::handed_pull`].
    handed_pull: Option<(String, PullSearch)>,
}

impl Calls {
    /// Enter a live call's span until the guard drops (none for a call that is over).
    fn enter(&self, id: SessionId) -> Option<tracing::span::EnteredSpan> {
        self.sessions.get(&id).map(|s| s.span.clone().entered())
    }

    /// The next input carries a pull INVITE (Call-ID `call_id`) another shard handed
    /// here with `search`; [`Calls::handed_pull_done`] once it is handled.
    pub(crate) fn handed_pull(&mut self, call_id: String, search: PullSearch) {
        self.handed_pull = Some((call_id, search));
    }

    /// The handed-over input is handled (a pull that never reached the calls, refused
    /// before, leaves its search behind).
    pub(crate) fn handed_pull_done(&mut self) {
        self.handed_pull = None;
    }

    /// How many entries each of the calls' tables holds: all empty once every call has
    /// ended and its last transaction is done (the tests check nothing is left behind).
    #[cfg(test)]
    pub(crate) fn table_sizes(&self) -> [(&'static str, usize); 8] {
        [
            ("sessions", self.sessions.len()),
            ("by_call_id", self.by_call_id.len()),
            ("by_a_txn", self.by_a_txn.len()),
            ("by_client_txn", self.by_client_txn.len()),
            ("flips", self.flips.len()),
            ("ending", self.ending.len()),
            ("keepalives", self.keepalives.len()),
            ("handed_pull", usize::from(self.handed_pull.is_some())),
        ]
    }

    /// The live calls, oldest first.
    pub fn summaries(&self) -> Vec<CallSummary> {
        let mut out: Vec<CallSummary> = self
            .sessions
            .iter()
            .map(|(id, s)| CallSummary {
                session: *id,
                location: s.call.location.clone(),
                caller: s.call.caller.clone(),
                dialed: s.call.dialed.clone(),
                state: match s.phase {
                    Phase::Routing => "routing",
                    Phase::Forwarding => "forwarding",
                    Phase::Engaged => "engaged",
                    Phase::Connected => "connected",
                },
                forwarded_to: s.b.as_ref().map(|b| b.number.clone()),
                started_at: s.record.started_at,
                answered_at: s.record.answered_at,
            })
            .collect();
        out.sort_by_key(|c| c.session);
        out
    }

    /// The connected calls one of `user_id`'s devices has, oldest first.
    pub fn user_calls(&self, user_id: &str) -> Vec<UserCall> {
        let mut out: Vec<UserCall> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.phase == Phase::Connected)
            .filter_map(|(&session, s)| {
                let side = s.users_side(user_id)?;
                let (_, device) = s.device_on(side)?;
                let (with, direction) = match side {
                    Side::B => (s.call.caller.clone(), "incoming"),
                    Side::A => (s.call.dialed.clone(), "outgoing"),
                };
                Some(UserCall {
                    session,
                    with,
                    direction,
                    device,
                    answered_at: s.record.answered_at,
                })
            })
            .collect();
        out.sort_by_key(|c| c.session);
        out
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, ..))| *at);
        timer.into_iter().chain(self.keepalives.next()).min()
    }

    /// A new INVITE (no To tag).
    pub fn handle_invite(
        &mut self,
        ctx: &mut Ctx<'_>,
        txn: ServerTxnId,
        request: Request,
        source: Peer,
    ) {
        let message = SipMessage::Request(request.clone());
        let uri_user = request.uri.auth.as_ref().map(|a| a.user.clone());
        let trunk = ctx.trunks.trunk_of_source(source.addr.ip()).cloned();
        // A call on the trunk's registration is addressed to the Contact we registered;
        // the number dialled is in To.
        let on_registration = trunk
            .as_ref()
            .is_some_and(|t| uri_user.is_some() && uri_user.as_deref() == t.contact_user());
        let dialed = uri_user
            .filter(|_| !on_registration)
            .or_else(|| message::to_user(&message))
            .unwrap_or_default();
        let caller = message::from_user(&message).unwrap_or_default();
        let reject = |ctx: &mut Ctx<'_>, code: u16, reason: Option<&str>| {
            let mut response = message::response_to(&request, code, Some(&ctx.token()));
            if let Some(reason) = reason {
                response = message::with_reason(response, reason);
            }
            ctx.layer.send_response(ctx.ambient.now, txn, response);
        };
        // Carriers write numbers their own way (`61290000001`, `0290000001`): a flip
        // number matches in any of them.
        let location = ctx
            .config
            .location_by_flip_number(&dialed)
            .or_else(|| {
                let e164 = trunk.as_ref()?.plus_e164(&dialed);
                ctx.config.location_by_flip_number(&e164)
            })
            .cloned();
        // A device behind the edge, which authenticated it; never a call to a flip
        // number (those are the carrier's, whatever they assert).
        let asserted = location
            .is_none()
            .then(|| ctx.registrar.asserted_by_edge(&request, source))
            .flatten();
        let (origin, location) = match (trunk, location, &asserted) {
            (_, _, Some(device)) => (
                Origin::Device {
                    user_id: device.user_id.clone(),
                    device: device.name.clone(),
                },
                None,
            ),
            (Some(t), Some(l), None) => (
                Origin::Trunk {
                    name: t.name.clone(),
                },
                Some(l),
            ),
            (None, Some(_), None) => {
                tracing::warn!(from = %source.addr, dialed, "INVITE to a flip number from outside the trunks refused");
                return reject(ctx, 403, Some("Flip Numbers Take Trunk Calls Only"));
            }
            (Some(_), None, None) => return reject(ctx, 404, None),
            (None, None, None) => {
                // A device: it must be registered-grade authenticated (407 challenge).
                let a = ctx.ambient;
                match ctx
                    .registrar
                    .authenticate(a.wall_secs(), ctx.entropy, &request, source)
                {
                    Ok(user_id) => {
                        let device = ctx
                            .registrar
                            .bindings(&user_id)
                            .iter()
                            .find(|b| b.source == source.addr)
                            .map_or_else(|| "unregistered".to_owned(), |b| b.device.clone());
                        (Origin::Device { user_id, device }, None)
                    }
                    Err(response) => return ctx.layer.send_response(a.now, txn, response),
                }
            }
        };
        if let Origin::Device { user_id, device } = &origin
            && dialed == ctx.config.flip.pull_code
        {
            let (user_id, device) = (user_id.clone(), device.clone());
            let puller = pull::Puller {
                user_id,
                device,
                behind_edge: asserted,
            };
            return self.start_pull(ctx, txn, request, source, puller);
        }
        // Draining: a flip of a live call (the pull above) goes on, a new call does not.
        if let Some(retry_after) = ctx.draining {
            tracing::info!(dialed, "INVITE refused: draining");
            let refusal = message::response_to(&request, 503, Some(&ctx.token()));
            let refusal = message::retry_after(refusal, retry_after);
            return ctx.layer.send_response(ctx.ambient.now, txn, refusal);
        }
        let mut body = String::from_utf8_lossy(&request.body).into_owned();
        let webrtc = crate::sdp::is_webrtc(&body);
        // A browser's leg is plain RTP between its bridge and the relay.
        let a_srtp = match webrtc {
            true => srtp::Offered::Plain,
            false => {
                let offer = match sdp::parse(&body) {
                    Ok(offer) => offer,
                    Err(e) => {
                        tracing::info!(dialed, "INVITE refused: SDP {e}");
                        return reject(ctx, 488, None);
                    }
                };
                let policy = match &origin {
                    Origin::Trunk { name } => {
                        srtp::trunk_policy(ctx.config, ctx.trunks.config(name))
                    }
                    Origin::Device { user_id, .. } => srtp::device_policy(ctx.config, user_id),
                };
                match srtp::answer(policy, &offer) {
                    Ok(offered) => offered,
                    Err(reason) => {
                        tracing::info!(dialed, "INVITE refused: {reason}");
                        return reject(ctx, 488, None);
                    }
                }
            }
        };
        let id = {
            let random = ctx.entropy.next_u64().to_le_bytes();
            let more = ctx.entropy.next_u64().to_le_bytes();
            let mut bytes = [0; 10];
            bytes[..8].copy_from_slice(&random);
            bytes[8..].copy_from_slice(&more[..2]);
            SessionId::new(u64::try_from(ctx.ambient.wall_ms).unwrap_or(0), bytes)
        };
        let span = tracing::info_span!("call", session = %id.short());
        let _entered = span.clone().entered();
        let ports = match ctx.media.open(id) {
            Ok(ports) => ports,
            Err(e) => {
                tracing::error!("no media ports: {e}");
                return reject(ctx, 503, None);
            }
        };
        // A browser: its WebRTC is answered by a bridge, and the call sees it as a plain
        // RTP phone at the bridge.
        let mut a_answer = None;
        if webrtc {
            match ctx
                .media
                .bridge_webrtc(id, Some(Side::A), &body, ctx.config.media.public_ip)
            {
                Ok(bridged) => {
                    body = bridged.plain_offer;
                    a_answer = Some(bridged.answer);
                }
                Err(e) => {
                    tracing::info!(dialed, "INVITE refused: {e}");
                    ctx.media.close(id);
                    return reject(ctx, 488, None);
                }
            }
        }
        let a_rtp = sdp::parse(&body).ok().and_then(|m| m.rtp);
        // The offer every outbound leg of this call gets: the caller's, pointing at the
        // host's B-side port. Made once; refused here if nothing in it can be relayed.
        let b_offer = match sdp::rewrite(&body, ctx.config.media.public_ip, ports.b) {
            Ok(offer) => offer,
            Err(e) => {
                tracing::info!(dialed, "INVITE refused: SDP {e}");
                ctx.media.close(id);
                return reject(ctx, 488, None);
            }
        };
        if let Some(rtp) = a_rtp {
            ctx.media.set_remote(id, Side::A, rtp);
        }
        if let Some(pt) = sdp::telephone_event_pt(&body) {
            // A user's device: its keys are watched for the push code too.
            let push_code = matches!(origin, Origin::Device { .. })
                .then_some(ctx.config.flip.push_code.as_str());
            ctx.media.watch_keys(id, Side::A, pt, push_code);
        }
        let call_id = message::call_id(&message).unwrap_or_default();
        let a_tag = ctx.token();
        let to = message::header_value(&message, "To").unwrap_or_default();
        let from = message::header_value(&message, "From").unwrap_or_default();
        let contact = message::header_value(&message, "Contact")
            .map(|c| addr_spec(&c))
            .unwrap_or_else(|| addr_spec(&from));
        let started_at = jiff::Timestamp::from_second(ctx.ambient.wall_secs())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let location_name = location.as_ref().map(|l| l.name.clone());
        // Trunk calls run their location's script; device calls are routed by the host.
        let script = location
            .as_ref()
            .map(|l| l.script.clone())
            .unwrap_or_default();
        let call = CallInfo {
            call_id: id.to_string(),
            location: location_name.clone(),
            caller: caller.clone(),
            caller_name: message::from_header_display_name(&message),
            dialed: dialed.clone(),
            origin: origin.clone(),
            started_at,
            tags: Vec::new(),
        };
        tracing::info!(caller, dialed, location = ?location.as_ref().map(|l| &l.name), "incoming call");
        let record = CallRecord {
            session: id,
            location: location_name.clone(),
            caller,
            dialed,
            script: (!script.is_empty()).then(|| script.clone()),
            script_hash: None,
            fallback: false,
            started_at,
            answered_at: None,
            state: RecordState::Live,
            ended_at: None,
            updated_at: started_at,
            disposition: Disposition::Failed,
            legs: Vec::new(),
            digits: String::new(),
            tags: Vec::new(),
            end_reason: String::new(),
            rtp_packets_in: 0,
            rtp_packets_out: 0,
            recording: None,
            duration_ms: 0,
            flips: Vec::new(),
            call_ids: vec![call_id.clone()],
            streams: Vec::new(),
            events: Vec::new(),
        };
        let mut session = Session {
            call: call.clone(),
            script: script.clone(),
            location: location.clone(),
            pinned: None,
            a_invite: request,
            a_txn: txn,
            a_dialog: Dialog {
                call_id: call_id.clone(),
                local: with_tag(&to, &a_tag),
                remote: from,
                target: contact,
                route_set: route_set_of_request(&message),
                local_cseq: 0,
                peer: source,
                sdp: sdp::Origin::new(ctx.entropy.next_u64()),
            },
            b_offer,
            a_answer,
            a_answered: false,
            b: None,
            forks: Vec::new(),
            ringing_sent: false,
            reinvite: None,
            ports,
            phase: Phase::Routing,
            record,
            ring_generation: 0,
            applying_fallback: false,
            endpoint: None,
            waiting: engaged::Waiting::Nothing,
            media_generation: 0,
            arrived: ctx.ambient.now,
            b_codec: None,
            flip_pending: false,
            ringing: None,
            pin: None,
            a_device: match &origin {
                Origin::Device { user_id, device } => Some((user_id.clone(), device.clone())),
                Origin::Trunk { .. } => None,
            },
            a_gone: false,
            keys: Default::default(),
            streams: 0,
            held_events: VecDeque::new(),
            releasing: None,
            probes: Vec::new(),
            span,
        };
        if let Err(e) = srtp::accept(
            ctx.media,
            id,
            Some(Side::A),
            &mut session.a_dialog.sdp,
            a_srtp,
        ) {
            tracing::error!("INVITE refused: SRTP: {e}");
            ctx.media.close(id);
            let refusal = message::response_to(&session.a_invite, 500, Some(&ctx.token()));
            return ctx.layer.send_response(ctx.ambient.now, txn, refusal);
        }
        // A location may stream every call's audio to an engine (listen-mode analysis
        // needs no script for it).
        if let Some(url) = location.as_ref().and_then(|l| l.stream_url.clone()) {
            let stream = MediaStream {
                url,
                tracks: Tracks::Both,
                parameters: Vec::new(),
                engine_audio: EngineAudio::Ignore,
            };
            ctx.media.start_stream(id, stream_request(stream, &call));
            session.streams += 1;
        }
        self.sessions.insert(id, Box::new(session));
        self.arm_keepalive(ctx, id);
        self.by_call_id.insert(call_id, id);
        self.by_a_txn.insert(txn, id);
        ctx.outputs.push_back(PbxOutput::CallStarted {
            session: id,
            call: call.clone(),
        });
        match origin {
            Origin::Trunk { .. } => ask_script(ctx, id, &self.sessions[&id], Event::Incoming),
            Origin::Device { .. } => {
                // Another user's extension rings all that user's devices; anything else
                // goes out through the first trunk.
                let target = match ctx.config.user_by_extension(&call.dialed) {
                    Some(user) => ForwardTarget::User(user.id.clone()),
                    None => ForwardTarget::Number(call.dialed.clone()),
                };
                self.forward(ctx, id, target, None, DEVICE_RING_TIMEOUT_MS, None);
            }
        }
    }

    /// The script's decision for one event of a session.
    pub fn handle_decision(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        decision: Decision,
        pinned: Option<ScriptVersion>,
    ) {
        let _span = self.enter(id);
        let Some(session) = self.sessions.get_mut(&id) else {
            return; // ended while the script ran
        };
        if session.pinned.is_none() {
            session.pinned = pinned;
            if let Some(script) = &decision.script {
                session.record.script_hash = Some(script.hash.clone());
            }
        }
        if let Some(fallback) = &decision.fallback {
            session.record.fallback = true;
            tracing::warn!(
                cause = fallback.cause,
                "routing by fallback: {}",
                fallback.message
            );
        }
        self.apply(ctx, id, decision.actions);
        if let Some(session) = self.sessions.get_mut(&id)
            && session.phase != Phase::Routing
        {
            for event in std::mem::take(&mut session.held_events) {
                ask_script(ctx, id, session, event);
            }
        }
    }

    /// An outside system's word on a live call (`POST /api/calls/{id}/events`, an
    /// engine's intent): it joins the record (written again if the call was answered),
    /// sets the tag of its name, and goes to the call's script as an `external` event.
    pub fn note_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        name: String,
        value: String,
        confidence: Option<f64>,
    ) -> Result<(), Refusal> {
        let _span = self.enter(id);
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err((404, "no such live call".into()));
        };
        if session.record.events.len() >= MAX_EVENTS_PER_CALL {
            return Err((
                429,
                format!("a call keeps at most {MAX_EVENTS_PER_CALL} events"),
            ));
        }
        tracing::info!(name, value, ?confidence, "external event");
        session.call.set_tag(&name, &value);
        session.record.tags.clone_from(&session.call.tags);
        let event = Event::External {
            name: name.clone(),
            value: value.clone(),
            confidence,
        };
        session.record.events.push(CallEvent {
            at: jiff::Timestamp::from_second(ctx.ambient.wall_secs())
                .unwrap_or(session.record.started_at),
            name,
            value,
            confidence,
        });
        write_live_record(ctx, &mut session.record);
        if session.script.is_empty() {
            return Ok(());
        }
        if session.phase == Phase::Routing {
            // The script's answer to another event is on its way: this one follows it,
            // so that it meets the call as that answer leaves it.
            session.held_events.push_back(event);
        } else {
            ask_script(ctx, id, session, event);
        }
        Ok(())
    }

    /// The script's answer to an external event. The call has gone on meanwhile: a list
    /// that steers it takes over a call the host is playing or gathering for; otherwise
    /// only the actions beside the call's course (tags, recording, streams) apply. A
    /// script that failed on the event leaves the call as it was.
    pub fn external_decided(&mut self, ctx: &mut Ctx<'_>, id: SessionId, decision: Decision) {
        let _span = self.enter(id);
        let Some(session) = self.sessions.get(&id) else {
            return; // ended meanwhile
        };
        if let Some(fallback) = &decision.fallback {
            tracing::warn!(
                cause = fallback.cause,
                "the script failed on an external event; the call goes on as it was: {}",
                fallback.message
            );
            return;
        }
        let engaged = session.phase == Phase::Engaged;
        if engaged && decision.actions.iter().any(Action::takes_over) {
            tracing::info!("an external event takes the call over");
            self.interrupt(ctx, id);
            return self.apply(ctx, id, decision.actions);
        }
        for action in decision.actions {
            match action {
                Action::SetTag { name, value } => {
                    if let Some(session) = self.sessions.get_mut(&id) {
                        session.call.set_tag(&name, &value);
                        session.record.tags.clone_from(&session.call.tags);
                        write_live_record(ctx, &mut session.record);
                    }
                }
                Action::Recording { on } => self.set_recording(ctx, id, on),
                Action::MediaStream(stream) => self.media_stream(ctx, id, stream),
                other => tracing::info!(
                    action = other.name(),
                    "ignored: an external event's action cannot steer a call that is not playing or gathering"
                ),
            }
        }
    }

    /// Start a script's media stream (at most [`MAX_STREAMS_PER_CALL`] a call).
    fn media_stream(&mut self, ctx: &mut Ctx<'_>, id: SessionId, stream: MediaStream) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.streams >= MAX_STREAMS_PER_CALL {
            tracing::warn!(
                "media-stream ignored: a call has at most {MAX_STREAMS_PER_CALL} streams"
            );
            return;
        }
        session.streams += 1;
        ctx.media
            .start_stream(id, stream_request(stream, &session.call));
    }

    /// The script's answer to `call-ended`: its tags complete the record, which is then
    /// written again; any other action is moot for a call that is over.
    pub fn call_ended_decided(&mut self, ctx: &mut Ctx<'_>, id: SessionId, decision: Decision) {
        let Some((mut record, span)) = self.ending.remove(&id) else {
            return;
        };
        let _span = span.entered();
        let tags = record.tags.clone();
        for action in decision.actions {
            match action {
                Action::SetTag { name, value } => {
                    crate::routing::set_tag(&mut record.tags, &name, &value)
                }
                other => {
                    tracing::debug!(?other, "ignored at call-ended")
                }
            }
        }
        if record.tags != tags {
            ctx.outputs.push_back(PbxOutput::RecordRewritten(record));
        }
    }

    /// Carry out a script's actions (the one interpreter: `wasmpbx_types::actions`).
    fn apply(&mut self, ctx: &mut Ctx<'_>, id: SessionId, actions: Vec<Action>) {
        wasmpbx_types::actions::run(
            &mut LiveActions {
                calls: self,
                ctx,
                id,
            },
            actions,
        );
    }

    /// An action the host could not carry out (an unknown prompt, say): the call must
    /// still reach a human, so the location's fallback takes over.
    fn fall_back(&mut self, ctx: &mut Ctx<'_>, id: SessionId, why: &str) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.applying_fallback {
            tracing::error!("{why} (while falling back)");
            return self.end(ctx, id, Disposition::Failed, 500, why);
        }
        tracing::warn!("{why}; falling back");
        session.applying_fallback = true;
        session.record.fallback = true;
        let fallback = fallback_actions(session.location.as_ref());
        self.apply(ctx, id, fallback)
    }

    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        target: ForwardTarget,
        trunk: Option<String>,
        ring_timeout_ms: u32,
        caller_id: Option<String>,
    ) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let number = match &target {
            ForwardTarget::Number(n) => n.clone(),
            ForwardTarget::Fallback => match &session.location {
                Some(l) => l.fallback_number.clone(),
                None => return self.end(ctx, id, Disposition::Failed, 503, "no fallback number"),
            },
            ForwardTarget::User(user_id) => {
                let user_id = user_id.clone();
                return self.fork_to_user(ctx, id, &user_id, ring_timeout_ms);
            }
        };
        let trunk_name = trunk.or_else(|| session.location.as_ref().and_then(|l| l.trunk.clone()));
        let trunk = match &trunk_name {
            Some(name) => ctx.trunks.config(name).cloned(),
            None => ctx.config.trunks.first().cloned(),
        };
        let mut targets = match &trunk {
            Some(t) => ctx.trunks.candidates(&t.name, ctx.ambient.now, ctx.entropy),
            None => Vec::new(),
        };
        let (Some(trunk), false) = (trunk, targets.is_empty()) else {
            tracing::warn!(trunk = ?trunk_name, "no trunk to forward through (none configured, or its host has not resolved)");
            let event = Event::ForwardFailed {
                target,
                status: 503,
                reason: "No Usable Trunk".into(),
            };
            return self.route(ctx, id, event);
        };
        let first = targets.remove(0);
        let host = trunk.request_host();
        let local = ctx.local;
        let mut origin = sdp::Origin::new(ctx.entropy.next_u64());
        let secure = srtp::offers_srtp(srtp::trunk_policy(ctx.config, Some(&trunk)));
        if let Err(e) = srtp::offer(ctx.media, id, Some(Side::B), &mut origin, secure) {
            tracing::error!("SRTP towards the trunk: {e}");
            return self.end(ctx, id, Disposition::Failed, 500, "no SRTP key");
        }
        let offer = origin.stamp(&session.b_offer);
        // Caller id: the script's choice or the original caller, in the trunk's format;
        // with a fixed `from_user`, the caller goes in P-Asserted-Identity instead.
        let caller = trunk.format_number(&caller_id.unwrap_or_else(|| session.call.caller.clone()));
        let domain = trunk.from_domain(&ctx.config.sip.domain);
        let mut extra = Vec::new();
        if trunk.send_pai || trunk.from_user.is_some() {
            extra.push(format!("P-Asserted-Identity: <sip:{caller}@{domain}>"));
        }
        if trunk.diversion && matches!(session.call.origin, Origin::Trunk { .. }) {
            // The number the caller dialled, which forwarded the call here (RFC 5806).
            let flip_number = trunk.format_number(&session.call.dialed);
            extra.push(format!(
                "Diversion: <sip:{flip_number}@{domain}>;reason=unconditional"
            ));
        }
        let from_user = trunk.from_user.clone().unwrap_or(caller);
        let dialled = trunk.format_number(&number);
        let call_id = ctx.entropy.call_id(local.udp.ip());
        let from = format!("<sip:{from_user}@{domain}>;tag={}", ctx.token());
        let to = format!("<sip:{dialled}@{host}>");
        let max_forwards = message::header_value(
            &SipMessage::Request(session.a_invite.clone()),
            "Max-Forwards",
        )
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(70)
        .saturating_sub(1);
        if max_forwards == 0 {
            return self.end(ctx, id, Disposition::Failed, 483, "too many hops");
        }
        let transport = crate::trunks::transport(&trunk);
        let invite = initial_invite(&InviteParts {
            uri: &format!("sip:{dialled}@{host}"),
            transport,
            local,
            max_forwards,
            from: &from,
            to: &to,
            call_id: &call_id,
            offer: &offer,
            branch: &ctx.token(),
            extra: &extra,
        });
        let Some(invite) = invite else {
            return self.end(
                ctx,
                id,
                Disposition::Failed,
                500,
                "could not build the outbound INVITE",
            );
        };
        let peer = Peer {
            transport,
            addr: first,
        };
        let txn = ctx
            .layer
            .send_request(ctx.ambient.now, invite.clone(), peer);
        tracing::info!(number, trunk = %trunk.name, target = %first, "forwarding");
        session.record.legs.push((number.clone(), 0));
        session.record.call_ids.push(call_id.clone());
        let share = crate::trunks::target_share(targets.len() + 1);
        let trunk_leg = TrunkLeg {
            name: trunk.name.clone(),
            remaining: targets,
            share,
            answered_nonce: None,
            attempt: 0,
            heard: false,
        };
        if !trunk_leg.remaining.is_empty() {
            self.timers.push(Reverse((
                ctx.ambient.now + share,
                TimerKind::TrunkTarget,
                id,
                0,
            )));
        }
        session.b = Some(Outbound {
            dialog: Dialog {
                call_id: call_id.clone(),
                local: from,
                remote: to,
                target: format!("sip:{dialled}@{host}"),
                route_set: Vec::new(),
                local_cseq: 1,
                peer,
                sdp: origin,
            },
            invite,
            txn: Some(txn),
            target,
            number,
            answered: false,
            cancelled: false,
            bridge: None,
            trunk: Some(trunk_leg),
        });
        session.phase = Phase::Forwarding;
        session.ring_generation += 1;
        let deadline = ctx.ambient.now + Duration::from_millis(u64::from(ring_timeout_ms));
        self.timers.push(Reverse((
            deadline,
            TimerKind::Ring,
            id,
            session.ring_generation,
        )));
        self.by_call_id.insert(call_id, id);
        self.by_client_txn.insert(txn, id);
        self.ringback(ctx, id);
    }

    /// Ask the script about an event of a live session.
    fn route(&mut self, ctx: &mut Ctx<'_>, id: SessionId, event: Event) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.script.is_empty() {
            // A call between devices has no script: a failed forward is the call's end.
            if let Event::ForwardFailed { status, .. } = event {
                self.end(ctx, id, Disposition::Failed, status, "forward failed");
            }
            return;
        }
        if session.a_answered && session.phase == Phase::Forwarding {
            ctx.media.play(id, Playback::Silence); // the forward failed: no more ringback
        }
        session.phase = Phase::Routing;
        ask_script(ctx, id, session, event);
    }

    /// A response to one of the host's requests.
    pub fn handle_response(&mut self, ctx: &mut Ctx<'_>, txn: ClientTxnId, response: Response) {
        let Some(&id) = self.by_client_txn.get(&txn) else {
            return;
        };
        let _span = self.enter(id);
        let code = response.status_code.code();
        if self.keepalive_answered(ctx, id, txn, code) {
            return;
        }
        if self.is_push_leg(id, txn) {
            return self.push_response(ctx, id, txn, &response);
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            // The call is over (a BYE's or CANCEL's answer, a late fork): forget the txn.
            if code >= 200 {
                self.by_client_txn.remove(&txn);
            }
            return;
        };
        let is_b = session.b.as_ref().is_some_and(|b| b.txn == Some(txn));
        if !is_b
            && session.forks.iter().any(|f| f.txn == Some(txn))
            && !self.fork_response(ctx, id, txn, &response)
        {
            return;
        }
        if is_b {
            self.trunk_leg_heard(ctx, id, txn);
            if code >= 300 && self.retry_trunk_leg(ctx, id, txn, Retry::Response(&response)) {
                return;
            }
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session
            .reinvite
            .as_ref()
            .is_some_and(|r| r.client_txn == txn)
        {
            if code >= 200 {
                self.by_client_txn.remove(&txn);
                self.reinvite_answered(ctx, id, response);
            }
            return;
        }
        let Some(b) = session.b.as_mut().filter(|b| b.txn == Some(txn)) else {
            // A response to a BYE or CANCEL: nothing more to do.
            if code >= 200 {
                self.by_client_txn.remove(&txn);
            }
            return;
        };
        let message = SipMessage::Response(response);
        let mut body = String::from_utf8_lossy(message.body()).into_owned();
        if (200..300).contains(&code) {
            body = b.answer_sdp(ctx, id, body);
        }
        if let Ok(answer) = sdp::parse(&body)
            && let Err(e) = srtp::answered(ctx.media, id, Some(Side::B), &b.dialog.sdp, &answer)
        {
            tracing::warn!(status = code, "the callee's media stays undecryptable: {e}");
        }
        match code {
            100 => {}
            101..=199 => {
                if let Some(tag) = message::to_tag(&message) {
                    b.dialog.remote = with_tag(&b.dialog.remote, &tag);
                }
                if b.cancelled {
                    return;
                }
                if session.a_answered {
                    // The caller hears the host's ringback, or the callee's early media
                    // as soon as it comes.
                    if let Ok(media) = sdp::parse(&body)
                        && let Some(rtp) = media.rtp
                    {
                        ctx.media.set_remote(id, Side::B, rtp);
                    }
                    return;
                }
                // Ringing and early media pass through to the caller.
                let forwarded = if code == 180 || code == 183 {
                    code
                } else {
                    180
                };
                let mut reply = caller_response(
                    &session.a_invite,
                    forwarded,
                    &session.a_dialog.local,
                    ctx.contact(session.a_dialog.peer.transport),
                );
                if let Ok(media) = sdp::parse(&body) {
                    if let Some(rtp) = media.rtp {
                        ctx.media.set_remote(id, Side::B, rtp);
                    }
                    if let Ok(a_sdp) =
                        sdp::rewrite(&body, ctx.config.media.public_ip, session.ports.a)
                    {
                        let a_sdp = match &session.a_answer {
                            Some(browser) => browser.clone(),
                            None => session.a_dialog.sdp.stamp(&a_sdp),
                        };
                        reply
                            .headers
                            .push(Header::ContentType(rsip::headers::ContentType::new(
                                "application/sdp",
                            )));
                        reply.body = a_sdp.into_bytes();
                    }
                }
                ctx.layer
                    .send_response(ctx.ambient.now, session.a_txn, reply);
            }
            200..=299 => {
                if let Some(tag) = message::to_tag(&message) {
                    b.dialog.remote = with_tag(&b.dialog.remote, &tag);
                }
                if let Some(contact) = message::header_value(&message, "Contact") {
                    b.dialog.target = addr_spec(&contact);
                }
                b.dialog.route_set = route_set_of_response(&message);
                // Through a trunk, the dialog's requests go where RFC 3261 says (the
                // carrier's record-routing edge, or the far end's Contact); a device's
                // stay on the address it registered from (it may be behind NAT).
                if b.trunk.is_some()
                    && let Some(next_hop) = b.dialog.next_hop()
                {
                    b.dialog.peer.addr = next_hop;
                }
                b.answered = true;
                let ack = b.dialog.request(
                    "ACK",
                    b.dialog.local_cseq,
                    &Via {
                        local: ctx.local,
                        branch: &ctx.token(),
                    },
                );
                if let Some(ack) = ack {
                    ctx.layer.send_ack(ctx.ambient.now, ack, b.dialog.peer);
                }
                if b.cancelled {
                    // Answered as we gave up on it: hang it up again.
                    return self.bye_b(ctx, id);
                }
                if let Ok(media) = sdp::parse(&body) {
                    if let Some(rtp) = media.rtp {
                        ctx.media.set_remote(id, Side::B, rtp);
                    }
                    session.b_codec = sdp::first_g711(&media);
                }
                // A user's device: its keys are watched for the push code.
                if matches!(b.target, ForwardTarget::User(_))
                    && let Some(pt) = sdp::telephone_event_pt(&body)
                {
                    ctx.media
                        .watch_keys(id, Side::B, pt, Some(&ctx.config.flip.push_code));
                }
                if session.a_answered {
                    // The host answered the caller earlier: connect the two streams.
                    ctx.media.play(id, Playback::Silence);
                } else {
                    let a_sdp = match &session.a_answer {
                        Some(browser) => browser.clone(),
                        None => sdp::rewrite(&body, ctx.config.media.public_ip, session.ports.a)
                            .map(|a_sdp| session.a_dialog.sdp.stamp(&a_sdp))
                            .unwrap_or_default(),
                    };
                    let mut reply = message::response_to(
                        &session.a_invite,
                        200,
                        Some(&tag_of(&session.a_dialog.local)),
                    );
                    attach_sdp(
                        &mut reply,
                        ctx.contact(session.a_dialog.peer.transport),
                        a_sdp,
                    );
                    ctx.layer
                        .send_response(ctx.ambient.now, session.a_txn, reply);
                    session.a_answered = true;
                    let now = jiff::Timestamp::from_second(ctx.ambient.wall_secs()).ok();
                    session.record.answered_at = now;
                }
                session.phase = Phase::Connected;
                session.ring_generation += 1; // the ring timer is moot
                if let Some(leg) = session.record.legs.last_mut() {
                    leg.1 = code;
                }
                // The script's tags so far (set before the answer) go in with it.
                session.record.tags.clone_from(&session.call.tags);
                write_live_record(ctx, &mut session.record);
                tracing::info!(number = %b.number, "answered");
            }
            _ => {
                self.by_client_txn.remove(&txn);
                let Some(b) = session.b.take() else {
                    return;
                };
                self.by_call_id.remove(&b.dialog.call_id);
                if let Some(leg) = session.record.legs.last_mut() {
                    leg.1 = code;
                }
                if b.cancelled {
                    return; // the outcome was decided when it was cancelled
                }
                tracing::info!(number = %b.number, code, "forward failed");
                // A carrier's challenge the trunk could not answer is the host's problem,
                // not something the caller could authenticate: the script (and a caller
                // it rejects) sees the trunk unavailable. The record keeps the real code.
                let (status, reason) = match code {
                    401 | 407 if b.trunk.is_some() => (503, "Trunk Authentication Failed"),
                    _ => (code, message::reason_phrase(code)),
                };
                self.route(
                    ctx,
                    id,
                    Event::ForwardFailed {
                        target: b.target,
                        status,
                        reason: reason.to_owned(),
                    },
                );
            }
        }
    }

    /// The other leg answered a re-INVITE the host passed on: acknowledge it and give its
    /// answer (pointing at the host) to the leg that asked.
    fn reinvite_answered(&mut self, ctx: &mut Ctx<'_>, id: SessionId, response: Response) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(pending) = session.reinvite.take() else {
            return;
        };
        let code = response.status_code.code();
        let body = String::from_utf8_lossy(&response.body).into_owned();
        let mut reply = message::response_to(&pending.request, code, None);
        if (200..300).contains(&code) {
            let (asker, asker_port) = if pending.from_a {
                (Side::A, session.ports.a)
            } else {
                (Side::B, session.ports.b)
            };
            let answered_by = other(asker);
            // A re-INVITE sent again with credentials has a higher CSeq than it had.
            let cseq = message::cseq(&SipMessage::Response(response.clone()))
                .map_or(pending.cseq, |(n, _)| n);
            if let Some(dialog) = session.dialog_mut(answered_by) {
                dialog.local_cseq = dialog.local_cseq.max(cseq);
            }
            if let Some(dialog) = session.dialog_mut(answered_by)
                && let Some(ack) = dialog.request(
                    "ACK",
                    cseq,
                    &Via {
                        local: ctx.local,
                        branch: &ctx.token(),
                    },
                )
            {
                ctx.layer.send_ack(ctx.ambient.now, ack, dialog.peer);
            }
            if let Ok(media) = sdp::parse(&body) {
                if let Some(rtp) = media.rtp {
                    ctx.media.set_remote(id, answered_by, rtp);
                }
                if let Some(dialog) = session.dialog_mut(answered_by)
                    && let Err(e) =
                        srtp::answered(ctx.media, id, Some(answered_by), &dialog.sdp, &media)
                {
                    tracing::warn!("re-INVITE answer: {e}");
                }
            }
            if let Ok(answer) = sdp::rewrite(&body, ctx.config.media.public_ip, asker_port)
                && let Some(dialog) = session.dialog_mut(asker)
            {
                attach_sdp(
                    &mut reply,
                    ctx.contact(dialog.peer.transport),
                    dialog.sdp.stamp(&answer),
                );
            }
        }
        ctx.layer
            .send_response(ctx.ambient.now, pending.server_txn, reply);
    }

    /// A client transaction got no answer at all.
    pub fn handle_txn_timeout(&mut self, ctx: &mut Ctx<'_>, txn: ClientTxnId) {
        let Some(id) = self.by_client_txn.get(&txn).copied() else {
            return;
        };
        let _span = self.enter(id);
        if self.keepalive_answered(ctx, id, txn, 408) {
            return;
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            self.by_client_txn.remove(&txn);
            return;
        };
        if let Some(pending) = session.reinvite.as_ref().filter(|r| r.client_txn == txn) {
            self.by_client_txn.remove(&txn);
            let timeout = message::response_to(&pending.request, 408, None);
            return self.reinvite_answered(ctx, id, timeout);
        }
        if session.forks.iter().any(|f| f.txn == Some(txn)) {
            // A device that never answered at all: a failure like any other.
            let timeout = message::response_to(&session.a_invite, 408, None);
            self.fork_response(ctx, id, txn, &timeout);
            return;
        }
        if self.is_push_leg(id, txn) {
            let timeout = message::response_to(&self.sessions[&id].a_invite, 408, None);
            return self.push_response(ctx, id, txn, &timeout);
        }
        if self.retry_trunk_leg(ctx, id, txn, Retry::Timeout) {
            return;
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        self.by_client_txn.remove(&txn);
        if session.b.as_ref().is_some_and(|b| b.txn == Some(txn))
            && let Some(b) = session.b.take()
        {
            self.by_call_id.remove(&b.dialog.call_id);
            if let Some(leg) = session.record.legs.last_mut() {
                leg.1 = 408;
            }
            if !b.cancelled {
                self.route(
                    ctx,
                    id,
                    Event::ForwardFailed {
                        target: b.target,
                        status: 408,
                        reason: "Request Timeout".into(),
                    },
                );
            }
        }
    }

    /// The timers due: ring timeouts, prompt ends, gather timeouts, push targets' ring
    /// timeouts, PIN tries, in the order they fell due.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        while let Some((kind, id, n)) = pop_due(&mut self.timers, ctx.ambient.now) {
            let _span = self.enter(id);
            match kind {
                TimerKind::Media => self.media_timer(ctx, id, n),
                TimerKind::Push => self.push_timer(ctx, id, n),
                TimerKind::Pin => self.pin_timer(ctx, id, n),
                TimerKind::Ring => self.ring_timer(ctx, id, n),
                TimerKind::Release => self.release_timer(ctx, id, n),
                TimerKind::TrunkTarget => self.trunk_target_timer(ctx, id, n),
            }
        }
        while let Some(id) = self.keepalives.due(ctx.ambient.now) {
            let _span = self.enter(id);
            self.keepalive_timer(ctx, id);
        }
    }

    /// A forward rang for its whole ring timeout: the script is told it failed.
    fn ring_timer(&mut self, ctx: &mut Ctx<'_>, id: SessionId, generation: u64) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.ring_generation != generation || session.phase != Phase::Forwarding {
            return;
        }
        let target = if !session.forks.is_empty() && session.b.is_none() {
            let target = session.forks[0].target.clone();
            self.cancel_forks(ctx, id);
            target
        } else {
            let Some(b) = session.b.as_mut().filter(|b| !b.answered && !b.cancelled) else {
                return;
            };
            b.cancel(ctx, id, &mut self.by_client_txn);
            b.target.clone()
        };
        tracing::info!("ring timeout");
        let event = Event::ForwardFailed {
            target,
            status: 408,
            reason: "Ring Timeout".into(),
        };
        self.route(ctx, id, event);
    }

    /// CANCEL of a pending inbound INVITE.
    pub fn handle_cancel(&mut self, ctx: &mut Ctx<'_>, invite_txn: ServerTxnId) -> bool {
        let Some(&id) = self.by_a_txn.get(&invite_txn) else {
            return self.cancel_pending_pull(ctx, invite_txn);
        };
        let _span = self.enter(id);
        if self.sessions.get(&id).is_none_or(|s| s.a_answered) {
            return false;
        }
        tracing::info!("caller cancelled");
        self.end(ctx, id, Disposition::Abandoned, 487, "caller cancelled");
        true
    }

    /// An in-dialog request (BYE, INFO, re-INVITE) on a session's leg.
    pub fn handle_in_dialog(&mut self, ctx: &mut Ctx<'_>, txn: ServerTxnId, request: Request) {
        let call_id = message::call_id(&request).unwrap_or_default();
        // A dialog no call holds (any more): RFC 3261 §12.2.2.
        let no_such_dialog = |ctx: &mut Ctx<'_>| {
            let response = message::response_to(&request, 481, None);
            ctx.layer.send_response(ctx.ambient.now, txn, response);
        };
        let Some(&id) = self.by_call_id.get(&call_id) else {
            return no_such_dialog(ctx);
        };
        let _span = self.enter(id);
        let Some(session) = self.sessions.get_mut(&id) else {
            // A leg's entry its call left behind.
            self.by_call_id.remove(&call_id);
            return no_such_dialog(ctx);
        };
        if session.pin.as_ref().is_some_and(|p| p.is_leg(&call_id)) {
            return self.pin_leg_request(ctx, id, txn, request);
        }
        if session
            .releasing
            .as_ref()
            .is_some_and(|r| r.dialog.call_id == call_id)
        {
            // The device the call just left, about to be let go: whatever it says is
            // answered; if it hangs up itself, there is nothing left to do for it.
            ctx.layer.send_response(
                ctx.ambient.now,
                txn,
                message::response_to(&request, 200, None),
            );
            if request.method == rsip::Method::Bye {
                session.releasing = None;
                self.by_call_id.remove(&call_id);
            }
            return;
        }
        let from_a = session.a_dialog.call_id == call_id;
        let side = if from_a { Side::A } else { Side::B };
        let ok = message::response_to(&request, 200, None);
        match request.method {
            rsip::Method::Bye => {
                ctx.layer.send_response(ctx.ambient.now, txn, ok);
                let who = match side {
                    Side::A => "caller hung up",
                    Side::B => "callee hung up",
                };
                self.hung_up(ctx, id, side, who);
            }
            rsip::Method::Info => {
                // DTMF by SIP INFO: observed (the caller's menu choices, the device's
                // push code), not relayed.
                let digit = dtmf_from_info(&request.body);
                if let Some(digit) = digit.filter(|_| from_a) {
                    session.record.digits.push(digit);
                }
                ctx.layer.send_response(ctx.ambient.now, txn, ok);
                if let Some(digit) = digit {
                    self.handle_key(ctx, id, side, digit);
                }
            }
            rsip::Method::Refer => self.handle_refer(ctx, id, side, txn, request),
            rsip::Method::Invite => {
                let body = String::from_utf8_lossy(&request.body).into_owned();
                let other_connected =
                    session.a_answered && session.b.as_ref().is_some_and(|b| b.answered);
                if session.reinvite.is_some() {
                    return ctx.layer.send_response(
                        ctx.ambient.now,
                        txn,
                        message::response_to(&request, 491, None),
                    );
                }
                // The party's keys may change with a new offer; SRTP may not be dropped.
                if let Ok(offer) = sdp::parse(&body)
                    && let Some(dialog) = session.dialog_mut(side)
                    && let Err(reason) =
                        srtp::reoffered(ctx.media, id, side, &mut dialog.sdp, &offer)
                {
                    tracing::info!("re-INVITE refused: {reason}");
                    return ctx.layer.send_response(
                        ctx.ambient.now,
                        txn,
                        message::response_to(&request, 488, None),
                    );
                }
                if other_connected && !body.is_empty() {
                    // Hold, resume, a new codec: pass the offer on to the other leg (with
                    // the host's address in it) and answer with what comes back.
                    let port = if from_a {
                        session.ports.b
                    } else {
                        session.ports.a
                    };
                    let public_ip = ctx.config.media.public_ip;
                    let (Ok(offer), Some(other)) = (
                        sdp::rewrite(&body, public_ip, port),
                        session.dialog_mut(other(side)),
                    ) else {
                        return ctx.layer.send_response(
                            ctx.ambient.now,
                            txn,
                            message::response_to(&request, 488, None),
                        );
                    };
                    other.local_cseq += 1;
                    let cseq = other.local_cseq.max(2);
                    other.local_cseq = cseq;
                    let offer = other.sdp.stamp(&offer);
                    let via = Via {
                        local: ctx.local,
                        branch: &ctx.token(),
                    };
                    let contact = format!("Contact: {}", ctx.contact(other.peer.transport));
                    let sdp = Some(("application/sdp", offer.as_str()));
                    let Some(reinvite) =
                        other.request_with_body("INVITE", cseq, &via, &[contact], sdp)
                    else {
                        return ctx.layer.send_response(
                            ctx.ambient.now,
                            txn,
                            message::response_to(&request, 500, None),
                        );
                    };
                    let client_txn = ctx.send_in_dialog(reinvite, other.peer);
                    session.reinvite = Some(Box::new(PendingReinvite {
                        server_txn: txn,
                        request,
                        from_a,
                        client_txn,
                        cseq,
                    }));
                    self.by_client_txn.insert(client_txn, id);
                    return;
                }
                // Nothing to pass it to (or a session refresh without SDP): the relay
                // stays as it is, so the host answers for itself.
                let port = if from_a {
                    session.ports.a
                } else {
                    session.ports.b
                };
                let mut reply = ok;
                let answer = match session.endpoint {
                    // The host is the caller's endpoint: it answers with what it speaks.
                    Some(e) if from_a && !body.is_empty() => Ok(sdp::endpoint(
                        ctx.config.media.public_ip,
                        port,
                        e.codec,
                        e.event_pt,
                    )),
                    _ => sdp::rewrite(&body, ctx.config.media.public_ip, port),
                };
                if let Ok(answer) = answer
                    && let Some(dialog) = session.dialog_mut(side)
                {
                    attach_sdp(
                        &mut reply,
                        ctx.contact(dialog.peer.transport),
                        dialog.sdp.stamp(&answer),
                    );
                }
                ctx.layer.send_response(ctx.ambient.now, txn, reply);
            }
            _ => ctx.layer.send_response(ctx.ambient.now, txn, ok),
        }
    }

    /// The party on `side` left (BYE, or its connection closed): the call ends, unless
    /// a flip of that side is under way and waits for the new device.
    fn hung_up(&mut self, ctx: &mut Ctx<'_>, id: SessionId, side: Side, who: &str) {
        if self.device_left(ctx, id, side) {
            return; // the call waits for the device taking it over
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        match side {
            Side::A if session.b.as_ref().is_some_and(|b| b.answered) => self.bye_b(ctx, id),
            Side::A => {
                if let Some(b) = session.b.as_mut() {
                    b.cancel(ctx, id, &mut self.by_client_txn);
                }
            }
            Side::B => self.bye_a(ctx, id),
        }
        self.cancel_forks(ctx, id);
        self.finish(ctx, id, Disposition::Answered, who);
    }

    /// A device's connection closed (a browser's WebSocket): nothing can reach it any
    /// more (RFC 7118), so its calls end as if it had hung up — or, still ringing, as if
    /// its caller had cancelled.
    pub fn connection_closed(&mut self, ctx: &mut Ctx<'_>, peer: Peer) {
        let gone: Vec<(SessionId, Side, bool)> = self
            .sessions
            .iter()
            .filter_map(|(&id, s)| {
                let connected = s.phase == Phase::Connected;
                let b_peer = s.b.as_ref().filter(|b| b.answered).map(|b| b.dialog.peer);
                if !s.a_gone && s.a_dialog.peer == peer {
                    Some((id, Side::A, connected))
                } else {
                    (connected && b_peer == Some(peer)).then_some((id, Side::B, true))
                }
            })
            .collect();
        for (id, side, connected) in gone {
            let _span = self.enter(id);
            tracing::info!(?side, "the device's connection closed: it hung up");
            if connected {
                self.hung_up(ctx, id, side, "the device's connection closed");
            } else {
                let why = "the caller's connection closed";
                self.end(ctx, id, Disposition::Abandoned, 487, why);
            }
        }
    }

    /// A 2xx the host sent was never acknowledged: end that call.
    pub fn handle_ack_timeout(&mut self, ctx: &mut Ctx<'_>, call_id: &str) {
        let Some(&id) = self.by_call_id.get(call_id) else {
            return;
        };
        let _span = self.enter(id);
        let pin_leg = self
            .sessions
            .get(&id)
            .and_then(|s| s.pin.as_ref())
            .is_some_and(|p| p.is_leg(call_id));
        if pin_leg {
            // The device that pulled never confirmed: it is not taking the call.
            return self.abandon_pin(ctx, id, FlipResult::Cancelled, true);
        }
        // The caller (its leg is the record's first), or a device that took the call
        // over on either side (its old device already let go). RFC 3261 §13.3.1.4: the
        // session ends with a BYE — to the party that was silent as well as to the other.
        let caller = self
            .sessions
            .get(&id)
            .and_then(|s| s.record.call_ids.first())
            .is_some_and(|first| *first == call_id);
        self.bye_a(ctx, id);
        self.bye_b(ctx, id);
        let why = match caller {
            true => "no ACK from the caller",
            false => "no ACK from the device that took the call",
        };
        self.finish(ctx, id, Disposition::Failed, why);
    }

    fn bye_a(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        if let Some(dialog) = self
            .sessions
            .get_mut(&id)
            .and_then(|s| s.dialog_mut(Side::A))
        {
            send_in_dialog(ctx, dialog, id, &mut self.by_client_txn, None);
        }
    }

    fn bye_b(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        if let Some(dialog) = self
            .sessions
            .get_mut(&id)
            .and_then(|s| s.dialog_mut(Side::B))
        {
            send_in_dialog(ctx, dialog, id, &mut self.by_client_txn, None);
        }
    }

    /// End a session from the host's side: a final response to the caller if it was
    /// not answered, BYE if it was, and the outbound leg cancelled or hung up.
    fn end(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        disposition: Disposition,
        status: u16,
        reason: &str,
    ) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.a_answered {
            self.bye_a(ctx, id);
        } else {
            let reply = message::response_to(
                &session.a_invite,
                status,
                Some(&tag_of(&session.a_dialog.local)),
            );
            ctx.layer
                .send_response(ctx.ambient.now, session.a_txn, reply);
        }
        self.cancel_forks(ctx, id);
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        match session.b.as_mut() {
            Some(b) if b.answered => self.bye_b(ctx, id),
            Some(b) => b.cancel(ctx, id, &mut self.by_client_txn),
            None => {}
        }
        self.finish(ctx, id, disposition, reason);
    }

    /// End every live call: BYE what was answered, CANCEL what rings, refuse what waits.
    pub fn hang_up_all(&mut self, ctx: &mut Ctx<'_>) {
        let live: Vec<(SessionId, bool)> = self
            .sessions
            .iter()
            .map(|(id, s)| (*id, s.a_answered))
            .collect();
        for (id, answered) in live {
            let _span = self.enter(id);
            let disposition = if answered {
                Disposition::Answered
            } else {
                Disposition::Failed
            };
            self.end(ctx, id, disposition, 503, "server shutting down");
        }
    }

    /// Whether call `id` is here (on this shard).
    pub fn holds(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    /// How many calls are live.
    pub fn count(&self) -> usize {
        self.sessions.len()
    }

    /// Ended calls whose script has not yet answered `call-ended` (its tags would be
    /// written into their records).
    pub fn awaiting_call_ended(&self) -> usize {
        self.ending.len()
    }

    /// The Call-IDs of this shard's dialogs that hash to another shard (a pulling
    /// device's, handed over): the dispatcher keeps sending their messages here.
    pub fn foreign_call_ids(&self, shard: Shard) -> impl Iterator<Item = &str> {
        self.by_call_id
            .keys()
            .map(String::as_str)
            .filter(move |call_id| !shard.owns(call_id))
    }

    /// The users with a device on a connected call, and when the most recent of each
    /// one's calls arrived: whom this node holds calls for (other nodes redirect these
    /// users' pulls here, or to a node with a later call).
    pub fn users_in_calls(&self) -> std::collections::BTreeMap<String, jiff::Timestamp> {
        let mut users = std::collections::BTreeMap::new();
        for (id, session) in &self.sessions {
            if session.phase != Phase::Connected {
                continue;
            }
            for (user, _) in [Side::A, Side::B]
                .map(|side| session.device_on(side))
                .into_iter()
                .flatten()
            {
                let arrived = id.arrived_at();
                users
                    .entry(user)
                    .and_modify(|latest: &mut jiff::Timestamp| *latest = (*latest).max(arrived))
                    .or_insert(arrived);
            }
        }
        users
    }

    /// Forget a session: release media, tell the script, write the record.
    fn finish(&mut self, ctx: &mut Ctx<'_>, id: SessionId, disposition: Disposition, reason: &str) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        self.keepalives.remove(id);
        self.cancel_pending_flips(ctx, id, &mut session);
        self.cancel_push(ctx, id, &mut session.record, session.ringing.take());
        self.cancel_pin(ctx, id, &mut session);
        if let Some(release) = session.releasing.take() {
            self.release(ctx, id, release);
        }
        let media = ctx.media.close(id);
        (
            session.record.rtp_packets_in,
            session.record.rtp_packets_out,
        ) = media.packets;
        session.record.digits.push_str(&media.digits);
        engaged::note_recording_end(&mut session.record, media.recording);
        session.record.streams = media.streams;
        self.by_call_id.remove(&session.a_dialog.call_id);
        for leg in session.b.iter().chain(&session.forks) {
            self.by_call_id.remove(&leg.dialog.call_id);
        }
        // A soak found these left behind at ~50 bytes a call.
        self.by_client_txn.end_session(id);
        self.by_a_txn.remove(&session.a_txn);
        let ended_at = jiff::Timestamp::from_second(ctx.ambient.wall_secs())
            .unwrap_or(session.record.started_at);
        let duration_ms = ctx
            .ambient
            .now
            .saturating_duration_since(session.arrived)
            .as_millis() as u64;
        session.record.duration_ms = duration_ms;
        session.record.state = RecordState::Ended;
        session.record.ended_at = Some(ended_at);
        session.record.updated_at = ended_at;
        session.record.disposition = disposition;
        session.record.end_reason = reason.to_owned();
        session.record.tags = session.call.tags.clone();
        tracing::info!(?disposition, reason, "call ended");
        if session.script.is_empty() {
            // A call between devices: no script to tell.
            ctx.outputs.push_back(PbxOutput::Record(session.record));
            return;
        }
        // The record is written now, and again if the script's answer to call-ended
        // brings tags.
        ctx.outputs
            .push_back(PbxOutput::Record(session.record.clone()));
        let ended = Event::CallEnded {
            disposition,
            duration_ms,
        };
        ask_script(ctx, id, &session, ended);
        self.ending.insert(id, (session.record, session.span));
    }
}

/// A live call carrying out its script's actions.
struct LiveActions<'c, 'x, 'a> {
    calls: &'c mut Calls,
    ctx: &'x mut Ctx<'a>,
    id: SessionId,
}

impl ActionHost for LiveActions<'_, '_, '_> {
    fn is_over(&self) -> bool {
        !self.calls.sessions.contains_key(&self.id)
    }

    fn set_tag(&mut self, name: &str, value: &str) {
        if let Some(session) = self.calls.sessions.get_mut(&self.id) {
            session.call.set_tag(name, value);
        }
    }

    fn answer(&mut self) -> Result<(), String> {
        self.calls.answer_caller(self.ctx, self.id)
    }

    fn recording(&mut self, on: bool) -> Result<(), String> {
        self.calls.set_recording(self.ctx, self.id, on);
        Ok(())
    }

    fn play(&mut self, prompt: &str, rest: Vec<Action>) -> Result<(), String> {
        self.calls.play_prompt(self.ctx, self.id, prompt, rest)
    }

    fn say(&mut self, speech: Speech, rest: Vec<Action>) -> Result<(), String> {
        self.calls.say(self.ctx, self.id, speech, rest)
    }

    fn media_stream(&mut self, stream: MediaStream) -> Result<(), String> {
        self.calls.media_stream(self.ctx, self.id, stream);
        Ok(())
    }

    fn gather(&mut self, gather: Gather) -> Result<(), String> {
        let spec = engaged::GatherSpec {
            max_digits: gather.max_digits,
            first_timeout: Duration::from_millis(u64::from(gather.timeout_ms)),
            inter_digit_timeout: Duration::from_millis(u64::from(gather.inter_digit_timeout_ms)),
            terminator: gather.terminator,
        };
        self.calls.start_gather(
            self.ctx,
            self.id,
            spec,
            gather.prompt.as_deref(),
            gather.say,
        )
    }

    fn forward(&mut self, f: Forward) {
        let (target, trunk) = (f.target, f.trunk);
        self.calls.forward(
            self.ctx,
            self.id,
            target,
            trunk,
            f.ring_timeout_ms,
            f.caller_id,
        );
    }

    fn reject(&mut self, status: u16, reason: Option<String>) {
        let why = reason.as_deref().unwrap_or("rejected by script");
        self.calls
            .end(self.ctx, self.id, Disposition::Failed, status, why);
    }

    fn hangup(&mut self) {
        let answered = self
            .calls
            .sessions
            .get(&self.id)
            .is_some_and(|s| s.a_answered);
        let disposition = match answered {
            true => Disposition::Answered,
            false => Disposition::Failed,
        };
        self.calls
            .end(self.ctx, self.id, disposition, 480, "hung up by script");
    }

    fn nothing_to_wait_for(&mut self) {
        let why = "script gave no terminal action";
        self.calls
            .end(self.ctx, self.id, Disposition::Failed, 480, why);
    }

    fn failed(&mut self, why: String) {
        self.calls.fall_back(self.ctx, self.id, &why);
    }
}

/// Ask a call's script about an event of the call (it runs off the call's path; its
/// answer comes back as an input).
fn ask_script(ctx: &mut Ctx<'_>, id: SessionId, session: &Session, event: Event) {
    ctx.outputs.push_back(PbxOutput::Route {
        session: id,
        script: session.script.clone(),
        location: session.location.as_ref().map(|l| l.name.clone()),
        pinned: session.pinned.clone(),
        call: session.call.clone(),
        event,
        span: session.span.clone(),
    });
}

/// Write an answered call's record as it stands (state `live`), so that a crash cannot
/// lose the call: the next start marks it interrupted.
fn write_live_record(ctx: &mut Ctx<'_>, record: &mut CallRecord) {
    if record.answered_at.is_none() {
        return;
    }
    record.disposition = Disposition::Answered;
    record.updated_at =
        jiff::Timestamp::from_second(ctx.ambient.wall_secs()).unwrap_or(record.updated_at);
    ctx.outputs.push_back(PbxOutput::RecordLive(record.clone()));
}

/// A flip request's outcome joins the call's record, which is written again.
fn note_flip(ctx: &mut Ctx<'_>, record: &mut CallRecord, event: crate::flip::FlipEvent) {
    record.flips.push(event);
    write_live_record(ctx, record);
}
