//! Call recording: a stereo WAV (left: the caller, right: what the caller hears), laid
//! out on the call's clock so its length is the recorded time however many packets were
//! lost or late.
//!
//! Two halves, so that no disk is ever waited on by a call: a call's [`Recorder`] places
//! each packet's samples on the clock in memory (on the packet path, holding only the
//! last half second), and hands finished stretches to [`RecordingFiles`], one thread
//! that creates, writes and finishes every recording's file. A disk that falls behind
//! costs the recordings audio (the stretches it has no room for are left silent, and
//! counted), never the calls. A file is written as `NAME.part` and renamed to its name
//! when it is finished, so whoever finds it under its name finds it whole.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use wasmpbx_types::media::RecordingEnd;

/// Samples a second.
const RATE: u64 = 8000;
/// How far behind the clock samples are kept before being written: packets arriving
/// later than this are dropped from the recording.
const HOLD: u64 = RATE / 2;
/// A packet up to this far from where its channel left off continues it seamlessly
/// (arrival jitter); further away, it is placed by its arrival time.
const SNAP: u64 = 3 * 160;
/// Sample frames (both channels) handed to the writer at a time: a tenth of a second.
const STRETCH: u64 = RATE / 10;
/// Stretches waiting for the writer, all recordings together, before more are dropped:
/// ~13 MB, or four seconds of a thousand recorded calls.
const STRETCHES_QUEUED_AT_MOST: usize = 4096;

/// Which side of the call a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The caller (left).
    Caller = 0,
    /// The other side (right): the callee, prompts and tones.
    Other = 1,
}

/// One call's recording, placed in memory; its file is the writer's.
pub struct Recorder {
    files: RecordingFiles,
    file: u64,
    path: PathBuf,
    /// Set by the writer if it could not create the file.
    no_file: Arc<AtomicBool>,
    started: Instant,
    /// Sample frames placed for good (handed to the writer, or dropped).
    written: u64,
    /// Per channel: samples from `written` on, not yet placed for good.
    pending: [VecDeque<i16>; 2],
    /// Per channel: where its last packet ended.
    next: [u64; 2],
    /// Interleaved frames placed for good, not yet handed over, and the first one's number.
    stretch: Vec<i16>,
    stretch_start: u64,
    /// Sample frames the writer had no room for.
    dropped: u64,
    finished: bool,
}

impl Recorder {
    /// Start recording to `path` (the writer creates it; a file it cannot create is
    /// logged, and the call goes on unrecorded).
    pub fn create(files: &RecordingFiles, path: &Path, started: Instant) -> Self {
        let no_file = Arc::new(AtomicBool::new(false));
        Self {
            file: files.open(path, no_file.clone()),
            files: files.clone(),
            path: path.to_owned(),
            no_file,
            started,
            written: 0,
            pending: [VecDeque::new(), VecDeque::new()],
            next: [0, 0],
            stretch: Vec::with_capacity(2 * STRETCH as usize),
            stretch_start: 0,
            dropped: 0,
            finished: false,
        }
    }

    fn position(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64 * RATE / 1_000_000
    }

    /// Samples one side sent or heard at `at` (when the packet arrived or left).
    pub fn put(&mut self, channel: Channel, at: Instant, samples: &[i16]) {
        let c = channel as usize;
        let arrival = self.position(at);
        // What is older than the hold is placed first: after a silence (a call on hold,
        // a side that sends nothing) the packet lands near what is pending, not at the
        // far end of a gap filled sample by sample.
        self.place_until(arrival.saturating_sub(HOLD));
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
    }

    /// Place the frames before `until` for good, handing them over a stretch at a time.
    fn place_until(&mut self, until: u64) {
        while self.written < until {
            if self.pending.iter().all(VecDeque::is_empty) {
                // Nothing from either side from here on: silence, which the writer
                // fills in itself up to the next stretch's start (or the end).
                self.hand_over();
                self.written = until;
                self.stretch_start = until;
                return;
            }
            for c in 0..2 {
                let s = self.pending[c].pop_front().unwrap_or(0);
                self.stretch.push(s);
            }
            self.written += 1;
            if self.written - self.stretch_start >= STRETCH {
                self.hand_over();
            }
        }
    }

    fn hand_over(&mut self) {
        if !self.stretch.is_empty() {
            // The next stretch's room at once: grown by doubling, it was a dozen
            // reallocations per tenth of a second per recorded call.
            let next = Vec::with_capacity(2 * STRETCH as usize);
            let samples = std::mem::replace(&mut self.stretch, next);
            let frames = samples.len() as u64 / 2;
            if !self.files.frames(self.file, self.stretch_start, samples) {
                self.dropped += frames;
            }
        }
        self.stretch_start = self.written;
    }

    /// Stop at `at`: the file's length is the time since the recording started. Its
    /// file appears under its path once the writer has finished it (moments later) —
    /// or there is none, if the writer could not create it (as far as it has got: one
    /// it has not tried yet still counts as a file).
    pub fn finish(mut self, at: Instant) -> RecordingEnd {
        let end = self.position(at);
        self.end_at(end);
        match self.no_file.load(Relaxed) {
            true => RecordingEnd::NoFile,
            false => RecordingEnd::File(std::mem::take(&mut self.path)),
        }
    }

    fn end_at(&mut self, end: u64) {
        self.place_until(end);
        self.hand_over();
        self.files.finish(self.file, end, self.dropped);
        self.finished = true;
    }
}

/// A recording dropped unfinished (its call's media state went away) ends where it got to.
impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.finished {
            self.end_at(self.written);
        }
    }
}

enum Command {
    Open {
        file: u64,
        path: PathBuf,
        /// Set if the file cannot be created.
        no_file: Arc<AtomicBool>,
    },
    /// Interleaved sample frames from frame number `start` on.
    Frames {
        file: u64,
        start: u64,
        samples: Vec<i16>,
    },
    /// The file ends at frame `end`; `dropped` frames of it had no room in the queue.
    Finish { file: u64, end: u64, dropped: u64 },
    /// Tell `done` when everything before is written (a test, or the end).
    Sync { done: mpsc::Sender<()> },
}

/// The thread writing every recording's file (a handle; clones share the thread, which
/// ends with the last of them after writing what was sent).
#[derive(Clone)]
pub struct RecordingFiles {
    commands: mpsc::Sender<Command>,
    /// Stretches sent, not yet taken by the writer, and how many may be.
    queued: Arc<AtomicUsize>,
    at_most: usize,
    next_file: Arc<AtomicU64>,
    /// Sample frames dropped because the writer had no room for them.
    dropped: Arc<AtomicU64>,
}

impl RecordingFiles {
    /// Start the writer thread, counting the sample frames it has no room for into
    /// `dropped`.
    pub fn start(dropped: Arc<AtomicU64>) -> std::io::Result<Self> {
        let (files, inbox) = Self::unstarted(dropped, STRETCHES_QUEUED_AT_MOST);
        let queued = files.queued.clone();
        std::thread::Builder::new()
            .name("recordings".into())
            .spawn(move || write_files(&inbox, &queued))?;
        Ok(files)
    }

    /// A handle whose writer is whoever reads `inbox` (tests hold it back).
    fn unstarted(dropped: Arc<AtomicU64>, at_most: usize) -> (Self, mpsc::Receiver<Command>) {
        let (commands, inbox) = mpsc::channel();
        let files = Self {
            commands,
            queued: Arc::new(AtomicUsize::new(0)),
            at_most,
            next_file: Arc::new(AtomicU64::new(0)),
            dropped,
        };
        (files, inbox)
    }

    fn open(&self, path: &Path, no_file: Arc<AtomicBool>) -> u64 {
        let file = self.next_file.fetch_add(1, Relaxed);
        self.send(Command::Open {
            file,
            path: path.to_owned(),
            no_file,
        });
        file
    }

    /// Hand a stretch over, or drop it (counted) if the writer is that far behind;
    /// false if dropped.
    fn frames(&self, file: u64, start: u64, samples: Vec<i16>) -> bool {
        let frames = samples.len() as u64 / 2;
        if self.queued.fetch_add(1, Relaxed) >= self.at_most {
            self.queued.fetch_sub(1, Relaxed);
            self.dropped.fetch_add(frames, Relaxed);
            return false;
        }
        self.send(Command::Frames {
            file,
            start,
            samples,
        });
        true
    }

    fn finish(&self, file: u64, end: u64, dropped: u64) {
        self.send(Command::Finish { file, end, dropped });
    }

    /// Wait until everything sent so far is written (at shutdown; tests).
    pub fn sync(&self) {
        let (done, finished) = mpsc::channel();
        self.send(Command::Sync { done });
        let _ = finished.recv();
    }

    fn send(&self, command: Command) {
        // The writer ends only when every handle is gone.
        let _ = self.commands.send(command);
    }
}

/// The writer: every command in order, until every handle is gone.
fn write_files(inbox: &mpsc::Receiver<Command>, queued: &AtomicUsize) {
    let mut writing: HashMap<u64, Writing> = HashMap::new();
    while let Ok(command) = inbox.recv() {
        match command {
            Command::Open {
                file,
                path,
                no_file,
            } => {
                let created = Writing::create(path);
                no_file.store(created.wav.is_none(), Relaxed);
                writing.insert(file, created);
            }
            Command::Frames {
                file,
                start,
                samples,
            } => {
                queued.fetch_sub(1, Relaxed);
                if let Some(w) = writing.get_mut(&file) {
                    w.write(start, &samples);
                }
            }
            Command::Finish { file, end, dropped } => {
                if let Some(w) = writing.remove(&file) {
                    w.finish(end, dropped);
                }
            }
            Command::Sync { done } => {
                let _ = done.send(());
            }
        }
    }
}

/// One recording's file, being written as `NAME.part`.
struct Writing {
    path: PathBuf,
    part: PathBuf,
    /// None if it could not be created, or a write failed (said once, in the log).
    wav: Option<hound::WavWriter<BufWriter<File>>>,
    /// Sample frames written.
    written: u64,
    /// The most frames the file takes (a WAV file's sizes are 32-bit).
    most: u64,
}

/// The most sample frames a recording holds: a WAV file's RIFF size is a 32-bit number
/// of bytes (4 a frame, and the header's 44): about 37 hours at 8 kHz stereo.
const MOST_FRAMES: u64 = (u32::MAX as u64 - 44) / 4;

impl Writing {
    fn create(path: PathBuf) -> Self {
        let mut part = path.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        let wav = match create_wav(&part) {
            Ok(wav) => Some(wav),
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot record: {e}");
                None
            }
        };
        Self {
            path,
            part,
            wav,
            written: 0,
            most: MOST_FRAMES,
        }
    }

    /// Frames from `start` on; a gap before them (silence, or a stretch dropped) is
    /// left silent.
    fn write(&mut self, start: u64, samples: &[i16]) {
        if start > self.written && self.wav.is_some() {
            let gap = (start - self.written) as usize * 2;
            self.put(std::iter::repeat_n(0, gap));
        }
        self.put(samples.iter().copied());
    }

    fn put(&mut self, samples: impl Iterator<Item = i16>) {
        let Some(wav) = self.wav.as_mut() else {
            return;
        };
        // Samples the file has room for (whole frames).
        let room = self.most.saturating_sub(self.written) * 2;
        let mut count = 0u64;
        for s in samples {
            if count == room {
                if room > 0 {
                    tracing::warn!(path = %self.path.display(), "the recording is full (a WAV file holds about 37 hours): the rest of the call is not recorded");
                }
                break;
            }
            if let Err(e) = wav.write_sample(s) {
                tracing::error!(path = %self.path.display(), "recording stopped: {e}");
                self.wav = None;
                return;
            }
            count += 1;
        }
        self.written += count / 2;
    }

    /// Fill to `end`, write the header and give the file its name; `dropped` frames of
    /// it had no room in the queue.
    fn finish(mut self, end: u64, dropped: u64) {
        self.write(end, &[]);
        let Some(wav) = self.wav.take() else {
            return;
        };
        if let Err(e) = wav.finalize() {
            tracing::error!(path = %self.path.display(), "finishing the recording: {e}");
            return;
        }
        if let Err(e) = std::fs::rename(&self.part, &self.path) {
            tracing::error!(path = %self.path.display(), "finishing the recording: {e}");
            return;
        }
        if dropped > 0 {
            tracing::warn!(
                path = %self.path.display(),
                silent_ms = dropped * 1000 / RATE,
                "the disk fell behind: parts of the recording are silent"
            );
        }
    }
}

fn create_wav(path: &Path) -> Result<hound::WavWriter<BufWriter<File>>, hound::Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: RATE as u32,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    hound::WavWriter::create(path, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn read(path: &Path) -> Vec<i16> {
        let mut reader = hound::WavReader::open(path).unwrap();
        assert_eq!(reader.spec().channels, 2);
        reader.samples::<i16>().map(Result::unwrap).collect()
    }

    #[test]
    fn channels_line_up_on_the_clock_and_the_length_is_the_time_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls/one.wav");
        let files = RecordingFiles::start(Arc::default()).unwrap();
        let t0 = crate::clock::monotonic_now();
        let mut rec = Recorder::create(&files, &path, t0);
        // The caller talks for a second (50 packets, with jitter); the other side is
        // silent for the first half second, then talks.
        for i in 1..=50u64 {
            rec.put(Channel::Caller, t0 + ms(20 * i + i % 3), &[100; 160]);
            if i > 25 {
                rec.put(Channel::Other, t0 + ms(20 * i), &[-200; 160]);
            }
        }
        assert_eq!(rec.finish(t0 + ms(1500)), RecordingEnd::File(path.clone()));
        files.sync();
        let samples = read(&path);
        assert_eq!(samples.len(), 2 * 12_000, "1.5 s at 8 kHz");
        let left = |i: usize| samples[2 * i];
        let right = |i: usize| samples[2 * i + 1];
        assert_eq!((left(100), right(100)), (100, 0));
        assert_eq!((left(5000), right(5000)), (100, -200));
        assert_eq!((left(7999), right(7999)), (100, -200));
        assert_eq!((left(11_000), right(11_000)), (0, 0), "after both stopped");
        // No gaps from the jitter: the caller's second is continuous.
        assert!((0..8000).all(|i| left(i) == 100));
    }

    #[test]
    fn a_writer_behind_costs_the_recording_audio_not_its_length_and_the_call_no_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow.wav");
        let dropped = Arc::new(AtomicU64::new(0));
        // A disk so slow that the writer takes nothing until the call is over, with room
        // for two stretches (0.2 s) meanwhile.
        let (files, inbox) = RecordingFiles::unstarted(dropped.clone(), 2);
        let t0 = crate::clock::monotonic_now();
        let mut rec = Recorder::create(&files, &path, t0);
        for i in 1..=100u64 {
            rec.put(Channel::Caller, t0 + ms(20 * i), &[100; 160]);
        }
        assert_eq!(rec.finish(t0 + ms(2000)), RecordingEnd::File(path.clone()));
        assert!(!path.exists(), "nothing under its name before it is whole");
        // 2 s recorded, 0.2 s of it had room.
        assert_eq!(dropped.load(Relaxed), 16_000 - 2 * STRETCH);
        drop(files);
        write_files(&inbox, &AtomicUsize::new(2));
        let samples = read(&path);
        assert_eq!(samples.len(), 2 * 16_000, "the length is the time recorded");
        assert!((0..1600).all(|i| samples[2 * i] == 100), "what had room");
        assert!(
            (1600..16_000).all(|i| samples[2 * i] == 0),
            "the rest silent"
        );
        assert!(!dir.path().join("slow.wav.part").exists());
    }

    #[test]
    fn a_recording_that_cannot_be_created_is_logged_and_the_rest_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-folder");
        std::fs::write(&blocker, b"x").unwrap();
        let files = RecordingFiles::start(Arc::default()).unwrap();
        let t0 = crate::clock::monotonic_now();
        let bad = blocker.join("a.wav");
        let good = dir.path().join("b.wav");
        let mut recs = [
            Recorder::create(&files, &bad, t0),
            Recorder::create(&files, &good, t0),
        ];
        for i in 1..=50u64 {
            for rec in &mut recs {
                rec.put(Channel::Caller, t0 + ms(20 * i), &[7; 160]);
            }
        }
        // The writer has tried both files by now.
        files.sync();
        let [bad_rec, good_rec] = recs;
        assert_eq!(bad_rec.finish(t0 + ms(1000)), RecordingEnd::NoFile);
        assert_eq!(
            good_rec.finish(t0 + ms(1000)),
            RecordingEnd::File(good.clone())
        );
        files.sync();
        assert!(!bad.exists());
        assert_eq!(read(&good).len(), 2 * 8000);
    }

    #[test]
    fn a_recording_stops_growing_where_a_wav_file_must_end_and_is_still_whole() {
        // The real bound is ~37 hours; this file's is 100 frames.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.wav");
        let mut writing = Writing::create(path.clone());
        writing.most = 100;
        writing.write(0, &[1; 150 * 2]);
        writing.write(150, &[2; 10 * 2]);
        writing.finish(400, 0);
        let samples = read(&path);
        assert_eq!(
            samples.len(),
            100 * 2,
            "frames up to the bound, a valid header"
        );
        assert!(samples.iter().all(|&s| s == 1));
    }

    #[test]
    fn a_silence_is_handed_over_as_a_gap_not_sample_by_sample() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.wav");
        let dropped = Arc::new(AtomicU64::new(0));
        let (files, inbox) = RecordingFiles::unstarted(dropped.clone(), usize::MAX);
        let t0 = crate::clock::monotonic_now();
        let mut rec = Recorder::create(&files, &path, t0);
        // A second of the caller, a minute on hold with nothing sent either way, a
        // second more; then the call goes on silent for another minute.
        for i in 1..=50u64 {
            rec.put(Channel::Caller, t0 + ms(20 * i), &[5; 160]);
        }
        for i in 1..=50u64 {
            rec.put(Channel::Caller, t0 + ms(61_000 + 20 * i), &[6; 160]);
        }
        assert_eq!(
            rec.finish(t0 + ms(122_000)),
            RecordingEnd::File(path.clone())
        );
        drop(files);
        let commands: Vec<Command> = inbox.try_iter().collect();
        let stretches = commands
            .iter()
            .filter(|c| matches!(c, Command::Frames { .. }))
            .count();
        // Two seconds of sound are some 20 stretches (partial ones at their edges); the
        // two minutes of silence would be 1 200 more, placed a sample at a time on the
        // call's task.
        assert!(stretches <= 30, "{stretches} stretches handed over");
        assert_eq!(dropped.load(Relaxed), 0);
        // The writer fills the silence in: every second is in place.
        let (replay, inbox) = mpsc::channel();
        commands.into_iter().for_each(|c| replay.send(c).unwrap());
        drop(replay);
        write_files(&inbox, &AtomicUsize::new(usize::MAX / 2));
        let samples = read(&path);
        assert_eq!(samples.len(), 2 * 976_000, "122 s at 8 kHz");
        let left = |second: usize| samples[2 * (second * 8000 + 4000)];
        assert_eq!((left(0), left(30), left(61), left(90)), (5, 0, 6, 0));
    }

    #[test]
    fn a_recording_dropped_unfinished_is_still_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.wav");
        let files = RecordingFiles::start(Arc::default()).unwrap();
        let t0 = crate::clock::monotonic_now();
        let mut rec = Recorder::create(&files, &path, t0);
        for i in 1..=50u64 {
            rec.put(Channel::Caller, t0 + ms(20 * i), &[9; 160]);
        }
        drop(rec);
        files.sync();
        // What was placed for good: the second less the half second held back.
        assert_eq!(read(&path).len(), 2 * 4000);
    }
}
