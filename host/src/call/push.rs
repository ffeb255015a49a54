//! Push: the device in a call hands it to the user's other devices — by the push code
//! as DTMF (`flip.push_code`, `*8`), a REFER to the user's own extension (the phone's
//! transfer key), or `POST /api/calls/{id}/flip`. The policy decides; the allowed
//! devices ring with the call's codec on ports reserved for them; the first to answer
//! takes the call and only then is the old device released. No answer: the call stays
//! where it was. The far end's leg is untouched throughout.
//!
//! ```text
//!  trigger ──▶ host rules ──▶ DecideFlip ──allow──▶ ring targets (reserved ports)
//!     first 2xx: switch ports, BYE old device, CANCEL the rest · all fail / timeout: stays
//! ```

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::pull::wall_time;
use super::requests::{addr_spec, in_dialog_request, refer_notify, with_tag};
use super::{Calls, Ctx, Disposition, Outbound, Phase, SessionId};
use crate::call::CallRecord;
use crate::flip::{
    FlipDecision, FlipEvent, FlipKind, FlipRequest, FlipResult, Trigger, is_emergency,
};
use crate::media::{Playback, Side};
use crate::routing::ForwardTarget;
use crate::sdp;
use crate::sip::message::{self, Request, Response, SipMessage};
use crate::sip::transaction::{ClientTxnId, ServerTxnId};

/// A push waiting for the policy.
#[derive(Debug)]
pub(super) struct PendingPush {
    pub(super) session: SessionId,
    trigger: Trigger,
    user_id: String,
    from_device: String,
    /// Devices the request named (the API's `targets`); empty = any.
    wanted: Vec<String>,
    requested: Instant,
}

impl PendingPush {
    /// This request's entry in the call's record (its targets are added as they ring).
    pub(super) fn event(&self, session: &super::Session, result: FlipResult) -> FlipEvent {
        FlipEvent::new(
            FlipKind::Push,
            self.trigger,
            &self.from_device,
            self.wanted.clone(),
            wall_time(session, self.requested),
            session.record.recording.clone(),
            result,
        )
    }
}

/// A push whose targets are ringing.
pub(super) struct Ringing {
    flip: u64,
    trigger: Trigger,
    legs: Vec<Outbound>,
    event: FlipEvent,
    /// The PIN the answering device must enter first, if the policy wants one.
    pin: Option<String>,
}

/// Why a push cannot start: the status and reason for whoever asked.
pub type Refusal = (u16, String);

impl Calls {
    /// Ask to push session `id`'s call from the device it is on to the user's others.
    pub fn start_push(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        trigger: Trigger,
        wanted: Vec<String>,
    ) -> Result<(), Refusal> {
        let refuse = |code: u16, reason: &str| {
            tracing::info!(session = id, ?trigger, "push refused: {reason}");
            Err((code, reason.to_owned()))
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return refuse(404, "No Such Call");
        };
        let (user_id, from_device) = match session.b.as_ref().map(|b| (&b.target, &b.number)) {
            Some((ForwardTarget::User(user), number)) if session.phase == Phase::Connected => {
                (user.clone(), super::pull::device_of(number).to_owned())
            }
            _ => return refuse(409, "Not A Connected Call On A User's Device"),
        };
        if session.flipping() {
            return refuse(491, "A Flip Is Already In Progress");
        }
        let emergency = is_emergency(&session.call.dialed, &ctx.config.sip.emergency_numbers);
        if emergency && !ctx.config.flip.allow_emergency {
            tracing::warn!(
                session = id,
                user = user_id,
                "push of an emergency call refused"
            );
            return refuse(403, "Emergency Calls Cannot Be Flipped");
        }
        if session.b_codec.is_none() {
            return refuse(488, "The Call's Codec Is Unknown");
        }
        let candidates: Vec<_> = ctx
            .registrar
            .bindings(&user_id)
            .iter()
            .filter(|b| b.device != from_device)
            .filter(|b| wanted.is_empty() || wanted.contains(&b.device))
            .map(super::pull::device_info)
            .collect();
        if candidates.is_empty() {
            return refuse(404, "No Other Device To Flip To");
        }
        let request = FlipRequest {
            user_id: user_id.clone(),
            requesting_device: from_device.clone(),
            kind: FlipKind::Push,
            trigger,
            call: super::pull::call_facts(session, ctx.ambient.now, &from_device, emergency),
            candidates,
        };
        tracing::info!(
            session = id,
            user = user_id,
            from = from_device,
            ?trigger,
            "push requested"
        );
        let pending = PendingPush {
            session: id,
            trigger,
            user_id,
            from_device,
            wanted,
            requested: ctx.ambient.now,
        };
        self.ask_flip_policy(ctx, super::PendingFlip::Push(pending), request);
        Ok(())
    }

    /// The policy's answer to a push.
    pub(super) fn push_decided(
        &mut self,
        ctx: &mut Ctx<'_>,
        flip: u64,
        push: PendingPush,
        decision: Result<FlipDecision, String>,
    ) {
        let id = push.session;
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.flip_pending = false;
        let mut event = push.event(session, FlipResult::Done);
        event.targets.clear(); // the devices actually rung are listed below
        let users_pin = ctx
            .config
            .user(&push.user_id)
            .and_then(|u| u.pin.as_deref());
        let (allow, pin) = match super::pin::verdict(decision, users_pin) {
            Ok(verdict) => verdict,
            Err(reason) => {
                tracing::info!(session = id, user = push.user_id, "push denied: {reason}");
                event.result = FlipResult::Denied(reason);
                session.record.flips.push(event);
                return self.notify_pusher(ctx, id, push.trigger, "603 Declined");
            }
        };
        let targets: Vec<_> = ctx
            .registrar
            .bindings(&push.user_id)
            .iter()
            .filter(|b| b.device != push.from_device)
            .filter(|b| push.wanted.is_empty() || push.wanted.contains(&b.device))
            .filter(|b| allow.targets.is_empty() || allow.targets.contains(&b.device))
            .cloned()
            .collect();
        if targets.is_empty() {
            event.result = FlipResult::Denied("the policy allowed none of the devices".into());
            session.record.flips.push(event);
            return self.notify_pusher(ctx, id, push.trigger, "603 Declined");
        }
        let codec = session.b_codec;
        let port = codec.map(|_| ctx.media.reserve_leg(id));
        let (Some(codec), Some(Ok(port))) = (codec, port) else {
            event.result = FlipResult::Denied("no media ports for the targets".into());
            session.record.flips.push(event);
            return self.notify_pusher(ctx, id, push.trigger, "503 Service Unavailable");
        };
        let offer = sdp::endpoint(ctx.config.media.public_ip, port, id + 4, codec, Some(101));
        let caller = session.call.caller.clone();
        let extension = ctx
            .config
            .user(&push.user_id)
            .map(|u| u.extension.clone())
            .unwrap_or_default();
        let target = ForwardTarget::User(push.user_id.clone());
        let mut legs = Vec::new();
        for binding in &targets {
            if let Some(leg) =
                self.ring_device(ctx, id, binding, &caller, &extension, &offer, &target)
            {
                event.targets.push(binding.device.clone());
                legs.push(leg);
            }
        }
        let ring_timeout_ms = match allow.ring_timeout_ms {
            0 => ctx.config.flip.ring_timeout_ms,
            t => t,
        };
        let deadline = ctx.ambient.now + Duration::from_millis(u64::from(ring_timeout_ms));
        self.push_timers.push(Reverse((deadline, id, flip)));
        let session = self.sessions.get_mut(&id).expect("present");
        session.ringing = Some(Ringing {
            flip,
            trigger: push.trigger,
            legs,
            event,
            pin,
        });
    }

    /// Whether `txn` is the INVITE of a push target of session `id`.
    pub(super) fn is_push_leg(&self, id: SessionId, txn: ClientTxnId) -> bool {
        self.sessions
            .get(&id)
            .and_then(|s| s.ringing.as_ref())
            .is_some_and(|r| r.legs.iter().any(|l| l.txn == Some(txn)))
    }

    /// A response from a push target: the first answer takes the call.
    pub(super) fn push_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        txn: ClientTxnId,
        response: &Response,
    ) {
        let code = response.status_code.code();
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(ringing) = session.ringing.as_mut() else {
            return;
        };
        let Some(i) = ringing.legs.iter().position(|l| l.txn == Some(txn)) else {
            return;
        };
        let message = SipMessage::Response(response.clone());
        if let Some(tag) = message::to_tag(&message) {
            let leg = &mut ringing.legs[i];
            leg.dialog.remote = with_tag(&leg.dialog.remote, &tag);
        }
        match code {
            100..=199 => {}
            200..=299 => {
                let mut leg = ringing.legs.remove(i);
                if let Some(contact) = message::header_value(&message, "Contact") {
                    leg.dialog.target = addr_spec(&contact);
                }
                leg.answered = true;
                if let Some(ack) = in_dialog_request(&leg.dialog, "ACK", 1, ctx.local) {
                    ctx.layer.send_ack(ctx.ambient.now, ack, leg.dialog.peer);
                }
                self.by_client_txn.remove(&txn);
                let body = String::from_utf8_lossy(message.body()).into_owned();
                self.push_answered(ctx, id, leg, &body);
            }
            _ => {
                let leg = ringing.legs.remove(i);
                self.by_client_txn.remove(&txn);
                self.by_call_id.remove(&leg.dialog.call_id);
                if ringing.legs.is_empty() {
                    self.push_failed(ctx, id);
                }
            }
        }
    }

    /// A target answered: the other targets stop ringing, and it takes the call (after
    /// the PIN, if the policy wants one).
    fn push_answered(&mut self, ctx: &mut Ctx<'_>, id: SessionId, leg: Outbound, body: &str) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(mut ringing) = session.ringing.take() else {
            return;
        };
        ringing.event.answered_at = Some(wall_time(session, ctx.ambient.now));
        for other in &mut ringing.legs {
            other.cancel(ctx, id, &mut self.by_client_txn);
        }
        match ringing.pin {
            Some(pin) => {
                let body = body.to_owned();
                self.ask_pin(ctx, id, leg, body, ringing.event, ringing.trigger, pin)
            }
            None => self.take_over(ctx, id, leg, body, ringing.event, ringing.trigger),
        }
    }

    /// A new device takes the call (pull or push): the user's side of the media moves
    /// onto its reserved ports, and the old device hears how it went (REFER) and is
    /// released. `body` is the new device's SDP.
    pub(super) fn take_over(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        leg: Outbound,
        body: &str,
        mut event: FlipEvent,
        trigger: Trigger,
    ) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Err(e) = ctx.media.switch_leg(id, Side::B) {
            tracing::error!(session = id, "flip: cannot switch the media: {e}");
        }
        if let Some(rtp) = sdp::parse(body).ok().and_then(|m| m.rtp) {
            ctx.media.set_remote(id, Side::B, rtp);
        }
        if let Some(pt) = sdp::telephone_event_pt(body) {
            ctx.media
                .watch_keys(id, Side::B, pt, Some(&ctx.config.flip.push_code));
        }
        if session.b.is_none() {
            ctx.media.play(id, Playback::Silence); // the ringback the far end heard
        }
        let to_device = super::pull::device_of(&leg.number).to_owned();
        session.record.legs.push((leg.number.clone(), 200));
        session.b_keys.clear();
        self.by_call_id.insert(leg.dialog.call_id.clone(), id);
        let old = session.b.replace(leg);
        event.completed_at = Some(wall_time(session, ctx.ambient.now));
        event.targets = vec![to_device.clone()];
        tracing::info!(
            session = id,
            kind = ?event.kind,
            from = event.from_device,
            to = to_device,
            "flipped"
        );
        session.record.flips.push(event);
        if let Some(mut old) = old {
            if trigger == Trigger::Refer {
                old.dialog.local_cseq += 1;
                if let Some(notify) =
                    refer_notify(&old.dialog, old.dialog.local_cseq, ctx.local, "200 OK")
                {
                    let txn = ctx
                        .layer
                        .send_request(ctx.ambient.now, notify, old.dialog.peer);
                    self.by_client_txn.insert(txn, id);
                }
            }
            old.hang_up(ctx, id, &mut self.by_client_txn);
            self.by_call_id.remove(&old.dialog.call_id);
        }
    }

    /// No target took the call: it stays where it was (or ends, if the old device left).
    fn push_failed(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(mut ringing) = session.ringing.take() else {
            return;
        };
        for leg in &mut ringing.legs {
            leg.cancel(ctx, id, &mut self.by_client_txn);
        }
        ctx.media.release_reserved(id);
        tracing::info!(session = id, "push: no device answered; the call stays");
        ringing.event.result = FlipResult::NoAnswer;
        session.record.flips.push(ringing.event);
        if session.b.is_none() {
            // The old device hung up while the targets rang: nobody is left.
            return self.end(
                ctx,
                id,
                Disposition::Answered,
                480,
                "nobody took the flipped call",
            );
        }
        self.notify_pusher(ctx, id, ringing.trigger, "480 Temporarily Unavailable");
    }

    /// Push ring timeouts.
    pub(super) fn handle_push_timers(&mut self, ctx: &mut Ctx<'_>) {
        while let Some(Reverse((at, id, flip))) = self.push_timers.peek().copied() {
            if at > ctx.ambient.now {
                break;
            }
            self.push_timers.pop();
            let current = self
                .sessions
                .get(&id)
                .and_then(|s| s.ringing.as_ref())
                .is_some_and(|r| r.flip == flip);
            if current {
                self.push_failed(ctx, id);
            }
        }
    }

    /// The old device hung up while the targets ring: the call waits for them, and the
    /// far end hears ringback meanwhile.
    pub(super) fn pusher_left(&mut self, ctx: &mut Ctx<'_>, id: SessionId) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        if session.ringing.is_none() && session.pin.is_none() {
            return false;
        }
        if let Some(old) = session.b.take() {
            tracing::info!(
                session = id,
                "the old device hung up; the targets still ring"
            );
            self.by_call_id.remove(&old.dialog.call_id);
            if let Some(codec) = session.b_codec {
                ctx.media.answer(id, codec);
                ctx.media.play(id, Playback::Loop(ctx.prompts.ringback()));
            }
        }
        true
    }

    /// A key from the device in the call (RFC 4733 or SIP INFO): the push code pushes.
    pub fn handle_device_key(&mut self, ctx: &mut Ctx<'_>, id: SessionId, digit: char) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let code = &ctx.config.flip.push_code;
        session.b_keys.push(digit);
        if session.b_keys.len() > code.len() {
            session.b_keys.remove(0);
        }
        if !code.is_empty() && session.b_keys == *code {
            session.b_keys.clear();
            let _ = self.start_push(ctx, id, Trigger::PushCode, Vec::new());
        }
    }

    /// A REFER from the device in the call. To the user's own extension it is a push
    /// (the phone's transfer key): 202, then NOTIFYs of how it went. Anything else is a
    /// transfer, which the host does not do.
    pub(super) fn handle_refer(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        txn: ServerTxnId,
        request: Request,
    ) {
        let message = SipMessage::Request(request.clone());
        let refer_to = message::header_value(&message, "Refer-To")
            .map(|r| addr_spec(&r))
            .unwrap_or_default();
        let refer_user = refer_to
            .trim_start_matches("sips:")
            .trim_start_matches("sip:")
            .split(['@', ';', '>'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let own = self
            .sessions
            .get(&id)
            .and_then(|s| s.b.as_ref())
            .and_then(|b| match &b.target {
                ForwardTarget::User(user) => ctx.config.user(user),
                _ => None,
            })
            .is_some_and(|user| user.extension == refer_user || user.id == refer_user);
        if !own {
            tracing::info!(session = id, refer_to, "REFER to someone else refused");
            let reply = message::response_to(&request, 603, None);
            let reply = message::with_reason(reply, "Only Flips To Your Own Extension");
            return ctx.layer.send_response(ctx.ambient.now, txn, reply);
        }
        ctx.layer.send_response(
            ctx.ambient.now,
            txn,
            message::response_to(&request, 202, None),
        );
        self.notify_pusher(ctx, id, Trigger::Refer, "100 Trying");
        if let Err((code, reason)) = self.start_push(ctx, id, Trigger::Refer, Vec::new()) {
            self.notify_pusher(ctx, id, Trigger::Refer, &format!("{code} {reason}"));
        }
    }

    /// Tell the device that asked by REFER how its push ended (RFC 3515 NOTIFY).
    pub(super) fn notify_pusher(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        trigger: Trigger,
        status: &str,
    ) {
        if trigger != Trigger::Refer {
            return;
        }
        let Some(b) = self.sessions.get_mut(&id).and_then(|s| s.b.as_mut()) else {
            return;
        };
        b.dialog.local_cseq += 1;
        if let Some(notify) = refer_notify(&b.dialog, b.dialog.local_cseq, ctx.local, status) {
            let txn = ctx
                .layer
                .send_request(ctx.ambient.now, notify, b.dialog.peer);
            self.by_client_txn.insert(txn, id);
        }
    }

    /// A session ends while its targets ring: they are cancelled.
    pub(super) fn cancel_push(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        record: &mut CallRecord,
        ringing: Option<Ringing>,
    ) {
        let Some(mut ringing) = ringing else {
            return;
        };
        for leg in &mut ringing.legs {
            leg.cancel(ctx, id, &mut self.by_client_txn);
            self.by_call_id.remove(&leg.dialog.call_id);
        }
        ringing.event.result = FlipResult::Cancelled;
        record.flips.push(ringing.event);
    }
}
