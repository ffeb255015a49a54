//! A call's media state and what it does with each packet, free of sockets and tasks:
//! the relay's tasks ([`super::relay`]) hand it what arrives and send what it returns, so
//! every per-packet decision — latching, renumbering, keys, the push code held back,
//! prompts over the other side's audio, recording — is tested here with made-up packets
//! and a fake clock.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::playout::{self, Playout};
use super::recorder::{Channel, Recorder};
use super::rtp::{self, DtmfWatch, KeyFilter, OutStream};
use super::srtp::{LegSrtp, Refused};
use super::stream::Tap;
use super::{Codec, EngineAudio, FRAME_SAMPLES, Playback, Side, Track, g711};

/// While the other side's audio reached the caller this recently, an engine's audio
/// rides on it rather than on frames of the host's own.
const OTHER_SIDE_TALKING: Duration = Duration::from_millis(100);

/// Where each side's packets go.
#[derive(Debug, Default)]
pub(crate) struct Remotes {
    pub(crate) rtp: [Option<SocketAddr>; 2],
    pub(crate) rtcp: [Option<SocketAddr>; 2],
    pub(crate) latches: [Latch; 2],
}

/// How long a latched device must have been silent before another source may take its
/// place (a NAT's new mapping, a phone on a new network).
pub(crate) const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// Which source a device's packets are taken from. The first RTP packet latches; after
/// that only that source is heard, unless it has been silent [`RELATCH_AFTER`] and the
/// newcomer sends RTP — so a third party sending to the port can take over neither the
/// audio nor the keys.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Latch {
    latched: bool,
    /// When the latched source was last heard.
    heard_at: Option<Instant>,
}

impl Latch {
    pub(crate) fn is_latched(&self) -> bool {
        self.latched
    }

    /// Whether a packet from `source` is the device's, whose address is `remote`
    /// (signalled, or latched before). If it is, the device is at `source` from now on.
    pub(crate) fn admit(
        &mut self,
        remote: Option<SocketAddr>,
        source: SocketAddr,
        packet: &[u8],
        now: Instant,
    ) -> bool {
        if !(self.latched && remote == Some(source)) {
            let speaking = self.latched
                && self
                    .heard_at
                    .is_some_and(|at| now.saturating_duration_since(at) < RELATCH_AFTER);
            if speaking || rtp::parse(packet).is_none() {
                return false;
            }
            self.latched = true;
        }
        self.heard_at = Some(now);
        true
    }
}

impl Remotes {
    /// Whether a packet from `source` is side `i`'s device, latching there if so.
    fn latch(&mut self, i: usize, source: SocketAddr, packet: &[u8], now: Instant) -> bool {
        let admitted = self.latches[i].admit(self.rtp[i], source, packet, now);
        if admitted {
            self.rtp[i] = Some(source);
        }
        admitted
    }

    /// Side `i` has a new device (a flip): the old one's addresses are forgotten, and
    /// the new one latches on its first packet.
    fn forget(&mut self, i: usize) {
        self.rtp[i] = None;
        self.rtcp[i] = None;
        self.latches[i] = Latch::default();
    }

    /// Whether an RTCP packet from `source` is side `i`'s device's: from the address
    /// its RTP latched to, once it has.
    fn rtcp_from(&self, i: usize, source: SocketAddr) -> bool {
        !self.latches[i].is_latched() || self.rtp[i].is_some_and(|rtp| rtp.ip() == source.ip())
    }
}

/// The host as one side's media endpoint: the caller it answered (side A), or a far end
/// whose other side is away during a flip.
pub(crate) struct Endpoint {
    pub(crate) side: Side,
    pub(crate) codec: Codec,
    pub(crate) playback: Playback,
    /// The next frame of the playing prompt.
    pub(crate) position: usize,
}

/// A call's media state, shared by its tasks.
/// The rarely used parts (SRTP, a recording, a retiring device) are boxed: a call
/// without them carries a pointer each, not their size.
pub(crate) struct CallPackets {
    pub(crate) remotes: Remotes,
    /// The stream each side hears: the other side's packets, renumbered into one stream
    /// whichever device sends them (a flip), and the host's own frames on a side it
    /// answered.
    pub(crate) out: [OutStream; 2],
    /// The keys each side sends.
    pub(crate) dtmf: [DtmfWatch; 2],
    /// On a side with a user's device: holds back the push code's events from the other.
    pub(crate) keys_filter: [Option<KeyFilter>; 2],
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) recorder: Option<Box<Recorder>>,
    /// The call's media streams (to speech and AI engines).
    pub(crate) taps: Vec<Tap>,
    /// The RTP timestamp of the last key pressed by the device on the reserved ports (a
    /// PIN): RFC 4733 repeats an event's end packets, and those still arriving once that
    /// device has the call are not the call's.
    pub(crate) stale_key: Option<u32>,
    /// The side last moved onto reserved ports.
    pub(crate) switched: Option<Side>,
    /// A bidirectional stream's engine, speaking to the caller.
    pub(crate) engine: Option<EngineFeed>,
    /// When the other side's audio last went to the caller.
    pub(crate) b_to_a_at: Option<Instant>,
    /// Each side's SRTP, if its leg is encrypted: what arrives is decrypted before
    /// anything else looks at it, what leaves is encrypted last.
    pub(crate) srtp: [Option<Box<LegSrtp>>; 2],
    /// The SRTP of the device on the reserved ports, which goes with them to a side.
    pub(crate) reserved_srtp: Option<Box<LegSrtp>>,
    /// The device a side was just switched away from, still heard until the new one
    /// is (make before break: a browser's first packet comes only after ICE and DTLS).
    pub(crate) retiring: Option<Box<Retiring>>,
}

/// A device whose side has moved to another device that has not sent anything yet.
pub(crate) struct Retiring {
    pub(crate) side: Side,
    /// Its leg's SRTP, if it was encrypted.
    pub(crate) srtp: Option<Box<LegSrtp>>,
    /// Until when it is heard at most (the new device may never send).
    pub(crate) until: Instant,
}

/// What an engine says to the caller, and how it meets what the caller hears.
pub(crate) struct EngineFeed {
    pub(crate) mode: EngineAudio,
    pub(crate) playout: Arc<Mutex<Playout>>,
}

impl EngineFeed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Playout> {
        // A playout is left whole by every method: a panic elsewhere cannot break it.
        self.playout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine's audio over (or instead of) `heard`, a G.711 payload in `codec`;
    /// none if the engine has nothing to say.
    fn over(&self, codec: Codec, heard: Option<&[u8]>, len: usize) -> Option<Vec<u8>> {
        let engine = self.lock().take(codec, len)?;
        Some(match (self.mode, heard) {
            (EngineAudio::Mix, Some(heard)) => {
                let mut mixed = heard.to_vec();
                playout::mix(codec, &mut mixed, &engine);
                mixed
            }
            _ => engine,
        })
    }
}

/// What to do with a packet that arrived: send `packets` to `to` (none: no address known
/// yet), and tell the call engine about `digit`, and that the device a side was switched
/// to is `heard` (its first packet). `rejected`: it came on an encrypted leg and failed
/// authentication (or was a replay): dropped, for `/metrics` to count.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Relay {
    pub(crate) to: Option<SocketAddr>,
    pub(crate) packets: Vec<Vec<u8>>,
    pub(crate) digit: Option<char>,
    pub(crate) heard: bool,
    pub(crate) rejected: bool,
}

/// `packet` as it arrived on a leg with `srtp`: decrypted, or why it is dropped.
fn arrived(
    srtp: Option<&mut LegSrtp>,
    packet: &[u8],
    rtcp: bool,
) -> Result<Option<Vec<u8>>, Refused> {
    match srtp {
        None => Ok(None),
        Some(leg) if rtcp => leg.decrypt_rtcp(packet).map(Some),
        Some(leg) => leg.decrypt_rtp(packet).map(Some),
    }
}

/// A relay of nothing: `refused` says whether to count it.
fn dropped(refused: Refused) -> Relay {
    Relay {
        rejected: refused == Refused::Rejected,
        ..Relay::default()
    }
}

/// The host's next 20 ms towards the side it answered.
#[derive(Debug, PartialEq)]
pub(crate) enum HostFrame {
    /// The host is no side's endpoint (any more): its sender stops.
    Stopped,
    /// Nothing plays: the sender sleeps until something does.
    Silent,
    /// A frame of the playing prompt, for `to` (none: no address known yet).
    Frame {
        packet: Vec<u8>,
        to: Option<SocketAddr>,
    },
}

impl CallPackets {
    pub(crate) fn new() -> Self {
        Self {
            remotes: Remotes::default(),
            out: [OutStream::adopting(), OutStream::adopting()],
            dtmf: [DtmfWatch::default(), DtmfWatch::default()],
            keys_filter: [None, None],
            endpoint: None,
            recorder: None,
            taps: Vec::new(),
            stale_key: None,
            switched: None,
            engine: None,
            b_to_a_at: None,
            srtp: [None, None],
            reserved_srtp: None,
            retiring: None,
        }
    }

    /// The reserved ports take `side` over (a flip): the new device's keys come with
    /// them, the old device is still heard until the new one is (or `until`), and its
    /// addresses are forgotten.
    pub(crate) fn switch(&mut self, side: Side, until: Instant) {
        let i = side as usize;
        self.switched = Some(side);
        let new_srtp = self.reserved_srtp.take();
        let old_srtp = std::mem::replace(&mut self.srtp[i], new_srtp);
        self.retiring = Some(Box::new(Retiring {
            side,
            srtp: old_srtp,
            until,
        }));
        self.remotes.forget(i);
    }

    /// An RTP packet from `from`, sent from `source`: decrypted if that side's leg is
    /// encrypted (and dropped if it fails), that side latches there; its key is noticed,
    /// its audio recorded (the caller's), and what of it the other side hears goes on in
    /// that side's stream — encrypted if that side's leg is.
    pub(crate) fn rtp_in(
        &mut self,
        from: Side,
        source: SocketAddr,
        packet: &[u8],
        now: Instant,
    ) -> Relay {
        let (i, to) = (from as usize, 1 - from as usize);
        let decrypted = match arrived(self.srtp[i].as_deref_mut(), packet, false) {
            Ok(decrypted) => decrypted,
            Err(refused) => return dropped(refused),
        };
        let packet = decrypted.as_deref().unwrap_or(packet);
        // The new device is heard: the one it replaced no longer is.
        let heard = self.retiring.as_ref().is_some_and(|r| r.side == from);
        if heard {
            self.retiring = None;
        }
        let mut relay = self.plain_rtp_in(from, source, packet, now);
        relay.heard = heard;
        if from == Side::B && relay.to.is_some() {
            for packet in &relay.packets {
                self.heard_by_a(packet, now);
            }
        }
        if let Some(leg) = self.srtp[to].as_mut() {
            relay.packets = relay
                .packets
                .iter()
                .filter_map(|p| leg.encrypt_rtp(p))
                .collect();
        }
        relay
    }

    /// An RTP packet from the device a side was switched away from: while the new
    /// device has sent nothing (and not after [`Retiring::until`]) its audio goes on to
    /// the other side in the same stream; it is never latched to, and its keys are not
    /// listened to. `None` once it is no longer heard: its task ends.
    pub(crate) fn retiring_rtp_in(&mut self, packet: &[u8], now: Instant) -> Option<Relay> {
        let retiring = self.retiring.as_mut()?;
        if now >= retiring.until {
            self.retiring = None;
            return None;
        }
        let (from, to) = (retiring.side, 1 - retiring.side as usize);
        let decrypted = match arrived(retiring.srtp.as_deref_mut(), packet, false) {
            Ok(decrypted) => decrypted,
            Err(refused) => return Some(dropped(refused)),
        };
        let packet = decrypted.as_deref().unwrap_or(packet);
        // The device leaving may still be sending the keys that moved the call (the end
        // of the push code): none of its keys reach the other side.
        if self.keys_filter[from as usize]
            .as_ref()
            .is_some_and(|filter| filter.is_key(packet))
        {
            self.out[to].close_up();
            return Some(Relay::default());
        }
        let mut packets: Vec<Vec<u8>> = self.out[to].relay(packet, now).into_iter().collect();
        if from == Side::B {
            for packet in &packets {
                self.heard_by_a(packet, now);
            }
        }
        if let Some(leg) = self.srtp[to].as_mut() {
            packets = packets.iter().filter_map(|p| leg.encrypt_rtp(p)).collect();
        }
        Some(Relay {
            to: self.remotes.rtp[to],
            packets,
            ..Relay::default()
        })
    }

    fn plain_rtp_in(
        &mut self,
        from: Side,
        source: SocketAddr,
        packet: &[u8],
        now: Instant,
    ) -> Relay {
        let (i, to) = (from as usize, 1 - from as usize);
        if !self.remotes.latch(i, source, packet, now) {
            return Relay::default();
        }
        let mut relay = Relay {
            to: self.remotes.rtp[to],
            ..Relay::default()
        };
        if self.switched == Some(from) && self.stale_key.is_some() && self.is_stale_key(packet) {
            self.out[to].close_up();
            return relay;
        }
        if let Some(digit) = self.dtmf[i].inspect(packet) {
            // Keys matter from a user's device (the push code) and from a caller the host
            // answered (menus).
            let host_answered = self.endpoint.as_ref().is_some_and(|e| e.side == from);
            if self.keys_filter[i].is_some() || host_answered {
                relay.digit = Some(digit);
            }
        }
        if from == Side::A
            && let Some(recorder) = self.recorder.as_mut()
            && let Some(samples) = decode_audio(packet)
        {
            recorder.put(Channel::Caller, now, &samples);
        }
        if from == Side::A {
            self.tap(Track::Inbound, packet, now);
        }
        // The other side hears this side's audio unless a prompt of the host's is playing
        // to it; the audio ends ringback (early media).
        if let Some(endpoint) = self.endpoint.as_mut().filter(|e| e.side as usize == to) {
            match endpoint.playback {
                Playback::Once(_) => return relay,
                Playback::Loop(_) | Playback::Silence => endpoint.playback = Playback::Silence,
            }
        }
        // The caller hears the engine in the other side's audio.
        let spoken;
        let packet = match self.engine_over_packet(from, packet) {
            Some(with_engine) => {
                spoken = with_engine;
                &spoken[..]
            }
            None => packet,
        };
        if from == Side::B {
            self.b_to_a_at = Some(now);
        }
        let stream = &mut self.out[to];
        relay.packets = match self.keys_filter[i].as_mut() {
            Some(filter) if !filter.passes(packet) => {
                let passed = filter.process(packet, now);
                let relayed = passed.iter().filter_map(|p| stream.relay_in_order(p, now));
                let relayed = relayed.collect();
                stream.close_up();
                relayed
            }
            _ => stream.relay(packet, now).into_iter().collect(),
        };
        relay
    }

    /// A copy of `packet`, the other side's audio on its way to the caller, with the
    /// engine's audio in it; none if there is no engine, nothing queued, or the packet
    /// is not G.711.
    fn engine_over_packet(&self, from: Side, packet: &[u8]) -> Option<Vec<u8>> {
        let engine = self.engine.as_ref().filter(|_| from == Side::B)?;
        let header = rtp::parse(packet)?;
        let codec = Codec::from_payload_type(header.payload_type)?;
        let payload = &packet[header.payload_offset..];
        let spoken = engine.over(codec, Some(payload), payload.len())?;
        let mut out = packet[..header.payload_offset].to_vec();
        out.extend_from_slice(&spoken);
        Some(out)
    }

    /// An RTCP packet from `from`: it speaks for the other side's stream, whichever
    /// device sends it. Decrypted and encrypted per leg like RTP.
    pub(crate) fn rtcp_in(&mut self, from: Side, source: SocketAddr, packet: &[u8]) -> Relay {
        let (i, to) = (from as usize, 1 - from as usize);
        let decrypted = match arrived(self.srtp[i].as_deref_mut(), packet, true) {
            Ok(decrypted) => decrypted,
            Err(refused) => return dropped(refused),
        };
        let packet = decrypted.as_deref().unwrap_or(packet);
        if !self.remotes.rtcp_from(i, source) {
            return Relay::default();
        }
        self.remotes.rtcp[i] = Some(source);
        let mut relayed = self.out[to].relay_rtcp(packet);
        if let (Some(leg), Some(report)) = (self.srtp[to].as_mut(), relayed.as_ref()) {
            relayed = leg.encrypt_rtcp(report);
        }
        Relay {
            to: self.remotes.rtcp[to],
            packets: relayed.into_iter().collect(),
            ..Relay::default()
        }
    }

    /// A packet the caller (side A) was sent: the recording's other channel, the
    /// streams' outbound track.
    fn heard_by_a(&mut self, packet: &[u8], now: Instant) {
        if let Some(recorder) = self.recorder.as_mut()
            && let Some(samples) = decode_audio(packet)
        {
            recorder.put(Channel::Other, now, &samples);
        }
        self.tap(Track::Outbound, packet, now);
    }

    /// Hand a G.711 packet's audio to the streams carrying `track`.
    fn tap(&self, track: Track, packet: &[u8], now: Instant) {
        if self.taps.is_empty() {
            return;
        }
        let Some(header) = rtp::parse(packet) else {
            return;
        };
        if let Some(codec) = Codec::from_payload_type(header.payload_type) {
            for tap in &self.taps {
                tap.offer(track, now, codec, &packet[header.payload_offset..]);
            }
        }
    }

    /// The host's frame for this 20 ms tick, on the side it answered: the prompt playing,
    /// and on the caller's side an engine's audio (unless the other side's audio carries
    /// it).
    pub(crate) fn host_frame(&mut self, now: Instant) -> HostFrame {
        let Some(endpoint) = self.endpoint.as_mut() else {
            return HostFrame::Stopped;
        };
        let side = endpoint.side as usize;
        let codec = endpoint.codec;
        let prompt = match &endpoint.playback {
            Playback::Silence => None,
            Playback::Once(p) => Some((p.clone(), false)),
            Playback::Loop(p) => Some((p.clone(), true)),
        };
        let mut payload = None;
        if let Some((prompt, looped)) = prompt {
            let i = endpoint.position;
            payload = Some(prompt.frame(codec, i).to_vec());
            endpoint.position = i + 1;
            if endpoint.position == prompt.frames() {
                if looped {
                    endpoint.position = 0;
                } else {
                    endpoint.playback = Playback::Silence;
                }
            }
        }
        let other_side_talking = self
            .b_to_a_at
            .is_some_and(|at| now.saturating_duration_since(at) < OTHER_SIDE_TALKING);
        if side == 0
            && !other_side_talking
            && let Some(engine) = &self.engine
            && let Some(spoken) = engine.over(codec, payload.as_deref(), FRAME_SAMPLES as usize)
        {
            payload = Some(spoken);
        }
        let Some(payload) = payload else {
            // Nothing to send: the next frame starts a new talk spurt.
            self.out[side].pause();
            return HostFrame::Silent;
        };
        let mut packet = self.out[side].host_frame(codec.payload_type(), &payload, now);
        // The recording's other channel, and the streams' outbound track, are what the
        // caller (side A) hears.
        if side == 0 {
            if let Some(recorder) = self.recorder.as_mut() {
                let samples: Vec<i16> = payload.iter().map(|&b| g711::decode(codec, b)).collect();
                recorder.put(Channel::Other, now, &samples);
            }
            for tap in &self.taps {
                tap.offer(Track::Outbound, now, codec, &payload);
            }
        }
        if let Some(leg) = self.srtp[side].as_mut() {
            match leg.encrypt_rtp(&packet) {
                Some(encrypted) => packet = encrypted,
                None => return HostFrame::Silent,
            }
        }
        HostFrame::Frame {
            packet,
            to: self.remotes.rtp[side],
        }
    }

    /// A packet of the host's for the device on the reserved ports, encrypted if its leg
    /// is; none if it cannot be.
    pub(crate) fn encrypt_for_reserved(&mut self, packet: Vec<u8>) -> Option<Vec<u8>> {
        match self.reserved_srtp.as_mut() {
            Some(leg) => leg.encrypt_rtp(&packet),
            None => Some(packet),
        }
    }

    /// A packet from the device on the reserved ports, decrypted if its leg is encrypted
    /// (none: it was not).
    pub(crate) fn decrypt_from_reserved(
        &mut self,
        packet: &[u8],
    ) -> Result<Option<Vec<u8>>, Refused> {
        arrived(self.reserved_srtp.as_deref_mut(), packet, false)
    }

    /// Whether `packet` is the rest of the last key pressed before the device had the
    /// call.
    fn is_stale_key(&self, packet: &[u8]) -> bool {
        rtp::parse(packet).is_some_and(|h| {
            Codec::from_payload_type(h.payload_type).is_none()
                && Some(h.timestamp) == self.stale_key
        })
    }
}

/// The samples of an audio packet, if it is G.711.
fn decode_audio(packet: &[u8]) -> Option<Vec<i16>> {
    let header = rtp::parse(packet)?;
    let codec = Codec::from_payload_type(header.payload_type)?;
    Some(
        packet[header.payload_offset..]
            .iter()
            .map(|&b| super::g711::decode(codec, b))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::Prompt;

    const FAR: &str = "127.0.0.2:4000";
    const DESK: &str = "127.0.0.3:6000";
    const MOBILE: &str = "127.0.0.4:6000";

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn audio(seq: u16, ssrc: u32) -> Vec<u8> {
        packet(0, seq, u32::from(seq) * 160, ssrc, &[0xff; 160])
    }

    /// An RFC 4733 event packet (payload type 101) for `code` (10 = `*`).
    fn key(ts: u32, code: u8, end: bool) -> Vec<u8> {
        packet(101, 1, ts, 9, &[code, if end { 0x80 } else { 0 }, 0, 160])
    }

    fn header(p: &[u8]) -> rtp::Header {
        rtp::parse(p).unwrap()
    }

    /// A call whose far end (A) and desk (B) have both sent a packet.
    fn latched(t0: Instant) -> CallPackets {
        let mut call = CallPackets::new();
        call.rtp_in(Side::A, at(FAR), &audio(1, 11), t0);
        call.rtp_in(Side::B, at(DESK), &audio(1, 22), t0);
        call
    }

    #[test]
    fn packets_cross_to_where_the_other_side_really_is() {
        let t0 = crate::clock::monotonic_now();
        let mut call = CallPackets::new();
        // Nobody known yet: nowhere to send.
        assert_eq!(call.rtp_in(Side::A, at(FAR), &audio(1, 11), t0).to, None);
        let from_desk = call.rtp_in(Side::B, at(DESK), &audio(1, 22), t0);
        assert_eq!(from_desk.to, Some(at(FAR)), "A latched to its source");
        let from_far = call.rtp_in(Side::A, at(FAR), &audio(2, 11), t0);
        assert_eq!(from_far.to, Some(at(DESK)));
        assert_eq!(from_far.packets.len(), 1);
        assert!(call.remotes.latches.iter().all(Latch::is_latched));
    }

    #[test]
    fn a_third_party_sending_to_a_calls_port_neither_takes_its_audio_nor_is_heard() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        call.dtmf[1] = DtmfWatch::new(101);
        call.keys_filter[1] = Some(KeyFilter::new(101, "*8"));
        let intruder = at("192.0.2.66:4000");
        let t1 = t0 + Duration::from_millis(20);
        for packet in [audio(50, 99), key(8000, 10, false), b"not rtp".to_vec()] {
            let relay = call.rtp_in(Side::B, intruder, &packet, t1);
            assert!(
                relay.packets.is_empty() && relay.digit.is_none(),
                "{relay:?}"
            );
        }
        assert_eq!(
            call.remotes.rtp[1],
            Some(at(DESK)),
            "B still latched to the desk"
        );
        let to_desk = call.rtp_in(Side::A, at(FAR), &audio(2, 11), t1);
        assert_eq!(
            to_desk.to,
            Some(at(DESK)),
            "the far end's audio still goes to the desk"
        );
        // Its RTCP is not taken either.
        let rtcp = call.rtcp_in(Side::B, intruder, &[0x80, 201, 0, 1, 0, 0, 0, 9]);
        assert!(rtcp.packets.is_empty());
        assert_ne!(call.remotes.rtcp[1], Some(intruder));
    }

    #[test]
    fn a_device_silent_for_two_seconds_is_found_again_at_its_new_address() {
        // A NAT's new mapping, a phone on a new network: its RTP comes from elsewhere
        // once the old address has gone quiet; anything but RTP latches nobody.
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        let moved = at("192.0.2.7:7000");
        let early = t0 + RELATCH_AFTER - Duration::from_millis(1);
        assert!(
            call.rtp_in(Side::B, moved, &audio(2, 22), early)
                .packets
                .is_empty()
        );
        let later = t0 + RELATCH_AFTER;
        assert!(
            call.rtp_in(Side::B, moved, b"stun?", later)
                .packets
                .is_empty()
        );
        assert_eq!(call.remotes.rtp[1], Some(at(DESK)));
        let relay = call.rtp_in(Side::B, moved, &audio(3, 22), later);
        assert_eq!(relay.packets.len(), 1);
        assert_eq!(call.remotes.rtp[1], Some(moved));
        // And the old address is the stranger now.
        assert!(
            call.rtp_in(Side::B, at(DESK), &audio(4, 22), later)
                .packets
                .is_empty()
        );
    }

    #[test]
    fn a_new_device_continues_the_stream_the_far_end_hears() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        let before = header(&call.rtp_in(Side::B, at(DESK), &audio(2, 22), t0).packets[0]);
        // The mobile takes side B over with a stream of its own.
        call.switch(Side::B, t0 + Duration::from_secs(1));
        let t1 = t0 + Duration::from_millis(20);
        let after = call.rtp_in(Side::B, at(MOBILE), &audio(700, 77), t1);
        let after = header(&after.packets[0]);
        assert_eq!(after.ssrc, before.ssrc, "one SSRC for the far end");
        assert_eq!(after.sequence, before.sequence.wrapping_add(1));
        assert_eq!(after.timestamp.wrapping_sub(before.timestamp), 160);
        assert_eq!(call.remotes.rtp[1], Some(at(MOBILE)));
    }

    #[test]
    fn the_device_switched_away_from_sends_no_keys_and_leaves_no_gap() {
        // The mobile pushed with *8 and the desk answered at once: the end of the `8`
        // still comes from the mobile while it is heard out.
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        call.keys_filter[1] = Some(KeyFilter::new(101, "*8"));
        let before = header(&call.rtp_in(Side::B, at(DESK), &audio(2, 22), t0).packets[0]);
        call.switch(Side::B, t0 + Duration::from_secs(1));
        let t1 = t0 + Duration::from_millis(20);
        let end_of_eight = packet(101, 3, 480, 22, &[8, 0x80, 0, 160]);
        let relay = call
            .retiring_rtp_in(&end_of_eight, t1)
            .expect("still heard");
        assert!(relay.packets.is_empty(), "the key reached the far end");
        let audio = call
            .retiring_rtp_in(&audio(4, 22), t1)
            .expect("still heard");
        assert_eq!(
            header(&audio.packets[0]).sequence,
            before.sequence.wrapping_add(1),
            "no gap where the key was"
        );
    }

    #[test]
    fn the_device_switched_away_from_is_heard_until_the_new_one_is() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        let before = header(&call.rtp_in(Side::B, at(DESK), &audio(2, 22), t0).packets[0]);
        // The mobile takes side B over; it has not sent anything yet.
        call.switch(Side::B, t0 + Duration::from_secs(1));
        let t1 = t0 + Duration::from_millis(20);
        let desk = call
            .retiring_rtp_in(&audio(3, 22), t1)
            .expect("still heard");
        assert_eq!(desk.to, Some(at(FAR)));
        let desk = header(&desk.packets[0]);
        assert_eq!(
            (desk.ssrc, desk.sequence),
            (before.ssrc, before.sequence.wrapping_add(1))
        );
        assert_eq!(call.remotes.rtp[1], None, "never latched to");
        // The mobile's first packet: it is heard, goes on in the same stream, and the
        // desk stops.
        let t2 = t1 + Duration::from_millis(20);
        let mobile = call.rtp_in(Side::B, at(MOBILE), &audio(900, 77), t2);
        assert!(mobile.heard);
        let mobile = header(&mobile.packets[0]);
        assert_eq!(
            (mobile.ssrc, mobile.sequence),
            (before.ssrc, before.sequence.wrapping_add(2))
        );
        assert!(call.retiring_rtp_in(&audio(4, 22), t2).is_none());
        assert!(
            !call.rtp_in(Side::B, at(MOBILE), &audio(901, 77), t2).heard,
            "once"
        );
        // A new device that never sends: the old one is heard for a second at most.
        call.retiring = Some(Box::new(Retiring {
            side: Side::B,
            srtp: None,
            until: t2 + Duration::from_secs(1),
        }));
        assert!(
            call.retiring_rtp_in(&audio(5, 22), t2 + Duration::from_millis(999))
                .is_some()
        );
        assert!(
            call.retiring_rtp_in(&audio(6, 22), t2 + Duration::from_secs(1))
                .is_none()
        );
        assert!(call.retiring.is_none());
    }

    fn srtp_leg() -> (LegSrtp, LegSrtp) {
        crate::srtp::pair(wasmpbx_sip::sdp::SrtpSuite::AesCm128HmacSha1_80)
    }

    #[test]
    fn each_leg_is_decrypted_and_encrypted_with_its_own_keys_across_a_flip() {
        let t0 = crate::clock::monotonic_now();
        let mut call = CallPackets::new();
        let (host_far, mut far) = srtp_leg();
        call.srtp[0] = Some(Box::new(host_far));
        // The far end (SRTP) and the desk (plain) latch.
        let sent = far.encrypt_rtp(&audio(1, 11)).unwrap();
        call.rtp_in(Side::A, at(FAR), &sent, t0);
        let to_far = call.rtp_in(Side::B, at(DESK), &audio(1, 22), t0);
        let heard = far
            .decrypt_rtp(&to_far.packets[0])
            .expect("encrypted for the far end");
        assert_eq!(heard[12..], [0xff; 160], "the desk's audio, untouched");
        let first = header(&heard);
        // The far end's audio reaches the desk in the clear.
        let sent = far.encrypt_rtp(&audio(2, 11)).unwrap();
        let to_desk = call.rtp_in(Side::A, at(FAR), &sent, t0);
        assert_eq!(to_desk.packets[0][12..], [0xff; 160]);
        // A forged packet, or a replay, is dropped before anything looks at it.
        let mut forged = far.encrypt_rtp(&audio(3, 11)).unwrap();
        forged[20] ^= 0x40;
        let dropped = call.rtp_in(Side::A, at("127.0.0.9:9"), &forged, t0);
        assert!(dropped.rejected && dropped.packets.is_empty());
        assert!(
            call.rtp_in(Side::A, at(FAR), &sent, t0).rejected,
            "a replay"
        );
        assert_eq!(
            call.remotes.rtp[0],
            Some(at(FAR)),
            "no latching to a forger"
        );
        // The mobile takes side B over with SRTP keys of its own.
        let (host_mobile, mut mobile) = srtp_leg();
        call.reserved_srtp = Some(Box::new(host_mobile));
        call.switch(Side::B, t0 + Duration::from_secs(1));
        call.dtmf[1] = DtmfWatch::new(101);
        call.keys_filter[1] = Some(KeyFilter::new(101, "*8"));
        let star = mobile.encrypt_rtp(&key(1600, 10, false)).unwrap();
        assert_eq!(call.rtp_in(Side::B, at(MOBILE), &star, t0).digit, Some('*'));
        let t1 = t0 + Duration::from_millis(20);
        let from_mobile = call.rtp_in(
            Side::B,
            at(MOBILE),
            &mobile.encrypt_rtp(&audio(700, 77)).unwrap(),
            t1,
        );
        // The far end decrypts it with the context it had: one stream, continuous.
        let heard = far
            .decrypt_rtp(&from_mobile.packets[0])
            .expect("the far end's keys are unchanged");
        assert_eq!(header(&heard).ssrc, first.ssrc);
        assert_eq!(header(&heard).sequence, first.sequence.wrapping_add(1));
        // What the far end sends reaches the mobile encrypted with the mobile's keys.
        let sent = far.encrypt_rtp(&audio(4, 11)).unwrap();
        let to_mobile = call.rtp_in(Side::A, at(FAR), &sent, t1);
        assert_eq!(
            mobile.decrypt_rtp(&to_mobile.packets[0]).unwrap()[12..],
            [0xff; 160]
        );
    }

    #[test]
    fn keys_are_reported_from_a_users_device_and_the_push_code_is_held_back() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        // Nobody listens for the far end's keys: relayed, not reported.
        call.dtmf[0] = DtmfWatch::new(101);
        let far_key = call.rtp_in(Side::A, at(FAR), &key(800, 5, false), t0);
        assert_eq!((far_key.digit, far_key.packets.len()), (None, 1));
        // The desk's keys are watched for the push code: reported, and held back.
        call.dtmf[1] = DtmfWatch::new(101);
        call.keys_filter[1] = Some(KeyFilter::new(101, "*8"));
        let star = call.rtp_in(Side::B, at(DESK), &key(1600, 10, false), t0);
        assert_eq!(star.digit, Some('*'));
        assert!(
            star.packets.is_empty(),
            "a possible start of the code waits"
        );
        let eight = call.rtp_in(Side::B, at(DESK), &key(2400, 8, false), t0);
        assert_eq!(eight.digit, Some('8'));
        assert!(
            eight.packets.is_empty(),
            "the code never reaches the far end"
        );
        let talk = call.rtp_in(Side::B, at(DESK), &audio(3, 22), t0);
        assert_eq!(talk.packets.len(), 1, "audio goes on");
    }

    #[test]
    fn the_kept_push_code_leaves_no_gap_and_a_real_loss_stays_one() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        call.dtmf[1] = DtmfWatch::new(101);
        call.keys_filter[1] = Some(KeyFilter::new(101, "*8"));
        let mut to_far = |packet: Vec<u8>| {
            let relay = call.rtp_in(Side::B, at(DESK), &packet, t0);
            relay
                .packets
                .iter()
                .map(|p| header(p).sequence)
                .collect::<Vec<_>>()
        };
        let before = to_far(audio(2, 22))[0];
        // `*8` from the desk's own stream (numbers 3 to 6): kept from the far end.
        let event = |seq, ts, code| packet(101, seq, ts, 22, &[code, 0, 0, 160]);
        for (seq, ts, code) in [(3, 480, 10), (4, 480, 10), (5, 800, 8), (6, 800, 8)] {
            assert!(to_far(event(seq, ts, code)).is_empty());
        }
        assert_eq!(to_far(audio(7, 22)), [before.wrapping_add(1)], "no gap");
        // Number 8 lost on the way: the far end's jitter buffer must see the gap.
        assert_eq!(to_far(audio(9, 22)), [before.wrapping_add(3)]);
        assert_eq!(
            to_far(audio(8, 22)),
            [before.wrapping_add(2)],
            "late, as it came"
        );
    }

    #[test]
    fn a_prompt_to_a_side_silences_the_other_and_early_media_ends_ringback() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        let prompt = Arc::new(Prompt::from_samples("welcome", vec![100; 320]));
        call.endpoint = Some(Endpoint {
            side: Side::A,
            codec: Codec::Pcmu,
            playback: Playback::Once(prompt.clone()),
            position: 0,
        });
        let during = call.rtp_in(Side::B, at(DESK), &audio(2, 22), t0);
        assert!(
            during.packets.is_empty(),
            "the caller hears the prompt only"
        );
        call.endpoint.as_mut().unwrap().playback = Playback::Loop(prompt);
        let early_media = call.rtp_in(Side::B, at(DESK), &audio(3, 22), t0);
        assert_eq!(early_media.packets.len(), 1);
        assert!(matches!(
            call.endpoint.as_ref().unwrap().playback,
            Playback::Silence
        ));
        // Keys from the side the host answered are the menu's.
        call.dtmf[0] = DtmfWatch::new(101);
        let menu = call.rtp_in(Side::A, at(FAR), &key(3200, 2, false), t0);
        assert_eq!(menu.digit, Some('2'));
    }

    #[test]
    fn the_host_plays_a_prompt_frame_by_frame_then_falls_silent() {
        let t0 = crate::clock::monotonic_now();
        let mut call = CallPackets::new();
        assert_eq!(call.host_frame(t0), HostFrame::Stopped);
        call.remotes.rtp[0] = Some(at(FAR));
        call.out[0] = OutStream::new(1234, 100);
        let prompt = Arc::new(Prompt::from_samples("beep", vec![500; 320]));
        call.endpoint = Some(Endpoint {
            side: Side::A,
            codec: Codec::Pcma,
            playback: Playback::Silence,
            position: 0,
        });
        assert_eq!(call.host_frame(t0), HostFrame::Silent);
        call.endpoint.as_mut().unwrap().playback = Playback::Once(prompt);
        let mut sequences = Vec::new();
        for n in 0..2u32 {
            let now = t0 + Duration::from_millis(20 * u64::from(n));
            match call.host_frame(now) {
                HostFrame::Frame { packet, to } => {
                    assert_eq!(to, Some(at(FAR)));
                    let h = header(&packet);
                    assert_eq!((h.ssrc, h.payload_type), (1234, 8));
                    sequences.push(h.sequence);
                }
                other => panic!("frame {n}: {other:?}"),
            }
        }
        assert_eq!(sequences, [101, 102], "numbered on from the stream's start");
        assert_eq!(
            call.host_frame(t0 + Duration::from_millis(40)),
            HostFrame::Silent
        );
    }

    #[test]
    fn a_pins_last_key_still_arriving_after_the_switch_is_dropped() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        call.switch(Side::B, t0 + Duration::from_secs(1));
        call.stale_key = Some(4000);
        let first = call.rtp_in(Side::B, at(MOBILE), &audio(8, 77), t0);
        // The key's end, repeated between the mobile's audio packets (its number 9).
        let stale_end = packet(101, 9, 4000, 77, &[11, 0x80, 0, 160]);
        let stale = call.rtp_in(Side::B, at(MOBILE), &stale_end, t0);
        assert!(stale.packets.is_empty() && stale.digit.is_none());
        let next = call.rtp_in(Side::B, at(MOBILE), &audio(10, 77), t0);
        assert_eq!(next.packets.len(), 1);
        assert_eq!(
            header(&next.packets[0]).sequence,
            header(&first.packets[0]).sequence.wrapping_add(1),
            "no gap where the key was"
        );
    }

    #[test]
    fn rtcp_goes_to_the_other_sides_rtcp_address() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        call.remotes.rtcp[0] = Some(at("127.0.0.2:4001"));
        // A receiver report (PT 201) with the desk's SSRC.
        let mut rr = vec![0x81, 201, 0, 7];
        rr.extend_from_slice(&22u32.to_be_bytes());
        rr.extend_from_slice(&[0; 24]);
        let relay = call.rtcp_in(Side::B, at("127.0.0.3:6001"), &rr);
        assert_eq!(relay.to, Some(at("127.0.0.2:4001")));
        assert_eq!(call.remotes.rtcp[1], Some(at("127.0.0.3:6001")));
    }

    fn engine(call: &mut CallPackets, mode: EngineAudio, level: i16, bytes: usize) {
        let (marks_out, _) = tokio::sync::mpsc::channel(4);
        let mut playout = Playout::new(marks_out);
        playout.push_audio(&vec![g711::ulaw_encode(level); bytes]);
        call.engine = Some(EngineFeed {
            mode,
            playout: Arc::new(Mutex::new(playout)),
        });
    }

    fn level(packet: &[u8]) -> i16 {
        let header = header(packet);
        let codec = Codec::from_payload_type(header.payload_type).unwrap();
        g711::decode(codec, packet[header.payload_offset])
    }

    #[test]
    fn an_engine_rides_on_the_other_sides_audio_to_the_caller_mixed_or_instead() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        engine(&mut call, EngineAudio::Mix, 2000, 160);
        let desk = packet(8, 2, 320, 22, &[g711::encode(Codec::Pcma, 1000); 160]);
        let heard = call.rtp_in(Side::B, at(DESK), &desk, t0);
        let sum = level(&heard.packets[0]);
        assert!((2900..3100).contains(&sum), "mixed: {sum}");
        // The caller's own audio to the desk is untouched; the engine has no more.
        let said = call.rtp_in(Side::A, at(FAR), &audio(2, 11), t0);
        assert_eq!(said.packets[0][12..], [0xff; 160]);
        let next = packet(8, 3, 480, 22, &[g711::encode(Codec::Pcma, 1000); 160]);
        let plain = level(&call.rtp_in(Side::B, at(DESK), &next, t0).packets[0]);
        assert!((900..1100).contains(&plain), "{plain}");

        engine(&mut call, EngineAudio::Replace, 2000, 160);
        let next = packet(8, 4, 640, 22, &[g711::encode(Codec::Pcma, 1000); 160]);
        let instead = level(&call.rtp_in(Side::B, at(DESK), &next, t0).packets[0]);
        assert!((1900..2100).contains(&instead), "replaced: {instead}");
    }

    #[test]
    fn the_host_speaks_the_engine_in_its_own_frames_unless_the_other_side_is_talking() {
        let t0 = crate::clock::monotonic_now();
        let mut call = latched(t0);
        call.endpoint = Some(Endpoint {
            side: Side::A,
            codec: Codec::Pcmu,
            playback: Playback::Silence,
            position: 0,
        });
        engine(&mut call, EngineAudio::Replace, 3000, 320);
        // The desk spoke just now (latched at t0): its packets carry the engine.
        assert_eq!(call.host_frame(t0), HostFrame::Silent);
        // A quiet desk: the host's own frames do, then fall silent.
        let later = t0 + Duration::from_millis(200);
        for _ in 0..2 {
            let HostFrame::Frame { packet, .. } = call.host_frame(later) else {
                panic!("a frame of the engine's");
            };
            assert!((2900..3100).contains(&level(&packet)));
        }
        assert_eq!(call.host_frame(later), HostFrame::Silent);
    }
}
