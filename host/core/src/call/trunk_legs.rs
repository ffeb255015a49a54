//! A call's leg through a carrier trunk: answering the carrier's digest challenge and
//! moving on to the trunk's next target when one fails (RFC 3263 §4.3: 408, 503, no
//! answer within its share of Timer B).

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Calls, Ctx, SessionId, TimerKind};
use crate::sip::message::{self, Response, SipMessage};
use crate::sip::transaction::ClientTxnId;
use crate::trunks::answer_challenge;

/// What an outbound leg through a trunk keeps beyond its dialog.
pub(super) struct TrunkLeg {
    pub(super) name: String,
    /// The targets not tried yet, in order.
    pub(super) remaining: Vec<SocketAddr>,
    /// How long each target gets to say anything.
    pub(super) share: Duration,
    /// Challenges this INVITE answered (see [`answer_challenge`]).
    pub(super) challenges_answered: u32,
    /// Counts the INVITEs sent, so a stale target timer is told apart.
    pub(super) attempt: u64,
    /// The current target has answered something (a 100 Trying at least).
    pub(super) heard: bool,
}

/// Why the next target is tried.
pub(super) enum Retry<'r> {
    /// A final response to the INVITE.
    Response(&'r Response),
    /// No final response before Timer B.
    Timeout,
    /// Not a word within the target's share of Timer B.
    Silent,
}

impl Calls {
    /// The leg's INVITE transaction `txn` failed: answer a challenge, or try the trunk's
    /// next target. True when the leg goes on (with a new INVITE transaction).
    pub(super) fn retry_trunk_leg(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        txn: ClientTxnId,
        why: Retry<'_>,
    ) -> bool {
        let Some(b) = self
            .sessions
            .get_mut(&id)
            .and_then(|s| s.b.as_mut())
            .filter(|b| b.txn == Some(txn) && !b.cancelled && !b.answered)
        else {
            return false;
        };
        let Some(leg) = b.trunk.as_mut() else {
            return false;
        };
        let Some(trunk) = ctx.trunks.config(&leg.name).cloned() else {
            return false;
        };
        let now = ctx.ambient.now;
        let target = b.dialog.peer.addr;
        let retry_after = match &why {
            Retry::Response(response) => message::retry_after_of(response),
            _ => None,
        };
        let (code, failure) = match why {
            Retry::Response(response) => {
                let code = response.status_code.code();
                (code, format!("{code} {}", message::reason_phrase(code)))
            }
            Retry::Timeout => (408, "no answer (Timer B)".to_owned()),
            Retry::Silent => (408, format!("no answer within {:?}", leg.share)),
        };
        let request = match (code, why) {
            (401 | 407, Retry::Response(response)) => {
                let answered = answer_challenge(
                    &trunk,
                    &b.invite,
                    response,
                    leg.challenges_answered,
                    ctx.entropy,
                );
                match answered {
                    Ok(request) => {
                        leg.challenges_answered += 1;
                        request
                    }
                    Err(error) => {
                        tracing::warn!(trunk = %leg.name, %target, "outbound call not authorised: {error}");
                        return false;
                    }
                }
            }
            // Failover on what RFC 3263 §4.3 names: a 503, a timeout (Timer B, or the
            // target's share of it). A 408 or 504 *response* is the far side's answer
            // (nobody answered there): another edge of the carrier would ring the same.
            (503, Retry::Response(_)) | (_, Retry::Timeout | Retry::Silent) => {
                ctx.trunks
                    .target_failed(&leg.name, target, &failure, retry_after, now);
                if leg.remaining.is_empty() {
                    return false;
                }
                let next = leg.remaining.remove(0);
                tracing::warn!(trunk = %leg.name, from = %target, to = %next, "{failure}: failing over");
                let cseq = b.dialog.local_cseq + 1;
                let Some(request) = message::resend(&b.invite, cseq, &ctx.token(), None) else {
                    return false;
                };
                b.dialog.peer.addr = next;
                leg.challenges_answered = 0;
                leg.heard = false;
                leg.attempt += 1;
                if !leg.remaining.is_empty() {
                    let at = now + leg.share;
                    self.timers
                        .push(Reverse((at, TimerKind::TrunkTarget, id, leg.attempt)));
                }
                request
            }
            _ => return false,
        };
        let message = SipMessage::Request(request.clone());
        b.dialog.local_cseq = message::cseq(&message).map_or(b.dialog.local_cseq + 1, |(n, _)| n);
        b.invite = request.clone();
        let new_txn = ctx.layer.send_request(now, request, b.dialog.peer);
        b.txn = Some(new_txn);
        self.by_client_txn.remove(&txn);
        self.by_client_txn.insert(new_txn, id);
        true
    }

    /// Something came back from the leg's target: it is alive.
    pub(super) fn trunk_leg_heard(&mut self, ctx: &mut Ctx<'_>, id: SessionId, txn: ClientTxnId) {
        if let Some(b) = self
            .sessions
            .get_mut(&id)
            .and_then(|s| s.b.as_mut())
            .filter(|b| b.txn == Some(txn))
            && let Some(leg) = b.trunk.as_mut()
            && !leg.heard
        {
            leg.heard = true;
            ctx.trunks.target_answered(&leg.name, b.dialog.peer.addr);
        }
    }

    /// A target's share of Timer B is up: if it said nothing, give up on it.
    pub(super) fn trunk_target_timer(&mut self, ctx: &mut Ctx<'_>, id: SessionId, attempt: u64) {
        let Some(b) = self.sessions.get(&id).and_then(|s| s.b.as_ref()) else {
            return;
        };
        let (Some(leg), Some(txn)) = (b.trunk.as_ref(), b.txn) else {
            return;
        };
        if leg.attempt != attempt || leg.heard || b.answered || b.cancelled {
            return;
        }
        ctx.layer.abandon(txn);
        if !self.retry_trunk_leg(ctx, id, txn, Retry::Silent) {
            // Cannot happen while targets remain (the timer is armed only then); end
            // the leg as Timer B would.
            self.handle_txn_timeout(ctx, txn);
        }
    }
}
