//! What the calls report: a record per finished call, a summary per live one.

use serde::Serialize;

use crate::ids::SessionId;
use crate::routing::Disposition;

/// One session's record: written when the call is answered, again as it changes (each
/// flip), and when it ends; a call that never got an answer is written when it ends.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub state: RecordState,
    pub session: SessionId,
    pub location: Option<String>,
    pub caller: String,
    pub dialed: String,
    pub script: Option<String>,
    pub script_hash: Option<String>,
    pub fallback: bool,
    pub started_at: jiff::Timestamp,
    pub answered_at: Option<jiff::Timestamp>,
    /// None while the call is live.
    pub ended_at: Option<jiff::Timestamp>,
    /// When this version of the record was written.
    pub updated_at: jiff::Timestamp,
    /// From arrival to end, in milliseconds (0 while live).
    pub duration_ms: u64,
    pub disposition: Disposition,
    /// Every number the call was forwarded to, in order, with the final status.
    pub legs: Vec<(String, u16)>,
    /// DTMF the caller sent (listen mode observes the business's own menu choices).
    pub digits: String,
    pub tags: Vec<(String, String)>,
    pub end_reason: String,
    /// RTP packets from the caller (relayed or heard by the host), and to the caller
    /// (relayed or the host's own prompts and tones).
    pub rtp_packets_in: u64,
    pub rtp_packets_out: u64,
    /// The session's recording (a stereo WAV: caller left, other side right), if any.
    pub recording: Option<String>,
    /// Every flip requested on the session, in order.
    pub flips: Vec<crate::flip::FlipEvent>,
    /// The SIP Call-IDs of the session's dialogs: the caller's leg first, then every
    /// leg the host set up or a device brought in (forwards, forks, flips), in order —
    /// what to look for in a capture or a carrier's logs.
    pub call_ids: Vec<String>,
    /// The call's audio streams to speech and AI engines.
    pub streams: Vec<StreamRecord>,
    /// What outside systems said of the call while it was live (an engine's intent),
    /// in order; each also set the tag of its name.
    pub events: Vec<CallEvent>,
}

/// Something an outside system said of a live call: `POST /api/calls/{id}/events` with
/// `{"name": "intent", "value": "billing", "confidence": 0.92}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEvent {
    pub at: jiff::Timestamp,
    pub name: String,
    pub value: String,
    pub confidence: Option<f64>,
}

/// The longest event name and value, in bytes.
pub const MAX_EVENT_NAME: usize = 64;
pub const MAX_EVENT_VALUE: usize = 256;
/// The most events one call's record keeps (an engine posting in a loop cannot grow it
/// without end).
pub const MAX_EVENTS_PER_CALL: usize = 100;

impl CallEvent {
    /// What an event must be: a name of letters, digits, `-`, `_` or `.`; a value of at
    /// most [`MAX_EVENT_VALUE`] bytes without control characters; a confidence, if any,
    /// from 0 to 1.
    pub fn check(name: &str, value: &str, confidence: Option<f64>) -> Result<(), String> {
        if name.is_empty()
            || name.len() > MAX_EVENT_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "name: 1 to {MAX_EVENT_NAME} letters, digits, '-', '_' or '.'"
            ));
        }
        if value.len() > MAX_EVENT_VALUE || value.chars().any(char::is_control) {
            return Err(format!(
                "value: at most {MAX_EVENT_VALUE} bytes, no control characters"
            ));
        }
        if confidence.is_some_and(|c| !(0.0..=1.0).contains(&c)) {
            return Err("confidence: from 0 to 1".into());
        }
        Ok(())
    }
}

/// How many calls of a location that started in one hour (UTC) had an intent: the
/// value of their `intent` events (a call with several counts once for each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntentCount {
    pub location: String,
    /// The hour's start, e.g. `2026-12-05T09:00:00Z`.
    pub hour: String,
    pub intent: String,
    pub calls: u64,
}

/// A media stream of a call, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamRecord {
    /// The engine's URL without its query or user info (they may hold a token).
    pub url: String,
    pub tracks: crate::media::Tracks,
    /// Audio frames (20 ms of one track) handed to the stream.
    pub frames: u64,
    /// Frames lost: the stream's queue was full (the engine too slow) or its
    /// connection was down.
    pub dropped: u64,
    /// Bidirectional streams: 20 ms frames of the engine's audio played to the caller.
    pub played: u64,
}

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// The call goes on: the record as it stood at its last update.
    Live,
    Ended,
    /// The host stopped (a crash, `kill -9`, power) while the call was live: found at
    /// the next start, ended at the last sign of life the store had.
    Interrupted,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Live => "live",
            RecordState::Ended => "ended",
            RecordState::Interrupted => "interrupted",
        }
    }
}

/// What the browser phone shows of one of its user's live calls.
#[derive(Debug, Clone, Serialize)]
pub struct UserCall {
    pub session: SessionId,
    /// The other party: the caller, or the number the user dialed.
    pub with: String,
    /// `incoming` (it rang the user) or `outgoing` (one of the user's devices placed it).
    pub direction: &'static str,
    /// The user's device that has the call.
    pub device: String,
    pub answered_at: Option<jiff::Timestamp>,
}

/// What `GET /api/calls` shows of a live call.
#[derive(Debug, Clone, Serialize)]
pub struct CallSummary {
    pub session: SessionId,
    pub location: Option<String>,
    pub caller: String,
    pub dialed: String,
    /// `routing`, `engaged` (the host answered: prompts, menu), `forwarding` or
    /// `connected`.
    pub state: &'static str,
    pub forwarded_to: Option<String>,
    pub started_at: jiff::Timestamp,
    pub answered_at: Option<jiff::Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::CallEvent;

    #[test]
    fn events_are_checked() {
        assert!(CallEvent::check("intent", "billing", Some(0.92)).is_ok());
        assert!(CallEvent::check("sentiment.score", "", None).is_ok());
        for (name, value, confidence) in [
            ("", "x", None),
            ("in tent", "x", None),
            ("intent", "bad\nline", None),
            ("intent", "x", Some(1.5)),
            ("intent", "x", Some(-0.1)),
            ("intent", "x", Some(f64::NAN)),
        ] {
            assert!(
                CallEvent::check(name, value, confidence).is_err(),
                "{name:?} {value:?}"
            );
        }
        assert!(CallEvent::check(&"n".repeat(65), "x", None).is_err());
        assert!(CallEvent::check("intent", &"v".repeat(257), None).is_err());
    }
}
