//! Prompts: WAV files named by `play` and `gather`, loaded once and kept as 20 ms frames
//! in both G.711 laws, so playing one is a copy per packet.
//!
//! The built-in set (`host/prompts/*.wav`, made by `host/prompts/generate.sh`) is compiled
//! into the binary; files in the `media.prompts` folder add to it or replace a built-in of
//! the same name.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::FRAME_SAMPLES;
use super::g711::{self, Codec, alaw_decode, ulaw_decode};

const SAMPLE_RATE: u32 = 8000;
/// Longer prompts are refused: a prompt is not a recording of a conference.
const MAX_SECONDS: u32 = 600;

const BUILT_IN: [(&str, &[u8]); 7] = [
    ("welcome", include_bytes!("../../../prompts/welcome.wav")),
    ("menu", include_bytes!("../../../prompts/menu.wav")),
    ("closed", include_bytes!("../../../prompts/closed.wav")),
    (
        "transferring",
        include_bytes!("../../../prompts/transferring.wav"),
    ),
    ("goodbye", include_bytes!("../../../prompts/goodbye.wav")),
    (
        "enter-pin",
        include_bytes!("../../../prompts/enter-pin.wav"),
    ),
    (
        "invalid-choice",
        include_bytes!("../../../prompts/invalid-choice.wav"),
    ),
];

/// One prompt, ready to send.
#[derive(Debug)]
pub struct Prompt {
    pub name: String,
    /// 16-bit samples at 8 kHz, padded with silence to whole frames.
    samples: Vec<i16>,
    pcmu: Vec<u8>,
    pcma: Vec<u8>,
}

impl Prompt {
    pub fn from_samples(name: &str, mut samples: Vec<i16>) -> Self {
        let frame = FRAME_SAMPLES as usize;
        samples.resize(samples.len().div_ceil(frame).max(1) * frame, 0);
        Self {
            name: name.to_owned(),
            pcmu: samples
                .iter()
                .map(|&s| g711::encode(Codec::Pcmu, s))
                .collect(),
            pcma: samples
                .iter()
                .map(|&s| g711::encode(Codec::Pcma, s))
                .collect(),
            samples,
        }
    }

    /// The number of 20 ms frames.
    pub fn frames(&self) -> usize {
        self.samples.len() / FRAME_SAMPLES as usize
    }

    pub fn duration(&self) -> Duration {
        super::FRAME * self.frames() as u32
    }

    /// Frame `i` encoded for `codec`.
    pub fn frame(&self, codec: Codec, i: usize) -> &[u8] {
        let range = i * FRAME_SAMPLES as usize..(i + 1) * FRAME_SAMPLES as usize;
        match codec {
            Codec::Pcmu => &self.pcmu[range],
            Codec::Pcma => &self.pcma[range],
        }
    }

    /// Frame `i` as samples (for recordings).
    pub fn frame_samples(&self, i: usize) -> &[i16] {
        &self.samples[i * FRAME_SAMPLES as usize..(i + 1) * FRAME_SAMPLES as usize]
    }

    /// Ringback as callers in North America know it: 440 + 480 Hz, 2 s on, 4 s off.
    pub fn ringback() -> Self {
        Self::tone("ringback", (440.0, 480.0), 6000, |ms| ms < 2000)
    }

    /// Told to a device whose push nobody took: three short beeps of the busy tone's
    /// 480 + 620 Hz, 150 ms on, 150 ms off.
    pub fn no_answer_tone() -> Self {
        Self::tone("no-answer", (480.0, 620.0), 900, |ms| ms % 300 < 150)
    }

    /// Two frequencies together, `length_ms` long, sounding while `on(ms)`.
    fn tone(
        name: &str,
        (f1, f2): (f64, f64),
        length_ms: usize,
        on: impl Fn(usize) -> bool,
    ) -> Self {
        let per_ms = SAMPLE_RATE as usize / 1000;
        let samples = (0..length_ms * per_ms)
            .map(|n| {
                if !on(n / per_ms) {
                    return 0;
                }
                let t = n as f64 / f64::from(SAMPLE_RATE);
                let tone = (2.0 * std::f64::consts::PI * f1 * t).sin()
                    + (2.0 * std::f64::consts::PI * f2 * t).sin();
                (tone * 4000.0) as i16 // about -15 dBFS per tone
            })
            .collect();
        Self::from_samples(name, samples)
    }
}

/// Why a WAV file can't be a prompt.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{file}: not a readable WAV file: {message}")]
    Unreadable { file: String, message: String },
    #[error(
        "{file}: {what} is not supported (8000 Hz mono, 16-bit PCM or G.711 µ-law/A-law; convert with `sox in.wav -r 8000 -c 1 -b 16 out.wav`)"
    )]
    Format { file: String, what: String },
    #[error("{file}: longer than {MAX_SECONDS} s")]
    TooLong { file: String },
}

/// Decode a WAV file's bytes to 8 kHz samples. `file` names it in errors.
pub fn decode_wav(file: &str, bytes: &[u8]) -> Result<Vec<i16>, PromptError> {
    let format = |what: String| PromptError::Format {
        file: file.to_owned(),
        what,
    };
    let samples = match hound::WavReader::new(Cursor::new(bytes)) {
        Ok(reader) => {
            let spec = reader.spec();
            if spec.sample_rate != SAMPLE_RATE || spec.channels != 1 {
                return Err(format(format!(
                    "{} Hz with {} channel(s)",
                    spec.sample_rate, spec.channels
                )));
            }
            if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
                return Err(format(format!(
                    "{}-bit {:?} samples",
                    spec.bits_per_sample, spec.sample_format
                )));
            }
            check_length(file, reader.duration())?;
            reader
                .into_samples::<i16>()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PromptError::Unreadable {
                    file: file.to_owned(),
                    message: e.to_string(),
                })?
        }
        // hound reads PCM only; G.711 files are read by hand (format tags 6 and 7).
        Err(e) => match decode_g711_wav(file, bytes)? {
            Some(samples) => samples,
            None => {
                return Err(PromptError::Unreadable {
                    file: file.to_owned(),
                    message: e.to_string(),
                });
            }
        },
    };
    Ok(samples)
}

fn check_length(file: &str, samples: u32) -> Result<(), PromptError> {
    if samples > MAX_SECONDS * SAMPLE_RATE {
        return Err(PromptError::TooLong {
            file: file.to_owned(),
        });
    }
    Ok(())
}

/// A WAVE file with G.711 samples: walk the RIFF chunks for `fmt ` and `data`. None if
/// the file is not a G.711 WAV at all.
fn decode_g711_wav(file: &str, bytes: &[u8]) -> Result<Option<Vec<i16>>, PromptError> {
    let unreadable = |message: &str| PromptError::Unreadable {
        file: file.to_owned(),
        message: message.to_owned(),
    };
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Ok(None);
    }
    let mut law = None;
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = bytes
            .get(at + 8..(at + 8).saturating_add(size).min(bytes.len()))
            .ok_or_else(|| unreadable("truncated chunk"))?;
        if id == b"fmt " {
            if body.len() < 16 {
                return Err(unreadable("short fmt chunk"));
            }
            let tag = u16::from_le_bytes([body[0], body[1]]);
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            law = Some(match (tag, channels, rate, bits) {
                (6, 1, SAMPLE_RATE, 8) => Codec::Pcma,
                (7, 1, SAMPLE_RATE, 8) => Codec::Pcmu,
                (6 | 7, ..) => {
                    return Err(PromptError::Format {
                        file: file.to_owned(),
                        what: format!(
                            "format tag {tag} at {rate} Hz, {channels} channel(s), {bits} bits"
                        ),
                    });
                }
                _ => return Ok(None),
            });
        } else if id == b"data" {
            let law = law.ok_or_else(|| unreadable("data before fmt"))?;
            check_length(file, body.len() as u32)?;
            let decode = match law {
                Codec::Pcma => alaw_decode,
                Codec::Pcmu => ulaw_decode,
            };
            return Ok(Some(body.iter().map(|&b| decode(b)).collect()));
        }
        at += 8 + size + (size & 1); // chunks are word-aligned
    }
    match law {
        Some(_) => Err(unreadable("no data chunk")),
        None => Ok(None),
    }
}

/// The prompts `play` can name, and the ringback tone.
#[derive(Debug)]
pub struct Prompts {
    by_name: HashMap<String, Arc<Prompt>>,
    ringback: Arc<Prompt>,
    no_answer_tone: Arc<Prompt>,
}

impl Prompts {
    /// The built-in set only.
    pub fn built_in() -> Self {
        let mut prompts = Self {
            by_name: HashMap::new(),
            ringback: Arc::new(Prompt::ringback()),
            no_answer_tone: Arc::new(Prompt::no_answer_tone()),
        };
        for (name, bytes) in BUILT_IN {
            let samples = decode_wav(name, bytes).expect("the built-in prompts are valid WAVs");
            prompts.insert(Prompt::from_samples(name, samples));
        }
        prompts
    }

    /// The built-in set plus every `*.wav` in `dir` (a missing folder is no error). The
    /// files that could not be used come back as errors; they leave the rest loaded.
    pub fn load(dir: &Path) -> (Self, Vec<PromptError>) {
        let mut prompts = Self::built_in();
        let mut errors = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (prompts, errors);
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
            .collect();
        paths.sort();
        for path in paths {
            let (Some(name), file) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.display().to_string(),
            ) else {
                continue;
            };
            let decoded = std::fs::read(&path)
                .map_err(|e| PromptError::Unreadable {
                    file: file.clone(),
                    message: e.to_string(),
                })
                .and_then(|bytes| decode_wav(&file, &bytes));
            match decoded {
                Ok(samples) => prompts.insert(Prompt::from_samples(name, samples)),
                Err(e) => errors.push(e),
            }
        }
        (prompts, errors)
    }

    fn insert(&mut self, prompt: Prompt) {
        self.by_name.insert(prompt.name.clone(), Arc::new(prompt));
    }

    pub fn get(&self, name: &str) -> Option<Arc<Prompt>> {
        self.by_name.get(name).cloned()
    }

    pub fn ringback(&self) -> Arc<Prompt> {
        self.ringback.clone()
    }

    /// The beeps a device hears when nobody took its push.
    pub fn no_answer_tone(&self) -> Arc<Prompt> {
        self.no_answer_tone.clone()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(spec: hound::WavSpec, samples: &[i16]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
        for &s in samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        out.into_inner()
    }

    const SPEC: hound::WavSpec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };

    #[test]
    fn built_in_prompts_load_as_whole_frames() {
        let prompts = Prompts::built_in();
        assert_eq!(
            prompts.names(),
            [
                "closed",
                "enter-pin",
                "goodbye",
                "invalid-choice",
                "menu",
                "transferring",
                "welcome"
            ]
        );
        let welcome = prompts.get("welcome").unwrap();
        assert!(welcome.duration() > Duration::from_secs(1));
        assert_eq!(welcome.frame(Codec::Pcmu, welcome.frames() - 1).len(), 160);
    }

    #[test]
    fn a_folder_adds_and_replaces_and_reports_bad_files_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("welcome.wav"), wav(SPEC, &[1000; 800])).unwrap();
        std::fs::write(dir.path().join("sales-hours.wav"), wav(SPEC, &[5; 80])).unwrap();
        std::fs::write(dir.path().join("corrupt.wav"), b"RIFF\x10\0\0\0WAVEjunk").unwrap();
        let stereo = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            ..SPEC
        };
        std::fs::write(dir.path().join("music.wav"), wav(stereo, &[0; 100])).unwrap();
        let (prompts, errors) = Prompts::load(dir.path());
        assert_eq!(prompts.get("welcome").unwrap().frames(), 5);
        assert_eq!(prompts.get("sales-hours").unwrap().frames(), 1, "padded");
        assert!(prompts.get("corrupt").is_none());
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("corrupt.wav"), "{}", errors[0]);
        assert!(
            errors[1].contains("music.wav") && errors[1].contains("44100 Hz with 2"),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn g711_wav_files_decode() {
        let mut bytes = b"RIFF\0\0\0\0WAVEfmt \x12\0\0\0".to_vec();
        bytes.extend_from_slice(&[7, 0, 1, 0]); // µ-law, mono
        bytes.extend_from_slice(&8000u32.to_le_bytes());
        bytes.extend_from_slice(&8000u32.to_le_bytes());
        bytes.extend_from_slice(&[1, 0, 8, 0, 0, 0]);
        bytes.extend_from_slice(b"fact\x04\0\0\0\x03\0\0\0");
        bytes.extend_from_slice(b"data\x03\0\0\0\xff\x80\x00\0");
        let samples = decode_wav("x.wav", &bytes).unwrap();
        assert_eq!(samples, [0, ulaw_decode(0x80), ulaw_decode(0)]);
        bytes[20] = 6; // A-law at 16 kHz is refused
        bytes[24..28].copy_from_slice(&16_000u32.to_le_bytes());
        let e = decode_wav("x.wav", &bytes).unwrap_err().to_string();
        assert!(e.contains("x.wav") && e.contains("16000 Hz"), "{e}");
    }
}
