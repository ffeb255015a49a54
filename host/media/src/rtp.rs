//! RTP (RFC 3550) as the host reads and writes it, sans-IO: header fields, the stream the
//! host sends a party (one SSRC, continuous sequence numbers and timestamps whichever
//! source feeds it), and RFC 4733 telephone-event detection.

use std::time::{Duration, Instant};

pub use wasmpbx_types::media::{FRAME, FRAME_SAMPLES};
/// The fixed RTP header's length.
const HEADER: usize = 12;

/// The fields of an RTP packet the host needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Where the payload starts (after CSRCs and any header extension).
    pub payload_offset: usize,
}

/// Parse an RTP header; none if it isn't RTP version 2 or is truncated.
pub fn parse(packet: &[u8]) -> Option<Header> {
    if packet.len() < HEADER || packet[0] >> 6 != 2 {
        return None;
    }
    let csrcs = usize::from(packet[0] & 0x0f);
    let mut offset = HEADER + 4 * csrcs;
    if packet[0] & 0x10 != 0 {
        let words = packet.get(offset + 2..offset + 4)?;
        offset += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        // Padding: the last byte counts the padding bytes.
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    if offset > end {
        return None;
    }
    Some(Header {
        marker: packet[1] & 0x80 != 0,
        payload_type: packet[1] & 0x7f,
        sequence: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        payload_offset: offset,
    })
}

/// The stream the host sends one party. The party sees a single source: its own SSRC,
/// sequence numbers that go on by one from source to source, timestamps that follow the
/// clock, and the marker bit at the start of each talk spurt, whether the packets are
/// the host's own (prompts, ringback) or relayed from another leg (whose SSRC and
/// numbering differ). A relayed source's numbers are shifted, not renumbered: a packet
/// it lost, repeated or sent out of order reaches the party so, for its jitter buffer
/// to see.
#[derive(Debug)]
pub struct OutStream {
    ssrc: u32,
    /// The highest sequence number sent.
    sequence: u16,
    /// The timestamp and time of the last packet sent.
    last: Option<(u32, Instant)>,
    /// The relayed source being mapped.
    relayed: Option<Mapped>,
    /// Whether the next host packet starts a talk spurt (nothing was sent for a while, or
    /// the previous packets came from another source).
    spurt_start: bool,
    /// Whether the next relayed packet's number follows the highest sent, its source's
    /// later ones shifted from there (after packets the host numbered in order itself).
    resync: bool,
    /// Take the first relayed source's SSRC and numbering as this stream's own.
    adopt_first: bool,
}

/// A relayed source and what is added to its numbers to continue this stream.
#[derive(Debug, Clone, Copy)]
struct Mapped {
    ssrc: u32,
    timestamp_offset: u32,
    sequence_offset: u16,
}

impl OutStream {
    pub fn new(ssrc: u32, first_sequence: u16) -> Self {
        Self {
            ssrc,
            sequence: first_sequence,
            last: None,
            relayed: None,
            spurt_start: true,
            resync: false,
            adopt_first: false,
        }
    }

    /// A stream that takes over the first source it relays as it is (its SSRC, sequence
    /// numbers and timestamps pass unchanged) and maps any later source onto it: the
    /// party keeps hearing one stream when the other leg's device changes (a flip).
    pub fn adopting() -> Self {
        Self {
            adopt_first: true,
            ..Self::new(0, 0)
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Whether nothing has been sent on the stream yet.
    pub fn is_fresh(&self) -> bool {
        self.last.is_none()
    }

    /// The timestamp for a new spurt at `now`: where the clock has got to since the last
    /// packet, at least one frame on.
    fn resume_timestamp(&self, now: Instant) -> u32 {
        match self.last {
            None => rand_free_start(self.ssrc),
            Some((ts, at)) => {
                let elapsed = now.saturating_duration_since(at);
                let samples = (elapsed.as_micros() / 125) as u32; // 8 samples per ms
                let frames = (samples / FRAME_SAMPLES).max(1);
                ts.wrapping_add(frames * FRAME_SAMPLES)
            }
        }
    }

    /// A 20 ms frame the host generated (prompt, tone); `gap` says nothing was sent since
    /// the previous host frame (the talk spurt starts again).
    pub fn host_frame(&mut self, payload_type: u8, payload: &[u8], now: Instant) -> Vec<u8> {
        let marker = self.spurt_start || self.relayed.is_some();
        let timestamp = match (marker, self.last) {
            (false, Some((ts, _))) => ts.wrapping_add(FRAME_SAMPLES),
            _ => self.resume_timestamp(now),
        };
        self.relayed = None;
        self.spurt_start = false;
        let sequence = self.sequence.wrapping_add(1);
        self.emit(marker, payload_type, sequence, timestamp, payload, now)
    }

    /// The host stopped sending its own frames: the next one starts a new talk spurt.
    pub fn pause(&mut self) {
        self.spurt_start = true;
    }

    /// A packet from another leg, mapped into this stream; none if it isn't RTP.
    pub fn relay(&mut self, packet: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.relay_numbered(packet, now, false)
    }

    /// [`OutStream::relay`] for a packet the host held back or whose neighbours it kept
    /// from the party (the push code's keys): numbered after the highest sent.
    pub fn relay_in_order(&mut self, packet: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.relay_numbered(packet, now, true)
    }

    /// The host kept packets of the relayed source from the party: its next packet
    /// follows the highest number sent, so the party sees no gap where they were.
    pub fn close_up(&mut self) {
        self.resync = true;
    }

    fn relay_numbered(&mut self, packet: &[u8], now: Instant, in_order: bool) -> Option<Vec<u8>> {
        let header = parse(packet)?;
        let (mapped, marker) = match self.relayed {
            Some(mut mapped) if mapped.ssrc == header.ssrc && !self.spurt_start => {
                if self.resync || in_order {
                    mapped.sequence_offset =
                        self.sequence.wrapping_add(1).wrapping_sub(header.sequence);
                    self.relayed = Some(mapped);
                    self.resync = false;
                }
                (mapped, header.marker)
            }
            None if self.adopt_first => {
                self.adopt_first = false;
                self.ssrc = header.ssrc;
                self.sequence = header.sequence.wrapping_sub(1);
                let mapped = Mapped {
                    ssrc: header.ssrc,
                    timestamp_offset: 0,
                    sequence_offset: 0,
                };
                self.relayed = Some(mapped);
                (mapped, header.marker)
            }
            _ => {
                // A new source: continue our timeline from where the clock is now, and
                // our numbering from the last number sent.
                let mapped = Mapped {
                    ssrc: header.ssrc,
                    timestamp_offset: self.resume_timestamp(now).wrapping_sub(header.timestamp),
                    sequence_offset: self.sequence.wrapping_add(1).wrapping_sub(header.sequence),
                };
                self.relayed = Some(mapped);
                (mapped, true)
            }
        };
        self.spurt_start = false;
        let payload = &packet[header.payload_offset..packet.len() - padding(packet)];
        Some(self.emit(
            marker,
            header.payload_type,
            header.sequence.wrapping_add(mapped.sequence_offset),
            header.timestamp.wrapping_add(mapped.timestamp_offset),
            payload,
            now,
        ))
    }

    /// RTCP from the leg whose packets this stream carries, made to speak for this
    /// stream: the sender's SSRC in each report becomes the stream's, and a sender
    /// report's RTP timestamp is mapped like the packets'. A compound with a BYE is
    /// dropped: one device leaving (a flip) must not end the stream the party hears.
    /// None for anything that is not a well-formed RTCP compound.
    pub fn relay_rtcp(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let mut out = packet.to_vec();
        let mut at = 0;
        while at + 8 <= out.len() {
            if out[at] >> 6 != 2 {
                return None;
            }
            let kind = out[at + 1];
            let words = usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]]));
            let end = at + 4 * (words + 1);
            if end > out.len() {
                return None;
            }
            match kind {
                203 => return None, // BYE
                200..=202 => {
                    out[at + 4..at + 8].copy_from_slice(&self.ssrc.to_be_bytes());
                    if kind == 200 && end >= at + 20 {
                        let offset = self.relayed.map_or(0, |m| m.timestamp_offset);
                        let ts = u32::from_be_bytes([
                            out[at + 16],
                            out[at + 17],
                            out[at + 18],
                            out[at + 19],
                        ]);
                        out[at + 16..at + 20]
                            .copy_from_slice(&ts.wrapping_add(offset).to_be_bytes());
                    }
                }
                _ => {}
            }
            at = end;
        }
        (at == out.len()).then_some(out)
    }

    /// A packet of this stream. A late one (numbered before the highest sent: the source
    /// sent it out of order, or twice) moves neither the numbering nor the clock on.
    fn emit(
        &mut self,
        marker: bool,
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        payload: &[u8],
        now: Instant,
    ) -> Vec<u8> {
        let ahead = (sequence.wrapping_sub(self.sequence) as i16) > 0;
        if ahead || self.last.is_none() {
            self.sequence = sequence;
            self.last = Some((timestamp, now));
        }
        let mut packet = Vec::with_capacity(HEADER + payload.len());
        packet.push(0x80);
        packet.push(payload_type & 0x7f | if marker { 0x80 } else { 0 });
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&self.ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }
}

fn padding(packet: &[u8]) -> usize {
    if packet[0] & 0x20 != 0 {
        usize::from(*packet.last().unwrap_or(&0))
    } else {
        0
    }
}

/// A first timestamp derived from the (random) SSRC: RFC 3550 wants it unpredictable.
fn rand_free_start(ssrc: u32) -> u32 {
    ssrc.rotate_left(13) & 0x7fff_ffff
}

/// A DTMF key from an RFC 4733 event code.
pub fn event_digit(code: u8) -> Option<char> {
    Some(match code {
        e @ 0..=9 => char::from(b'0' + e),
        10 => '*',
        11 => '#',
        e @ 12..=15 => char::from(b'A' + e - 12),
        _ => return None,
    })
}

/// The last RFC 4733 event of a stream: its SSRC, timestamp (the event's start, shared
/// by all its packets) and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventSeen {
    ssrc: u32,
    timestamp: u32,
    code: u8,
}

impl EventSeen {
    fn of(header: &Header, code: u8) -> Self {
        Self {
            ssrc: header.ssrc,
            timestamp: header.timestamp,
            code,
        }
    }
}

/// The last few events of a stream: a packet of one of them (a redundant end packet
/// delayed behind the next key's start) is not a new key. Remembered by what identifies
/// an event, not by timestamp order: a sender replaying recorded events (SIPp's pcaps)
/// need not number them in order.
#[derive(Debug, Default)]
struct RecentEvents {
    seen: [Option<EventSeen>; 4],
    next: usize,
}

impl RecentEvents {
    fn contains(&self, event: &EventSeen) -> bool {
        self.seen.contains(&Some(*event))
    }

    fn remember(&mut self, event: EventSeen) {
        self.seen[self.next] = Some(event);
        self.next = (self.next + 1) % self.seen.len();
    }
}

/// RFC 4733 digits seen on one stream: each event once, however many packets (and
/// redundant end packets, however late) carry it.
#[derive(Debug, Default)]
pub struct DtmfWatch {
    pub payload_type: Option<u8>,
    recent: RecentEvents,
    /// Every digit seen, for the call's record (bounded).
    pub digits: String,
}

impl DtmfWatch {
    pub fn new(payload_type: u8) -> Self {
        Self {
            payload_type: Some(payload_type),
            ..Self::default()
        }
    }

    /// The digit this packet starts, if it is the first packet of a new event.
    pub fn inspect(&mut self, packet: &[u8]) -> Option<char> {
        let pt = self.payload_type?;
        let header = parse(packet)?;
        if header.payload_type != pt {
            return None;
        }
        let code = *packet.get(header.payload_offset)?;
        let event = EventSeen::of(&header, code);
        if self.recent.contains(&event) {
            return None;
        }
        self.recent.remember(event);
        let digit = event_digit(code)?;
        if self.digits.len() < 256 {
            self.digits.push(digit);
        }
        Some(digit)
    }
}

/// Keeps a key sequence (the push code, `*8`) sent as RFC 4733 events from reaching the
/// other party: the events of a possible start of the code are held back; when the code
/// completes they are dropped, when another key follows (or nothing for a while) they
/// are let through late, in order.
#[derive(Debug)]
pub struct KeyFilter {
    payload_type: u8,
    code: Vec<char>,
    /// How many keys of the code the held events make.
    matched: usize,
    held: Vec<Vec<u8>>,
    held_since: Option<Instant>,
    /// The event being received and whether its packets are held.
    current: Option<(EventSeen, Disposition)>,
    /// The events before it.
    recent: RecentEvents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Pass,
    Hold,
    Drop,
}

/// How long held keys wait for the rest of the code.
const KEY_HOLD: Duration = Duration::from_millis(1500);

impl KeyFilter {
    pub fn new(payload_type: u8, code: &str) -> Self {
        Self {
            payload_type,
            code: code.chars().collect(),
            matched: 0,
            held: Vec::new(),
            held_since: None,
            current: None,
            recent: RecentEvents::default(),
        }
    }

    /// Whether `packet` is a key (a telephone-event of the watched payload type).
    pub fn is_key(&self, packet: &[u8]) -> bool {
        parse(packet).is_some_and(|h| h.payload_type == self.payload_type)
    }

    /// Whether `packet` would simply pass (audio, with nothing held back): the common
    /// case, which needs no copy.
    pub fn passes(&self, packet: &[u8]) -> bool {
        self.held.is_empty() && parse(packet).is_some_and(|h| h.payload_type != self.payload_type)
    }

    /// The packets to forward now for one that arrived (none, it, or held ones first).
    pub fn process(&mut self, packet: &[u8], now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if self
            .held_since
            .is_some_and(|since| now.duration_since(since) > KEY_HOLD)
        {
            out.append(&mut self.release());
        }
        let event = parse(packet)
            .filter(|h| h.payload_type == self.payload_type)
            .and_then(|h| Some(EventSeen::of(&h, *packet.get(h.payload_offset)?)));
        let Some(event) = event else {
            out.push(packet.to_vec());
            return out;
        };
        let disposition = match self.current {
            Some((current, d)) if current == event => d,
            // A late packet of an earlier event: its key was dealt with.
            _ if self.recent.contains(&event) => Disposition::Drop,
            _ => {
                let code = event.code;
                let digit = event_digit(code);
                let d = if digit == self.code.get(self.matched).copied() {
                    self.matched += 1;
                    if self.matched == self.code.len() {
                        self.held.clear();
                        self.held_since = None;
                        self.matched = 0;
                        Disposition::Drop
                    } else {
                        Disposition::Hold
                    }
                } else {
                    out.append(&mut self.release());
                    if digit.is_some() && digit == self.code.first().copied() {
                        self.matched = 1;
                        Disposition::Hold
                    } else {
                        Disposition::Pass
                    }
                };
                if let Some((previous, _)) = self.current.replace((event, d)) {
                    self.recent.remember(previous);
                }
                d
            }
        };
        match disposition {
            Disposition::Pass => out.push(packet.to_vec()),
            Disposition::Hold => {
                self.held_since.get_or_insert(now);
                self.held.push(packet.to_vec());
            }
            Disposition::Drop => {}
        }
        out
    }

    fn release(&mut self) -> Vec<Vec<u8>> {
        self.matched = 0;
        self.held_since = None;
        if let Some(current) = self.current.as_mut().filter(|c| c.1 == Disposition::Hold) {
            current.1 = Disposition::Pass; // the rest of a released event goes through
        }
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn event(timestamp: u32, code: u8, end: bool) -> Vec<u8> {
        packet(
            101,
            1,
            timestamp,
            1,
            false,
            &[code, if end { 0x80 } else { 0 }, 0, 160],
        )
    }

    #[test]
    fn telephone_events_are_counted_once_each() {
        let mut watch = DtmfWatch {
            payload_type: Some(101),
            ..Default::default()
        };
        let mut live = String::new();
        for p in [
            event(160, 1, false),
            event(160, 1, false),
            event(160, 1, true),
            event(160, 1, true),
            event(960, 11, false),
            event(960, 11, true),
            // The same key pressed again is a new event (new timestamp).
            event(1760, 1, false),
            // A redundant end packet of `#` delayed behind it: not a key.
            event(960, 11, true),
        ] {
            live.extend(watch.inspect(&p));
        }
        let mut audio = event(2560, 5, false);
        audio[1] = 8; // PCMA, not an event
        assert_eq!(watch.inspect(&audio), None);
        assert_eq!(watch.inspect(&[0x80, 101]), None); // truncated
        assert_eq!(live, "1#1");
        assert_eq!(watch.digits, "1#1");
        // Another stream (a new SSRC) starts its own timeline, earlier or not.
        let mut other = event(40, 2, false);
        other[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(watch.inspect(&other), Some('2'));
        // Recorded events replayed out of timestamp order (SIPp's pcaps) are keys too.
        assert_eq!(watch.inspect(&event(80, 7, false)), Some('7'));
    }

    #[test]
    fn host_frames_are_contiguous_and_mark_each_spurt() {
        let t0 = crate::clock::monotonic_now();
        let mut out = OutStream::new(0x1234_5678, 100);
        let frames: Vec<Header> = (0..3)
            .map(|i| parse(&out.host_frame(0, &[0xff; 160], t0 + FRAME * i)).unwrap())
            .collect();
        assert!(frames[0].marker && !frames[1].marker && !frames[2].marker);
        assert_eq!(frames[1].timestamp, frames[0].timestamp.wrapping_add(160));
        assert_eq!(frames[2].sequence, 103);
        // Jitter in the sender's timer does not leak into the timestamps.
        let late =
            parse(&out.host_frame(0, &[0xff; 160], t0 + FRAME * 3 + Duration::from_millis(7)))
                .unwrap();
        assert_eq!(late.timestamp, frames[2].timestamp.wrapping_add(160));
        // After a second of silence the next spurt is marked and a second further on.
        out.pause();
        let after_a_second = t0 + FRAME * 3 + Duration::from_millis(1007);
        let resumed = parse(&out.host_frame(0, &[0xff; 160], after_a_second)).unwrap();
        assert!(resumed.marker);
        assert_eq!(resumed.sequence, 105, "sequence numbers have no gap");
        assert_eq!(resumed.timestamp.wrapping_sub(late.timestamp), 8000);
    }

    #[test]
    fn relayed_packets_join_the_stream_seamlessly() {
        let t0 = crate::clock::monotonic_now();
        let mut out = OutStream::new(7, 0);
        let prompt = parse(&out.host_frame(8, &[0xd5; 160], t0)).unwrap();
        // The other leg answers with its own SSRC, sequence and timestamp base.
        let first = out
            .relay(&packet(8, 5000, 90_000, 99, false, &[1; 160]), t0 + FRAME)
            .unwrap();
        let second = out
            .relay(
                &packet(8, 5001, 90_160, 99, false, &[2; 160]),
                t0 + FRAME * 2,
            )
            .unwrap();
        let (h1, h2) = (parse(&first).unwrap(), parse(&second).unwrap());
        assert_eq!((h1.ssrc, h2.ssrc), (7, 7), "one SSRC towards the party");
        assert_eq!((h1.sequence, h2.sequence), (2, 3));
        assert_eq!(h1.timestamp, prompt.timestamp.wrapping_add(160));
        assert_eq!(h2.timestamp, h1.timestamp.wrapping_add(160));
        assert!(h1.marker && !h2.marker, "the new source starts a spurt");
        assert_eq!(&second[12..], &[2; 160]);
        // Its own marker bits pass through; a packet that isn't RTP is dropped.
        let m = out
            .relay(
                &packet(8, 5002, 90_320, 99, true, &[3; 160]),
                t0 + FRAME * 3,
            )
            .unwrap();
        assert!(parse(&m).unwrap().marker);
        assert!(out.relay(&[1, 2, 3], t0).is_none());
    }

    #[test]
    fn a_relayed_sources_loss_repeats_and_reordering_reach_the_party_as_they_happened() {
        let t0 = crate::clock::monotonic_now();
        let mut out = OutStream::new(7, 0);
        let arrivals = [
            (5000, 0),
            (5001, 1),
            (5003, 3),
            (5002, 2),
            (5002, 2),
            (5004, 4),
        ];
        let sent: Vec<Header> = arrivals
            .into_iter()
            .map(|(sequence, frame)| {
                let ts = 90_000 + 160 * frame;
                let p = packet(8, sequence, ts, 99, false, &[1; 160]);
                parse(&out.relay(&p, t0 + FRAME * frame).unwrap()).unwrap()
            })
            .collect();
        let numbers: Vec<u16> = sent.iter().map(|h| h.sequence).collect();
        assert_eq!(numbers, [1, 2, 4, 3, 3, 5]);
        assert_eq!(sent[3].timestamp, sent[0].timestamp.wrapping_add(2 * 160));
        // The host's next frame (a prompt) goes on from the highest number and time sent.
        let prompt = parse(&out.host_frame(8, &[0xd5; 160], t0 + FRAME * 5)).unwrap();
        assert_eq!(prompt.sequence, 6);
        assert_eq!(prompt.timestamp, sent[5].timestamp.wrapping_add(160));
    }

    #[test]
    fn headers_with_csrcs_extensions_and_padding_parse() {
        let mut p = packet(0, 1, 2, 3, false, &[]);
        p[0] = 0x80 | 0x10 | 0x20 | 1; // extension, padding, one CSRC
        p.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension of one word
        p.extend_from_slice(&[0xaa; 4]); // payload
        p.extend_from_slice(&[0, 0, 3]); // padding, count 3
        let h = parse(&p).unwrap();
        assert_eq!(h.payload_offset, 12 + 4 + 8);
        assert!(parse(&[0x40; 12]).is_none(), "version 1");
    }

    #[test]
    fn an_adopting_stream_passes_its_first_source_and_continues_it_for_the_next() {
        let t0 = crate::clock::monotonic_now();
        let mut out = OutStream::adopting();
        let first = out
            .relay(&packet(0, 700, 5_000, 42, true, &[1; 160]), t0)
            .unwrap();
        assert_eq!(
            first,
            packet(0, 700, 5_000, 42, true, &[1; 160]),
            "unchanged"
        );
        out.relay(&packet(0, 701, 5_160, 42, false, &[1; 160]), t0 + FRAME)
            .unwrap();
        // The device changes (a flip) 100 ms later: same SSRC, next sequence number,
        // timestamps on by the time that passed.
        let switched = out
            .relay(
                &packet(0, 9, 123_456, 77, false, &[2; 160]),
                t0 + FRAME + Duration::from_millis(100),
            )
            .unwrap();
        let h = parse(&switched).unwrap();
        assert_eq!((h.ssrc, h.sequence), (42, 702));
        assert_eq!(h.timestamp, 5_160 + 800);
        assert!(h.marker);
    }

    #[test]
    fn the_push_code_is_kept_from_the_far_end_and_other_keys_are_not() {
        let t0 = crate::clock::monotonic_now();
        let mut filter = KeyFilter::new(101, "*8");
        let audio = packet(0, 1, 0, 1, false, &[0; 160]);
        let star = |ts| event(ts, 10, false);
        let eight = |ts| event(ts, 8, false);
        let five = |ts| event(ts, 5, false);
        assert!(filter.passes(&audio));
        assert_eq!(filter.process(&audio, t0), vec![audio.clone()]);
        // * then 8: nothing of either reaches the far end.
        assert!(filter.process(&star(100), t0).is_empty());
        assert!(filter.process(&star(100), t0).is_empty());
        assert!(filter.process(&eight(900), t0).is_empty());
        assert!(filter.process(&eight(900), t0).is_empty());
        // The *'s last end packet, delayed behind the 8: not the start of a new code.
        assert!(filter.process(&event(100, 10, true), t0).is_empty());
        assert_eq!(filter.process(&audio, t0), vec![audio.clone()]);
        assert!(filter.process(&star(2000), t0).is_empty());
        assert!(
            !filter.passes(&audio),
            "a held * must go out before the audio"
        );
        // * then 5: the held * goes out (late, in order), then the 5.
        let out = filter.process(&five(2800), t0);
        assert_eq!(out, [star(2000), five(2800)]);
        // A lone * is let through once the code cannot come any more.
        assert!(filter.process(&star(4000), t0).is_empty());
        let later = t0 + Duration::from_secs(2);
        assert_eq!(filter.process(&audio, later), [star(4000), audio.clone()]);
        assert_eq!(
            filter.process(&star(4000), later),
            [star(4000)],
            "the rest of it too"
        );
    }

    #[test]
    fn rtcp_from_a_new_device_speaks_for_the_stream_and_byes_are_kept_back() {
        let t0 = crate::clock::monotonic_now();
        let mut out = OutStream::adopting();
        out.relay(&packet(0, 1, 1_000, 42, false, &[0; 160]), t0)
            .unwrap();
        out.relay(&packet(0, 9, 50_000, 77, false, &[0; 160]), t0 + FRAME)
            .unwrap(); // a flip: device 77 now feeds stream 42
        // SR from device 77 (RTP timestamp 50 000) + SDES, as one compound.
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend_from_slice(&77u32.to_be_bytes());
        sr.extend_from_slice(&[0; 8]); // NTP
        sr.extend_from_slice(&50_000u32.to_be_bytes());
        sr.extend_from_slice(&[0; 8]); // counts
        let mut sdes = vec![0x81, 202, 0, 1];
        sdes.extend_from_slice(&77u32.to_be_bytes());
        let compound = [sr, sdes.clone()].concat();
        let mapped = out.relay_rtcp(&compound).unwrap();
        assert_eq!(&mapped[4..8], &42u32.to_be_bytes());
        assert_eq!(
            &mapped[16..20],
            &1_160u32.to_be_bytes(),
            "on the stream's timeline"
        );
        assert_eq!(&mapped[32..36], &42u32.to_be_bytes(), "the SDES chunk too");
        let mut bye = vec![0x81, 203, 0, 1];
        bye.extend_from_slice(&77u32.to_be_bytes());
        assert!(out.relay_rtcp(&[sdes, bye].concat()).is_none());
        assert!(out.relay_rtcp(&[0x80, 200, 0, 9]).is_none(), "truncated");
    }
}
