//! Forwarding to a user: every registered device rings at once; the first to answer
//! becomes the outbound leg and the others are cancelled.

use super::requests::{Dialog, InviteParts, Via, caller_response, initial_invite};
use super::{Calls, Ctx, Outbound, Phase, SessionId, srtp, start_ringing};
use crate::media::Side;
use crate::registrar::Binding;
use crate::routing::{Event, ForwardTarget};
use crate::sdp;
use crate::sip::message::{self, Response, SipMessage};
use crate::sip::transaction::{ClientTxnId, Peer, Transport};

impl Calls {
    /// Ring every registered device of a user at once.
    pub(super) fn fork_to_user(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        user_id: &str,
        ring_timeout_ms: u32,
    ) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let target = ForwardTarget::User(user_id.to_owned());
        let mut bindings = ctx.registrar.bindings(user_id).to_vec();
        // Behind an edge the phones register there: it rings them all.
        if bindings.is_empty() {
            bindings.extend(ctx.registrar.edge_binding(user_id));
        }
        let extension = ctx
            .config
            .user(user_id)
            .map(|u| u.extension.clone())
            .unwrap_or_default();
        if bindings.is_empty() {
            let event = Event::ForwardFailed {
                target,
                status: 480,
                reason: "No Device Registered".into(),
            };
            return self.route(ctx, id, event);
        }
        let offer = session.b_offer.clone();
        let caller = session.call.caller.clone();
        for binding in bindings {
            if let Some(leg) = self.ring_device(
                ctx,
                id,
                &binding,
                &caller,
                &extension,
                &offer,
                &target,
                Some(Side::B),
            ) && let Some(session) = self.sessions.get_mut(&id)
            {
                session.record.legs.push((leg.number.clone(), 0));
                session.forks.push(leg);
            }
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        start_ringing(
            &mut self.timers,
            id,
            session,
            ctx.ambient.now,
            ring_timeout_ms,
        );
    }

    /// Send one device of a user an INVITE with `offer`, for media on `side` (none: the
    /// reserved ports); the leg, ringing. A browser (over WebSocket) is offered WebRTC by
    /// a media bridge instead.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ring_device(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        binding: &Binding,
        from_number: &str,
        extension: &str,
        offer: &str,
        target: &ForwardTarget,
        side: Option<Side>,
    ) -> Option<Outbound> {
        let mut bridge = None;
        let mut origin = sdp::Origin::new(ctx.entropy.next_u64());
        let offer = if binding.transport == Transport::Ws {
            // A browser gets the bridge's WebRTC offer as the bridge wrote it.
            match ctx.media.offer_webrtc(id, side, ctx.config.media.public_ip) {
                Ok((n, sdp)) => {
                    bridge = Some(n);
                    sdp
                }
                Err(e) => {
                    tracing::warn!(device = %binding.device, "not ringing a browser: {e}");
                    return None;
                }
            }
        } else {
            let secure = srtp::offers_srtp(srtp::device_policy(ctx.config, &binding.user_id));
            if let Err(e) = srtp::offer(ctx.media, id, side, &mut origin, secure) {
                tracing::error!(device = %binding.device, "not ringing: SRTP: {e}");
                return None;
            }
            origin.stamp(offer)
        };
        let local = ctx.local;
        let config = ctx.config;
        let domain = &config.sip.domain;
        let call_id = ctx.entropy.call_id(local.udp.ip());
        let from = format!("<sip:{from_number}@{domain}>;tag={}", ctx.token());
        let to = format!("<sip:{extension}@{domain}>");
        let invite = initial_invite(&InviteParts {
            uri: &binding.contact,
            transport: binding.transport,
            local,
            max_forwards: 70,
            from: &from,
            to: &to,
            call_id: &call_id,
            offer: &offer,
            branch: &ctx.token(),
            extra: &[],
        })?;
        let peer = binding.peer();
        let txn = ctx
            .layer
            .send_request(ctx.ambient.now, invite.clone(), peer);
        tracing::info!(user = %binding.user_id, device = %binding.device, "ringing device");
        self.by_call_id.insert(call_id.clone(), id);
        self.by_client_txn.insert(txn, id);
        if let Some(session) = self.sessions.get_mut(&id) {
            session.record.call_ids.push(call_id.clone());
        }
        Some(Outbound {
            dialog: Dialog {
                call_id,
                local: from,
                remote: to,
                target: binding.contact.clone(),
                route_set: Vec::new(),
                local_cseq: 1,
                remote_cseq: None,
                peer,
                sdp: origin,
            },
            invite,
            txn: Some(txn),
            target: target.clone(),
            number: format!("{}/{}", binding.user_id, binding.device),
            answered: false,
            cancelled: false,
            bridge,
            trunk: None,
        })
    }

    /// CANCEL every fork still ringing.
    pub(super) fn cancel_forks(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        for fork in &mut session.forks {
            fork.cancel(ctx, id, &mut self.by_client_txn);
        }
    }

    /// A response on one of the forks: ringing goes to the caller once, the first
    /// answer wins, and when every fork has failed the forward has failed.
    /// Returns true when the response made a fork the answered leg `b`.
    pub(super) fn fork_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        txn: ClientTxnId,
        response: &Response,
    ) -> bool {
        let code = response.status_code.code();
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        let Some(i) = session.forks.iter().position(|f| f.txn == Some(txn)) else {
            return false;
        };
        match code {
            100 => false,
            101..=199 => {
                if !session.ringing_sent && !session.a_answered && !session.forks[i].cancelled {
                    session.ringing_sent = true;
                    let reply = caller_response(
                        &session.a_invite,
                        180,
                        &session.a_dialog.local,
                        ctx.contact(session.a_dialog.peer.transport),
                    );
                    ctx.layer
                        .send_response(ctx.ambient.now, session.a_txn, reply);
                }
                false
            }
            200..=299 => {
                let mut fork = session.forks.remove(i);
                if fork.cancelled || session.b.is_some() {
                    // Answered after another device won, or once cancelled (the ring
                    // timeout, the caller gave up): acknowledge and hang up that device.
                    if let Some(bye_txn) = hang_up_late_answer(ctx, &mut fork.dialog, response) {
                        self.by_client_txn.insert(bye_txn, id);
                    }
                    self.by_client_txn.remove(&txn);
                    self.by_call_id.remove(&fork.dialog.call_id);
                    return false;
                }
                if ctx.config.cluster.is_edge(fork.dialog.peer.addr.ip())
                    && let ForwardTarget::User(user_id) = &fork.target
                    && let Some(device) =
                        ctx.registrar.device_behind_edge(user_id, &response.headers)
                {
                    // The edge rang them all: the call is on the one that answered.
                    let number = format!("{user_id}/{}", device.name);
                    if let Some(leg) = session.record.legs.iter_mut().find(|l| l.0 == fork.number) {
                        leg.0 = number.clone();
                    }
                    tracing::info!(user = %user_id, device = %device.name, "answered behind the edge");
                    fork.number = number;
                }
                session.b = Some(fork);
                self.cancel_forks(ctx, id);
                true
            }
            _ => {
                let fork = session.forks.remove(i);
                self.by_client_txn.remove(&txn);
                self.by_call_id.remove(&fork.dialog.call_id);
                if let Some(leg) = session.record.legs.iter_mut().find(|l| l.0 == fork.number) {
                    leg.1 = code;
                }
                let declined = code >= 600 && !fork.cancelled;
                if declined {
                    // A 6xx is the user's answer for every device (RFC 3261 §16.7: decline
                    // on one, the others stop ringing).
                    tracing::info!(code, device = %fork.number, "declined: the other devices stop ringing");
                    self.cancel_forks(ctx, id);
                }
                let Some(session) = self.sessions.get_mut(&id) else {
                    return false;
                };
                let all_failed = session.b.is_none() && session.forks.iter().all(|f| f.cancelled);
                if !fork.cancelled && all_failed && session.phase == Phase::Forwarding {
                    // The most telling status of all the devices: a decline, else busy if
                    // any was busy.
                    let best = match declined {
                        true => code,
                        false => session
                            .record
                            .legs
                            .iter()
                            .map(|l| l.1)
                            .find(|c| *c == 486)
                            .unwrap_or(code),
                    };
                    let target = fork.target;
                    self.route(
                        ctx,
                        id,
                        Event::ForwardFailed {
                            target,
                            status: best,
                            reason: message::reason_phrase(best).into(),
                        },
                    );
                }
                false
            }
        }
    }
}

impl Calls {
    /// A 2xx to an INVITE of the host's that another 2xx already answered, from another
    /// dialog (a forking proxy let two branches answer, RFC 3261 §13.2.2.4): that dialog
    /// is taken from the 2xx alone, acknowledged and hung up; the call keeps the first.
    pub fn hang_up_another_answer(&mut self, ctx: &mut Ctx<'_>, response: &Response, source: Peer) {
        let answer = SipMessage::Response(response.clone());
        let Some(mut dialog) = Dialog::from_answer(&answer, source) else {
            return;
        };
        let _span = self
            .by_call_id
            .get(&dialog.call_id)
            .map(|&id| self.enter(id));
        tracing::info!(call_id = %dialog.call_id, "a second dialog answered the same INVITE: hung up");
        hang_up_late_answer(ctx, &mut dialog, response);
    }
}

/// A leg the host gave up on (cancelled, or another device answered first) answered all
/// the same — its 2xx crossed the CANCEL: the dialog is taken from the 2xx, acknowledged
/// and hung up at once (RFC 3261 §9.1, §15). The BYE's transaction.
pub(super) fn hang_up_late_answer(
    ctx: &mut Ctx<'_>,
    dialog: &mut Dialog,
    response: &Response,
) -> Option<ClientTxnId> {
    dialog.take_answer(&SipMessage::Response(response.clone()));
    let branch = ctx.token();
    let ack = dialog.request(
        "ACK",
        dialog.local_cseq,
        &Via {
            local: ctx.local,
            branch: &branch,
        },
    );
    if let Some(ack) = ack {
        ctx.layer.send_ack(ctx.ambient.now, ack, dialog.peer);
    }
    dialog.local_cseq += 1;
    let branch = ctx.token();
    let bye = dialog.request(
        "BYE",
        dialog.local_cseq,
        &Via {
            local: ctx.local,
            branch: &branch,
        },
    )?;
    // Sent as any in-dialog request is: a carrier that challenges it gets credentials.
    Some(ctx.send_in_dialog(bye, dialog.peer))
}
