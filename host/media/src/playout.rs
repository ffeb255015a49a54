//! What an engine says back on a bidirectional media stream, waiting to be played to the
//! caller: its audio in order, and its marks, each reported back (to the stream's task,
//! which tells the engine) once the audio before it has been played. Sans-IO: the
//! stream's task fills it, the call's packet state takes 20 ms at a time.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::{Codec, g711};

/// The most engine audio one call queues: 60 s of 8 kHz μ-law. More is dropped.
pub(crate) const MAX_QUEUED: usize = 60 * 8000;
/// The most marks waiting at once; more are answered at once.
const MAX_MARKS: usize = 1024;
/// μ-law's silence (both zero codes sound alike; this is the one encoders emit).
const ULAW_SILENCE: u8 = 0xFF;

pub(crate) struct Playout {
    audio: VecDeque<u8>,
    /// Each mark with the count of bytes queued before it: it is played once that many
    /// have been.
    marks: VecDeque<(u64, String)>,
    queued: u64,
    played: u64,
    /// 20 ms frames (or relayed packets) that carried the engine's audio.
    pub(crate) frames_played: u64,
    /// Bytes of audio refused because the queue was full.
    pub(crate) bytes_dropped: u64,
    /// Played marks, for the stream's task to send back; full means the engine has
    /// stopped reading, and the mark is lost with the rest.
    marks_out: mpsc::Sender<String>,
}

impl Playout {
    pub(crate) fn new(marks_out: mpsc::Sender<String>) -> Self {
        Self {
            audio: VecDeque::new(),
            marks: VecDeque::new(),
            queued: 0,
            played: 0,
            frames_played: 0,
            bytes_dropped: 0,
            marks_out,
        }
    }

    /// Queue μ-law audio; false (and nothing queued) if the queue cannot take it all.
    pub(crate) fn push_audio(&mut self, ulaw: &[u8]) -> bool {
        if self.audio.len() + ulaw.len() > MAX_QUEUED {
            self.bytes_dropped += ulaw.len() as u64;
            return false;
        }
        self.audio.extend(ulaw);
        self.queued += ulaw.len() as u64;
        true
    }

    /// A mark: reported once everything queued before it has played (at once if
    /// nothing is queued).
    pub(crate) fn push_mark(&mut self, name: String) {
        if self.audio.is_empty() || self.marks.len() >= MAX_MARKS {
            let _ = self.marks_out.try_send(name);
        } else {
            self.marks.push_back((self.queued, name));
        }
    }

    /// Drop what is queued; the marks waiting on it are reported now.
    pub(crate) fn clear(&mut self) {
        self.played += self.audio.len() as u64;
        self.audio.clear();
        self.report_marks();
    }

    /// The next `len` bytes of audio in `codec` (the last of it padded with silence),
    /// or none if nothing is queued.
    pub(crate) fn take(&mut self, codec: Codec, len: usize) -> Option<Vec<u8>> {
        if self.audio.is_empty() {
            return None;
        }
        let n = len.min(self.audio.len());
        let mut out: Vec<u8> = self.audio.drain(..n).collect();
        out.resize(len, ULAW_SILENCE);
        if codec == Codec::Pcma {
            for byte in &mut out {
                *byte = g711::encode(Codec::Pcma, g711::ulaw_decode(*byte));
            }
        }
        self.played += n as u64;
        self.frames_played += 1;
        self.report_marks();
        Some(out)
    }

    fn report_marks(&mut self) {
        while let Some((at, _)) = self.marks.front() {
            if *at > self.played {
                break;
            }
            if let Some((_, name)) = self.marks.pop_front() {
                let _ = self.marks_out.try_send(name);
            }
        }
    }
}

/// `engine` over `heard` (both G.711 in `codec`, the same length), sample by sample,
/// clipped.
pub(crate) fn mix(codec: Codec, heard: &mut [u8], engine: &[u8]) {
    let decode = |b: u8| match codec {
        Codec::Pcmu => g711::ulaw_decode(b),
        Codec::Pcma => g711::alaw_decode(b),
    };
    for (h, e) in heard.iter_mut().zip(engine) {
        let sum = i32::from(decode(*h)) + i32::from(decode(*e));
        *h = g711::encode(codec, sum.clamp(-32768, 32767) as i16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playout() -> (Playout, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(16);
        (Playout::new(tx), rx)
    }

    #[test]
    fn audio_plays_in_order_and_a_mark_returns_when_its_audio_has_played() {
        let (mut p, mut marks) = playout();
        assert!(p.push_audio(&[1; 200]));
        p.push_mark("first".into());
        assert!(p.push_audio(&[2; 160]));
        p.push_mark("second".into());
        let frame = p.take(Codec::Pcmu, 160).unwrap();
        assert_eq!(frame, vec![1; 160]);
        assert!(marks.try_recv().is_err(), "40 bytes before the first mark");
        let frame = p.take(Codec::Pcmu, 160).unwrap();
        assert_eq!(&frame[..40], &[1; 40]);
        assert_eq!(&frame[40..], &[2; 120]);
        assert_eq!(marks.try_recv().unwrap(), "first");
        let last = p.take(Codec::Pcmu, 160).unwrap();
        assert_eq!(&last[..40], &[2; 40]);
        assert_eq!(&last[40..], &[ULAW_SILENCE; 120], "padded with silence");
        assert_eq!(marks.try_recv().unwrap(), "second");
        assert!(p.take(Codec::Pcmu, 160).is_none());
        assert_eq!(p.frames_played, 3);
        // A mark with nothing queued comes straight back.
        p.push_mark("now".into());
        assert_eq!(marks.try_recv().unwrap(), "now");
    }

    #[test]
    fn clear_drops_the_audio_and_returns_its_marks() {
        let (mut p, mut marks) = playout();
        p.push_audio(&[7; 1600]);
        p.push_mark("end".into());
        p.clear();
        assert_eq!(marks.try_recv().unwrap(), "end");
        assert!(p.take(Codec::Pcmu, 160).is_none());
    }

    #[test]
    fn the_queue_has_a_limit() {
        let (mut p, _marks) = playout();
        assert!(p.push_audio(&vec![0; MAX_QUEUED]));
        assert!(!p.push_audio(&[0; 160]));
        assert_eq!(p.bytes_dropped, 160);
    }

    #[test]
    fn a_law_calls_get_a_law_and_mixing_adds() {
        let (mut p, _marks) = playout();
        let loud = g711::ulaw_encode(8000);
        p.push_audio(&[loud; 160]);
        let frame = p.take(Codec::Pcma, 160).unwrap();
        let back = g711::alaw_decode(frame[0]);
        assert!((7500..8500).contains(&back), "{back}");
        let mut heard = vec![g711::encode(Codec::Pcma, 1000); 4];
        mix(
            Codec::Pcma,
            &mut heard,
            &[g711::encode(Codec::Pcma, 2000); 4],
        );
        let sum = g711::alaw_decode(heard[0]);
        assert!((2900..3100).contains(&sum), "{sum}");
        let mut loudest = vec![g711::encode(Codec::Pcmu, 30000); 2];
        mix(
            Codec::Pcmu,
            &mut loudest,
            &[g711::encode(Codec::Pcmu, 30000); 2],
        );
        assert!(
            g711::ulaw_decode(loudest[0]) > 30000,
            "clipped, not wrapped"
        );
    }
}
