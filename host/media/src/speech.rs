//! Text-to-speech for `say`: espeak-ng speaks, rubato resamples to the calls' 8 kHz, and
//! what was said is kept by (voice, text), so a menu read to every caller is rendered once.
//!
//! espeak-ng runs as a child process per rendering rather than in-process through its C
//! library: the library keeps one global voice and output (it is not thread-safe), and a
//! fault or a hang in it would take every call with it. A child costs ~10–20 ms, is
//! killed at its deadline, and is only asked once per (voice, text).
//!
//! Rendering is blocking work for the runtime's blocking pool (the driver renders a
//! decision's speech where the script ran), never for the call engine.

use std::collections::{HashMap, VecDeque};
use std::io::{Cursor, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Async, FixedAsync, Resampler, SincInterpolationParameters};
use wasmpbx_types::media::Prompt;
use wasmpbx_types::routing::{Action, MAX_SAY_CHARS, Speech};

use crate::clock::monotonic_now;

/// How long one rendering may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// How much rendered speech is kept (a prompt holds 4 bytes a sample: ~17 minutes).
const CACHE_BYTES: usize = 32 << 20;
const SAMPLE_RATE: f64 = 8000.0;

/// Why text could not be spoken.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error("cannot run {command}: {message} (install espeak-ng)")]
    Spawn { command: String, message: String },
    #[error("voice {0:?} is not known to espeak-ng")]
    UnknownVoice(String),
    #[error("espeak-ng failed: {0}")]
    Engine(String),
    #[error("espeak-ng took longer than {0:?}")]
    Timeout(Duration),
    #[error("espeak-ng's audio: {0}")]
    Audio(String),
}

/// The text-to-speech engine and its cache.
pub struct Speaker {
    command: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    by_key: HashMap<(String, String), Arc<Prompt>>,
    /// Oldest first: what goes when the cache is full.
    order: VecDeque<(String, String)>,
    bytes: usize,
}

impl Cache {
    fn insert(&mut self, key: (String, String), audio: Arc<Prompt>) {
        self.bytes += prompt_bytes(&audio);
        if self.by_key.insert(key.clone(), audio).is_none() {
            self.order.push_back(key);
        }
        while self.bytes > CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_key.remove(&oldest) {
                self.bytes -= prompt_bytes(&gone);
            }
        }
    }
}

fn prompt_bytes(prompt: &Prompt) -> usize {
    prompt.frames() * 160 * 4
}

impl Default for Speaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Speaker {
    /// espeak-ng from `PATH`.
    pub fn new() -> Self {
        Self::with_command("espeak-ng")
    }

    pub fn with_command(command: impl Into<PathBuf>) -> Self {
        Self {
            command: command.into(),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Render every `say` of a decision (a `say` action, a gather's spoken prompt) that is
    /// not rendered yet. One that cannot be rendered stays without audio: the call engine
    /// then treats it as an action it cannot carry out. `default_voice` speaks when a
    /// `say` names none (`[media] say_voice`).
    pub fn render_actions(&self, actions: &mut [Action], default_voice: &str) {
        for action in actions {
            let speech = match action {
                Action::Say(speech) => speech,
                Action::Gather {
                    say: Some(speech), ..
                } => speech,
                _ => continue,
            };
            if speech.audio.0.is_some() {
                continue;
            }
            match self.render(speech, default_voice) {
                Ok(audio) => speech.audio.0 = Some(audio),
                Err(e) => tracing::error!("say: {e}"),
            }
        }
    }

    /// The audio of `speech`: from the cache, or rendered now. Text past
    /// [`MAX_SAY_CHARS`] is cut at a word; an unknown voice falls back to the default.
    pub fn render(&self, speech: &Speech, default_voice: &str) -> Result<Arc<Prompt>, SpeechError> {
        let text = cut(&speech.text);
        if text.len() < speech.text.len() {
            tracing::warn!(
                chars = speech.text.chars().count(),
                "say: text longer than {MAX_SAY_CHARS} characters is cut"
            );
        }
        let voice = speech.voice.as_deref().unwrap_or(default_voice);
        match self.cached_or_rendered(voice, text) {
            Err(SpeechError::UnknownVoice(voice)) if voice != default_voice => {
                tracing::warn!(
                    voice,
                    default = default_voice,
                    "say: unknown voice; speaking with the default"
                );
                self.cached_or_rendered(default_voice, text)
            }
            result => result,
        }
    }

    fn cached_or_rendered(&self, voice: &str, text: &str) -> Result<Arc<Prompt>, SpeechError> {
        let key = (voice.to_owned(), text.to_owned());
        if let Some(audio) = self.lock().by_key.get(&key) {
            return Ok(audio.clone());
        }
        let started = monotonic_now();
        let samples = self.synthesize(voice, text)?;
        let audio = Arc::new(Prompt::from_samples("say", samples));
        tracing::debug!(
            voice,
            chars = text.chars().count(),
            seconds = audio.duration().as_secs_f32(),
            took_ms = started.elapsed().as_millis() as u64,
            "say: rendered"
        );
        self.lock().insert(key, audio.clone());
        Ok(audio)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache is only ever left whole: a panic elsewhere cannot have broken it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run espeak-ng on `text` (given on stdin, so no text is ever taken for an option)
    /// and return its speech at 8 kHz.
    fn synthesize(&self, voice: &str, text: &str) -> Result<Vec<i16>, SpeechError> {
        let mut child = Command::new(&self.command)
            .args(["-v", voice, "--stdout"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SpeechError::Spawn {
                command: self.command.display().to_string(),
                message: e.to_string(),
            })?;
        // The text (at most a few KiB) fits the pipe's buffer: the write cannot block.
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| SpeechError::Engine(format!("writing the text: {e}")))?;
        }
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let reader = std::thread::spawn(move || {
            let mut wav = Vec::new();
            let mut said = String::new();
            let _ = stdout.read_to_end(&mut wav);
            let _ = stderr.read_to_string(&mut said);
            (wav, said)
        });
        let started = monotonic_now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < DEADLINE => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(SpeechError::Timeout(DEADLINE));
                }
            }
        };
        let (wav, said) = reader
            .join()
            .map_err(|_| SpeechError::Engine("reading its output failed".into()))?;
        if !status.success() {
            if said.contains("voice does not exist") {
                return Err(SpeechError::UnknownVoice(voice.to_owned()));
            }
            let said = said
                .lines()
                .next()
                .unwrap_or("no message")
                .trim()
                .to_owned();
            return Err(SpeechError::Engine(format!("{status}: {said}")));
        }
        to_8khz(&wav)
    }
}

/// `text` cut to at most [`MAX_SAY_CHARS`] characters, at the last word that fits.
fn cut(text: &str) -> &str {
    let Some((end, _)) = text.char_indices().nth(MAX_SAY_CHARS) else {
        return text;
    };
    let head = &text[..end];
    match head.rfind(char::is_whitespace) {
        Some(space) if space > 0 => head[..space].trim_end(),
        _ => head,
    }
}

/// espeak-ng's WAV (16-bit mono, 22 050 Hz, streamed: its header's lengths are
/// placeholders, so samples are read until the data ends) resampled to 8 kHz.
fn to_8khz(wav: &[u8]) -> Result<Vec<i16>, SpeechError> {
    let reader =
        hound::WavReader::new(Cursor::new(wav)).map_err(|e| SpeechError::Audio(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(SpeechError::Audio(format!(
            "{} channel(s) of {} bits",
            spec.channels, spec.bits_per_sample
        )));
    }
    let input: Vec<f32> = reader
        .into_samples::<i16>()
        .map_while(Result::ok)
        .map(|s| f32::from(s) / 32768.0)
        .collect();
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let ratio = SAMPLE_RATE / f64::from(spec.sample_rate);
    let mut resampler = Async::<f32>::new_sinc(
        ratio,
        1.0,
        &SincInterpolationParameters::default(),
        1024,
        1,
        FixedAsync::Input,
    )
    .map_err(|e| SpeechError::Audio(e.to_string()))?;
    let channels = [input];
    let len = channels[0].len();
    let adapter = SequentialSliceOfVecs::new(&channels, 1, len)
        .map_err(|e| SpeechError::Audio(e.to_string()))?;
    let output = resampler
        .process_all(&adapter, len, None)
        .map_err(|e| SpeechError::Audio(e.to_string()))?;
    Ok(output
        .take_data()
        .into_iter()
        .map(|s| (s * 32767.0).clamp(-32768.0, 32767.0) as i16)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_word() {
        let text = "word ".repeat(300);
        let cut = cut(&text);
        assert!(cut.chars().count() <= MAX_SAY_CHARS);
        assert!(cut.ends_with("word"), "{cut:?}");
        assert_eq!(super::cut("short text"), "short text");
        let unbroken = "x".repeat(MAX_SAY_CHARS + 10);
        assert_eq!(super::cut(&unbroken).len(), MAX_SAY_CHARS);
    }

    #[test]
    fn a_missing_engine_is_a_clear_error() {
        let speaker = Speaker::with_command("/nonexistent/espeak-ng");
        let err = speaker
            .render(&Speech::new("Hello", None), "en-us")
            .unwrap_err();
        assert!(err.to_string().contains("install espeak-ng"), "{err}");
    }

    /// Needs espeak-ng (tests/run.sh installs it).
    #[test]
    fn speaks_caches_and_falls_back_from_an_unknown_voice() {
        let speaker = Speaker::new();
        let hello = Speech::new("Hello, you have reached billing.", None);
        let first = speaker.render(&hello, "en-us").expect("espeak-ng renders");
        assert!(
            first.duration() > Duration::from_millis(800),
            "{:?}",
            first.duration()
        );
        let loud = (0..first.frames())
            .flat_map(|i| first.frame_samples(i).to_vec())
            .filter(|s| s.unsigned_abs() > 1000)
            .count();
        assert!(loud > 1000, "{loud} loud samples");
        let again = speaker.render(&hello, "en-us").unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second rendering comes from the cache"
        );
        let odd = Speech::new("Hello, you have reached billing.", Some("xx-nope".into()));
        let fallback = speaker.render(&odd, "en-us").unwrap();
        assert!(
            Arc::ptr_eq(&first, &fallback),
            "an unknown voice speaks with the default"
        );
    }

    #[test]
    fn a_resampled_tone_keeps_its_pitch() {
        // One second of 1 kHz at 22 050 Hz in, 8 000 samples of 1 kHz out.
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 22_050,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut wav = Vec::new();
        let mut writer = hound::WavWriter::new(Cursor::new(&mut wav), spec).unwrap();
        for n in 0..22_050 {
            let t = f64::from(n) / 22_050.0;
            let s = (2.0 * std::f64::consts::PI * 1000.0 * t).sin() * 10_000.0;
            writer.write_sample(s as i16).unwrap();
        }
        writer.finalize().unwrap();
        let out = to_8khz(&wav).unwrap();
        assert!((7_990..=8_010).contains(&out.len()), "{}", out.len());
        // 1 kHz at 8 kHz crosses zero 2 000 times a second.
        let middle = &out[1000..7000];
        let crossings = middle
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        assert!((1_480..=1_520).contains(&crossings), "{crossings}");
    }
}
