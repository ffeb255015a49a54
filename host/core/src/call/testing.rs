//! Test doubles for the call engine: media that only writes down what it was asked.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::call::SessionId;
use crate::media::{Codec, MediaAllocator, MediaPorts, MediaReport, Playback, RecordingEnd, Side};
use crate::sdp::{SdesKey, SrtpSuite};

/// What the core asked of the media, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Did {
    Answer(Side, Codec),
    Play(String),
    Ringback,
    Silence,
    Record,
    Reserve,
    Switch(Side),
    Release,
    /// A prompt to the device on the reserved ports.
    PromptReserved(String),
    /// A leg encrypted (none: the reserved ports), and whether the party's key came.
    Secure(Option<Side>, bool),
    /// An encrypted leg made plain again.
    Plain(Option<Side>),
    Stream(crate::media::StreamRequest),
}

/// The key the fake media gives the host on a leg: one byte repeated, by leg.
pub(crate) fn host_key(side: Option<Side>) -> SdesKey {
    SdesKey([side.map_or(0xEE, |s| s as u8 + 0xA0); 30])
}

/// The fake media: what it was asked, which legs are encrypted (so that a leg made
/// plain again is written down, and one that always was is not), and how the running
/// recording will end.
#[derive(Clone, Default)]
pub(crate) struct FakeMedia {
    did: Arc<Mutex<Vec<Did>>>,
    /// The encrypted legs: a side, or none for the reserved ports.
    secured: Arc<Mutex<Vec<Option<Side>>>>,
    recording_end: Arc<Mutex<Option<RecordingEnd>>>,
}

impl FakeMedia {
    pub(crate) fn take(&self) -> Vec<Did> {
        std::mem::take(&mut self.did.lock().unwrap())
    }

    /// The next recording's file cannot be created.
    pub(crate) fn fail_recording(&self) {
        *self.recording_end.lock().unwrap() = Some(RecordingEnd::NoFile);
    }
}

impl MediaAllocator for FakeMedia {
    fn open(&mut self, _: SessionId) -> Result<MediaPorts, String> {
        Ok(MediaPorts { a: 20000, b: 20002 })
    }
    fn set_remote(&mut self, _: SessionId, _: Side, _: SocketAddr) {}
    fn reserve_leg(&mut self, _: SessionId) -> Result<u16, String> {
        self.did.lock().unwrap().push(Did::Reserve);
        self.secured.lock().unwrap().retain(|s| s.is_some());
        Ok(20004)
    }
    fn switch_leg(&mut self, _: SessionId, side: Side) -> Result<(), String> {
        // The reserved ports' encryption goes with them to the side.
        let mut secured = self.secured.lock().unwrap();
        let reserved = secured.contains(&None);
        secured.retain(|s| s.is_some() && *s != Some(side));
        if reserved {
            secured.push(Some(side));
        }
        drop(secured);
        self.did.lock().unwrap().push(Did::Switch(side));
        Ok(())
    }
    fn prompt_reserved(
        &mut self,
        _: SessionId,
        _: SocketAddr,
        _: Codec,
        _: Option<u8>,
        prompt: Arc<crate::media::Prompt>,
    ) {
        self.did
            .lock()
            .unwrap()
            .push(Did::PromptReserved(prompt.name.clone()));
    }
    fn bridge_webrtc(
        &mut self,
        _: SessionId,
        _: Option<Side>,
        _: &str,
        _: std::net::IpAddr,
    ) -> Result<crate::media::WebRtcAnswer, String> {
        Err("no WebRTC in the sans-IO tests".into())
    }
    fn offer_webrtc(
        &mut self,
        _: SessionId,
        _: Option<Side>,
        _: std::net::IpAddr,
    ) -> Result<(usize, String), String> {
        Err("no WebRTC in the sans-IO tests".into())
    }
    fn answer_webrtc(&mut self, _: SessionId, _: usize, _: &str) -> Result<String, String> {
        Err("no WebRTC in the sans-IO tests".into())
    }
    fn secure_leg(
        &mut self,
        _: SessionId,
        side: Option<Side>,
        _: SrtpSuite,
        remote: Option<&SdesKey>,
    ) -> Result<SdesKey, String> {
        self.did
            .lock()
            .unwrap()
            .push(Did::Secure(side, remote.is_some()));
        let mut secured = self.secured.lock().unwrap();
        if !secured.contains(&side) {
            secured.push(side);
        }
        Ok(host_key(side))
    }
    fn plain_leg(&mut self, _: SessionId, side: Option<Side>) {
        let mut secured = self.secured.lock().unwrap();
        if let Some(i) = secured.iter().position(|s| *s == side) {
            secured.remove(i);
            self.did.lock().unwrap().push(Did::Plain(side));
        }
    }
    fn release_reserved(&mut self, _: SessionId) {
        self.did.lock().unwrap().push(Did::Release);
    }
    fn watch_keys(&mut self, _: SessionId, _: Side, _: u8, _: Option<&str>) {}
    fn answer(&mut self, _: SessionId, side: Side, codec: Codec) {
        self.did.lock().unwrap().push(Did::Answer(side, codec));
    }
    fn play(&mut self, _: SessionId, playback: Playback) {
        self.did.lock().unwrap().push(match playback {
            Playback::Silence => Did::Silence,
            Playback::Once(p) => Did::Play(p.name.clone()),
            Playback::Loop(_) => Did::Ringback,
        });
    }
    fn start_recording(&mut self, _: SessionId, path: &Path) -> Result<(), String> {
        self.did.lock().unwrap().push(Did::Record);
        let mut end = self.recording_end.lock().unwrap();
        end.get_or_insert_with(|| RecordingEnd::File(path.to_owned()));
        Ok(())
    }
    fn stop_recording(&mut self, _: SessionId) -> Option<RecordingEnd> {
        self.recording_end.lock().unwrap().take()
    }
    fn start_stream(&mut self, _: SessionId, request: crate::media::StreamRequest) {
        self.did.lock().unwrap().push(Did::Stream(request));
    }
    fn close(&mut self, _: SessionId) -> MediaReport {
        MediaReport {
            recording: self.recording_end.lock().unwrap().take(),
            ..MediaReport::default()
        }
    }
}
