//! What the call engine and a routing script say to each other, in the host's own types.
//!
//! The script module converts between these and the WIT bindings, validating every
//! action on the way in, so the call engine only ever sees actions that make sense.
//! Call logic never touches wasmtime: tests route with a closure.

use std::sync::Arc;

use serde::Serialize;

use crate::config::Location;
use crate::media::{EngineAudio, Prompt, StreamRequest, Tracks};

/// The longest action list a script may return for one event.
pub const MAX_ACTIONS: usize = 64;
/// The most tags a call may carry.
pub const MAX_TAGS: usize = 64;
/// Ring timeout of the fallback forward.
pub const FALLBACK_RING_TIMEOUT_MS: u32 = 60_000;
/// The longest text `say` speaks; longer text is cut at a word.
pub const MAX_SAY_CHARS: usize = 1000;
/// The most media streams one call may have.
pub const MAX_STREAMS_PER_CALL: usize = 4;
/// The most custom parameters a `media-stream` action may give.
pub const MAX_STREAM_PARAMETERS: usize = 16;

/// Where a call came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Origin {
    Trunk { name: String },
    Device { user_id: String, device: String },
}

/// What the script sees of a call.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CallInfo {
    pub call_id: String,
    pub location: Option<String>,
    pub caller: String,
    pub caller_name: Option<String>,
    pub dialed: String,
    pub origin: Origin,
    pub started_at: jiff::Timestamp,
    pub tags: Vec<(String, String)>,
}

impl CallInfo {
    /// Apply a `set-tag`.
    pub fn set_tag(&mut self, name: &str, value: &str) {
        set_tag(&mut self.tags, name, value);
    }
}

/// A `set-tag` on a call's tags: replace the value of an existing tag, else append —
/// up to [`MAX_TAGS`]; a new tag past them is dropped (a script tagging at every event
/// of a long call would otherwise grow its record without end).
pub fn set_tag(tags: &mut Vec<(String, String)>, name: &str, value: &str) {
    let room = tags.len() < MAX_TAGS;
    match tags.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value.to_owned(),
        None if room => tags.push((name.to_owned(), value.to_owned())),
        None => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatherEnd {
    MaxDigits,
    Terminator,
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    Answered,
    Abandoned,
    Failed,
}

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum Event {
    Incoming,
    DigitsGathered {
        digits: String,
        ended_by: GatherEnd,
    },
    ForwardFailed {
        target: ForwardTarget,
        status: u16,
        reason: String,
    },
    CallEnded {
        disposition: Disposition,
        duration_ms: u64,
    },
    /// An outside system's word on the call (an engine's intent).
    External {
        name: String,
        value: String,
        confidence: Option<f64>,
    },
}

/// Where a forward goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum ForwardTarget {
    /// A number dialled through a trunk.
    Number(String),
    /// All registered devices of a user.
    User(String),
    /// The location's fallback number.
    Fallback,
}

/// Text to speak, and its audio once the host has rendered it (before the action
/// reaches a call: rendering is never done on the call engine's task).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Speech {
    pub text: String,
    pub voice: Option<String>,
    #[serde(skip)]
    pub audio: Rendered,
}

impl Speech {
    pub fn new(text: impl Into<String>, voice: Option<String>) -> Self {
        Self {
            text: text.into(),
            voice,
            audio: Rendered::default(),
        }
    }

    fn validate(&self, action: &str) -> Result<(), String> {
        if self.text.trim().is_empty() {
            return Err(format!("{action}: the text to say is empty"));
        }
        if let Some(voice) = &self.voice
            && !is_voice_name(voice)
        {
            return Err(format!("{action}: voice {voice:?} is not a voice name"));
        }
        Ok(())
    }
}

/// A text-to-speech voice's name, e.g. "en-us" or "en+f3": never an option of the
/// engine's command line.
pub fn is_voice_name(voice: &str) -> bool {
    (1..=64).contains(&voice.len())
        && voice.starts_with(|c: char| c.is_ascii_alphanumeric())
        && voice
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+'))
}

/// Rendered speech: 8 kHz audio ready to play, or none yet (or it could not be made).
#[derive(Clone, Default)]
pub struct Rendered(pub Option<Arc<Prompt>>);

impl PartialEq for Rendered {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for Rendered {}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(audio) => write!(f, "Rendered({:?})", audio.duration()),
            None => f.write_str("Rendered(none)"),
        }
    }
}

/// A `media-stream` action: the call's audio to an engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaStream {
    /// Shown without the tokens URLs carry.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    pub tracks: Tracks,
    pub parameters: Vec<(String, String)>,
    pub engine_audio: EngineAudio,
}

/// One validated action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    Forward {
        target: ForwardTarget,
        trunk: Option<String>,
        ring_timeout_ms: u32,
        caller_id: Option<String>,
    },
    Answer,
    Play {
        prompt: String,
    },
    Say(Speech),
    Gather {
        max_digits: u8,
        /// For the first digit, from the end of the prompt.
        timeout_ms: u32,
        /// For each further digit.
        inter_digit_timeout_ms: u32,
        terminator: Option<char>,
        prompt: Option<String>,
        /// Spoken instead of a prompt.
        say: Option<Speech>,
    },
    Recording {
        on: bool,
    },
    MediaStream(MediaStream),
    SetTag {
        name: String,
        value: String,
    },
    Reject {
        status: u16,
        reason: Option<String>,
    },
    Hangup,
}

impl Action {
    /// Whether the action ends the list: the host waits for its outcome.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Action::Forward { .. } | Action::Gather { .. } | Action::Reject { .. } | Action::Hangup
        )
    }

    /// Whether the action steers the call — what the caller hears or where the call
    /// goes — rather than only noting or observing it (`set-tag`, `answer`,
    /// `recording`, `media-stream`). An external event's list takes over a call that
    /// is playing or gathering only when it steers.
    pub fn takes_over(&self) -> bool {
        !matches!(
            self,
            Action::SetTag { .. }
                | Action::Answer
                | Action::Recording { .. }
                | Action::MediaStream(_)
        )
    }

    /// Check one action's own fields; the message names the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Action::Forward {
                target,
                trunk,
                ring_timeout_ms,
                caller_id,
            } => {
                match target {
                    ForwardTarget::Number(n) if !is_dialable(n) => {
                        return Err(format!(
                            "forward: number {n:?} is not dialable (digits, +, *, #; 1 to 64)"
                        ));
                    }
                    ForwardTarget::User(u) if u.is_empty() || u.len() > 64 => {
                        return Err(format!("forward: user id {u:?} is empty or too long"));
                    }
                    _ => {}
                }
                if !(1_000..=600_000).contains(ring_timeout_ms) {
                    return Err(format!(
                        "forward: ring-timeout-ms {ring_timeout_ms} is out of range (1000 to 600000)"
                    ));
                }
                if trunk.as_ref().is_some_and(|t| t.is_empty()) {
                    return Err("forward: trunk name is empty".into());
                }
                if let Some(id) = caller_id
                    && !is_dialable(id)
                {
                    return Err(format!("forward: caller-id {id:?} is not a number"));
                }
            }
            Action::Play { prompt } => check_prompt("play", prompt)?,
            Action::Say(speech) => speech.validate("say")?,
            Action::MediaStream(MediaStream {
                url, parameters, ..
            }) => {
                StreamRequest::check_url(url).map_err(|e| format!("media-stream: {e}"))?;
                if parameters.len() > MAX_STREAM_PARAMETERS {
                    return Err(format!(
                        "media-stream: {} parameters (at most {MAX_STREAM_PARAMETERS})",
                        parameters.len()
                    ));
                }
                if let Some((name, _)) = parameters
                    .iter()
                    .find(|(n, v)| n.is_empty() || n.len() > 64 || v.len() > 256)
                {
                    return Err(format!(
                        "media-stream: parameter {name:?} must be named in 1 to 64 bytes, its value at most 256"
                    ));
                }
            }
            Action::Gather {
                max_digits,
                timeout_ms,
                inter_digit_timeout_ms,
                prompt,
                say,
                ..
            } => {
                if !(1..=32).contains(max_digits) {
                    return Err(format!(
                        "gather: max-digits {max_digits} is out of range (1 to 32)"
                    ));
                }
                if !(100..=60_000).contains(timeout_ms) {
                    return Err(format!(
                        "gather: timeout-ms {timeout_ms} is out of range (100 to 60000)"
                    ));
                }
                if !(100..=60_000).contains(inter_digit_timeout_ms) {
                    return Err(format!(
                        "gather: inter-digit-timeout-ms {inter_digit_timeout_ms} is out of range (100 to 60000)"
                    ));
                }
                if let Some(p) = prompt {
                    check_prompt("gather", p)?;
                }
                if let Some(speech) = say {
                    if prompt.is_some() {
                        return Err("gather: give a prompt or text to say, not both".into());
                    }
                    speech.validate("gather")?;
                }
            }
            Action::SetTag { name, value } => {
                if name.is_empty() || name.len() > 64 || value.len() > 1024 {
                    return Err(format!(
                        "set-tag: name {name:?} must be 1 to 64 bytes and its value at most 1024"
                    ));
                }
            }
            Action::Reject { status, .. } => {
                if !(400..=699).contains(status) {
                    return Err(format!(
                        "reject: status {status} is not a SIP failure status (400 to 699)"
                    ));
                }
            }
            Action::Answer | Action::Recording { .. } | Action::Hangup => {}
        }
        Ok(())
    }
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::media::redacted_url(url))
}

fn check_prompt(action: &str, prompt: &str) -> Result<(), String> {
    let ok = !prompt.is_empty()
        && prompt.len() <= 64
        && prompt
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{action}: prompt name {prompt:?} is not a prompt name"
        ))
    }
}

/// A number a trunk can dial: digits with an optional leading `+`, or a feature code.
pub fn is_dialable(number: &str) -> bool {
    (1..=64).contains(&number.len())
        && number
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || c == '*' || c == '#' || (c == '+' && i == 0))
}

/// Check a whole action list returned for `event`.
pub fn validate_actions(event: &Event, actions: &[Action]) -> Result<(), String> {
    if actions.len() > MAX_ACTIONS {
        return Err(format!(
            "returned {} actions (at most {MAX_ACTIONS})",
            actions.len()
        ));
    }
    if matches!(event, Event::CallEnded { .. }) {
        // Only tags count after the end; anything else is ignored, not an error. The
        // tags go into the call's record, so they are checked like any.
        for (i, action) in actions.iter().enumerate() {
            if let Action::SetTag { .. } = action {
                action
                    .validate()
                    .map_err(|e| format!("action {}: {e}", i + 1))?;
            }
        }
        return Ok(());
    }
    if actions.is_empty() && !matches!(event, Event::External { .. }) {
        return Err("returned no action: every event but call-ended and external needs one".into());
    }
    for (i, action) in actions.iter().enumerate() {
        action
            .validate()
            .map_err(|e| format!("action {}: {e}", i + 1))?;
        if action.is_terminal() && i + 1 < actions.len() {
            return Err(format!(
                "action {}: nothing may follow a {} (it ends the list)",
                i + 2,
                action.name()
            ));
        }
    }
    Ok(())
}

impl Action {
    /// The WIT name of the action, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Forward { .. } => "forward",
            Action::Answer => "answer",
            Action::Play { .. } => "play",
            Action::Say(_) => "say",
            Action::Gather { .. } => "gather",
            Action::Recording { .. } => "recording",
            Action::MediaStream(_) => "media-stream",
            Action::SetTag { .. } => "set-tag",
            Action::Reject { .. } => "reject",
            Action::Hangup => "hangup",
        }
    }
}

/// The script version that made a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptRef {
    pub name: String,
    pub hash: String,
}

/// Why the host routed a call by itself instead of following its script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fallback {
    /// A short machine-readable cause: `missing`, `no-export`, `deadline`, `memory`,
    /// `trap`, `invalid-action` — or `host`, the host's own code failing around it.
    pub cause: &'static str,
    /// One line for people.
    pub message: String,
}

/// The outcome of routing one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub script: Option<ScriptRef>,
    /// Set when the actions are the host's fallback, not the script's.
    pub fallback: Option<Fallback>,
}

impl Decision {
    /// The host's decision for `event` of a call whose script failed: the fallback's
    /// actions — none for the end of a call or an external event, which have nothing to
    /// fall back from (the call is over, or goes on as it was).
    pub fn fallback(
        event: &Event,
        location: Option<&Location>,
        script: Option<ScriptRef>,
        fallback: Fallback,
    ) -> Self {
        let actions = match event {
            Event::CallEnded { .. } | Event::External { .. } => Vec::new(),
            _ => fallback_actions(location),
        };
        Decision {
            actions,
            script,
            fallback: Some(fallback),
        }
    }
}

/// The host's fallback for a call whose script failed: a listen-mode forward to the
/// location's `fallback_number`; without a location there is nowhere safe to send the
/// call, so it is refused with 503.
pub fn fallback_actions(location: Option<&Location>) -> Vec<Action> {
    match location {
        Some(location) => vec![
            Action::SetTag {
                name: "fallback".into(),
                value: "true".into(),
            },
            Action::Forward {
                target: ForwardTarget::Number(location.fallback_number.clone()),
                trunk: location.trunk.clone(),
                ring_timeout_ms: FALLBACK_RING_TIMEOUT_MS,
                caller_id: None,
            },
        ],
        None => vec![Action::Reject {
            status: 503,
            reason: Some("Routing Unavailable".into()),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(number: &str) -> Action {
        Action::Forward {
            target: ForwardTarget::Number(number.into()),
            trunk: None,
            ring_timeout_ms: 30_000,
            caller_id: None,
        }
    }

    #[test]
    fn nonsense_actions_are_refused_with_the_field_named() {
        let err = validate_actions(&Event::Incoming, &[forward("")]).unwrap_err();
        assert!(err.contains("forward: number \"\""), "{err}");
        let gather = Action::Gather {
            max_digits: 0,
            timeout_ms: 5000,
            inter_digit_timeout_ms: 5000,
            terminator: None,
            prompt: None,
            say: None,
        };
        let err = validate_actions(&Event::Incoming, &[gather]).unwrap_err();
        assert!(err.contains("max-digits 0"), "{err}");
        let gather = Action::Gather {
            max_digits: 4,
            timeout_ms: 5000,
            inter_digit_timeout_ms: 10,
            terminator: Some('#'),
            prompt: None,
            say: None,
        };
        let err = validate_actions(&Event::Incoming, &[gather]).unwrap_err();
        assert!(err.contains("inter-digit-timeout-ms 10"), "{err}");
        let err = validate_actions(&Event::Incoming, &[]).unwrap_err();
        assert!(err.contains("no action"), "{err}");
        let err =
            validate_actions(&Event::Incoming, &[Action::Hangup, Action::Answer]).unwrap_err();
        assert!(
            err.contains("action 2: nothing may follow a hangup"),
            "{err}"
        );
        let err = validate_actions(
            &Event::Incoming,
            &[Action::Reject {
                status: 200,
                reason: None,
            }],
        )
        .unwrap_err();
        assert!(err.contains("status 200"), "{err}");
        let err = validate_actions(
            &Event::Incoming,
            &[Action::Play {
                prompt: "../etc/passwd".into(),
            }],
        )
        .unwrap_err();
        assert!(err.contains("prompt name"), "{err}");
    }

    #[test]
    fn sensible_lists_pass_and_call_ended_needs_nothing() {
        let list = [
            Action::Answer,
            Action::Play {
                prompt: "welcome".into(),
            },
            forward("+61290000050"),
        ];
        validate_actions(&Event::Incoming, &list).unwrap();
        validate_actions(
            &Event::CallEnded {
                disposition: Disposition::Answered,
                duration_ms: 1,
            },
            &[],
        )
        .unwrap();
    }

    #[test]
    fn dialable_numbers() {
        assert!(is_dialable("+61290000001"));
        assert!(is_dialable("*77"));
        assert!(!is_dialable("61+2"));
        assert!(!is_dialable("sip:evil@example.com"));
        assert!(!is_dialable(&"1".repeat(65)));
    }

    #[test]
    fn tags_replace_by_name() {
        let mut call = CallInfo {
            call_id: "c".into(),
            location: None,
            caller: "1".into(),
            caller_name: None,
            dialed: "2".into(),
            origin: Origin::Trunk {
                name: "pstn".into(),
            },
            started_at: jiff::Timestamp::UNIX_EPOCH,
            tags: vec![],
        };
        call.set_tag("a", "1");
        call.set_tag("b", "2");
        call.set_tag("a", "3");
        assert_eq!(
            call.tags,
            vec![("a".into(), "3".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn tags_set_at_the_end_are_checked_and_a_call_keeps_at_most_max_tags() {
        let ended = Event::CallEnded {
            disposition: Disposition::Answered,
            duration_ms: 1,
        };
        let tag = |name: &str, value: &str| Action::SetTag {
            name: name.into(),
            value: value.into(),
        };
        assert!(
            validate_actions(&ended, &[tag("", "x")]).is_err(),
            "no name"
        );
        assert!(validate_actions(&ended, &[tag("n", &"x".repeat(1025))]).is_err());
        // What else a script returns at the end is ignored, not an error.
        assert!(validate_actions(&ended, &[tag("n", "v"), Action::Hangup]).is_ok());

        let mut tags = Vec::new();
        for n in 0..MAX_TAGS + 10 {
            set_tag(&mut tags, &format!("t{n}"), "v");
        }
        assert_eq!(tags.len(), MAX_TAGS);
        set_tag(&mut tags, "t0", "changed");
        assert_eq!(
            tags[0],
            ("t0".into(), "changed".into()),
            "a tag held still changes"
        );
    }
}
