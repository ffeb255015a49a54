//! Dialog keep-alive: a connected call asks each party, every `[sip]
//! dialog_keepalive_s`, whether the call is still there — an OPTIONS in that party's
//! dialog (RFC 3261 §11; any answer but `481` means yes). A party whose dialog is gone
//! (`481`: it restarted, or ended the call with a BYE that never arrived) or that no
//! longer answers at all (the transaction times out) has left the call: it ends as if
//! that party had hung up. Without this, a call whose BYE is lost stays up — ports,
//! record and all — until the host stops.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::{Calls, Ctx, SessionId, Side};
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

/// When each live call is next due, in order. Not the calls' timer heap: a call's
/// entry goes when the call ends, where a heap would keep every call of the last
/// `dialog_keepalive_s` until its turn came.
#[derive(Default)]
pub(super) struct Schedule {
    due: BTreeSet<(Instant, SessionId)>,
    of_session: HashMap<SessionId, Instant>,
}

impl Schedule {
    fn set(&mut self, id: SessionId, at: Instant) {
        self.remove(id);
        self.due.insert((at, id));
        self.of_session.insert(id, at);
    }

    pub(super) fn remove(&mut self, id: SessionId) {
        if let Some(at) = self.of_session.remove(&id) {
            self.due.remove(&(at, id));
        }
    }

    /// The next call due at `now`, taken off.
    pub(super) fn due(&mut self, now: Instant) -> Option<SessionId> {
        let &(at, id) = self.due.first()?;
        if at > now {
            return None;
        }
        self.remove(id);
        Some(id)
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.of_session.len()
    }
}

impl Calls {
    /// Schedule session `id`'s next keep-alive (none when the setting is 0).
    pub(super) fn arm_keepalive(&mut self, ctx: &Ctx<'_>, id: SessionId) {
        let every = ctx.config.sip.dialog_keepalive_s;
        if every > 0 && self.sessions.contains_key(&id) {
            let at = ctx.ambient.now + Duration::from_secs(u64::from(every));
            self.keepalives.set(id, at);
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
