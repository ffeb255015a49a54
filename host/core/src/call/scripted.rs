//! A call's script: its decisions carried out (the one action interpreter,
//! `wasmpbx_types::actions`, driving [`LiveActions`]), its events put to it, and the
//! forward, the action with the most to do.

use std::cmp::Reverse;
use std::time::Duration;

use wasmpbx_types::actions::{ActionHost, Forward, Gather, MediaStream};
use wasmpbx_types::ids::SessionId;
use wasmpbx_types::record::{CallEvent, MAX_EVENTS_PER_CALL};
use wasmpbx_types::script::ScriptVersion;

use crate::media::{Playback, Side, StreamRequest};
use crate::pbx::PbxOutput;
use crate::routing::{
    Action, CallInfo, Decision, Disposition, Event, ForwardTarget, MAX_STREAMS_PER_CALL, Origin,
    Speech, fallback_actions,
};
use crate::sdp;
use crate::sip::message::{self, SipMessage};
use crate::sip::transaction::Peer;

use super::ending::write_live_record;
use super::push::Refusal;
use super::requests::{Dialog, InviteParts, initial_invite};
use super::session::{Outbound, Phase, Session};
use super::trunk_legs::TrunkLeg;
use super::{Calls, Ctx, TimerKind, engaged, srtp, start_ringing};

impl Calls {
    /// The script's decision for one event of a session.
    pub fn handle_decision(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        decision: Decision,
        pinned: Option<ScriptVersion>,
    ) {
        let _span = self.enter(id);
        let Some(session) = self.sessions.get_mut(&id) else {
            return; // ended while the script ran
        };
        if session.pinned.is_none() {
            session.pinned = pinned;
            if let Some(script) = &decision.script {
                session.record.script_hash = Some(script.hash.clone());
            }
        }
        if let Some(fallback) = &decision.fallback {
            session.record.fallback = true;
            tracing::warn!(
                cause = fallback.cause,
                "routing by fallback: {}",
                fallback.message
            );
        }
        self.apply(ctx, id, decision.actions);
        if let Some(session) = self.sessions.get_mut(&id)
            && session.phase != Phase::Routing
        {
            for event in std::mem::take(&mut session.held_events) {
                ask_script(ctx, id, session, event);
            }
        }
    }

    /// An outside system's word on a live call (`POST /api/calls/{id}/events`, an
    /// engine's intent): it joins the record (written again if the call was answered),
    /// sets the tag of its name, and goes to the call's script as an `external` event.
    pub fn note_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        name: String,
        value: String,
        confidence: Option<f64>,
    ) -> Result<(), Refusal> {
        let _span = self.enter(id);
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err((404, "no such live call".into()));
        };
        if session.record.events.len() >= MAX_EVENTS_PER_CALL {
            return Err((
                429,
                format!("a call keeps at most {MAX_EVENTS_PER_CALL} events"),
            ));
        }
        tracing::info!(name, value, ?confidence, "external event");
        session.call.set_tag(&name, &value);
        session.record.tags.clone_from(&session.call.tags);
        let event = Event::External {
            name: name.clone(),
            value: value.clone(),
            confidence,
        };
        session.record.events.push(CallEvent {
            at: jiff::Timestamp::from_second(ctx.ambient.wall_secs())
                .unwrap_or(session.record.started_at),
            name,
            value,
            confidence,
        });
        write_live_record(ctx, &mut session.record);
        if session.script.is_empty() {
            return Ok(());
        }
        if session.phase == Phase::Routing {
            // The script's answer to another event is on its way: this one follows it,
            // so that it meets the call as that answer leaves it.
            session.held_events.push_back(event);
        } else {
            ask_script(ctx, id, session, event);
        }
        Ok(())
    }

    /// The script's answer to an external event. The call has gone on meanwhile: a list
    /// that steers it takes over a call the host is playing or gathering for; otherwise
    /// only the actions beside the call's course (tags, recording, streams) apply. A
    /// script that failed on the event leaves the call as it was.
    pub fn external_decided(&mut self, ctx: &mut Ctx<'_>, id: SessionId, decision: Decision) {
        let _span = self.enter(id);
        let Some(session) = self.sessions.get(&id) else {
            return; // ended meanwhile
        };
        if let Some(fallback) = &decision.fallback {
            tracing::warn!(
                cause = fallback.cause,
                "the script failed on an external event; the call goes on as it was: {}",
                fallback.message
            );
            return;
        }
        let engaged = session.phase == Phase::Engaged;
        if engaged && decision.actions.iter().any(Action::takes_over) {
            tracing::info!("an external event takes the call over");
            self.interrupt(ctx, id);
            return self.apply(ctx, id, decision.actions);
        }
        for action in decision.actions {
            match action {
                Action::SetTag { name, value } => {
                    if let Some(session) = self.sessions.get_mut(&id) {
                        session.call.set_tag(&name, &value);
                        session.record.tags.clone_from(&session.call.tags);
                        write_live_record(ctx, &mut session.record);
                    }
                }
                Action::Recording { on } => self.set_recording(ctx, id, on),
                Action::MediaStream(stream) => self.media_stream(ctx, id, stream),
                other => tracing::info!(
                    action = other.name(),
                    "ignored: an external event's action cannot steer a call that is not playing or gathering"
                ),
            }
        }
    }

    /// Start a script's media stream (at most [`MAX_STREAMS_PER_CALL`] a call).
    pub(super) fn media_stream(&mut self, ctx: &mut Ctx<'_>, id: SessionId, stream: MediaStream) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.streams >= MAX_STREAMS_PER_CALL {
            tracing::warn!(
                "media-stream ignored: a call has at most {MAX_STREAMS_PER_CALL} streams"
            );
            return;
        }
        session.streams += 1;
        ctx.media
            .start_stream(id, stream_request(stream, &session.call));
    }

    /// The script's answer to `call-ended`: its tags complete the record, which is then
    /// written again; any other action is moot for a call that is over.
    pub fn call_ended_decided(&mut self, ctx: &mut Ctx<'_>, id: SessionId, decision: Decision) {
        let Some((mut record, span)) = self.ending.remove(&id) else {
            return;
        };
        let _span = span.entered();
        let tags = record.tags.clone();
        for action in decision.actions {
            match action {
                Action::SetTag { name, value } => {
                    crate::routing::set_tag(&mut record.tags, &name, &value)
                }
                other => {
                    tracing::debug!(?other, "ignored at call-ended")
                }
            }
        }
        if record.tags != tags {
            ctx.outputs.push_back(PbxOutput::RecordRewritten(record));
        }
    }

    /// Carry out a script's actions (the one interpreter: `wasmpbx_types::actions`).
    pub(super) fn apply(&mut self, ctx: &mut Ctx<'_>, id: SessionId, actions: Vec<Action>) {
        wasmpbx_types::actions::run(
            &mut LiveActions {
                calls: self,
                ctx,
                id,
            },
            actions,
        );
    }

    /// An action the host could not carry out (an unknown prompt, say): the call must
    /// still reach a human, so the location's fallback takes over.
    pub(super) fn fall_back(&mut self, ctx: &mut Ctx<'_>, id: SessionId, why: &str) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.applying_fallback {
            tracing::error!("{why} (while falling back)");
            return self.end(ctx, id, Disposition::Failed, 500, why);
        }
        tracing::warn!("{why}; falling back");
        session.applying_fallback = true;
        session.record.fallback = true;
        let fallback = fallback_actions(session.location.as_ref());
        self.apply(ctx, id, fallback)
    }

    pub(super) fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        target: ForwardTarget,
        trunk: Option<String>,
        ring_timeout_ms: u32,
        caller_id: Option<String>,
    ) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let number = match &target {
            ForwardTarget::Number(n) => n.clone(),
            ForwardTarget::Fallback => match &session.location {
                Some(l) => l.fallback_number.clone(),
                None => return self.end(ctx, id, Disposition::Failed, 503, "no fallback number"),
            },
            ForwardTarget::User(user_id) => {
                let user_id = user_id.clone();
                return self.fork_to_user(ctx, id, &user_id, ring_timeout_ms);
            }
        };
        let trunk_name = trunk.or_else(|| session.location.as_ref().and_then(|l| l.trunk.clone()));
        let trunk = match &trunk_name {
            Some(name) => ctx.trunks.config(name).cloned(),
            None => ctx.config.trunks.first().cloned(),
        };
        let mut targets = match &trunk {
            Some(t) => ctx.trunks.candidates(&t.name, ctx.ambient.now, ctx.entropy),
            None => Vec::new(),
        };
        let (Some(trunk), false) = (trunk, targets.is_empty()) else {
            tracing::warn!(trunk = ?trunk_name, "no trunk to forward through (none configured, or its host has not resolved)");
            let event = Event::ForwardFailed {
                target,
                status: 503,
                reason: "No Usable Trunk".into(),
            };
            return self.route(ctx, id, event);
        };
        let first = targets.remove(0);
        let host = trunk.request_host();
        let local = ctx.local;
        let mut origin = sdp::Origin::new(ctx.entropy.next_u64());
        let secure = srtp::offers_srtp(srtp::trunk_policy(ctx.config, Some(&trunk)));
        if let Err(e) = srtp::offer(ctx.media, id, Some(Side::B), &mut origin, secure) {
            tracing::error!("SRTP towards the trunk: {e}");
            return self.end(ctx, id, Disposition::Failed, 500, "no SRTP key");
        }
        let offer = origin.stamp(&session.b_offer);
        // Caller id: the script's choice or the original caller, in the trunk's format;
        // with a fixed `from_user`, the caller goes in P-Asserted-Identity instead.
        let caller = trunk.format_number(&caller_id.unwrap_or_else(|| session.call.caller.clone()));
        let domain = trunk.from_domain(&ctx.config.sip.domain);
        let mut extra = Vec::new();
        if trunk.send_pai || trunk.from_user.is_some() {
            extra.push(format!("P-Asserted-Identity: <sip:{caller}@{domain}>"));
        }
        if trunk.diversion && matches!(session.call.origin, Origin::Trunk { .. }) {
            // The number the caller dialled, which forwarded the call here (RFC 5806).
            let flip_number = trunk.format_number(&session.call.dialed);
            extra.push(format!(
                "Diversion: <sip:{flip_number}@{domain}>;reason=unconditional"
            ));
        }
        let from_user = trunk.from_user.clone().unwrap_or(caller);
        let dialled = trunk.format_number(&number);
        let call_id = ctx.entropy.call_id(local.udp.ip());
        let from = format!("<sip:{from_user}@{domain}>;tag={}", ctx.token());
        let to = format!("<sip:{dialled}@{host}>");
        let max_forwards = message::header_value(
            &SipMessage::Request(session.a_invite.clone()),
            "Max-Forwards",
        )
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(70)
        .saturating_sub(1);
        if max_forwards == 0 {
            return self.end(ctx, id, Disposition::Failed, 483, "too many hops");
        }
        let transport = crate::trunks::transport(&trunk);
        let invite = initial_invite(&InviteParts {
            uri: &format!("sip:{dialled}@{host}"),
            transport,
            local,
            max_forwards,
            from: &from,
            to: &to,
            call_id: &call_id,
            offer: &offer,
            branch: &ctx.token(),
            extra: &extra,
        });
        let Some(invite) = invite else {
            return self.end(
                ctx,
                id,
                Disposition::Failed,
                500,
                "could not build the outbound INVITE",
            );
        };
        let peer = Peer {
            transport,
            addr: first,
        };
        let txn = ctx
            .layer
            .send_request(ctx.ambient.now, invite.clone(), peer);
        tracing::info!(number, trunk = %trunk.name, target = %first, "forwarding");
        session.record.legs.push((number.clone(), 0));
        session.record.call_ids.push(call_id.clone());
        let share = crate::trunks::target_share(targets.len() + 1);
        let trunk_leg = TrunkLeg {
            name: trunk.name.clone(),
            remaining: targets,
            share,
            challenges_answered: 0,
            attempt: 0,
            heard: false,
        };
        if !trunk_leg.remaining.is_empty() {
            self.timers.push(Reverse((
                ctx.ambient.now + share,
                TimerKind::TrunkTarget,
                id,
                0,
            )));
        }
        session.b = Some(Outbound {
            dialog: Dialog {
                call_id: call_id.clone(),
                local: from,
                remote: to,
                target: format!("sip:{dialled}@{host}"),
                route_set: Vec::new(),
                local_cseq: 1,
                remote_cseq: None,
                peer,
                sdp: origin,
            },
            invite,
            txn: Some(txn),
            target,
            number,
            answered: false,
            cancelled: false,
            bridge: None,
            trunk: Some(trunk_leg),
        });
        start_ringing(
            &mut self.timers,
            id,
            session,
            ctx.ambient.now,
            ring_timeout_ms,
        );
        self.by_call_id.insert(call_id, id);
        self.by_client_txn.insert(txn, id);
        self.ringback(ctx, id);
    }

    /// Ask the script about an event of a live session.
    pub(super) fn route(&mut self, ctx: &mut Ctx<'_>, id: SessionId, event: Event) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.script.is_empty() {
            // A call between devices has no script: a failed forward is the call's end.
            if let Event::ForwardFailed { status, .. } = event {
                self.end(ctx, id, Disposition::Failed, status, "forward failed");
            }
            return;
        }
        if session.a_answered && session.phase == Phase::Forwarding {
            ctx.media.play(id, Playback::Silence); // the forward failed: no more ringback
        }
        session.phase = Phase::Routing;
        ask_script(ctx, id, session, event);
    }
}

/// A stream of a call's audio: `start.customParameters` names the location, caller and
/// dialled number, then the script's parameters.
pub(super) fn stream_request(stream: MediaStream, call: &CallInfo) -> StreamRequest {
    let mut parameters = vec![
        ("caller".to_owned(), call.caller.clone()),
        ("dialed".to_owned(), call.dialed.clone()),
    ];
    if let Some(location) = &call.location {
        parameters.insert(0, ("location".to_owned(), location.clone()));
    }
    parameters.extend(stream.parameters);
    StreamRequest {
        url: stream.url,
        tracks: stream.tracks,
        engine_audio: stream.engine_audio,
        call_sid: call.call_id.clone(),
        parameters,
    }
}

/// A live call carrying out its script's actions.
pub(super) struct LiveActions<'c, 'x, 'a> {
    calls: &'c mut Calls,
    ctx: &'x mut Ctx<'a>,
    id: SessionId,
}

impl ActionHost for LiveActions<'_, '_, '_> {
    fn is_over(&self) -> bool {
        !self.calls.sessions.contains_key(&self.id)
    }

    fn set_tag(&mut self, name: &str, value: &str) {
        if let Some(session) = self.calls.sessions.get_mut(&self.id) {
            session.call.set_tag(name, value);
        }
    }

    fn answer(&mut self) -> Result<(), String> {
        self.calls.answer_caller(self.ctx, self.id)
    }

    fn recording(&mut self, on: bool) -> Result<(), String> {
        self.calls.set_recording(self.ctx, self.id, on);
        Ok(())
    }

    fn play(&mut self, prompt: &str, rest: Vec<Action>) -> Result<(), String> {
        self.calls.play_prompt(self.ctx, self.id, prompt, rest)
    }

    fn say(&mut self, speech: Speech, rest: Vec<Action>) -> Result<(), String> {
        self.calls.say(self.ctx, self.id, speech, rest)
    }

    fn media_stream(&mut self, stream: MediaStream) -> Result<(), String> {
        self.calls.media_stream(self.ctx, self.id, stream);
        Ok(())
    }

    fn gather(&mut self, gather: Gather) -> Result<(), String> {
        let spec = engaged::GatherSpec {
            max_digits: gather.max_digits,
            first_timeout: Duration::from_millis(u64::from(gather.timeout_ms)),
            inter_digit_timeout: Duration::from_millis(u64::from(gather.inter_digit_timeout_ms)),
            terminator: gather.terminator,
        };
        self.calls.start_gather(
            self.ctx,
            self.id,
            spec,
            gather.prompt.as_deref(),
            gather.say,
        )
    }

    fn forward(&mut self, f: Forward) {
        let (target, trunk) = (f.target, f.trunk);
        self.calls.forward(
            self.ctx,
            self.id,
            target,
            trunk,
            f.ring_timeout_ms,
            f.caller_id,
        );
    }

    fn reject(&mut self, status: u16, reason: Option<String>) {
        let why = reason.as_deref().unwrap_or("rejected by script");
        self.calls
            .end(self.ctx, self.id, Disposition::Failed, status, why);
    }

    fn hangup(&mut self) {
        let answered = self
            .calls
            .sessions
            .get(&self.id)
            .is_some_and(|s| s.a_answered);
        let disposition = match answered {
            true => Disposition::Answered,
            false => Disposition::Failed,
        };
        self.calls
            .end(self.ctx, self.id, disposition, 480, "hung up by script");
    }

    fn nothing_to_wait_for(&mut self) {
        let why = "script gave no terminal action";
        self.calls
            .end(self.ctx, self.id, Disposition::Failed, 480, why);
    }

    fn failed(&mut self, why: String) {
        self.calls.fall_back(self.ctx, self.id, &why);
    }
}

/// Ask a call's script about an event of the call (it runs off the call's path; its
/// answer comes back as an input).
pub(super) fn ask_script(ctx: &mut Ctx<'_>, id: SessionId, session: &Session, event: Event) {
    ctx.outputs.push_back(PbxOutput::Route {
        session: id,
        script: session.script.clone(),
        location: session.location.as_ref().map(|l| l.name.clone()),
        pinned: session.pinned.clone(),
        call: session.call.clone(),
        event,
        span: session.span.clone(),
    });
}
