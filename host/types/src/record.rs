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
