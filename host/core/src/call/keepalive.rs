//! Dialog keep-alive: a connected call asks each party, every `[sip]
//! dialog_keepalive_s`, whether the call is still there — an OPTIONS in that party's
//! dialog (RFC 3261 §11; any answer but `481` means yes). A party whose dialog is gone
//! (`481`: it restarted, or ended the call with a BYE that never arrived) or that no
//! longer answers at all (the transaction times out) has left the call: it ends as if
//! that party had hung up. Without this, a call whose BYE is lost stays up — ports,
//! record and all — until the host stops.

use std::cmp::Reverse;
use std::time::Duration;

use super::{Calls, Ctx, SessionId, Side, TimerKind};
use crate::sip::dialog::Via;
use crate::sip::transaction::ClientTxnId;

/// An OPTIONS out to one party.
#[derive(Debug)]
pub(super) struct Probe {
    txn: ClientTxnId,
    side: Side,
    /// The dialog it went out in: a flip may have replaced that side's since, and
    /// the old device's answer says nothing about the call.
    call_id: String,
}

impl Calls {
    /// Arm session `id`'s next keep-alive (none when the setting is 0).
    pub(super) fn arm_keepalive(&mut self, ctx: &Ctx<'_>, id: SessionId) {
        let every = ctx.config.sip.dialog_keepalive_s;
        if every > 0 {
            let at = ctx.ambient.now + Duration::from_secs(u64::from(every));
            self.timers.push(Reverse((at, TimerKind::Keepalive, id, 0)));
        }
    }

    /// Session `id`'s keep-alive is due: an OPTIONS to each party in the call (the
    /// caller once answered, the callee once it answered), then the next one armed.
    pub(super) fn keepalive_timer(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return; // the call is over
        };
        let in_call = [
            (Side::A, session.a_answered),
            (Side::B, session.b.as_ref().is_some_and(|b| b.answered)),
        ];
        for (side, answered) in in_call {
            let Some(dialog) = session.dialog_mut(side).filter(|_| answered) else {
                continue;
            };
            dialog.local_cseq += 1;
            let via = Via {
                local: ctx.local,
                branch: &ctx.token(),
            };
            let Some(request) = dialog.request("OPTIONS", dialog.local_cseq, &via) else {
                continue;
            };
            let (call_id, peer) = (dialog.call_id.clone(), dialog.peer);
            let txn = ctx.send_in_dialog(request, peer);
            self.by_client_txn.insert(txn, id);
            session.probes.push(Probe { txn, side, call_id });
        }
        self.arm_keepalive(ctx, id);
    }

    /// Whether `txn` is one of session `id`'s keep-alives; if so, `code` (408 for no
    /// answer) is its outcome, acted on here.
    pub(super) fn keepalive_answered(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        txn: ClientTxnId,
        code: u16,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        let Some(i) = session.probes.iter().position(|p| p.txn == txn) else {
            return false;
        };
        if code < 200 {
            return true; // provisional: the final answer decides
        }
        let probe = session.probes.swap_remove(i);
        self.by_client_txn.remove(&txn);
        let still_that_dialog = session
            .dialog_mut(probe.side)
            .is_some_and(|d| d.call_id == probe.call_id);
        let gone = match code {
            481 => "its dialog is gone (481 to a keep-alive)",
            408 => "no answer to a keep-alive",
            _ => return true,
        };
        if still_that_dialog {
            let who = match probe.side {
                Side::A => format!("the caller left: {gone}"),
                Side::B => format!("the callee left: {gone}"),
            };
            tracing::warn!(side = ?probe.side, "{who}; ending the call");
            self.hung_up(ctx, id, probe.side, &who);
        }
        true
    }
}
