//! Active mode: the host answers the caller and becomes its media endpoint — prompts,
//! digit gathering, ringback while a forward rings, recording. Sans-IO like the rest of
//! the calls: the media does the sending, the session keeps the timers (a prompt's end,
//! a gather's timeouts) on the core's clock.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CallRecord, Calls, Ctx, Phase, SessionId, TimerKind};
use crate::call::requests::{attach_sdp, tag_of};
use crate::media::{Codec, Playback, Prompt, RecordingEnd};
use crate::routing::{Action, Event, GatherEnd, Speech};
use crate::sdp;
use crate::sip::message;

/// What an engaged session waits for.
#[derive(Debug, Default)]
pub(super) enum Waiting {
    #[default]
    Nothing,
    /// A prompt to finish; then the rest of the script's actions run.
    PromptEnd { rest: Vec<Action> },
    /// The caller's digits.
    Digits(Gather),
}

/// What a `gather` action asks for.
#[derive(Debug, Clone, Copy)]
pub(super) struct GatherSpec {
    pub(super) max_digits: u8,
    pub(super) first_timeout: Duration,
    pub(super) inter_digit_timeout: Duration,
    pub(super) terminator: Option<char>,
}

#[derive(Debug)]
pub(super) struct Gather {
    spec: GatherSpec,
    digits: String,
    /// The gather's prompt is still playing (the first digit stops it).
    prompt_playing: bool,
}

/// The caller's side of an answered session.
#[derive(Debug, Clone, Copy)]
pub(super) struct Endpoint {
    pub(super) codec: Codec,
    pub(super) event_pt: Option<u8>,
}

impl Calls {
    /// Answer the caller with the host as its media endpoint (nothing if answered).
    pub(super) fn answer_caller(&mut self, ctx: &mut Ctx<'_>, id: SessionId) -> Result<(), String> {
        let Some(session) = self.sessions.get_mut(&id) else {
            return Ok(());
        };
        if session.a_answered {
            return Ok(());
        }
        let body = String::from_utf8_lossy(&session.a_invite.body).into_owned();
        let codec = sdp::parse(&body)
            .ok()
            .as_ref()
            .and_then(sdp::first_g711)
            .ok_or("answer: the caller offered no static PCMU or PCMA")?;
        let event_pt = sdp::telephone_event_pt(&body);
        let ip = ctx.config.media.public_ip;
        let mut reply = message::response_to(
            &session.a_invite,
            200,
            Some(&tag_of(&session.a_dialog.local)),
        );
        let answer = sdp::endpoint(ip, session.ports.a, codec, event_pt);
        let contact = ctx.contact(session.a_dialog.peer.transport);
        attach_sdp(&mut reply, contact, session.a_dialog.sdp.stamp(&answer));
        ctx.layer
            .send_response(ctx.ambient.now, session.a_txn, reply);
        ctx.media.answer(id, crate::media::Side::A, codec);
        // Whoever the caller is sent to later must speak the codec the caller now has.
        session.b_offer = sdp::endpoint(ip, session.ports.b, codec, event_pt);
        session.endpoint = Some(Endpoint { codec, event_pt });
        session.a_answered = true;
        session.phase = Phase::Engaged;
        session.record.answered_at = jiff::Timestamp::from_second(ctx.ambient.wall_secs()).ok();
        // The script's tags so far (set before the answer) go in with it.
        session.record.tags.clone_from(&session.call.tags);
        super::write_live_record(ctx, &mut session.record);
        tracing::info!(codec = codec.name(), "answered by the host");
        Ok(())
    }

    /// Play a prompt; the rest of the actions run when it has played.
    pub(super) fn play_prompt(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        name: &str,
        rest: Vec<Action>,
    ) -> Result<(), String> {
        let prompt = ctx
            .prompts
            .get(name)
            .ok_or_else(|| format!("play: no prompt named {name:?}"))?;
        self.play_audio(ctx, id, prompt, rest)
    }

    /// Speak rendered text, like a prompt (`say`).
    pub(super) fn say(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        speech: Speech,
        rest: Vec<Action>,
    ) -> Result<(), String> {
        let audio = speech
            .audio
            .0
            .ok_or("say: the text could not be turned into speech")?;
        self.play_audio(ctx, id, audio, rest)
    }

    fn play_audio(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        prompt: Arc<Prompt>,
        rest: Vec<Action>,
    ) -> Result<(), String> {
        self.answer_caller(ctx, id)?;
        let Some(session) = self.sessions.get_mut(&id) else {
            return Ok(());
        };
        let end = ctx.ambient.now + prompt.duration();
        ctx.media.play(id, Playback::Once(prompt));
        session.waiting = Waiting::PromptEnd { rest };
        session.phase = Phase::Engaged;
        self.arm(id, end);
        Ok(())
    }

    /// Collect digits (the `gather` action).
    pub(super) fn start_gather(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        spec: GatherSpec,
        prompt: Option<&str>,
        say: Option<Speech>,
    ) -> Result<(), String> {
        let prompt = match (prompt, say) {
            (Some(name), _) => Some(
                ctx.prompts
                    .get(name)
                    .ok_or_else(|| format!("gather: no prompt named {name:?}"))?,
            ),
            (None, Some(speech)) => Some(
                speech
                    .audio
                    .0
                    .ok_or("gather: the text could not be turned into speech")?,
            ),
            (None, None) => None,
        };
        self.answer_caller(ctx, id)?;
        let Some(session) = self.sessions.get_mut(&id) else {
            return Ok(());
        };
        // The first-digit timeout starts when the prompt has played.
        let mut deadline = ctx.ambient.now + spec.first_timeout;
        if let Some(prompt) = &prompt {
            deadline += prompt.duration();
        }
        let prompt_playing = prompt.is_some();
        if let Some(prompt) = prompt {
            ctx.media.play(id, Playback::Once(prompt));
        }
        session.waiting = Waiting::Digits(Gather {
            spec,
            digits: String::new(),
            prompt_playing,
        });
        session.phase = Phase::Engaged;
        self.arm(id, deadline);
        Ok(())
    }

    /// A key the caller pressed (RFC 4733 or SIP INFO).
    pub fn handle_digit(&mut self, ctx: &mut Ctx<'_>, id: SessionId, digit: char) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Waiting::Digits(gather) = &mut session.waiting else {
            return; // not gathering: the digit is only recorded
        };
        if gather.prompt_playing {
            // Barge-in: the caller knows what they want.
            gather.prompt_playing = false;
            ctx.media.play(id, Playback::Silence);
        }
        let ended = if gather.spec.terminator == Some(digit) {
            Some(GatherEnd::Terminator)
        } else {
            gather.digits.push(digit);
            (gather.digits.len() >= usize::from(gather.spec.max_digits))
                .then_some(GatherEnd::MaxDigits)
        };
        match ended {
            Some(ended_by) => self.end_gather(ctx, id, ended_by),
            None => {
                let deadline = ctx.ambient.now + gather.spec.inter_digit_timeout;
                self.arm(id, deadline);
            }
        }
    }

    fn end_gather(&mut self, ctx: &mut Ctx<'_>, id: SessionId, ended_by: GatherEnd) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Waiting::Digits(gather) = std::mem::take(&mut session.waiting) else {
            return;
        };
        session.media_generation += 1;
        tracing::info!(digits = gather.digits, ?ended_by, "gathered");
        self.route(
            ctx,
            id,
            Event::DigitsGathered {
                digits: gather.digits,
                ended_by,
            },
        );
    }

    /// Drop what an engaged session waits for (the prompt playing and the actions after
    /// it, or a gather): an external event's actions take the call over.
    pub(super) fn interrupt(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.waiting = Waiting::Nothing;
        session.media_generation += 1; // its timer is moot
        ctx.media.play(id, Playback::Silence);
    }

    /// Start or stop recording the session.
    pub(super) fn set_recording(&mut self, ctx: &mut Ctx<'_>, id: SessionId, on: bool) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if !on {
            let end = ctx.media.stop_recording(id);
            note_recording_end(&mut session.record, end);
            return;
        }
        if session.record.recording.is_some() {
            return;
        }
        let started = jiff::Timestamp::from_second(ctx.ambient.wall_secs())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .strftime("%Y%m%dT%H%M%SZ");
        let location = session.call.location.as_deref().unwrap_or("device");
        let path = ctx
            .config
            .media
            .recordings
            .join(format!("{started}-{location}-s{id}.wav"));
        match ctx.media.start_recording(id, &path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "recording");
                session.record.recording = Some(path.display().to_string());
            }
            // The call goes on unrecorded rather than not at all.
            Err(e) => tracing::error!("cannot record: {e}"),
        }
    }

    /// While a forward rings for a caller the host answered, the caller hears ringback
    /// (until the callee's early media, if any, takes over).
    pub(super) fn ringback(&mut self, ctx: &mut Ctx<'_>, id: SessionId) {
        if self.sessions.get(&id).is_some_and(|s| s.a_answered) {
            ctx.media.play(id, Playback::Loop(ctx.prompts.ringback()));
        }
    }

    fn arm(&mut self, id: SessionId, at: Instant) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.media_generation += 1;
            let generation = session.media_generation;
            self.timers
                .push(Reverse((at, TimerKind::Media, id, generation)));
        }
    }

    /// A prompt has played, or a gather timed out.
    pub(super) fn media_timer(&mut self, ctx: &mut Ctx<'_>, id: SessionId, generation: u64) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.media_generation != generation {
            return;
        }
        match std::mem::take(&mut session.waiting) {
            Waiting::Nothing => {}
            Waiting::PromptEnd { rest } => self.apply(ctx, id, rest),
            waiting @ Waiting::Digits(_) => {
                session.waiting = waiting;
                self.end_gather(ctx, id, GatherEnd::Timeout);
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// A recording ended: the record names its file, or none if there is none (it could
/// not be created).
pub(super) fn note_recording_end(record: &mut CallRecord, end: Option<RecordingEnd>) {
    match end {
        Some(RecordingEnd::File(path)) => record.recording = Some(path.display().to_string()),
        Some(RecordingEnd::NoFile) => record.recording = None,
        None => {}
    }
}
