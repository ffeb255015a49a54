//! Pull: a user's other device dials the pull code (`flip.pull_code`, `*77`) and takes
//! over the user's live call. The far end's leg is untouched — same dialog, no
//! re-INVITE — and its RTP stream goes on (the media keeps its SSRC and numbering); the
//! new device gets fresh ports on the user's side and the old device a BYE.
//!
//! ```text
//!  INVITE *77 (device C) ──▶ the user's connected call? host rules (emergency, one at a
//!     time, another device) ──▶ PbxOutput::DecideFlip ──policy──▶ flip_decided
//!       allow: replace B's ports, 200 to C, BYE to the old device · else: 4xx to C
//! ```

use std::time::Instant;

use super::pin::Takeover;
use super::requests::{Dialog, addr_spec, attach_sdp, route_set_of_request, with_tag};
use super::{Calls, Ctx, Outbound, Phase, SessionId, srtp};
use crate::flip::{
    CallFacts, Direction, FlipDecision, FlipEvent, FlipKind, FlipRequest, FlipResult, Trigger,
    is_emergency,
};
use crate::media::Side;
use crate::pbx::PbxOutput;
use crate::routing::{ForwardTarget, Origin};
use crate::sdp;
use crate::sip::message::{self, Request, SipMessage};
use crate::sip::shards::Shard;
use crate::sip::transaction::{Peer, ServerTxnId};

/// A pull waiting for the policy's decision.
#[derive(Debug)]
pub(super) struct PendingPull {
    pub(super) session: SessionId,
    /// The side of the call the user's device is on.
    side: Side,
    txn: ServerTxnId,
    invite: Request,
    source: Peer,
    user_id: String,
    device: String,
    from_device: String,
    requested: Instant,
}

impl PendingPull {
    /// This request's entry in the call's record.
    fn event(&self, session: &super::Session, result: FlipResult) -> FlipEvent {
        FlipEvent::new(
            FlipKind::Pull,
            Trigger::PullCode,
            &self.from_device,
            vec![self.device.clone()],
            wall_time(session, self.requested),
            session.record.recording.clone(),
            result,
        )
    }
}

/// Who dialled the pull code.
pub(super) struct Puller {
    pub user_id: String,
    pub device: String,
    /// The device as the edge vouched for it, when it came through one: registered there,
    /// not here.
    pub behind_edge: Option<crate::directory::DeviceInfo>,
}

/// How far a pull's INVITE has gone round the host's signalling shards, each of which
/// may hold a call of the puller's user (`sip.shards`): it visits every shard once, from
/// the one its Call-ID belongs to, and the user's most recent call is pulled wherever it
/// is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullSearch {
    /// Still going round: the most recent call of the user the shards before found, and
    /// which shard holds it.
    Looking { latest: Option<(usize, SessionId)> },
    /// Every shard has been asked and the receiving one holds the latest: serve it.
    Chosen,
}

impl Default for PullSearch {
    /// A pull just arrived from the network.
    fn default() -> Self {
        PullSearch::Looking { latest: None }
    }
}

impl PullSearch {
    /// Where the INVITE goes next from `shard`, which holds `here` (the user's latest
    /// call on it), and what it carries there; none when `shard` serves it (or refuses:
    /// no shard holds a call).
    pub fn next_step(
        self,
        shard: Shard,
        call_id: &str,
        here: Option<SessionId>,
    ) -> Option<(usize, PullSearch)> {
        let PullSearch::Looking { latest } = self else {
            return None;
        };
        let latest = [latest, here.map(|id| (shard.index, id))]
            .into_iter()
            .flatten()
            .max_by_key(|(_, id)| *id);
        match shard.next_to_try(call_id) {
            Some(next) => Some((next, PullSearch::Looking { latest })),
            None => match latest {
                Some((holder, _)) if holder != shard.index => Some((holder, PullSearch::Chosen)),
                _ => None,
            },
        }
    }
}

impl Calls {
    /// A device of the puller's user dialled the pull code.
    pub(super) fn start_pull(
        &mut self,
        ctx: &mut Ctx<'_>,
        txn: ServerTxnId,
        invite: Request,
        source: Peer,
        puller: Puller,
    ) {
        let Puller {
            user_id,
            device,
            behind_edge,
        } = puller;
        let refuse = |ctx: &mut Ctx<'_>, code: u16, reason: &str| {
            tracing::info!(user = user_id, device, "pull refused: {reason}");
            let response = message::response_to(&invite, code, Some(&ctx.token()));
            ctx.layer
                .send_response(ctx.ambient.now, txn, message::with_reason(response, reason));
        };
        // The user's connected call here on one of the user's devices — a call that rang
        // them (side B) or that one of them placed (side A); the most recent wins.
        let here = self
            .sessions
            .iter()
            .filter(|(_, s)| s.phase == Phase::Connected)
            .filter_map(|(&id, s)| Some((id, s.users_side(&user_id)?)))
            .max_by_key(|(id, _)| *id);
        // The other signalling shards of this host may hold a more recent one: the
        // INVITE goes round them all, unanswered, and the shard holding the latest serves.
        let call_id = message::call_id(&invite).unwrap_or_default();
        // The search another shard handed here with this INVITE, if it is that one.
        let search = match self.handed_pull.take() {
            Some((handed, search)) if handed == call_id => search,
            _ => PullSearch::default(),
        };
        if let Some((shard, search)) = search.next_step(ctx.shard, &call_id, here.map(|(id, _)| id))
        {
            match search {
                PullSearch::Looking { .. } => tracing::info!(
                    user = user_id,
                    "pull: handed to shard {shard}, which may hold a more recent call"
                ),
                PullSearch::Chosen => tracing::info!(
                    user = user_id,
                    "pull: shard {shard} holds the user's most recent call; handed there"
                ),
            }
            ctx.layer.forget_server(txn);
            ctx.registrar.give_back_answer(&invite);
            let bytes = message::serialize(&SipMessage::Request(invite));
            ctx.outputs.push_back(PbxOutput::HandOff {
                shard,
                peer: source,
                bytes,
                search,
            });
            return;
        }
        let Some((id, side)) = here else {
            // Another node sharing the store holds the user's call: the device is sent
            // there (RFC 3261 §21.3.3), its pull dialled again.
            if let Some(owner) = ctx.owners.owner_of(&user_id) {
                return redirect(ctx, txn, &invite, &user_id, &device, &owner);
            }
            return refuse(ctx, 404, "No Live Call To Pull");
        };
        let Some(session) = self.sessions.get(&id) else {
            return refuse(ctx, 404, "No Live Call To Pull");
        };
        let _span = session.span.clone().entered();
        let Some((_, from_device)) = session.device_on(side) else {
            return refuse(ctx, 404, "No Live Call To Pull");
        };
        if session.flipping() {
            return refuse(ctx, 491, "A Flip Is Already In Progress");
        }
        if from_device == device {
            return refuse(ctx, 486, "The Call Is Already On This Device");
        }
        let emergency = is_emergency(&session.call.dialed, &ctx.config.sip.emergency_numbers);
        if emergency && !ctx.config.flip.allow_emergency {
            tracing::warn!(user = user_id, "pull of an emergency call refused");
            return refuse(ctx, 403, "Emergency Calls Cannot Be Flipped");
        }
        let body = String::from_utf8_lossy(&invite.body);
        let offered: Vec<u8> = match crate::sdp::is_webrtc(&body) {
            true => crate::sdp::audio_payload_types(&body),
            false => sdp::parse(&body)
                .map(|m| m.payload_types)
                .unwrap_or_default(),
        };
        if let Err(reason) = new_device_srtp(ctx, &user_id, &body) {
            tracing::info!(user = user_id, "pull refused: {reason}");
            return refuse(ctx, 488, "Not Acceptable Here");
        }
        let speaks = |codec: crate::media::Codec| offered.contains(&codec.payload_type());
        if !session.b_codec.is_some_and(speaks) {
            return refuse(ctx, 488, "The Call's Codec Is Not Offered");
        }
        let candidates = match behind_edge {
            Some(edge_device) => vec![edge_device],
            None => ctx
                .registrar
                .bindings(&user_id)
                .iter()
                .filter(|b| b.device == device)
                .map(device_info)
                .collect(),
        };
        let request = FlipRequest {
            user_id: user_id.clone(),
            requesting_device: device.clone(),
            kind: FlipKind::Pull,
            trigger: Trigger::PullCode,
            call: call_facts(session, ctx.ambient.now, &from_device, emergency),
            candidates,
        };
        tracing::info!(
            user = user_id,
            from = from_device,
            to = device,
            "pull requested"
        );
        let pending = PendingPull {
            session: id,
            side,
            txn,
            invite,
            source,
            user_id,
            device,
            from_device,
            requested: ctx.ambient.now,
        };
        self.ask_flip_policy(ctx, super::PendingFlip::Pull(Box::new(pending)), request);
    }

    /// The device that dialled the pull code hung up (CANCEL) while the flip policy was
    /// asked: its INVITE gets 487 (RFC 3261 §9.2), and the policy's answer finds nothing
    /// left to do — the call stays where it is. False if no pull waits on `txn`.
    pub(super) fn cancel_pending_pull(&mut self, ctx: &mut Ctx<'_>, txn: ServerTxnId) -> bool {
        let Some(flip) = self
            .flips
            .iter()
            .find_map(|(&flip, pending)| match pending {
                super::PendingFlip::Pull(pull) if pull.txn == txn => Some(flip),
                _ => None,
            })
        else {
            return false;
        };
        let Some(super::PendingFlip::Pull(pull)) = self.flips.remove(&flip) else {
            return false;
        };
        let _span = self.enter(pull.session);
        tracing::info!(
            user = pull.user_id,
            device = pull.device,
            "pull cancelled by the device"
        );
        if let Some(session) = self.sessions.get_mut(&pull.session) {
            session.flip_pending = false;
            let event = pull.event(session, FlipResult::Cancelled);
            super::note_flip(ctx, &mut session.record, event);
        }
        refuse_pull(ctx, &pull, 487, "Request Terminated");
        true
    }

    /// The flip policy's answer to a pull (an error: the script failed, which denies).
    pub(super) fn pull_decided(
        &mut self,
        ctx: &mut Ctx<'_>,
        pull: PendingPull,
        decision: Result<FlipDecision, String>,
    ) {
        let users_pin = ctx
            .config
            .user(&pull.user_id)
            .and_then(|u| u.pin.as_deref());
        let verdict = super::pin::verdict(decision, users_pin).and_then(|(allow, pin)| {
            if allow.targets.is_empty() || allow.targets.contains(&pull.device) {
                Ok(pin)
            } else {
                Err(format!("the policy does not allow device {}", pull.device))
            }
        });
        let Some(session) = self.sessions.get_mut(&pull.session) else {
            return refuse_pull(ctx, &pull, 481, "The Call Has Ended");
        };
        session.flip_pending = false;
        let mut event = pull.event(session, FlipResult::Done);
        let pin = match verdict {
            Ok(pin) => pin,
            Err(reason) => {
                tracing::info!(user = pull.user_id, "pull denied: {reason}");
                event.result = FlipResult::Denied(reason);
                super::note_flip(ctx, &mut session.record, event);
                return refuse_pull(ctx, &pull, 403, "Flip Denied By Policy");
            }
        };
        // The codec was checked at the request; the session cannot have changed it since.
        let Some(codec) = session.b_codec else {
            return refuse_pull(ctx, &pull, 488, "The Call's Codec Is Not Offered");
        };
        let port = match ctx.media.reserve_leg(pull.session) {
            Ok(port) => port,
            Err(e) => {
                tracing::error!("pull: no media ports: {e}");
                event.result = FlipResult::Denied(format!("no media ports: {e}"));
                super::note_flip(ctx, &mut session.record, event);
                return refuse_pull(ctx, &pull, 503, "No Media Ports");
            }
        };
        // The new device's own dialog, with the host as UAS.
        let mut body = String::from_utf8_lossy(&pull.invite.body).into_owned();
        // A browser: a bridge answers its WebRTC on the reserved ports, and the call sees
        // it as a plain RTP phone there.
        let mut browser_answer = None;
        if crate::sdp::is_webrtc(&body) {
            let public_ip = ctx.config.media.public_ip;
            match ctx
                .media
                .bridge_webrtc(pull.session, None, &body, public_ip)
            {
                Ok(bridged) => {
                    body = bridged.plain_offer;
                    browser_answer = Some(bridged.answer);
                }
                Err(e) => {
                    ctx.media.release_reserved(pull.session);
                    event.result = FlipResult::Denied(format!("WebRTC: {e}"));
                    super::note_flip(ctx, &mut session.record, event);
                    return refuse_pull(ctx, &pull, 488, "Not Acceptable Here");
                }
            }
        }
        let message = SipMessage::Request(pull.invite.clone());
        let tag = ctx.token();
        let to = message::header_value(&message, "To").unwrap_or_default();
        let from = message::header_value(&message, "From").unwrap_or_default();
        let call_id = message::call_id(&message).unwrap_or_default();
        let contact = message::header_value(&message, "Contact")
            .map(|c| addr_spec(&c))
            .unwrap_or_else(|| addr_spec(&from));
        let mut ok = message::response_to(&pull.invite, 200, Some(&tag));
        let mut origin = sdp::Origin::new(ctx.entropy.next_u64());
        // Checked at the request: the offer has not changed since.
        let offered = new_device_srtp(ctx, &pull.user_id, &body).unwrap_or(srtp::Offered::Plain);
        if let Err(e) = srtp::accept(ctx.media, pull.session, None, &mut origin, offered) {
            tracing::error!("pull: SRTP: {e}");
            ctx.media.release_reserved(pull.session);
            event.result = FlipResult::Denied(format!("SRTP: {e}"));
            super::note_flip(ctx, &mut session.record, event);
            return refuse_pull(ctx, &pull, 500, "No SRTP Key");
        }
        let answer = browser_answer.unwrap_or_else(|| {
            let public_ip = ctx.config.media.public_ip;
            let event_pt = sdp::telephone_event_pt(&body);
            origin.stamp(&sdp::endpoint(public_ip, port, codec, event_pt))
        });
        attach_sdp(&mut ok, ctx.contact(pull.source.transport), answer);
        ctx.layer.send_response(ctx.ambient.now, pull.txn, ok);
        event.answered_at = Some(wall_time(session, ctx.ambient.now));
        session.record.call_ids.push(call_id.clone());
        let new_leg = Outbound {
            dialog: Dialog {
                call_id,
                local: with_tag(&to, &tag),
                remote: from,
                target: contact,
                route_set: route_set_of_request(&message),
                local_cseq: 0,
                remote_cseq: message::cseq(&message).map(|c| c.0),
                peer: pull.source,
                sdp: origin,
            },
            invite: pull.invite,
            txn: None,
            target: ForwardTarget::User(pull.user_id.clone()),
            number: format!("{}/{}", pull.user_id, pull.device),
            answered: true,
            cancelled: false,
            bridge: None,
            trunk: None,
        };
        let flip = Takeover {
            side: pull.side,
            leg: new_leg,
            body,
            event,
            trigger: Trigger::PullCode,
        };
        match pin {
            Some(pin) => self.ask_pin(ctx, pull.session, flip, pin),
            None => self.take_over(ctx, pull.session, flip),
        }
    }

    /// A session ends with flips waiting for the policy: they are cancelled, and
    /// devices that pulled are told.
    pub(super) fn cancel_pending_flips(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        session: &mut super::Session,
    ) {
        let pending: Vec<u64> = self
            .flips
            .iter()
            .filter(|(_, p)| p.session() == id)
            .map(|(flip, _)| *flip)
            .collect();
        for flip in pending {
            let Some(pending) = self.flips.remove(&flip) else {
                continue;
            };
            let pull = match pending {
                super::PendingFlip::Pull(pull) => *pull,
                super::PendingFlip::Push(push) => {
                    let event = push.event(session, FlipResult::Cancelled);
                    session.record.flips.push(event);
                    continue;
                }
            };
            let event = pull.event(session, FlipResult::Cancelled);
            session.record.flips.push(event);
            refuse_pull(ctx, &pull, 481, "The Call Has Ended");
        }
    }
}

fn refuse_pull(ctx: &mut Ctx<'_>, pull: &PendingPull, code: u16, reason: &str) {
    let response = message::response_to(&pull.invite, code, Some(&ctx.token()));
    ctx.layer.send_response(
        ctx.ambient.now,
        pull.txn,
        message::with_reason(response, reason),
    );
}

/// What the policy is told of the call a flip would move.
pub(super) fn call_facts(
    session: &super::Session,
    now: Instant,
    current_device: &str,
    emergency: bool,
) -> CallFacts {
    CallFacts {
        call_id: session.call.call_id.clone(),
        remote_party: session.call.caller.clone(),
        direction: match (&session.call.origin, session.b.as_ref().map(|b| &b.target)) {
            (Origin::Trunk { .. }, _) => Direction::Inbound,
            (Origin::Device { .. }, Some(ForwardTarget::Number(_))) => Direction::Outbound,
            (Origin::Device { .. }, _) => Direction::Internal,
        },
        duration_ms: now.saturating_duration_since(session.arrived).as_millis() as u64,
        emergency,
        location: session.call.location.clone(),
        current_device: current_device.to_owned(),
    }
}

/// A registered device as the policy sees it.
pub(super) fn device_info(binding: &crate::registrar::Binding) -> crate::directory::DeviceInfo {
    crate::directory::DeviceInfo {
        name: binding.device.clone(),
        user_id: binding.user_id.clone(),
        user_agent: binding.user_agent.clone(),
        transport: binding.transport.as_str().to_owned(),
    }
}

/// Answer a pull with `302 Moved Temporarily` to the node at `owner` (`sip:host:port`):
/// the Contact is the pull code at that node.
fn redirect(
    ctx: &mut Ctx<'_>,
    txn: ServerTxnId,
    invite: &Request,
    user_id: &str,
    device: &str,
    owner: &str,
) {
    let code = &ctx.config.flip.pull_code;
    let at = owner.strip_prefix("sip:").unwrap_or(owner);
    tracing::info!(
        user = user_id,
        device,
        owner,
        "pull redirected: another node holds the user's call"
    );
    let mut response = message::response_to(invite, 302, Some(&ctx.token()));
    response.headers.push(rsip::Header::Other(
        "Contact".into(),
        format!("<sip:{code}@{at}>"),
    ));
    ctx.layer.send_response(ctx.ambient.now, txn, response);
}

pub(super) fn device_of(label: &str) -> &str {
    label.split_once('/').map_or(label, |(_, device)| device)
}

/// The user's id from a leg's `user/device` label.
pub(super) fn user_of(label: &str) -> &str {
    label.split_once('/').map_or(label, |(user, _)| user)
}

/// The wall-clock time of `at` in a session, to the millisecond.
pub(super) fn wall_time(session: &super::Session, at: Instant) -> jiff::Timestamp {
    let since = at.saturating_duration_since(session.arrived);
    session
        .record
        .started_at
        .checked_add(jiff::SignedDuration::try_from(since).unwrap_or_default())
        .unwrap_or(session.record.started_at)
}

/// How the host answers the SRTP of a device of `user_id`'s offering to take a call (its
/// pulling INVITE, or a browser's bridge, which is plain).
fn new_device_srtp(
    ctx: &Ctx<'_>,
    user_id: &str,
    body: &str,
) -> Result<srtp::Offered, &'static str> {
    if crate::sdp::is_webrtc(body) {
        return Ok(srtp::Offered::Plain);
    }
    let offer = sdp::parse(body).map_err(|_| "the offer's SDP is unusable")?;
    srtp::answer(srtp::device_policy(ctx.config, user_id), &offer)
}
