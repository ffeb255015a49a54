//! Call recording: a stereo WAV (left: the caller, right: what the caller hears), laid
//! out on the call's clock so its length is the recorded time however many packets were
//! lost or late. Written as it goes, holding only the last half second in memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Samples a second.
const RATE: u64 = 8000;
/// How far behind the clock samples are kept before being written: packets arriving
/// later than this are dropped from the recording.
const HOLD: u64 = RATE / 2;
/// A packet up to this far from where its channel left off continues it seamlessly
/// (arrival jitter); further away, it is placed by its arrival time.
const SNAP: u64 = 3 * 160;

/// Which side of the call a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The caller (left).
    Caller = 0,
    /// The other side (right): the callee, prompts and tones.
    Other = 1,
}

pub struct Recorder {
    path: PathBuf,
    writer: hound::WavWriter<BufWriter<File>>,
    started: Instant,
    /// Sample frames already written.
    written: u64,
    /// Per channel: samples from `written` on, not yet written.
    pending: [VecDeque<i16>; 2],
    /// Per channel: where its last packet ended.
    next: [u64; 2],
}

impl Recorder {
    pub fn create(path: &Path, started: Instant) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: RATE as u32,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(std::io::Error::other)?;
        Ok(Self {
            path: path.to_owned(),
            writer,
            started,
            written: 0,
            pending: [VecDeque::new(), VecDeque::new()],
            next: [0, 0],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn position(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64 * RATE / 1_000_000
    }

    /// Samples one side sent or heard at `at` (when the packet arrived or left).
    pub fn put(&mut self, channel: Channel, at: Instant, samples: &[i16]) {
        let c = channel as usize;
        let arrival = self.position(at);
        // A packet's samples end when it arrives; continue the channel if that is close.
        let start_by_clock = arrival.saturating_sub(samples.len() as u64);
        let start = if self.next[c].abs_diff(start_by_clock) <= SNAP {
            self.next[c]
        } else {
            start_by_clock
        };
        self.next[c] = start + samples.len() as u64;
        for (i, &s) in samples.iter().enumerate() {
            let pos = start + i as u64;
            let Some(offset) = pos.checked_sub(self.written) else {
                continue; // too late
            };
            let pending = &mut self.pending[c];
            if pending.len() <= offset as usize {
                pending.resize(offset as usize + 1, 0);
            }
            pending[offset as usize] = s;
        }
        if let Err(e) = self.flush_until(arrival.saturating_sub(HOLD)) {
            tracing::warn!(path = %self.path.display(), "recording: {e}");
        }
    }

    fn flush_until(&mut self, until: u64) -> Result<(), hound::Error> {
        while self.written < until {
            for c in 0..2 {
                let s = self.pending[c].pop_front().unwrap_or(0);
                self.writer.write_sample(s)?;
            }
            self.written += 1;
        }
        Ok(())
    }

    /// Stop at `at`: the file's length is the time since the recording started.
    pub fn finish(mut self, at: Instant) -> Result<PathBuf, hound::Error> {
        let end = self.position(at);
        self.flush_until(end)?;
        self.writer.finalize()?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn channels_line_up_on_the_clock_and_the_length_is_the_time_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls/one.wav");
        let t0 = crate::clock::monotonic_now();
        let mut rec = Recorder::create(&path, t0).unwrap();
        // The caller talks for a second (50 packets, with jitter); the other side is
        // silent for the first half second, then talks.
        for i in 1..=50u32 {
            let jitter = Duration::from_millis(u64::from(i % 3));
            rec.put(
                Channel::Caller,
                t0 + Duration::from_millis(20 * u64::from(i)) + jitter,
                &[100; 160],
            );
            if i > 25 {
                rec.put(
                    Channel::Other,
                    t0 + Duration::from_millis(20 * u64::from(i)),
                    &[-200; 160],
                );
            }
        }
        let written = rec.finish(t0 + Duration::from_millis(1500)).unwrap();
        let mut reader = hound::WavReader::open(&written).unwrap();
        assert_eq!(reader.spec().channels, 2);
        assert_eq!(reader.duration(), 12_000, "1.5 s at 8 kHz");
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let left = |i: usize| samples[2 * i];
        let right = |i: usize| samples[2 * i + 1];
        assert_eq!((left(100), right(100)), (100, 0));
        assert_eq!((left(5000), right(5000)), (100, -200));
        assert_eq!((left(7999), right(7999)), (100, -200));
        assert_eq!((left(11_000), right(11_000)), (0, 0), "after both stopped");
        // No gaps from the jitter: the caller's second is continuous.
        assert!((0..8000).all(|i| left(i) == 100));
    }
}
