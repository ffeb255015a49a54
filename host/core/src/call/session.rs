//! A call's state: its legs, where it stands, and what is under way on it.

use std::collections::VecDeque;
use std::time::Instant;

use wasmpbx_types::ids::SessionId;
use wasmpbx_types::record::CallRecord;
use wasmpbx_types::script::ScriptVersion;

use crate::config::Location;
use crate::media::{MediaPorts, Side};
use crate::routing::{CallInfo, Event, ForwardTarget};
use crate::sip::message::Request;
use crate::sip::transaction::{ClientTxnId, Peer, ServerTxnId};

use super::client_txns::ClientTxns;
use super::requests::{Dialog, cancel_for};
use super::trunk_legs::TrunkLeg;
use super::{Ctx, engaged, keepalive, pin, pull, push, send_in_dialog};

/// A re-INVITE received on one leg and sent on the other, waiting for its answer.
pub(super) struct PendingReinvite {
    /// The transaction to answer on the leg it came from.
    pub(super) server_txn: ServerTxnId,
    pub(super) request: Request,
    pub(super) from_a: bool,
    /// The re-INVITE the host sent on the other leg, its transaction, and where it went.
    pub(super) sent: Request,
    pub(super) client_txn: ClientTxnId,
    pub(super) sent_to: Peer,
    pub(super) cseq: u32,
    /// The device that asked was flipped away meanwhile: the answer is still taken (and
    /// a 2xx acknowledged) for the leg that gives it, but answers nobody's offer.
    pub(super) asker_left: bool,
}

/// A leg to one of the callee's devices (or a number through a trunk).
pub(super) struct Outbound {
    pub(super) dialog: Dialog,
    pub(super) invite: Request,
    /// The INVITE transaction the host sent; none for a leg the device set up itself (a
    /// device that pulled the call).
    pub(super) txn: Option<ClientTxnId>,
    pub(super) target: ForwardTarget,
    pub(super) number: String,
    pub(super) answered: bool,
    /// CANCEL sent (ring timeout or caller gave up): its final response is not news.
    pub(super) cancelled: bool,
    /// A browser's leg: the media bridge that made its WebRTC offer.
    pub(super) bridge: Option<usize>,
    /// A leg through a carrier trunk: its failover and authentication.
    pub(super) trunk: Option<TrunkLeg>,
}

impl Outbound {
    /// A device's answer, as the call sees it: a browser's WebRTC answer completes its
    /// bridge and becomes the bridge's plain RTP.
    pub(super) fn answer_sdp(&self, ctx: &mut Ctx<'_>, id: SessionId, body: String) -> String {
        let Some(bridge) = self.bridge else {
            return body;
        };
        ctx.media
            .answer_webrtc(id, bridge, &body)
            .unwrap_or_else(|e| {
                tracing::warn!("{e}");
                String::new()
            })
    }

    /// Stop this leg ringing: CANCEL its INVITE, once.
    pub(super) fn cancel(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        by_client_txn: &mut ClientTxns,
    ) {
        if self.cancelled {
            return;
        }
        self.cancelled = true;
        if let Some(cancel) = cancel_for(&self.invite) {
            let txn = ctx
                .layer
                .send_request(ctx.ambient.now, cancel, self.dialog.peer);
            by_client_txn.insert(txn, id);
        }
    }

    /// End this leg's (answered) dialog: BYE.
    pub(super) fn hang_up(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        by_client_txn: &mut ClientTxns,
    ) {
        send_in_dialog(ctx, &mut self.dialog, id, by_client_txn, None);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the script.
    Routing,
    /// B is ringing.
    Forwarding,
    /// The host answered and is playing or gathering.
    Engaged,
    Connected,
}

pub(super) struct Session {
    pub(super) call: CallInfo,
    pub(super) location: Option<Location>,
    pub(super) script: String,
    pub(super) pinned: Option<ScriptVersion>,
    pub(super) a_invite: Request,
    pub(super) a_txn: ServerTxnId,
    pub(super) a_dialog: Dialog,
    /// The offer for outbound legs: the caller's SDP pointing at the host's B port.
    pub(super) b_offer: String,
    /// A browser caller's SDP answer (its WebRTC, answered by a bridge): what side A is
    /// told instead of the host's plain RTP address.
    pub(super) a_answer: Option<String>,
    pub(super) a_answered: bool,
    /// The outbound leg: the one ringing (trunk forwards) or the one that answered.
    pub(super) b: Option<Outbound>,
    /// Legs ringing in parallel for a forward to a user's devices; the first to answer
    /// becomes `b` and the others are cancelled.
    pub(super) forks: Vec<Outbound>,
    /// Whether the caller has been sent a ringing response (forks ring only once).
    pub(super) ringing_sent: bool,
    /// A re-INVITE (hold, resume) being passed from one leg to the other.
    pub(super) reinvite: Option<Box<PendingReinvite>>,
    pub(super) ports: MediaPorts,
    pub(super) phase: Phase,
    pub(super) record: CallRecord,
    /// Bumped whenever the ring timer is re-armed, so stale timers are ignored.
    pub(super) ring_generation: u64,
    pub(super) applying_fallback: bool,
    /// Set once the host answered the caller itself (active mode).
    pub(super) endpoint: Option<engaged::Endpoint>,
    /// A prompt's end or the caller's digits, in active mode.
    pub(super) waiting: engaged::Waiting,
    /// Bumped whenever a media timer is armed, so stale ones are ignored.
    pub(super) media_generation: u64,
    /// When the INVITE arrived, on the monotonic clock (durations to the millisecond).
    pub(super) arrived: Instant,
    /// The G.711 codec the answering device chose: a device that takes the call over
    /// must speak it too.
    pub(super) b_codec: Option<crate::media::Codec>,
    /// A flip of this call is being decided (a second one is refused meanwhile).
    pub(super) flip_pending: bool,
    /// A push whose targets are ringing.
    pub(super) ringing: Option<Box<push::Ringing>>,
    /// A device that would take the call over, entering the PIN first.
    pub(super) pin: Option<Box<pin::PinEntry>>,
    /// The user and device on side A, for a call a user's device placed; none for a
    /// trunk call, and once that device hung up while a flip of its side was under way.
    pub(super) a_device: Option<(String, String)>,
    /// Side A hung up while a flip of its side was under way: the call waits for the
    /// new device.
    pub(super) a_gone: bool,
    /// The last keys each side's device pressed (for the push code).
    pub(super) keys: [String; 2],
    /// Media streams started (the location's and the script's).
    pub(super) streams: usize,
    /// External events that arrived while the script's answer to another event was
    /// awaited: each goes to the script once that answer has been applied.
    pub(super) held_events: VecDeque<Event>,
    /// The device a flip just moved the call away from, let go once the new device is
    /// heard (a browser's audio starts only after ICE and DTLS).
    pub(super) releasing: Option<Box<push::Release>>,
    /// Keep-alive OPTIONS out to the parties, waiting for their answers.
    pub(super) probes: Vec<keepalive::Probe>,
    /// The call's `call{session}` span: entered by every input about the call, carried
    /// to its script runs, and current when its media tasks are spawned, so each line
    /// logged about the call names it once, in the same way.
    pub(super) span: tracing::Span,
}

/// A flip waiting for the policy's decision.
#[derive(Debug)]
pub(super) enum PendingFlip {
    Pull(Box<pull::PendingPull>),
    Push(push::PendingPush),
}

impl PendingFlip {
    pub(super) fn session(&self) -> SessionId {
        match self {
            PendingFlip::Pull(p) => p.session,
            PendingFlip::Push(p) => p.session,
        }
    }
}

impl Session {
    /// Whether a flip of this call is under way (being decided, ringing its targets or
    /// waiting for a PIN): another one is refused meanwhile.
    pub(super) fn flipping(&self) -> bool {
        self.flip_pending || self.ringing.is_some() || self.pin.is_some()
    }

    /// The user and device on `side`, if a user's device is there and in the call: side
    /// B for a call that rang the user's devices, side A for one a device placed.
    pub(super) fn device_on(&self, side: Side) -> Option<(String, String)> {
        match side {
            Side::A => self.a_device.clone(),
            Side::B => match self.b.as_ref() {
                Some(Outbound {
                    target: ForwardTarget::User(user),
                    number,
                    answered: true,
                    ..
                }) => Some((user.clone(), pull::device_of(number).to_owned())),
                _ => None,
            },
        }
    }

    /// The side `user_id`'s device is on, if one of the user's devices has this call:
    /// side B for a call that rang them, side A for one they placed.
    pub(super) fn users_side(&self, user_id: &str) -> Option<Side> {
        [Side::B, Side::A].into_iter().find(|&side| {
            self.device_on(side)
                .is_some_and(|(user, _)| user == user_id)
        })
    }

    /// The dialog with the party on `side`, if it is still in the call.
    pub(super) fn dialog_mut(&mut self, side: Side) -> Option<&mut Dialog> {
        match side {
            Side::A => (!self.a_gone).then_some(&mut self.a_dialog),
            Side::B => self.b.as_mut().map(|b| &mut b.dialog),
        }
    }
}

/// The other side.
pub(super) fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}
