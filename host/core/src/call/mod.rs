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
//!
//! Where things are (each file adds its part of `impl Calls`):
//! - `session.rs`: a call's state (`Session`, its legs, its phase);
//! - `incoming.rs`: a new INVITE (from a trunk, a device, a pull);
//! - `scripted.rs`: the script's decisions carried out, its events asked, the forward;
//! - `forks.rs`: a user's devices ringing at once; `trunk_legs.rs`: a leg through a
//!   carrier (its challenge, its failover); `srtp.rs`: which legs are encrypted;
//! - `engaged.rs`: active mode, the host answering (prompts, gathers, recording);
//! - `in_dialog.rs`: BYE, re-INVITE, INFO, REFER, CANCEL and the like on a call's dialogs;
//! - `pull.rs`, `push.rs`, `pin.rs`: call flip; `keepalive.rs`: parties still there;
//! - `ending.rs`: the end of a call, its record and the script's `call-ended`;
//! - `requests.rs`: the requests a leg sends; `client_txns.rs`: whose transaction is whose;
//! - this file: the calls' tables and timers, responses to the host's requests, queries.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use rsip::prelude::*;

use crate::config::Config;
use crate::media::{MediaAllocator, Playback, Prompts, Side};
use crate::pbx::{Ambient, PbxOutput};
use crate::registrar::Registrar;
use crate::routing::{Disposition, Event, ForwardTarget};
use crate::sdp;
use crate::sip::local::LocalAddrs;
use crate::sip::message::{self, Header, Request, Response, SipMessage};
use crate::sip::shards::Shard;
use crate::sip::transaction::{ClientTxnId, Peer, ServerTxnId, TransactionLayer};
pub use wasmpbx_types::ids::SessionId;
pub use wasmpbx_types::record::{CallRecord, CallSummary, RecordState, UserCall};

mod client_txns;
mod ending;
mod engaged;
mod forks;
mod in_dialog;
mod incoming;
mod keepalive;
mod pin;
mod pull;
mod push;
mod requests;
mod scripted;
mod session;
mod srtp;
mod trunk_legs;

#[cfg(test)]
mod drain_tests;
#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod flip_tests;
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

use client_txns::ClientTxns;
use ending::{note_flip, write_live_record};
pub use pull::PullSearch;
pub use push::Refusal;
use requests::{Dialog, Via, attach_sdp, caller_response, dtmf_from_info, tag_of, with_tag};
use session::{Outbound, PendingFlip, Phase, Session, other};
use trunk_legs::Retry;

/// How long the devices of a called user ring.
const DEVICE_RING_TIMEOUT_MS: u32 = 60_000;

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

/// A forward starts ringing: the call's phase, and a ring timer of a new generation
/// (an earlier forward's ring timer is stale from now on).
fn start_ringing(
    timers: &mut Timers,
    id: SessionId,
    session: &mut Session,
    now: Instant,
    ring_timeout_ms: u32,
) {
    session.phase = Phase::Forwarding;
    session.ring_generation += 1;
    let deadline = now + std::time::Duration::from_millis(u64::from(ring_timeout_ms));
    timers.push(Reverse((
        deadline,
        TimerKind::Ring,
        id,
        session.ring_generation,
    )));
}

/// The next timer due at `now`, taken off the heap.
fn pop_due(timers: &mut Timers, now: Instant) -> Option<(TimerKind, SessionId, u64)> {
    let Reverse((at, ..)) = timers.peek()?;
    if *at > now {
        return None;
    }
    timers.pop().map(|Reverse((_, kind, id, n))| (kind, id, n))
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
    /// The unanswered legs of ended calls, by their INVITE's transaction: a 2xx that
    /// crosses their CANCEL is acknowledged and hung up, not left answered into silence
    /// (a carrier bills it). Gone with the INVITE's final response, or 64·T1 after its
    /// CANCEL.
    abandoned: HashMap<ClientTxnId, Dialog>,
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
    pub(crate) fn table_sizes(&self) -> [(&'static str, usize); 9] {
        [
            ("sessions", self.sessions.len()),
            ("by_call_id", self.by_call_id.len()),
            ("by_a_txn", self.by_a_txn.len()),
            ("by_client_txn", self.by_client_txn.len()),
            ("flips", self.flips.len()),
            ("ending", self.ending.len()),
            ("keepalives", self.keepalives.len()),
            ("handed_pull", usize::from(self.handed_pull.is_some())),
            ("abandoned", self.abandoned.len()),
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

    /// A response to one of the host's requests.
    pub fn handle_response(&mut self, ctx: &mut Ctx<'_>, txn: ClientTxnId, response: Response) {
        let code = response.status_code.code();
        if let Some(dialog) = self.abandoned.get_mut(&txn) {
            if (200..300).contains(&code) {
                tracing::info!(call_id = %dialog.call_id, "a leg of an ended call answered: hung up");
                forks::hang_up_late_answer(ctx, dialog, &response);
            }
            if code >= 200 {
                self.abandoned.remove(&txn);
            }
            return;
        }
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
                b.dialog.take_answer(&message);
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

    /// A client transaction got no answer at all.
    pub fn handle_txn_timeout(&mut self, ctx: &mut Ctx<'_>, txn: ClientTxnId) {
        if self.abandoned.remove(&txn).is_some() {
            return;
        }
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
            if !session
                .b
                .as_ref()
                .is_some_and(|b| !b.answered && !b.cancelled)
            {
                return;
            }
            let Some(mut b) = session.b.take() else {
                return;
            };
            b.cancel(ctx, id, &mut self.by_client_txn);
            let target = b.target.clone();
            // Out of `b`, for the script's next forward: should it answer all the same,
            // it is one of the cancelled forks, acknowledged and hung up.
            session.forks.push(b);
            target
        };
        tracing::info!("ring timeout");
        let event = Event::ForwardFailed {
            target,
            status: 408,
            reason: "Ring Timeout".into(),
        };
        self.route(ctx, id, event);
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
}
