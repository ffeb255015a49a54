//! A PIN before a flip: when the policy answers `require-pin`, the new device (the one
//! that pulled, or the push target that answered) is connected to the host alone, on
//! the ports reserved for it, and hears the enter-PIN prompt; the call stays on the old
//! device meanwhile. The right digits (RFC 4733 or SIP INFO, `#` or the PIN's length
//! ends an entry) complete the flip; three wrong or silent tries deny it and release
//! the new device.
//!
//! ```text
//!  decision require-pin ──▶ new device answered on reserved ports ──▶ "enter-pin"
//!     right PIN: take_over (switch ports, BYE old device) · 3 failures: BYE new device
//! ```

use std::cmp::Reverse;
use std::time::Duration;

use super::{Calls, Ctx, Disposition, Outbound, SessionId};
use crate::flip::{Allow, FlipDecision, FlipEvent, FlipResult, Trigger};
use crate::media::Side;
use crate::sdp;
use crate::sip::message::{self, Request};
use crate::sip::transaction::ServerTxnId;

/// Tries before the flip is denied.
const PIN_TRIES: u8 = 3;

/// How long a try lasts from its prompt's start (the prompt is about two seconds).
const PIN_TRY_TIMEOUT: Duration = Duration::from_secs(15);

/// The prompt the new device hears.
const ENTER_PIN: &str = "enter-pin";

/// A new device ready to take a call over (its dialog answered, its ports reserved).
pub(super) struct Takeover {
    /// The side of the call it takes.
    pub(super) side: Side,
    pub(super) leg: Outbound,
    /// The new device's SDP.
    pub(super) body: String,
    pub(super) event: FlipEvent,
    pub(super) trigger: Trigger,
}

/// A flip waiting for the new device to enter the user's PIN.
pub(super) struct PinEntry {
    flip: Takeover,
    pin: String,
    entered: String,
    failures: u8,
    /// Counts the tries, so a stale try's timer is ignored.
    attempt: u64,
}

impl PinEntry {
    /// Whether `call_id` is the new device's dialog.
    pub(super) fn is_leg(&self, call_id: &str) -> bool {
        self.flip.leg.dialog.call_id == call_id
    }

    /// The side of the call the flip moves.
    pub(super) fn side(&self) -> Side {
        self.flip.side
    }
}

/// What a policy decision lets a flip do — what it allows and the PIN it first needs
/// (the user's, from the config) — or why not.
pub(super) fn verdict(
    decision: Result<FlipDecision, String>,
    users_pin: Option<&str>,
) -> Result<(Allow, Option<String>), String> {
    match decision {
        Err(e) => Err(format!("the flip policy failed: {e}")),
        Ok(FlipDecision::Deny { reason }) => Err(reason),
        Ok(FlipDecision::Allow(allow)) => Ok((allow, None)),
        Ok(FlipDecision::RequirePin(allow)) => match users_pin {
            Some(pin) => Ok((allow, Some(pin.to_owned()))),
            None => Err("the policy wants a PIN and the user has none".into()),
        },
    }
}

impl Calls {
    /// The new device is connected to the host on the reserved ports: ask for the PIN.
    pub(super) fn ask_pin(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        flip: Takeover,
        pin: String,
    ) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        self.by_call_id.insert(flip.leg.dialog.call_id.clone(), id);
        session.pin = Some(Box::new(PinEntry {
            flip,
            pin,
            entered: String::new(),
            failures: 0,
            attempt: 0,
        }));
        tracing::info!("flip: asking the new device for the PIN");
        self.prompt_for_pin(ctx, id);
    }

    /// Play the enter-PIN prompt to the new device and start a try.
    fn prompt_for_pin(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(entry) = session.pin.as_mut() else {
            return;
        };
        entry.attempt += 1;
        entry.entered.clear();
        let deadline = ctx.ambient.now + PIN_TRY_TIMEOUT;
        let timer = (deadline, super::TimerKind::Pin, id, entry.attempt);
        self.timers.push(Reverse(timer));
        let body = &entry.flip.body;
        let remote = sdp::parse(body).ok().and_then(|m| m.rtp);
        let (Some(remote), Some(codec), Some(prompt)) =
            (remote, session.b_codec, ctx.prompts.get(ENTER_PIN))
        else {
            // No way to ask: the try runs out and the flip is denied as for a silent one.
            tracing::error!("flip: cannot play {ENTER_PIN} to the new device");
            return;
        };
        let event_pt = sdp::telephone_event_pt(body);
        ctx.media
            .prompt_reserved(id, remote, codec, event_pt, prompt);
    }

    /// A key from the device entering the PIN.
    pub fn handle_pin_digit(&mut self, ctx: &mut Ctx<'_>, id: SessionId, digit: char) {
        let _span = self.enter(id);
        let Some(entry) = self.sessions.get_mut(&id).and_then(|s| s.pin.as_mut()) else {
            return;
        };
        if digit != '#' {
            entry.entered.push(digit);
            if entry.entered.len() < entry.pin.len() {
                return;
            }
        }
        if entry.entered != entry.pin {
            return self.pin_failed(ctx, id, "wrong PIN");
        }
        let Some(entry) = self.sessions.get_mut(&id).and_then(|s| s.pin.take()) else {
            return;
        };
        tracing::info!("flip: right PIN");
        self.take_over(ctx, id, entry.flip);
    }

    /// A try failed: another, or after the last the flip is denied.
    fn pin_failed(&mut self, ctx: &mut Ctx<'_>, id: SessionId, why: &str) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(entry) = session.pin.as_mut() else {
            return;
        };
        entry.failures += 1;
        if entry.failures < PIN_TRIES {
            tracing::info!(try = entry.failures, "flip: {why}; asking again");
            return self.prompt_for_pin(ctx, id);
        }
        tracing::warn!("flip denied: {why}, {PIN_TRIES} tries");
        self.abandon_pin(
            ctx,
            id,
            FlipResult::Denied(format!("{why} ({PIN_TRIES} tries)")),
            true,
        );
    }

    /// A PIN try ran out: a try without a (complete) PIN fails.
    pub(super) fn pin_timer(&mut self, ctx: &mut Ctx<'_>, id: SessionId, attempt: u64) {
        let current = self
            .sessions
            .get(&id)
            .and_then(|s| s.pin.as_ref())
            .is_some_and(|entry| entry.attempt == attempt);
        if current {
            self.pin_failed(ctx, id, "no PIN entered");
        }
    }

    /// A request in the new device's dialog while it is asked for the PIN: its keys by
    /// INFO, or its hang-up.
    pub(super) fn pin_leg_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        txn: ServerTxnId,
        request: Request,
    ) {
        let reply = match request.method {
            // The host's answer stands until the device has the call.
            rsip::Method::Invite => 491,
            _ => 200,
        };
        ctx.layer.send_response(
            ctx.ambient.now,
            txn,
            message::response_to(&request, reply, None),
        );
        match request.method {
            rsip::Method::Bye => {
                tracing::info!("flip: the new device hung up during the PIN");
                self.abandon_pin(ctx, id, FlipResult::Cancelled, false);
            }
            rsip::Method::Info => {
                if let Some(digit) = super::dtmf_from_info(&request.body) {
                    self.handle_pin_digit(ctx, id, digit);
                }
            }
            _ => {}
        }
    }

    /// The PIN entry ends without a flip: the new device is released (with BYE unless it
    /// left), the call stays on the old device — or ends, if that left meanwhile.
    pub(super) fn abandon_pin(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        result: FlipResult,
        bye: bool,
    ) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(entry) = session.pin.take() else {
            return;
        };
        ctx.media.release_reserved(id);
        let Takeover {
            side,
            mut leg,
            mut event,
            trigger,
            ..
        } = entry.flip;
        self.by_call_id.remove(&leg.dialog.call_id);
        if bye {
            leg.hang_up(ctx, id, &mut self.by_client_txn);
        }
        event.result = result;
        event.targets = vec![super::pull::device_of(&leg.number).to_owned()];
        super::note_flip(ctx, &mut session.record, event);
        if session.device_on(side).is_none() {
            return self.end(
                ctx,
                id,
                Disposition::Answered,
                480,
                "nobody took the flipped call",
            );
        }
        self.notify_pusher(ctx, id, side, trigger, "603 Declined");
    }

    /// A session ends while a device enters the PIN: it is released.
    pub(super) fn cancel_pin(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        session: &mut super::Session,
    ) {
        let Some(entry) = session.pin.take() else {
            return;
        };
        let mut flip = entry.flip;
        self.by_call_id.remove(&flip.leg.dialog.call_id);
        flip.leg.hang_up(ctx, id, &mut self.by_client_txn);
        flip.event.result = FlipResult::Cancelled;
        session.record.flips.push(flip.event);
    }
}
