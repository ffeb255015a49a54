//! Requests within a call's dialogs (BYE, re-INVITE, INFO, REFER, NOTIFY, CANCEL), a
//! connection that closed, a 2xx never acknowledged, and the BYEs the host sends.

use wasmpbx_types::ids::SessionId;

use crate::flip::FlipResult;
use crate::media::Side;
use crate::routing::Disposition;
use crate::sdp;
use crate::sip::dialog::{Dialog, addr_spec};
use crate::sip::message::{self, Request, Response, SipMessage};
use crate::sip::transaction::{Peer, ServerTxnId};

use super::requests::{Via, attach_sdp, cancel_for, dtmf_from_info};
use super::session::{PendingReinvite, Phase, other};
use super::{Calls, Ctx, send_in_dialog, srtp};

impl Calls {
    /// The other leg answered a re-INVITE the host passed on: acknowledge it and give its
    /// answer (pointing at the host) to the leg that asked.
    pub(super) fn reinvite_answered(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        response: Response,
    ) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(pending) = session.reinvite.take() else {
            return;
        };
        let code = response.status_code.code();
        let body = String::from_utf8_lossy(&response.body).into_owned();
        // The device that asked has left (a flip): its transaction ends unanswered.
        let reply_code = if pending.asker_left { 487 } else { code };
        let mut reply = message::response_to(&pending.request, reply_code, None);
        if (200..300).contains(&code) {
            let (asker, asker_port) = if pending.from_a {
                (Side::A, session.ports.a)
            } else {
                (Side::B, session.ports.b)
            };
            let answered_by = other(asker);
            let response = SipMessage::Response(response);
            // A re-INVITE sent again with credentials has a higher CSeq than it had.
            let cseq = message::cseq(&response).map_or(pending.cseq, |(n, _)| n);
            if let Some(dialog) = session.dialog_mut(answered_by) {
                dialog.local_cseq = dialog.local_cseq.max(cseq);
                refresh_target(dialog, &response);
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
            if pending.asker_left {
                return ctx
                    .layer
                    .send_response(ctx.ambient.now, pending.server_txn, reply);
            }
            if let Some(dialog) = session.dialog_mut(asker) {
                refresh_target(dialog, &SipMessage::Request(pending.request.clone()));
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

    /// `side` is being flipped to another device while a re-INVITE is passed on. One
    /// passed on to the device leaving will not be answered: the asker is told to try
    /// again (500 with Retry-After, RFC 3261 §14.2), which reaches the new device. One the
    /// leaving device asked is still answered by the other leg, whose answer is taken
    /// but goes to nobody (see `reinvite_answered`).
    pub(super) fn reinvite_at_flip(&mut self, ctx: &mut Ctx<'_>, id: SessionId, side: Side) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(pending) = session.reinvite.as_mut() else {
            return;
        };
        let asker = if pending.from_a { Side::A } else { Side::B };
        if asker == side {
            pending.asker_left = true;
            return;
        }
        let Some(pending) = session.reinvite.take() else {
            return;
        };
        self.by_client_txn.remove(&pending.client_txn);
        tracing::info!("a re-INVITE passed on to the device leaving: the asker tries again");
        let refusal = message::response_to(&pending.request, 500, None);
        let refusal = message::retry_after(refusal, try_again_within_10_s(ctx));
        ctx.layer
            .send_response(ctx.ambient.now, pending.server_txn, refusal);
    }

    /// CANCEL of a pending inbound INVITE.
    pub fn handle_cancel(&mut self, ctx: &mut Ctx<'_>, invite_txn: ServerTxnId) -> bool {
        let Some(&id) = self.by_a_txn.get(&invite_txn) else {
            return self.cancel_pending_pull(ctx, invite_txn)
                || self.cancel_passed_on_reinvite(ctx, invite_txn);
        };
        let _span = self.enter(id);
        if self.sessions.get(&id).is_none_or(|s| s.a_answered) {
            return false;
        }
        tracing::info!("caller cancelled");
        self.end(ctx, id, Disposition::Abandoned, 487, "caller cancelled");
        true
    }

    /// CANCEL of a re-INVITE the host passed on to the other leg: it is cancelled there
    /// too, and what that leg answers (487, or a 2xx that crossed the CANCEL) answers
    /// the re-INVITE, as a proxy passes a CANCEL on (RFC 3261 §9.2, §16.10).
    fn cancel_passed_on_reinvite(&mut self, ctx: &mut Ctx<'_>, invite_txn: ServerTxnId) -> bool {
        let Some((&id, pending)) = self.sessions.iter().find_map(|(id, session)| {
            let pending = session.reinvite.as_ref()?;
            (pending.server_txn == invite_txn).then_some((id, pending))
        }) else {
            return false;
        };
        let _span = self.enter(id);
        tracing::info!("re-INVITE cancelled: cancelling it on the other leg");
        if let Some(cancel) = cancel_for(&pending.sent) {
            let txn = ctx
                .layer
                .send_request(ctx.ambient.now, cancel, pending.sent_to);
            self.by_client_txn.insert(txn, id);
        }
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
        if let (Some((cseq, _)), Some(dialog)) = (message::cseq(&request), session.dialog_mut(side))
        {
            if dialog.remote_cseq.is_some_and(|last| cseq < last) {
                // Out of order (RFC 3261 §12.2.2): a late copy of a request this side
                // has since gone past.
                tracing::info!(cseq, method = %request.method, "out-of-order request refused");
                let refusal = message::response_to(&request, 500, None);
                return ctx.layer.send_response(ctx.ambient.now, txn, refusal);
            }
            dialog.remote_cseq = Some(cseq);
        }
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
                if let Some(pending) = &session.reinvite {
                    // RFC 3261 §14.2: this side's own earlier re-INVITE is still being
                    // answered (500, try again in up to 10 s); or it crossed the one the
                    // host passed on to it (glare: 491).
                    let refusal = match pending.from_a == from_a {
                        true => message::retry_after(
                            message::response_to(&request, 500, None),
                            try_again_within_10_s(ctx),
                        ),
                        false => message::response_to(&request, 491, None),
                    };
                    return ctx.layer.send_response(ctx.ambient.now, txn, refusal);
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
                    let client_txn = ctx.send_in_dialog(reinvite.clone(), other.peer);
                    session.reinvite = Some(Box::new(PendingReinvite {
                        server_txn: txn,
                        request,
                        from_a,
                        sent: reinvite,
                        client_txn,
                        sent_to: other.peer,
                        cseq,
                        asker_left: false,
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
                let endpoint = session.endpoint;
                let Some(dialog) = session.dialog_mut(side) else {
                    return ctx.layer.send_response(ctx.ambient.now, txn, reply);
                };
                let description = if body.is_empty() {
                    // No offer (a session refresh, RFC 4028; third-party call control):
                    // the 200 must make one, and the host offers the session as it last
                    // described it to this party, unchanged (RFC 3264 §8); the party's
                    // answer comes in its ACK.
                    dialog.sdp.last_sent().map(str::to_owned)
                } else {
                    let answer = match endpoint {
                        // The host is the caller's endpoint: it answers with what it speaks.
                        Some(e) if from_a => Ok(sdp::endpoint(
                            ctx.config.media.public_ip,
                            port,
                            e.codec,
                            e.event_pt,
                        )),
                        _ => sdp::rewrite(&body, ctx.config.media.public_ip, port),
                    };
                    answer.ok().map(|answer| dialog.sdp.stamp(&answer))
                };
                let Some(description) = description else {
                    // Nothing the host can relay offered (no G.711), or nothing described
                    // to this party yet.
                    tracing::info!("re-INVITE refused: no offer or answer the host can make");
                    let refusal = message::response_to(&request, 488, None);
                    return ctx.layer.send_response(ctx.ambient.now, txn, refusal);
                };
                refresh_target(dialog, &SipMessage::Request(request));
                attach_sdp(&mut reply, ctx.contact(dialog.peer.transport), description);
                ctx.layer.send_response(ctx.ambient.now, txn, reply);
            }
            _ => ctx.layer.send_response(ctx.ambient.now, txn, ok),
        }
    }

    /// The party on `side` left (BYE, or its connection closed): the call ends, unless
    /// a flip of that side is under way and waits for the new device.
    pub(super) fn hung_up(&mut self, ctx: &mut Ctx<'_>, id: SessionId, side: Side, who: &str) {
        if self.device_left(ctx, id, side) {
            return; // the call waits for the device taking it over
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        // A caller hanging up its early dialog gave up before anyone answered.
        let disposition = match session.a_answered {
            true => Disposition::Answered,
            false => Disposition::Abandoned,
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
        self.finish(ctx, id, disposition, who);
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

    pub(super) fn bye_a(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        if let Some(dialog) = self
            .sessions
            .get_mut(&id)
            .and_then(|s| s.dialog_mut(Side::A))
        {
            send_in_dialog(ctx, dialog, id, &mut self.by_client_txn, None);
        }
    }

    pub(super) fn bye_b(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        if let Some(dialog) = self
            .sessions
            .get_mut(&id)
            .and_then(|s| s.dialog_mut(Side::B))
        {
            send_in_dialog(ctx, dialog, id, &mut self.by_client_txn, None);
        }
    }
}

/// A re-INVITE answered 2xx, or a 2xx answering one, names where the party is now
/// (RFC 3261 §12.2.2, §12.2.1.2; one refused refreshes nothing): its
/// Contact replaces the dialog's remote target. Where a device's requests are sent (the
/// address it registered or called from) does not change.
fn refresh_target(dialog: &mut Dialog, message: &SipMessage) {
    if let Some(contact) = message::header_value(message, "Contact") {
        dialog.target = addr_spec(&contact);
    }
}

/// A Retry-After for a re-INVITE refused while another is pending: a random 0–10 s
/// (RFC 3261 §14.2), so two parties retrying do not collide again.
fn try_again_within_10_s(ctx: &mut Ctx<'_>) -> u32 {
    (ctx.entropy.next_u64() % 11) as u32
}
