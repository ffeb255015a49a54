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

use super::pin::Takeover;
use super::pull::wall_time;
use super::requests::{Via, addr_spec, with_tag};
use super::{
    Calls, Ctx, Disposition, Outbound, Phase, SessionId, TimerKind, other, send_in_dialog, srtp,
};
use crate::call::CallRecord;
use crate::flip::{
    FlipDecision, FlipEvent, FlipKind, FlipRequest, FlipResult, Trigger, is_emergency,
};
use crate::media::{Playback, Side};
use crate::routing::ForwardTarget;
use crate::sdp;
use crate::sip::message::{self, Request, Response, SipMessage};
use crate::sip::transaction::{ClientTxnId, ServerTxnId, Transport};

/// A push waiting for the policy.
#[derive(Debug)]
pub(super) struct PendingPush {
    pub(super) session: SessionId,
    /// The side of the call the user's device is on.
    side: Side,
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
    pub(super) side: Side,
    trigger: Trigger,
    legs: Vec<Outbound>,
    event: FlipEvent,
    /// The PIN the answering device must enter first, if the policy wants one.
    pin: Option<String>,
}

/// Why a push cannot start: the status and reason for whoever asked.
pub type Refusal = (u16, String);

/// How long the device a flip left waits, at most, for the new one to be heard.
const RELEASE_AT_MOST: Duration = Duration::from_secs(3);

/// The device a flip moved the call away from, still to be let go.
pub(super) struct Release {
    pub(super) dialog: super::requests::Dialog,
    /// It asked for the flip by REFER: it hears how it went (NOTIFY) first.
    refer: bool,
    /// The flip that left it (the record's count of flips then): its timer's name.
    flip: u64,
}

impl Calls {
    /// Ask to push session `id`'s call from the device it is on to the user's others:
    /// the device on `side`, or (none: the admin API) the one on side B if a user's
    /// device is there, else side A's.
    pub fn start_push(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        side: Option<Side>,
        trigger: Trigger,
        wanted: Vec<String>,
    ) -> Result<(), Refusal> {
        let _span = self.enter(id);
        let refuse = |code: u16, reason: &str| {
            tracing::info!(?trigger, "push refused: {reason}");
            Err((code, reason.to_owned()))
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return refuse(404, "No Such Call");
        };
        let side = side.unwrap_or(if session.device_on(Side::B).is_some() {
            Side::B
        } else {
            Side::A
        });
        let (user_id, from_device) = match session.device_on(side) {
            Some(device) if session.phase == Phase::Connected => device,
            _ => return refuse(409, "Not A Connected Call On A User's Device"),
        };
        if session.flipping() {
            return refuse(491, "A Flip Is Already In Progress");
        }
        let emergency = is_emergency(&session.call.dialed, &ctx.config.sip.emergency_numbers);
        if emergency && !ctx.config.flip.allow_emergency {
            tracing::warn!(user = user_id, "push of an emergency call refused");
            return refuse(403, "Emergency Calls Cannot Be Flipped");
        }
        if session.b_codec.is_none() {
            return refuse(488, "The Call's Codec Is Unknown");
        }
        let own: Vec<_> = ctx.registrar.devices(&user_id).collect();
        if let Some(stranger) = wanted.iter().find(|w| !own.iter().any(|b| b.device == **w)) {
            // Only the user's own devices can take the user's call.
            tracing::warn!(
                user = user_id,
                device = stranger,
                "push to a device that is not the user's refused"
            );
            return refuse(403, "Not A Device Of This User");
        }
        let candidates: Vec<_> = own
            .iter()
            .filter(|b| b.device != from_device)
            .filter(|b| wanted.is_empty() || wanted.contains(&b.device))
            .map(|b| super::pull::device_info(b))
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
            user = user_id,
            from = from_device,
            ?trigger,
            "push requested"
        );
        let pending = PendingPush {
            session: id,
            side,
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
                tracing::info!(user = push.user_id, "push denied: {reason}");
                event.result = FlipResult::Denied(reason);
                super::note_flip(ctx, &mut session.record, event);
                return self.notify_pusher(ctx, id, push.side, push.trigger, "603 Declined");
            }
        };
        let targets: Vec<_> = ctx
            .registrar
            .devices(&push.user_id)
            .filter(|b| b.device != push.from_device)
            .filter(|b| push.wanted.is_empty() || push.wanted.contains(&b.device))
            .filter(|b| allow.targets.is_empty() || allow.targets.contains(&b.device))
            .cloned()
            .collect();
        if targets.is_empty() {
            event.result = FlipResult::Denied("the policy allowed none of the devices".into());
            super::note_flip(ctx, &mut session.record, event);
            return self.notify_pusher(ctx, id, push.side, push.trigger, "603 Declined");
        }
        let codec = session.b_codec;
        let port = codec.map(|_| ctx.media.reserve_leg(id));
        let (Some(codec), Some(Ok(port))) = (codec, port) else {
            event.result = FlipResult::Denied("no media ports for the targets".into());
            super::note_flip(ctx, &mut session.record, event);
            return self.notify_pusher(ctx, id, push.side, push.trigger, "503 Service Unavailable");
        };
        let offer = sdp::endpoint(ctx.config.media.public_ip, port, codec, Some(101));
        // The targets show who the user is talking to.
        let other_party = match push.side {
            Side::B => session.call.caller.clone(),
            Side::A => session.call.dialed.clone(),
        };
        let extension = ctx
            .config
            .user(&push.user_id)
            .map(|u| u.extension.clone())
            .unwrap_or_default();
        let target = ForwardTarget::User(push.user_id.clone());
        let mut legs = Vec::new();
        for binding in &targets {
            if let Some(leg) = self.ring_device(
                ctx,
                id,
                binding,
                &other_party,
                &extension,
                &offer,
                &target,
                None,
            ) {
                event.targets.push(binding.device.clone());
                legs.push(leg);
            }
        }
        let ring_timeout_ms = match allow.ring_timeout_ms {
            0 => ctx.config.flip.ring_timeout_ms,
            t => t,
        };
        let deadline = ctx.ambient.now + Duration::from_millis(u64::from(ring_timeout_ms));
        self.timers
            .push(Reverse((deadline, TimerKind::Push, id, flip)));
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.ringing = Some(Box::new(Ringing {
            flip,
            side: push.side,
            trigger: push.trigger,
            legs,
            event,
            pin,
        }));
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
        match code {
            100..=199 => {
                // A provisional's tag names an early dialog.
                if let Some(tag) = message::to_tag(&message) {
                    let leg = &mut ringing.legs[i];
                    leg.dialog.remote = with_tag(&leg.dialog.remote, &tag);
                }
            }
            200..=299 => {
                let mut leg = ringing.legs.remove(i);
                leg.dialog.take_answer(&message);
                leg.answered = true;
                if let Some(ack) = leg.dialog.request(
                    "ACK",
                    1,
                    &Via {
                        local: ctx.local,
                        branch: &ctx.token(),
                    },
                ) {
                    ctx.layer.send_ack(ctx.ambient.now, ack, leg.dialog.peer);
                }
                self.by_client_txn.remove(&txn);
                let body = String::from_utf8_lossy(message.body()).into_owned();
                let body = leg.answer_sdp(ctx, id, body);
                if let Ok(answer) = sdp::parse(&body)
                    && let Err(e) = srtp::answered(ctx.media, id, None, &leg.dialog.sdp, &answer)
                {
                    tracing::warn!("push: the new device's media stays undecryptable: {e}");
                }
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
        // Kept as cancelled forks until they answer the CANCEL: one whose 200 crosses it
        // is acknowledged and hung up, and its dialog forgotten (`fork_response`).
        session.forks.append(&mut ringing.legs);
        let flip = Takeover {
            side: ringing.side,
            leg,
            body: body.to_owned(),
            event: ringing.event,
            trigger: ringing.trigger,
        };
        match ringing.pin {
            Some(pin) => self.ask_pin(ctx, id, flip, pin),
            None => self.take_over(ctx, id, flip),
        }
    }

    /// A new device takes the call (pull or push): the user's side of the media moves
    /// onto its reserved ports, and the old device hears how it went (REFER) and is
    /// released.
    pub(super) fn take_over(&mut self, ctx: &mut Ctx<'_>, id: SessionId, flip: Takeover) {
        let Takeover {
            side,
            leg,
            body,
            mut event,
            trigger,
        } = flip;
        let to_browser = leg.dialog.peer.transport == Transport::Ws;
        self.reinvite_at_flip(ctx, id, side);
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Err(e) = ctx.media.switch_leg(id, side) {
            tracing::error!("flip: cannot switch the media: {e}");
        }
        if let Some(rtp) = sdp::parse(&body).ok().and_then(|m| m.rtp) {
            ctx.media.set_remote(id, side, rtp);
        }
        if let Some(pt) = sdp::telephone_event_pt(&body) {
            ctx.media
                .watch_keys(id, side, pt, Some(&ctx.config.flip.push_code));
        }
        if session.device_on(side).is_none() {
            ctx.media.play(id, Playback::Silence); // the ringback the far end heard
        }
        let to_device = super::pull::device_of(&leg.number).to_owned();
        session.record.legs.push((leg.number.clone(), 200));
        session.keys[side as usize].clear();
        self.by_call_id.insert(leg.dialog.call_id.clone(), id);
        let old = match side {
            Side::B => session.b.replace(leg).map(|old| old.dialog),
            Side::A => {
                let user = super::pull::user_of(&leg.number).to_owned();
                session.a_device = Some((user, to_device.clone()));
                let old = std::mem::replace(&mut session.a_dialog, leg.dialog);
                if std::mem::take(&mut session.a_gone) {
                    // The old device hung up during the flip: nothing to release, but
                    // its dialog's Call-ID no longer names this call.
                    self.by_call_id.remove(&old.call_id);
                    None
                } else {
                    Some(old)
                }
            }
        };
        event.completed_at = Some(wall_time(session, ctx.ambient.now));
        event.targets = vec![to_device.clone()];
        tracing::info!(
            kind = ?event.kind,
            ?side,
            from = event.from_device,
            to = to_device,
            "flipped"
        );
        super::note_flip(ctx, &mut session.record, event);
        let Some(dialog) = old else {
            return;
        };
        let release = Box::new(Release {
            dialog,
            refer: trigger == Trigger::Refer,
            flip: session.record.flips.len() as u64,
        });
        // A device an earlier flip left, still heard until a browser's audio came: the
        // call has moved on, it goes now.
        let earlier = session.releasing.take();
        if let Some(earlier) = earlier {
            self.release(ctx, id, earlier);
        }
        if !to_browser {
            // A phone sends its audio as soon as it answers: the old one goes now.
            return self.release(ctx, id, release);
        }
        // A browser's first packet comes after ICE and DTLS (~60–80 ms, more on a busy
        // host); the relay keeps the old device heard until then, so the old device goes
        // when the relay says the browser is heard (`MediaEvent::Heard`), or after
        // `RELEASE_AT_MOST` (the relay's own cap is the same).
        // The timer names the flip: a later flip's releasing device is not let go by
        // an earlier flip's timer.
        let deadline = ctx.ambient.now + RELEASE_AT_MOST;
        self.timers
            .push(Reverse((deadline, TimerKind::Release, id, release.flip)));
        if let Some(session) = self.sessions.get_mut(&id) {
            session.releasing = Some(release);
        }
    }

    /// The device a flip left is let go now, if it still waits: NOTIFY of how its
    /// transfer went (REFER), and BYE.
    pub fn release_old_device(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        let _span = self.enter(id);
        if let Some(release) = self.sessions.get_mut(&id).and_then(|s| s.releasing.take()) {
            self.release(ctx, id, release);
        }
    }

    /// The `Release` timer of flip number `flip` ran out: its device goes, if it still
    /// waits (flips recorded since, denied ones say, do not change which it is).
    pub(super) fn release_timer(&mut self, ctx: &mut Ctx<'_>, id: SessionId, flip: u64) {
        let current = self
            .sessions
            .get(&id)
            .and_then(|s| s.releasing.as_ref())
            .is_some_and(|r| r.flip == flip);
        if current {
            self.release_old_device(ctx, id);
        }
    }

    pub(super) fn release(&mut self, ctx: &mut Ctx<'_>, id: SessionId, mut release: Box<Release>) {
        let old = &mut release.dialog;
        if release.refer {
            send_in_dialog(ctx, old, id, &mut self.by_client_txn, Some("200 OK"));
        }
        send_in_dialog(ctx, old, id, &mut self.by_client_txn, None);
        self.by_call_id.remove(&old.call_id);
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
        session.forks.append(&mut ringing.legs);
        ctx.media.release_reserved(id);
        tracing::info!("push: no device answered; the call stays");
        ringing.event.result = FlipResult::NoAnswer;
        super::note_flip(ctx, &mut session.record, ringing.event);
        if session.device_on(ringing.side).is_none() {
            // The old device hung up while the targets rang: nobody is left.
            return self.end(
                ctx,
                id,
                Disposition::Answered,
                480,
                "nobody took the flipped call",
            );
        }
        // The device that pushed hears so: a NOTIFY if it asked by REFER, else beeps.
        if ringing.trigger == Trigger::Refer {
            let status = "480 Temporarily Unavailable";
            self.notify_pusher(ctx, id, ringing.side, ringing.trigger, status);
        } else if let Some(codec) = session.b_codec {
            ctx.media.answer(id, ringing.side, codec);
            ctx.media
                .play(id, Playback::Once(ctx.prompts.no_answer_tone()));
        }
    }

    /// A push's targets rang for the whole ring timeout.
    pub(super) fn push_timer(&mut self, ctx: &mut Ctx<'_>, id: SessionId, flip: u64) {
        let current = self
            .sessions
            .get(&id)
            .and_then(|s| s.ringing.as_ref())
            .is_some_and(|r| r.flip == flip);
        if current {
            self.push_failed(ctx, id);
        }
    }

    /// The device on `side` hung up. While a flip of that side is under way the call
    /// waits for the new device, the far end hearing ringback meanwhile: true. Otherwise
    /// the hang-up ends the call as usual: false.
    pub(super) fn device_left(&mut self, ctx: &mut Ctx<'_>, id: SessionId, side: Side) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        let flip_side = session
            .ringing
            .as_ref()
            .map(|r| r.side)
            .or(session.pin.as_ref().map(|p| p.side()));
        if flip_side != Some(side) || session.device_on(side).is_none() {
            return false;
        }
        tracing::info!(?side, "the old device hung up; the new one is awaited");
        match side {
            Side::B => {
                if let Some(old) = session.b.take() {
                    self.by_call_id.remove(&old.dialog.call_id);
                }
            }
            Side::A => {
                session.a_gone = true;
                session.a_device = None;
            }
        }
        if let Some(codec) = session.b_codec {
            ctx.media.answer(id, other(side), codec);
            ctx.media.play(id, Playback::Loop(ctx.prompts.ringback()));
        }
        true
    }

    /// A key from `side` (RFC 4733 or SIP INFO): the push code from a user's device
    /// there pushes; side A's keys are otherwise the caller's, for the host's menus.
    pub fn handle_key(&mut self, ctx: &mut Ctx<'_>, id: SessionId, side: Side, digit: char) {
        let _span = self.enter(id);
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.device_on(side).is_none() {
            if side == Side::A {
                self.handle_digit(ctx, id, digit);
            }
            return;
        }
        let code = &ctx.config.flip.push_code;
        let keys = &mut session.keys[side as usize];
        keys.push(digit);
        if keys.len() > code.len() {
            keys.remove(0);
        }
        if !code.is_empty() && *keys == *code {
            keys.clear();
            let _ = self.start_push(ctx, id, Some(side), Trigger::PushCode, Vec::new());
        }
    }

    /// A REFER from the device in the call. To the user's own extension it is a push
    /// (the phone's transfer key): 202, then NOTIFYs of how it went. Anything else is a
    /// transfer, which the host does not do.
    pub(super) fn handle_refer(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        side: Side,
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
            .and_then(|s| s.device_on(side))
            .and_then(|(user, _)| ctx.config.user(&user))
            .is_some_and(|user| user.extension == refer_user || user.id == refer_user);
        if !own {
            tracing::info!(refer_to, "REFER to someone else refused");
            let reply = message::response_to(&request, 603, None);
            let reply = message::with_reason(reply, "Only Flips To Your Own Extension");
            return ctx.layer.send_response(ctx.ambient.now, txn, reply);
        }
        ctx.layer.send_response(
            ctx.ambient.now,
            txn,
            message::response_to(&request, 202, None),
        );
        self.notify_pusher(ctx, id, side, Trigger::Refer, "100 Trying");
        if let Err((code, reason)) =
            self.start_push(ctx, id, Some(side), Trigger::Refer, Vec::new())
        {
            let status = format!("{code} {reason}");
            self.notify_pusher(ctx, id, side, Trigger::Refer, &status);
        }
    }

    /// Tell the device on `side` that asked by REFER how its push ended (RFC 3515
    /// NOTIFY).
    pub(super) fn notify_pusher(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        side: Side,
        trigger: Trigger,
        status: &str,
    ) {
        if trigger != Trigger::Refer {
            return;
        }
        if let Some(dialog) = self.sessions.get_mut(&id).and_then(|s| s.dialog_mut(side)) {
            send_in_dialog(ctx, dialog, id, &mut self.by_client_txn, Some(status));
        }
    }

    /// A session ends while its targets ring: they are cancelled.
    pub(super) fn cancel_push(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        record: &mut CallRecord,
        ringing: Option<Box<Ringing>>,
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
