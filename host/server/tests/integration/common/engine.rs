//! A speech/AI engine's end of a media stream, for the tests: a WebSocket server (the
//! `tungstenite` library) that keeps every message it is sent, or one that accepts and
//! then stops reading. And what checking its audio needs: tone WAVs for SIPp to send, a
//! tone detector for what arrives.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How the engine behaves once a stream connects.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Read and keep everything.
    Listen,
    /// Complete the WebSocket handshake, then read nothing more (a hung engine): its
    /// socket's receive buffer is tiny, so the host's writes stall within a second.
    Stall,
    /// Keep everything, and answer `start` with a second of 1 kHz (μ-law, in ten
    /// `media` messages) and a `mark` named "tone-end" (a bidirectional engine).
    Speak,
}

/// The tone a [`Behaviour::Speak`] engine sends.
pub const SPOKEN_HZ: f64 = 1000.0;

pub struct Engine {
    pub url: String,
    /// Every connection's messages, in order, each parsed as JSON.
    connections: Arc<Mutex<Vec<Vec<serde_json::Value>>>>,
}

/// A certificate and key (DER) the engine serves `wss://` with.
pub struct Tls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

type Kept = Arc<Mutex<Vec<Vec<serde_json::Value>>>>;

impl Engine {
    pub fn start(behaviour: Behaviour) -> Self {
        Self::start_with(behaviour, None)
    }

    /// An engine on `wss://127.0.0.1:…` with this certificate.
    pub fn start_tls(tls: Tls) -> Self {
        Self::start_with(Behaviour::Listen, Some(tls))
    }

    fn start_with(behaviour: Behaviour, tls: Option<Tls>) -> Self {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if behaviour == Behaviour::Stall {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        socket.listen(16).unwrap();
        let listener: TcpListener = socket.into();
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let url = format!(
            "{scheme}://{}/stream?token=engine-secret",
            listener.local_addr().unwrap()
        );
        let tls = tls.map(|t| {
            use tokio_rustls::rustls;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(t.key.into());
            Arc::new(
                rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(vec![t.cert.into()], key)
                    .unwrap(),
            )
        });
        let connections: Kept = Arc::default();
        let kept = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kept, tls) = (kept.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let Ok(session) = tokio_rustls::rustls::ServerConnection::new(config)
                        else {
                            return;
                        };
                        let stream = tokio_rustls::rustls::StreamOwned::new(session, stream);
                        serve(stream, behaviour, &kept);
                    }
                    None => serve(stream, behaviour, &kept),
                });
            }
        });
        Engine { url, connections }
    }

    pub fn connections(&self) -> Vec<Vec<serde_json::Value>> {
        self.connections.lock().unwrap().clone()
    }

    /// Wait (at most `limit`) until some connection's messages satisfy `done`; those.
    pub fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Option<Vec<serde_json::Value>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = self.connections().into_iter().find(|c| done(c)) {
                return Some(c);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One stream: the handshake, then keep its messages (or stall).
fn serve<S: std::io::Read + std::io::Write>(stream: S, behaviour: Behaviour, kept: &Kept) {
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    let index = {
        let mut all = kept.lock().unwrap();
        all.push(Vec::new());
        all.len() - 1
    };
    if behaviour == Behaviour::Stall {
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    while let Ok(message) = ws.read() {
        if let tungstenite::Message::Text(text) = message {
            let value: serde_json::Value = serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
            if behaviour == Behaviour::Speak && value["event"] == "start" {
                speak(&mut ws);
            }
            kept.lock().unwrap()[index].push(value);
        }
    }
}

/// A second of [`SPOKEN_HZ`] as ten `media` messages, then a mark.
fn speak<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) {
    let tone: Vec<u8> = (0..8000)
        .map(|n| {
            let t = f64::from(n) / 8000.0;
            ulaw_encode((8000.0 * (2.0 * std::f64::consts::PI * SPOKEN_HZ * t).sin()) as i16)
        })
        .collect();
    for chunk in tone.chunks(800) {
        let payload = base64::engine::general_purpose::STANDARD.encode(chunk);
        let media = serde_json::json!({"event": "media", "media": {"payload": payload}});
        ws.send(tungstenite::Message::text(media.to_string()))
            .unwrap();
    }
    let mark = serde_json::json!({"event": "mark", "mark": {"name": "tone-end"}});
    ws.send(tungstenite::Message::text(mark.to_string()))
        .unwrap();
}

/// The samples of one track's `media` messages, decoded from base64 μ-law.
pub fn track_samples(messages: &[serde_json::Value], track: &str) -> Vec<i16> {
    messages
        .iter()
        .filter(|m| m["event"] == "media" && m["media"]["track"] == track)
        .flat_map(|m| {
            base64::engine::general_purpose::STANDARD
                .decode(m["media"]["payload"].as_str().unwrap())
                .unwrap()
        })
        .map(ulaw_decode)
        .collect()
}

/// The strength of `hz` in `samples` (8 kHz), relative to their whole energy: near 1
/// for a pure tone of that frequency, near 0 for another.
pub fn tone_share(samples: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let (mut re, mut im, mut energy) = (0.0, 0.0, 0.0);
    for (n, &s) in samples.iter().enumerate() {
        let s = f64::from(s);
        re += s * (w * n as f64).cos();
        im += s * (w * n as f64).sin();
        energy += s * s;
    }
    if energy == 0.0 {
        return 0.0;
    }
    2.0 * (re * re + im * im) / (samples.len() as f64 * energy)
}

/// A μ-law WAV (what SIPp's `rtp_stream` sends) of a `hz` tone, `seconds` long.
pub fn tone_wav(path: &Path, hz: f64, seconds: u32) {
    let samples = 8000 * seconds;
    let mut file = std::fs::File::create(path).unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(4 + 26 + 8 + samples).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&18u32.to_le_bytes());
    header.extend_from_slice(&7u16.to_le_bytes()); // WAVE_FORMAT_MULAW
    header.extend_from_slice(&1u16.to_le_bytes()); // mono
    header.extend_from_slice(&8000u32.to_le_bytes());
    header.extend_from_slice(&8000u32.to_le_bytes()); // bytes a second
    header.extend_from_slice(&1u16.to_le_bytes()); // block align
    header.extend_from_slice(&8u16.to_le_bytes()); // bits a sample
    header.extend_from_slice(&0u16.to_le_bytes()); // no extension
    header.extend_from_slice(b"data");
    header.extend_from_slice(&samples.to_le_bytes());
    file.write_all(&header).unwrap();
    let data: Vec<u8> = (0..samples)
        .map(|n| {
            let t = f64::from(n) / 8000.0;
            ulaw_encode((8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16)
        })
        .collect();
    file.write_all(&data).unwrap();
}

/// `scenario` (in tests/sipp) with its `TONE.wav` replaced by `wav`, written into `dir`.
pub fn scenario_with_tone(dir: &Path, scenario: &str, wav: &Path) -> PathBuf {
    let text = std::fs::read_to_string(super::server::scenario(scenario)).unwrap();
    let path = dir.join(scenario);
    std::fs::write(&path, text.replace("TONE.wav", &wav.display().to_string())).unwrap();
    path
}

fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let exponent = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if b & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let sign = if sample < 0 { 0x80 } else { 0 };
    let magnitude = (i32::from(sample).abs() + BIAS).min(0x7fff);
    let exponent = (7 - (magnitude.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}
