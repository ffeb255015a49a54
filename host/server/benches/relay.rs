//! RTP relay cost: CALLS concurrent calls streaming G.711 both ways (50 packets/s per
//! direction, 172-byte packets) through `RelayManager`, against the same streams sent
//! socket to socket directly, and through the relay again with every call's audio also
//! streamed (both tracks) to a WebSocket engine, and with SDES-SRTP on one leg and on
//! both (the relay decrypting and re-encrypting) — all in one run. Reports the host CPU
//! per relayed packet (so packets/s per core), the latency the relay adds (p50/p99) and
//! the streams' frame latency, RTP packet sent → `media` message at the engine.
//!
//!     cargo bench -p wasmpbx --bench relay            (CALLS=200 SECONDS=10 by default)
//!
//! Senders and receivers run in this process too; their cost is measured by the direct
//! runs (plain, and SRTP end to end) and subtracted. The engine runs in a child process (this binary again), so its
//! cost is not counted as the host's.

// Measuring happens on real time here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use wasmpbx::call::SessionId;
use wasmpbx::config::PortRange;
use wasmpbx::media::{EngineAudio, MediaAllocator, RelayManager, Side, StreamRequest, Tracks};
use wasmpbx::sdp::{SdesKey, SrtpSuite};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

const PACKET: usize = 172;
/// Set in the child process that plays the engine.
const ENGINE: &str = "WASMPBX_BENCH_ENGINE";

/// Nanoseconds since the epoch: a clock this process and the engine's share.
fn wall_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// An SRTP context for `key` (AES_CM_128_HMAC_SHA1_80).
fn context(key: &SdesKey) -> Context {
    Context::new(
        key.key(),
        key.salt(),
        ProtectionProfile::Aes128CmHmacSha1_80,
        None,
        None,
    )
    .unwrap()
}

/// An endpoint's own random key.
fn random_key(n: usize) -> SdesKey {
    let mut key = [0u8; 30];
    key[..8].copy_from_slice(&wall_nanos().to_le_bytes());
    key[8..16].copy_from_slice(&(n as u64).to_le_bytes());
    SdesKey(key)
}

/// One direction of one call: send every 20 ms for `seconds`, stamping the send time;
/// encrypted with `srtp` if given.
async fn stream(
    from: Arc<UdpSocket>,
    to: SocketAddr,
    start: Instant,
    seconds: u64,
    mut srtp: Option<Context>,
) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut packet = [0u8; PACKET];
    packet[0] = 0x80;
    let mut sent: u64 = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        packet[2..4].copy_from_slice(&(sent as u16).to_be_bytes());
        let stamp = start.elapsed().as_nanos() as u64;
        packet[12..20].copy_from_slice(&stamp.to_le_bytes());
        // For the engine, in the payload it receives (μ-law passes through unchanged).
        packet[20..28].copy_from_slice(&wall_nanos().to_le_bytes());
        let result = match srtp.as_mut() {
            Some(srtp) => from.send_to(&srtp.encrypt_rtp(&packet).unwrap(), to).await,
            None => from.send_to(&packet, to).await,
        };
        if result.is_ok() {
            sent += 1;
        }
    }
    sent
}

/// Receive until quiet (decrypting with `srtp` if given), returning one-way latencies
/// in microseconds.
async fn sink(socket: Arc<UdpSocket>, start: Instant, mut srtp: Option<Context>) -> Vec<u32> {
    let mut buf = [0u8; 2048];
    let mut latencies = Vec::new();
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await
    {
        let decrypted;
        let packet = match srtp.as_mut() {
            Some(srtp) => match srtp.decrypt_rtp(&buf[..n]) {
                Ok(plain) => {
                    decrypted = plain;
                    &decrypted[..]
                }
                Err(_) => continue,
            },
            None => &buf[..n],
        };
        if packet.len() >= 20 {
            let sent = u64::from_le_bytes(packet[12..20].try_into().unwrap());
            latencies
                .push(((start.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000) as u32);
        }
    }
    latencies
}

struct Outcome {
    packets: u64,
    received: usize,
    cpu: f64,
    p50: u32,
    p99: u32,
}

/// The relay, and the engine to stream every call to, if any.
struct Through<'a> {
    relay: &'a mut RelayManager,
    engine: Option<&'a str>,
}

/// Which legs are encrypted: on a direct run, `Both` means SRTP end to end.
#[derive(Clone, Copy, PartialEq)]
enum Srtp {
    Plain,
    /// Side A's leg (the caller's) only.
    OneLeg,
    Both,
}

async fn run(calls: usize, seconds: u64, through: Option<Through<'_>>, srtp: Srtp) -> Outcome {
    let mut pairs = Vec::new();
    for _ in 0..calls {
        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        pairs.push((a, b));
    }
    // Where each side sends: the relay's ports, or straight to the other side; and each
    // side's SRTP contexts (for sending, for receiving).
    let mut targets = Vec::new();
    let mut contexts = Vec::new();
    let keyed = |side: Side| srtp == Srtp::Both || (srtp == Srtp::OneLeg && side == Side::A);
    match through {
        Some(Through { relay, engine }) => {
            for (i, (a, b)) in pairs.iter().enumerate() {
                let id = SessionId::new(
                    wall_nanos() / 1_000_000,
                    (i as u128).to_le_bytes()[..10].try_into().unwrap(),
                );
                let ports = relay.open(id).unwrap();
                relay.set_remote(id, Side::A, a.local_addr().unwrap());
                relay.set_remote(id, Side::B, b.local_addr().unwrap());
                let mut leg = |side: Side| {
                    if !keyed(side) {
                        return (None, None);
                    }
                    let own = random_key(2 * i + side as usize);
                    let host = relay
                        .secure_leg(id, Some(side), SrtpSuite::AesCm128HmacSha1_80, Some(&own))
                        .unwrap();
                    (Some(context(&own)), Some(context(&host)))
                };
                contexts.push((leg(Side::A), leg(Side::B)));
                if let Some(url) = engine {
                    let request = StreamRequest {
                        url: url.to_owned(),
                        tracks: Tracks::Both,
                        engine_audio: EngineAudio::Ignore,
                        call_sid: id.to_string(),
                        parameters: Vec::new(),
                    };
                    relay.start_stream(id, request);
                }
                targets.push((
                    SocketAddr::from(([127, 0, 0, 1], ports.a)),
                    SocketAddr::from(([127, 0, 0, 1], ports.b)),
                ));
            }
        }
        None => {
            for (i, (a, b)) in pairs.iter().enumerate() {
                targets.push((b.local_addr().unwrap(), a.local_addr().unwrap()));
                let (a_key, b_key) = (random_key(2 * i), random_key(2 * i + 1));
                contexts.push(match keyed(Side::A) {
                    true => (
                        (Some(context(&a_key)), Some(context(&b_key))),
                        (Some(context(&b_key)), Some(context(&a_key))),
                    ),
                    false => ((None, None), (None, None)),
                });
            }
        }
    }
    let start = Instant::now();
    let cpu_before = common::cpu_seconds();
    let mut sinks = Vec::new();
    let mut senders = Vec::new();
    for (((a, b), (a_to, b_to)), ((a_send, a_receive), (b_send, b_receive))) in
        pairs.iter().zip(&targets).zip(contexts)
    {
        sinks.push(tokio::spawn(sink(a.clone(), start, a_receive)));
        sinks.push(tokio::spawn(sink(b.clone(), start, b_receive)));
        senders.push(tokio::spawn(stream(
            a.clone(),
            *a_to,
            start,
            seconds,
            a_send,
        )));
        senders.push(tokio::spawn(stream(
            b.clone(),
            *b_to,
            start,
            seconds,
            b_send,
        )));
    }
    let mut packets = 0;
    for s in senders {
        packets += s.await.unwrap();
    }
    let mut latencies = Vec::new();
    for s in sinks {
        latencies.extend(s.await.unwrap());
    }
    let cpu = common::cpu_seconds() - cpu_before;
    latencies.sort_unstable();
    let pick = |p: f64| common::quantile(&latencies, p);
    Outcome {
        packets,
        received: latencies.len(),
        cpu,
        p50: pick(0.5),
        p99: pick(0.99),
    }
}

/// The engine (in the child process): print the port, take streams until stdin
/// closes, then print how many `media` frames came and their latency (µs) p50 and p99.
async fn engine() {
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let kept = latencies.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    let Ok(text) = message.into_text() else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    let Some(payload) = value["media"]["payload"].as_str() else {
                        continue;
                    };
                    use base64::Engine as _;
                    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(payload)
                    else {
                        continue;
                    };
                    if bytes.len() >= 16 {
                        let sent = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
                        let micros = wall_nanos().saturating_sub(sent) / 1000;
                        kept.lock().unwrap().push(micros as u32);
                    }
                }
            });
        }
    });
    let mut rest = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut rest).await;
    let mut all = latencies.lock().unwrap().clone();
    all.sort_unstable();
    let pick = |p: f64| common::quantile(&all, p);
    // Whoever started the engine may have stopped listening (cps.sh exits): no matter.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stdout(),
        "{} {} {}",
        all.len(),
        pick(0.5),
        pick(0.99)
    );
}

/// Start the engine child: it, and its URL.
fn start_engine() -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env(ENGINE, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, format!("ws://127.0.0.1:{}/bench", line.trim()))
}

/// Close the engine's stdin and read its count and latencies.
fn finish_engine(mut child: std::process::Child) -> (u64, u32, u32) {
    use std::io::Read;
    drop(child.stdin.take());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.wait().unwrap();
    let fields: Vec<u64> = out
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields[0], fields[1] as u32, fields[2] as u32)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if std::env::var_os(ENGINE).is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(engine());
        return;
    }
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    common::print_machine();
    println!("{calls} calls, G.711 both ways (50 packets/s per direction), {seconds} s\n");
    let direct = runtime.block_on(run(calls, seconds, None, Srtp::Plain));
    let direct_srtp = runtime.block_on(run(calls, seconds, None, Srtp::Both));
    let mut relay = RelayManager::new(
        "127.0.0.1".parse().unwrap(),
        PortRange {
            low: 40000,
            high: 49999,
        },
    );
    let through = Through {
        relay: &mut relay,
        engine: None,
    };
    let relayed = runtime.block_on(run(calls, seconds, Some(through), Srtp::Plain));
    let through = Through {
        relay: &mut relay,
        engine: None,
    };
    let srtp_one_leg = runtime.block_on(run(calls, seconds, Some(through), Srtp::OneLeg));
    let through = Through {
        relay: &mut relay,
        engine: None,
    };
    let srtp_both = runtime.block_on(run(calls, seconds, Some(through), Srtp::Both));
    let (child, url) = start_engine();
    let through = Through {
        relay: &mut relay,
        engine: Some(&url),
    };
    let streamed = runtime.block_on(run(calls, seconds, Some(through), Srtp::Plain));
    // The last frames on their way.
    std::thread::sleep(Duration::from_secs(1));
    let (frames, frame_p50, frame_p99) = finish_engine(child);
    println!("| path | packets sent | received | loss | CPU (s) | latency p50 | latency p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (name, o) in [
        ("direct (socket to socket)", &direct),
        ("direct, SRTP end to end", &direct_srtp),
        ("through the relay", &relayed),
        ("through the relay, SRTP on one leg", &srtp_one_leg),
        ("through the relay, SRTP on both legs", &srtp_both),
        ("through the relay, every call streamed", &streamed),
    ] {
        println!(
            "| {name} | {} | {} | {:.3} % | {:.2} | {} µs | {} µs |",
            o.packets,
            o.received,
            100.0 * (o.packets as f64 - o.received as f64) / o.packets as f64,
            o.cpu,
            o.p50,
            o.p99
        );
    }
    let extra_cpu = (relayed.cpu - direct.cpu).max(0.0);
    let per_packet = extra_cpu / relayed.received.max(1) as f64;
    println!();
    println!(
        "Relay cost: {:.2} CPU-s for {} relayed packets = {:.1} µs per packet, about {:.0} packets/s per core; \
         added latency p50 {} µs, p99 {} µs.",
        extra_cpu,
        relayed.received,
        per_packet * 1e6,
        if per_packet > 0.0 {
            1.0 / per_packet
        } else {
            f64::INFINITY
        },
        relayed.p50.saturating_sub(direct.p50),
        relayed.p99.saturating_sub(direct.p99)
    );
    let stream_cpu = (streamed.cpu - direct.cpu).max(0.0);
    println!(
        "With every call streamed (both tracks): {:.1} µs of host CPU per relayed packet; \
         the engine got {frames} frames of {} packets sent ({:.2} % lost), \
         frame latency (RTP sent → media message read) p50 {frame_p50} µs, p99 {frame_p99} µs.",
        stream_cpu / streamed.received.max(1) as f64 * 1e6,
        streamed.packets,
        100.0 * (streamed.packets as f64 - frames as f64) / streamed.packets as f64,
    );
    // The endpoints' own SRTP work is the direct SRTP run's on both legs, and half of it
    // (one endpoint's) on one.
    let per_packet_us =
        |o: &Outcome, endpoints: f64| (o.cpu - endpoints).max(0.0) / o.received.max(1) as f64 * 1e6;
    println!(
        "Relay CPU per packet: plain {:.1} µs, SRTP on one leg {:.1} µs, SRTP on both legs {:.1} µs \
         (the endpoints' own encryption subtracted).",
        per_packet_us(&relayed, direct.cpu),
        per_packet_us(&srtp_one_leg, (direct.cpu + direct_srtp.cpu) / 2.0),
        per_packet_us(&srtp_both, direct_srtp.cpu),
    );
}
