//! The seam between the call engine and media: what the engine may ask of a call's media
//! ([`MediaAllocator`]), what media tells it back ([`MediaEvent`]), and the audio both
//! speak of — G.711 ([`g711`]) and the prompts ([`prompts`]). The `wasmpbx-media` crate
//! implements the seam with sockets; the engine's tests with a fake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod g711;
pub mod prompts;

pub use g711::Codec;
pub use prompts::{Prompt, Prompts};

use crate::ids::SessionId;
use crate::sip::sdp::{SdesKey, SrtpSuite};

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: u32 = 160;
/// One frame of audio: 20 ms.
pub const FRAME: std::time::Duration = std::time::Duration::from_millis(20);

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The leg the call came in on.
    A,
    /// The leg the host placed.
    B,
}

/// The host's RTP ports for one call (RTCP is each plus one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPorts {
    pub a: u16,
    pub b: u16,
}

/// What the host plays to a caller it answered.
#[derive(Debug, Clone)]
pub enum Playback {
    /// Nothing of its own: the other leg's audio, if any, is relayed.
    Silence,
    /// A prompt from its start, once.
    Once(Arc<Prompt>),
    /// A prompt over and over (ringback) until the other leg's audio arrives.
    Loop(Arc<Prompt>),
}

/// Something a call's media noticed, for the call engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// A key pressed on a side (RFC 4733): the caller's on a leg the host answered, or
    /// the callee's device's.
    Digit {
        session: SessionId,
        side: Side,
        digit: char,
    },
    /// A key pressed on the device on a call's reserved ports (a PIN being entered
    /// before that device takes the call over).
    ReservedDigit { session: SessionId, digit: char },
    /// The device a side was switched to ([`MediaAllocator::switch_leg`]) sent its first
    /// packet: the device it replaced, heard until now, may go.
    Heard { session: SessionId, side: Side },
}

/// Which of a call's audio a media stream carries, by the Twilio Media Streams track
/// names: `inbound` is the caller (side A), `outbound` what the caller hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tracks {
    Inbound,
    Outbound,
    Both,
}

impl Tracks {
    pub fn carries(self, track: Track) -> bool {
        matches!(
            (self, track),
            (Tracks::Both, _)
                | (Tracks::Inbound, Track::Inbound)
                | (Tracks::Outbound, Track::Outbound)
        )
    }

    /// The names `start.tracks` lists.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Tracks::Inbound => &["inbound"],
            Tracks::Outbound => &["outbound"],
            Tracks::Both => &["inbound", "outbound"],
        }
    }
}

/// One track of a call's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// What the caller (side A) says.
    Inbound,
    /// What the caller hears: the other side, and the host's prompts.
    Outbound,
}

impl Track {
    pub fn name(self) -> &'static str {
        match self {
            Track::Inbound => "inbound",
            Track::Outbound => "outbound",
        }
    }
}

/// What the audio an engine sends back on a stream does to what the caller hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineAudio {
    /// Not played: a one-way stream.
    Ignore,
    /// Played over what the caller hears.
    Mix,
    /// Played instead of what the caller hears, while it lasts.
    Replace,
}

/// Stream a call's audio to a WebSocket in the Twilio Media Streams format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// `ws://` or `wss://`.
    pub url: String,
    pub tracks: Tracks,
    /// Bidirectional when not `Ignore`: the engine's `media` is played to the caller.
    pub engine_audio: EngineAudio,
    /// `start.callSid`: the session id, as the admin API names the call.
    pub call_sid: String,
    /// `start.customParameters`: the location, caller and dialled numbers, and any the
    /// script gave.
    pub parameters: Vec<(String, String)>,
}

impl StreamRequest {
    /// Why `url` cannot be a stream's: it must be `ws://` or `wss://` with a host.
    pub fn check_url(url: &str) -> Result<(), String> {
        let rest = url
            .strip_prefix("wss://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| format!("{:?} is not a ws:// or wss:// URL", redacted_url(url)))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{:?} has no host or has spaces", redacted_url(url)));
        }
        Ok(())
    }
}

/// `url` as logs and records may show it: without user info, query or fragment, where
/// engines put their tokens.
pub fn redacted_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or_default();
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// What the call engine needs of media.
pub trait MediaAllocator: Send {
    /// Bind a call's ports.
    fn open(&mut self, session: SessionId) -> Result<MediaPorts, String>;
    /// The address a side's SDP announced (until its packets show the real one).
    fn set_remote(&mut self, session: SessionId, side: Side, rtp: SocketAddr);
    /// Bind ports for a device that may take over a side (a flip); the RTP port. They
    /// are unused until [`Self::switch_leg`]; reserving again replaces them.
    fn reserve_leg(&mut self, session: SessionId) -> Result<u16, String>;
    /// Play `prompt` (once, from its start) to the device on the reserved ports — at
    /// `remote` until its packets show where it really is — and report its RFC 4733 keys
    /// (payload type `event_pt`) as [`MediaEvent::ReservedDigit`]. Until the ports are
    /// switched to, nothing of the call reaches that device and nothing of it the call.
    fn prompt_reserved(
        &mut self,
        session: SessionId,
        remote: SocketAddr,
        codec: Codec,
        event_pt: Option<u8>,
        prompt: Arc<Prompt>,
    );
    /// A browser on `side` (none: on the reserved ports, a browser taking the call
    /// over): terminate its WebRTC (`offer`, answered with the host's candidate at
    /// `public_ip`) and bridge its audio to that port as plain RTP. The browser's SDP
    /// answer and, for the call, the browser as a plain RTP offer.
    fn bridge_webrtc(
        &mut self,
        session: SessionId,
        side: Option<Side>,
        offer: &str,
        public_ip: std::net::IpAddr,
    ) -> Result<WebRtcAnswer, String>;
    /// Offer WebRTC to a browser the host calls, for `side` (none: the reserved ports):
    /// the bridge's number and the SDP offer.
    fn offer_webrtc(
        &mut self,
        session: SessionId,
        side: Option<Side>,
        public_ip: std::net::IpAddr,
    ) -> Result<(usize, String), String>;
    /// The browser answered bridge `bridge`'s offer: the browser as a plain RTP answer.
    fn answer_webrtc(
        &mut self,
        session: SessionId,
        bridge: usize,
        answer: &str,
    ) -> Result<String, String>;
    /// Encrypt a leg (`side`; none: the reserved ports) with SDES-SRTP in `suite`. The
    /// host's key for the leg is returned for its SDP: made on the first ask (or when the
    /// suite changes) and the same after; everything the host sends the leg is
    /// encrypted with it. What arrives is decrypted with `remote`, the party's key, once
    /// given; packets that fail authentication are dropped and counted.
    fn secure_leg(
        &mut self,
        session: SessionId,
        side: Option<Side>,
        suite: SrtpSuite,
        remote: Option<&SdesKey>,
    ) -> Result<SdesKey, String>;
    /// The leg (`side`; none: the reserved ports) is plain RTP: nothing sent there is
    /// encrypted, nothing arriving decrypted (a leg placed again without SRTP after an
    /// attempt with it).
    fn plain_leg(&mut self, session: SessionId, side: Option<Side>);
    /// Let the reserved ports go (the device on them did not take the call).
    fn release_reserved(&mut self, session: SessionId);
    /// Move a side onto the reserved ports: the other side's stream goes on unchanged.
    /// Make before break: the old device's audio still reaches the other side (in the
    /// same stream) until the new device's first packet — reported as
    /// [`MediaEvent::Heard`] — or for a second at most.
    fn switch_leg(&mut self, session: SessionId, side: Side) -> Result<(), String>;
    /// Watch a side's RTP for RFC 4733 telephone-events of this payload type: each key
    /// goes into the call's record (side A) and is reported as [`MediaEvent::Digit`] when
    /// someone listens — the side has a user's device (`swallow`, the push code, is then
    /// kept from the other side) or the host answered it.
    fn watch_keys(
        &mut self,
        session: SessionId,
        side: Side,
        payload_type: u8,
        swallow: Option<&str>,
    );
    /// The host answers `side` in `codec` (the caller, or a connected far end while its
    /// other side is away): from now on it can send that side its own frames — in the
    /// stream it already hears, if any.
    fn answer(&mut self, session: SessionId, side: Side, codec: Codec);
    /// What to play to the caller now (replacing whatever was playing).
    fn play(&mut self, session: SessionId, playback: Playback);
    /// Start recording the call to `path`. Files are created and written off the call's
    /// path: one that cannot be is logged there, and the call goes on.
    fn start_recording(&mut self, session: SessionId, path: &Path) -> Result<(), String>;
    /// Stop recording; how the recording ended, if one was running.
    fn stop_recording(&mut self, session: SessionId) -> Option<RecordingEnd>;
    /// Stream the call's audio (from now until it ends) to a WebSocket. Never at the
    /// call's expense: a stream that cannot keep up or connect loses frames, not audio.
    fn start_stream(&mut self, session: SessionId, request: StreamRequest);
    /// Release the call's ports (finishing any recording, ending any stream).
    fn close(&mut self, session: SessionId) -> MediaReport;
}

/// A browser's offer, answered by a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRtcAnswer {
    /// The SDP answer for the browser.
    pub answer: String,
    /// The browser as the call sees it: a plain RTP offer at the bridge.
    pub plain_offer: String,
}

/// How a call's recording ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingEnd {
    /// In its file, which has its name once the writer has finished it (moments later:
    /// `NAME.part` until then).
    File(PathBuf),
    /// With no file: it could not be created (said in the log).
    NoFile,
}

/// What a call's media did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaReport {
    /// RTP packets from A (relayed or heard by the host), and sent to A.
    pub packets: (u64, u64),
    /// The DTMF digits side A sent as RFC 4733 telephone-events.
    pub digits: String,
    /// The recording finished at close, if one was running.
    pub recording: Option<RecordingEnd>,
    /// The call's media streams.
    pub streams: Vec<crate::record::StreamRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_urls_are_checked_and_shown_without_their_secrets() {
        assert!(StreamRequest::check_url("wss://engine.example/stream?token=x").is_ok());
        assert!(StreamRequest::check_url("ws://127.0.0.1:9000").is_ok());
        for bad in [
            "http://engine.example/",
            "wss://",
            "wss:///path",
            "ws://a b/",
            "engine",
        ] {
            assert!(StreamRequest::check_url(bad).is_err(), "{bad}");
        }
        let err = StreamRequest::check_url("https://user:secret@e.example/?token=t").unwrap_err();
        assert!(!err.contains("secret") && !err.contains("token"), "{err}");
        assert_eq!(
            redacted_url("wss://user:pw@engine.example:443/ai/stream?token=abc#x"),
            "wss://engine.example:443/ai/stream"
        );
        assert_eq!(redacted_url("ws://127.0.0.1:9000"), "ws://127.0.0.1:9000");
    }
}
