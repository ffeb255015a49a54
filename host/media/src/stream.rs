//! Media streams: a call's audio to a WebSocket in the Twilio Media Streams format, so
//! speech-to-text and intent engines written for it work unchanged.
//!
//! The call's packet state hands each [`Tap`] the G.711 payloads of the tracks it carries
//! and never waits: a full queue drops the frame and counts it. A task per stream
//! connects, frames the audio as JSON (`connected`, `start`, `media`, `stop`) and sends
//! it; while the connection is down it drops what arrives (counted), logs once, and
//! tries again with backoff for as long as the call lasts. Nothing here can delay a call.
//!
//! A bidirectional stream also listens: the engine's `media` goes into the call's
//! [`Playout`] (and wakes the host's sender), its `mark`s come back when played, `clear`
//! drops what is queued. A connection lost drops its queued audio too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::Instrument as _;
use wasmpbx_types::record::StreamRecord;

use super::playout::Playout;
use super::relay::RelayCounters;
use super::{Codec, StreamRequest, Track, Tracks, g711, redacted_url};
use crate::clock::monotonic_now;

/// Frames a stream may hold while its engine catches up: 2.5 s of both tracks.
const QUEUE: usize = 256;
/// How long resolving, connecting and the WebSocket handshake may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that cannot go for this long means the engine stopped reading: the
/// connection is given up (and tried again).
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(10);
/// The kernel's send buffer for a stream's socket: small, so an engine that stops
/// reading shows within seconds as dropped frames rather than as megabytes queued.
const SEND_BUFFER: u32 = 32 * 1024;
/// Failures of streams to one engine are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The largest message an engine may send (its `mark`s and `clear`s are tiny; a
/// bidirectional `media` frame is under 1 KiB).
const MAX_INCOMING: usize = 64 * 1024;

/// One frame of one track, in μ-law.
struct Frame {
    track: Track,
    at: Instant,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Counts {
    frames: AtomicU64,
    dropped: AtomicU64,
}

/// The call's end of a stream: where its packet state hands the audio.
pub(crate) struct Tap {
    tracks: Tracks,
    url: String,
    queue: mpsc::Sender<Frame>,
    counts: Arc<Counts>,
    counters: Arc<RelayCounters>,
    playout: Option<Arc<Mutex<Playout>>>,
}

/// A bidirectional stream's way back to the call: where the engine's audio goes, the
/// marks played, and the call's host sender to wake.
pub(crate) struct EngineLink {
    pub(crate) playout: Arc<Mutex<Playout>>,
    pub(crate) marks: mpsc::Receiver<String>,
    pub(crate) playing: Arc<tokio::sync::Notify>,
}

impl EngineLink {
    fn playout(&self) -> std::sync::MutexGuard<'_, Playout> {
        self.playout.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Tap {
    /// A track's audio (a G.711 payload in `codec`) at `at`, if this stream carries it.
    pub(crate) fn offer(&self, track: Track, at: Instant, codec: Codec, payload: &[u8]) {
        if !self.tracks.carries(track) {
            return;
        }
        self.counts.frames.fetch_add(1, Relaxed);
        let payload = match codec {
            Codec::Pcmu => payload.to_vec(),
            Codec::Pcma => payload
                .iter()
                .map(|&b| g711::ulaw_encode(g711::alaw_decode(b)))
                .collect(),
        };
        let frame = Frame { track, at, payload };
        if self.queue.try_send(frame).is_err() {
            self.dropped(1);
        }
    }

    fn dropped(&self, n: u64) {
        self.counts.dropped.fetch_add(n, Relaxed);
        self.counters.stream_frames_dropped.fetch_add(n, Relaxed);
    }

    /// What the call's record keeps of this stream.
    pub(crate) fn report(&self) -> StreamRecord {
        StreamRecord {
            url: self.url.clone(),
            tracks: self.tracks,
            frames: self.counts.frames.load(Relaxed),
            dropped: self.counts.dropped.load(Relaxed),
            played: self.playout.as_ref().map_or(0, |p| {
                p.lock().unwrap_or_else(|e| e.into_inner()).frames_played
            }),
        }
    }
}

/// Start streaming: the tap for the call's packet state; the task runs on the current
/// runtime until the tap is dropped (the call ended) and its `stop` is sent. With an
/// `engine` link the stream is bidirectional.
pub(crate) fn start(
    request: StreamRequest,
    stream_sid: String,
    counters: Arc<RelayCounters>,
    engine: Option<EngineLink>,
) -> Tap {
    let (queue, frames) = mpsc::channel(QUEUE);
    let counts = Arc::new(Counts::default());
    let url = redacted_url(&request.url);
    let tap = Tap {
        tracks: request.tracks,
        url: url.clone(),
        queue,
        counts: counts.clone(),
        counters: counters.clone(),
        playout: engine.as_ref().map(|e| e.playout.clone()),
    };
    counters.streams_active.fetch_add(1, Relaxed);
    let task = Stream {
        shown: url,
        request,
        stream_sid,
        frames,
        counts,
        counters,
        started: monotonic_now(),
        sequence: 0,
        chunks: [0, 0],
        engine,
        engine_said: EngineSaid::default(),
    };
    // In the call's span (current: the call engine starts streams), so its lines name
    // the call.
    tokio::spawn(task.run().in_current_span());
    tap
}

/// A stream's task.
struct Stream {
    /// The URL as logs show it.
    shown: String,
    request: StreamRequest,
    stream_sid: String,
    frames: mpsc::Receiver<Frame>,
    counts: Arc<Counts>,
    counters: Arc<RelayCounters>,
    started: Instant,
    /// `sequenceNumber` of the last message sent; per track, `chunk` of the last frame.
    sequence: u64,
    chunks: [u64; 2],
    engine: Option<EngineLink>,
    engine_said: EngineSaid,
}

/// What the engine sent that could not be used, logged once per stream.
#[derive(Default)]
struct EngineSaid {
    garbage: u64,
    over_limit: u64,
}

/// Why a connection ended.
enum Ended {
    /// The call ended: `stop` was sent.
    Call,
    /// The engine went away, or stopped reading.
    Lost(String),
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Stream {
    async fn run(mut self) {
        let mut retry = FIRST_RETRY;
        let mut down = false;
        loop {
            let failure =
                match tokio::time::timeout(CONNECT_TIMEOUT, connect(&self.request.url)).await {
                    Ok(Ok(socket)) => {
                        if down {
                            tracing::info!(url = %self.shown, "media stream connected again");
                        }
                        down = false;
                        retry = FIRST_RETRY;
                        let ended = self.serve(socket).await;
                        if let Some(engine) = &self.engine {
                            // What that engine queued is not for the next connection.
                            engine.playout().clear();
                        }
                        match ended {
                            Ended::Call => break,
                            Ended::Lost(why) => why,
                        }
                    }
                    Ok(Err(why)) => why,
                    Err(_) => format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                };
            self.counters.stream_failures.fetch_add(1, Relaxed);
            if !down {
                say_failure(&self.shown, &failure);
                down = true;
            }
            // Down: what arrives is dropped until it is time to try again.
            let again = tokio::time::Instant::now() + retry;
            retry = (retry * 2).min(LAST_RETRY);
            loop {
                tokio::select! {
                    frame = self.frames.recv() => match frame {
                        Some(_) => {
                            self.counts.dropped.fetch_add(1, Relaxed);
                            self.counters.stream_frames_dropped.fetch_add(1, Relaxed);
                        }
                        None => {
                            self.counters.streams_active.fetch_sub(1, Relaxed);
                            return;
                        }
                    },
                    () = tokio::time::sleep_until(again) => break,
                }
            }
        }
        self.counters.streams_active.fetch_sub(1, Relaxed);
        tracing::debug!(
            url = %self.shown,
            frames = self.counts.frames.load(Relaxed),
            dropped = self.counts.dropped.load(Relaxed),
            "media stream ended"
        );
    }

    /// One connection: `connected` and `start`, then the frames until the call ends
    /// (`stop`) or the connection does.
    async fn serve(&mut self, socket: Socket) -> Ended {
        let (mut sink, mut incoming) = socket.split();
        let opening = [
            serde_json::json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            self.start_message(),
        ];
        for message in opening {
            if let Err(why) = send(&mut sink, message.to_string()).await {
                return Ended::Lost(why);
            }
        }
        loop {
            tokio::select! {
                frame = self.frames.recv() => {
                    let Some(frame) = frame else {
                        let stop = self.stop_message();
                        // The engine has what it will get; a close it does not answer
                        // in time changes nothing.
                        if send(&mut sink, stop.to_string()).await.is_ok() {
                            let _ = tokio::time::timeout(SEND_TIMEOUT, sink.close()).await;
                        }
                        return Ended::Call;
                    };
                    let media = self.media_message(&frame);
                    if let Err(why) = send(&mut sink, media).await {
                        self.counts.dropped.fetch_add(1, Relaxed);
                        self.counters.stream_frames_dropped.fetch_add(1, Relaxed);
                        return Ended::Lost(why);
                    }
                    self.counters.stream_frames_sent.fetch_add(1, Relaxed);
                }
                Some(name) = next_mark(&mut self.engine) => {
                    let mark = self.mark_message(&name);
                    if let Err(why) = send(&mut sink, mark.to_string()).await {
                        return Ended::Lost(why);
                    }
                }
                message = incoming.next() => match message {
                    None => return Ended::Lost("the engine closed the connection".into()),
                    Some(Err(e)) => return Ended::Lost(format!("from the engine: {e}")),
                    Some(Ok(Message::Close(_))) => {
                        return Ended::Lost("the engine closed the stream".into());
                    }
                    Some(Ok(Message::Text(text))) => self.heard_from_engine(&text),
                    // Pings are answered by the WebSocket layer; binary is not the format.
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// A message from the engine: on a bidirectional stream its `media` is queued for
    /// the caller, its `mark` waits for that audio, `clear` drops it; anything else, and
    /// everything on a one-way stream, is ignored (what could not be used is logged once).
    fn heard_from_engine(&mut self, text: &str) {
        let message = serde_json::from_str::<serde_json::Value>(text).ok();
        let event = message.as_ref().and_then(|m| m.get("event")?.as_str());
        let Some(engine) = &self.engine else {
            tracing::debug!(
                ?event,
                "media stream: the engine sent something (not played: the stream is one-way)"
            );
            return;
        };
        let message = message.as_ref();
        match event {
            Some("media") => {
                let audio = message
                    .and_then(|m| m.get("media")?.get("payload")?.as_str())
                    .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok());
                let Some(audio) = audio else {
                    return self.engine_garbage("a media message without base64 audio");
                };
                if !engine.playout().push_audio(&audio) {
                    self.engine_said.over_limit += 1;
                    if self.engine_said.over_limit == 1 {
                        tracing::warn!(url = %self.shown, "media stream: the engine sent more than 60 s of audio ahead; the rest is dropped");
                    }
                    return;
                }
                engine.playing.notify_one();
            }
            Some("mark") => match message.and_then(|m| m.get("mark")?.get("name")?.as_str()) {
                Some(name) => engine.playout().push_mark(name.to_owned()),
                None => self.engine_garbage("a mark without a name"),
            },
            Some("clear") => engine.playout().clear(),
            _ => self.engine_garbage("a message that is not media, mark or clear"),
        }
    }

    fn engine_garbage(&mut self, what: &str) {
        self.engine_said.garbage += 1;
        if self.engine_said.garbage == 1 {
            tracing::warn!(url = %self.shown, "media stream: the engine sent {what}; ignored (and so are any more)");
        }
    }

    fn mark_message(&mut self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "event": "mark",
            "sequenceNumber": self.next_sequence(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        })
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    fn start_message(&mut self) -> serde_json::Value {
        let parameters: serde_json::Map<String, serde_json::Value> = self
            .request
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        serde_json::json!({
            "event": "start",
            "sequenceNumber": self.next_sequence(),
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "accountSid": "",
                "callSid": self.request.call_sid,
                "tracks": self.request.tracks.names(),
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        })
    }

    /// A `media` message, written out directly: it goes 100 times a second per call,
    /// and every field is a number, a fixed name or base64 (nothing to escape).
    fn media_message(&mut self, frame: &Frame) -> String {
        use std::fmt::Write as _;
        let chunk = &mut self.chunks[frame.track as usize];
        *chunk += 1;
        let chunk = *chunk;
        self.sequence += 1;
        let timestamp = frame.at.saturating_duration_since(self.started).as_millis();
        let mut text = String::with_capacity(200 + frame.payload.len() * 4 / 3);
        let _ = write!(
            text,
            r#"{{"event":"media","sequenceNumber":"{}","streamSid":"{}","media":{{"track":"{}","chunk":"{chunk}","timestamp":"{timestamp}","payload":""#,
            self.sequence,
            self.stream_sid,
            frame.track.name(),
        );
        base64::engine::general_purpose::STANDARD.encode_string(&frame.payload, &mut text);
        text.push_str("\"}}");
        text
    }

    fn stop_message(&mut self) -> serde_json::Value {
        serde_json::json!({
            "event": "stop",
            "sequenceNumber": self.next_sequence(),
            "streamSid": self.stream_sid,
            "stop": {"accountSid": "", "callSid": self.request.call_sid},
        })
    }
}

/// The next mark played, on a bidirectional stream; never, on a one-way one.
async fn next_mark(engine: &mut Option<EngineLink>) -> Option<String> {
    match engine {
        Some(engine) => engine.marks.recv().await,
        None => std::future::pending().await,
    }
}

/// Log a stream's failure: once per outage of a stream, and at most once a minute per
/// engine (a dead engine under load would otherwise log a line for every call); the
/// line says how many more there were.
fn say_failure(url: &str, failure: &str) {
    static LAST: LazyLock<Mutex<HashMap<String, (Instant, u64)>>> = LazyLock::new(Mutex::default);
    let now = monotonic_now();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let unsaid = match last.get_mut(url) {
        Some((at, unsaid)) if now.saturating_duration_since(*at) < LOG_EVERY => {
            *unsaid += 1;
            return;
        }
        Some((at, unsaid)) => {
            *at = now;
            std::mem::take(unsaid)
        }
        None => {
            last.insert(url.to_owned(), (now, 0));
            0
        }
    };
    drop(last);
    tracing::warn!(
        url,
        "media stream: {failure}; its frames are dropped until it connects again (the call goes on){}",
        match unsaid {
            0 => String::new(),
            n => format!("; {n} more stream failures to this engine in the last minute"),
        }
    );
}

async fn send(
    sink: &mut futures_util::stream::SplitSink<Socket, Message>,
    message: String,
) -> Result<(), String> {
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::text(message))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("sending: {e}")),
        Err(_) => Err(format!(
            "the engine read nothing for {} s",
            SEND_TIMEOUT.as_secs()
        )),
    }
}

/// Resolve, connect (with a small send buffer) and upgrade; `wss://` checks the
/// engine's certificate against the system's trust store.
async fn connect(url: &str) -> Result<Socket, String> {
    let request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .map_err(|e| format!("not a WebSocket URL: {e}"))?;
    let uri = request.uri();
    let tls = uri.scheme_str() == Some("wss");
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let address: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    socket
        .set_send_buffer_size(SEND_BUFFER)
        .map_err(|e| e.to_string())?;
    let tcp = socket
        .connect(address)
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let connector = if tls {
        Some(tokio_tungstenite::Connector::Rustls(tls_config()?))
    } else {
        Some(tokio_tungstenite::Connector::Plain)
    };
    // Small buffers: thousands of streams may be up at once, each sending a few hundred
    // bytes at a time and hearing little (tungstenite's defaults are 128 KiB each).
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_INCOMING)
        .max_message_size(Some(MAX_INCOMING))
        .max_frame_size(Some(MAX_INCOMING));
    let (socket, _) =
        tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), connector)
            .await
            .map_err(|e| format!("WebSocket upgrade: {e}"))?;
    Ok(socket)
}

/// The TLS client configuration for `wss://` engines, made once: the system's trust
/// store (`SSL_CERT_FILE`/`SSL_CERT_DIR` override it, as for other tools).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted certificates in the system's store".into());
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(tracks: Tracks, capacity: usize) -> (Tap, mpsc::Receiver<Frame>) {
        let (queue, frames) = mpsc::channel(capacity);
        let tap = Tap {
            tracks,
            url: "ws://engine.test/s".into(),
            queue,
            counts: Arc::default(),
            counters: Arc::default(),
            playout: None,
        };
        (tap, frames)
    }

    #[test]
    fn a_tap_takes_its_tracks_in_mu_law_and_drops_what_does_not_fit() {
        let (tap, mut frames) = tap(Tracks::Inbound, 2);
        let now = monotonic_now();
        let pcma = [g711::alaw_encode(1000); 160];
        tap.offer(Track::Outbound, now, Codec::Pcmu, &[0xff; 160]);
        tap.offer(Track::Inbound, now, Codec::Pcma, &pcma);
        tap.offer(Track::Inbound, now, Codec::Pcmu, &[0x7f; 160]);
        tap.offer(Track::Inbound, now, Codec::Pcmu, &[0x7f; 160]);
        let first = frames.try_recv().unwrap();
        assert_eq!(first.track, Track::Inbound);
        let decoded = g711::ulaw_decode(first.payload[0]);
        assert!((decoded - 1000).abs() < 64, "{decoded}");
        assert_eq!(frames.try_recv().unwrap().payload, vec![0x7f; 160]);
        assert!(frames.try_recv().is_err());
        assert_eq!(
            tap.report(),
            StreamRecord {
                url: "ws://engine.test/s".into(),
                tracks: Tracks::Inbound,
                frames: 3,
                dropped: 1,
                played: 0,
            }
        );
    }
}
