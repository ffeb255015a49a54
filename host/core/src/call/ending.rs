//! How a call ends: the BYEs and final responses, its record written, and the script
//! asked for its last word (`call-ended`).

use wasmpbx_types::ids::SessionId;
use wasmpbx_types::record::{CallRecord, RecordState};

use crate::pbx::PbxOutput;
use crate::routing::{Disposition, Event};
use crate::sip::message;

use super::requests::tag_of;
use super::scripted::ask_script;
use super::{Calls, Ctx, engaged};

impl Calls {
    /// End a session from the host's side: a final response to the caller if it was
    /// not answered, BYE if it was, and the outbound leg cancelled or hung up.
    pub(super) fn end(
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

    /// Forget a session: release media, tell the script, write the record.
    pub(super) fn finish(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        disposition: Disposition,
        reason: &str,
    ) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        // Requests still waiting for a final response get one (RFC 3261 §15.1.2), or their
        // server transactions would wait for ever: the caller's INVITE if nothing answered
        // it (a BYE on the early dialog; a final sent already makes this a no-op), and a
        // re-INVITE the call was passing on.
        let unanswered = session.reinvite.take().map(|r| (r.server_txn, r.request));
        let caller = (!session.a_answered).then(|| (session.a_txn, session.a_invite.clone()));
        for (txn, request) in unanswered.into_iter().chain(caller) {
            let reply = message::response_to(&request, 487, Some(&tag_of(&session.a_dialog.local)));
            ctx.layer.send_response(ctx.ambient.now, txn, reply);
        }
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
        for leg in session.b.take().into_iter().chain(session.forks.drain(..)) {
            if let Some(txn) = leg.txn.filter(|_| !leg.answered) {
                self.abandoned.insert(txn, leg.dialog);
            }
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

/// Write an answered call's record as it stands (state `live`), so that a crash cannot
/// lose the call: the next start marks it interrupted.
pub(super) fn write_live_record(ctx: &mut Ctx<'_>, record: &mut CallRecord) {
    if record.answered_at.is_none() {
        return;
    }
    record.disposition = Disposition::Answered;
    record.updated_at =
        jiff::Timestamp::from_second(ctx.ambient.wall_secs()).unwrap_or(record.updated_at);
    ctx.outputs.push_back(PbxOutput::RecordLive(record.clone()));
}

/// A flip request's outcome joins the call's record, which is written again.
pub(super) fn note_flip(ctx: &mut Ctx<'_>, record: &mut CallRecord, event: crate::flip::FlipEvent) {
    record.flips.push(event);
    write_live_record(ctx, record);
}
