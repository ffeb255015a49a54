//! Concurrent WebRTC legs bridged to RTP: CALLS calls, each with a WebRTC peer on side
//! A — a str0m `Rtc` with full ICE, standing in for a browser — answered by the host's
//! bridge (`RelayManager::bridge_webrtc`), and a plain RTP far end on side B; both send
//! PCMU (50 packets/s, 160 bytes, the send time stamped in the payload) for SECONDS.
//! Reports set-up time (offer to the peer's ICE+DTLS `Connected`, and to the far end's
//! first audio packet from the peer), loss and one-way latency each way, and CPU.
//!
//!     cargo bench -p wasmpbx --bench webrtc            (CALLS=200 SECONDS=10 by default)
//!
//! The peers run in this process: their WebRTC stacks cost about what the bridges do,
//! and the CPU figure includes both (an upper bound for the host's share).

// Measuring happens on real time here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use wasmpbx::call::SessionId;
use wasmpbx::config::PortRange;
use wasmpbx::media::{MediaAllocator, RelayManager, Side};

const FRAME: usize = 160;

fn stamp(start: Instant) -> [u8; 8] {
    (start.elapsed().as_nanos() as u64).to_le_bytes()
}

fn latency_us(payload: &[u8], start: Instant) -> Option<u32> {
    let sent = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    Some(((start.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000) as u32)
}

/// What one WebRTC peer saw.
struct PeerOutcome {
    setup: Option<Duration>,
    sent: u64,
    latencies: Vec<u32>,
    /// Frames str0m delivered after a gap in the sequence numbers.
    gaps: u64,
}

/// A browser stand-in: ICE, DTLS, then PCMU frames every 20 ms until `until`.
async fn peer(
    mut rtc: Rtc,
    socket: UdpSocket,
    mid: Mid,
    offered: Instant,
    start: Instant,
    until: Instant,
) -> PeerOutcome {
    let local = socket.local_addr().unwrap();
    let mut outcome = PeerOutcome {
        setup: None,
        sent: 0,
        latencies: Vec::new(),
        gaps: 0,
    };
    // Audio starts when the peer connects: the ticks missed before then are skipped,
    // not sent in a burst.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut buf = vec![0u8; 2048];
    let mut media_time = 0u64;
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) => break at,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::Connected)) => outcome.setup = Some(offered.elapsed()),
                Ok(Output::Event(Event::MediaData(data))) => {
                    outcome.gaps += u64::from(!data.contiguous);
                    outcome.latencies.extend(latency_us(&data.data, start));
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return outcome,
            }
        };
        if Instant::now() > until + Duration::from_secs(1) {
            return outcome;
        }
        let wait = timeout.saturating_duration_since(Instant::now());
        let input = tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                let Ok(contents) = buf[..n].try_into() else { continue };
                Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents })
            }
            _ = tick.tick(), if outcome.setup.is_some() && Instant::now() < until => {
                let mut frame = vec![0xffu8; FRAME];
                frame[..8].copy_from_slice(&stamp(start));
                media_time += FRAME as u64;
                let Some(writer) = rtc.writer(mid) else { continue };
                let pt = writer.payload_params().next().map(|p| p.pt()).unwrap();
                let time = MediaTime::new(media_time, Frequency::EIGHT_KHZ);
                if writer.write(pt, Instant::now(), time, frame).is_ok() {
                    outcome.sent += 1;
                }
                continue;
            }
            _ = tokio::time::sleep(wait) => Input::Timeout(Instant::now()),
        };
        if rtc.handle_input(input).is_err() {
            return outcome;
        }
    }
}

/// The plain far end: PCMU to the relay every 20 ms from `from` (once the legs are up);
/// what it hears, timed, and when the first of it came.
async fn far_end(
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    start: Instant,
    from: Instant,
    until: Instant,
) -> (u64, Vec<u32>, Option<Instant>) {
    let receiver = {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut latencies = Vec::new();
            let mut first = None;
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
            {
                if n >= 20 {
                    first.get_or_insert_with(Instant::now);
                    latencies.extend(latency_us(&buf[12..n], start));
                }
            }
            (latencies, first)
        })
    };
    // Every 20 ms from `from` (an interval made earlier would first catch up on the
    // ticks it missed, in one burst).
    let mut tick = tokio::time::interval_at(from.into(), Duration::from_millis(20));
    let mut packet = vec![0u8; 12 + FRAME];
    packet[..2].copy_from_slice(&[0x80, 0]);
    packet[8..12].copy_from_slice(&0x5eed_u32.to_be_bytes());
    let mut sent = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        sent += 1;
        packet[2..4].copy_from_slice(&(sent as u16).to_be_bytes());
        packet[4..8].copy_from_slice(&((sent * FRAME as u64) as u32).to_be_bytes());
        packet[12..20].copy_from_slice(&stamp(start));
        if socket.send_to(&packet, to).await.is_err() {
            sent -= 1;
        }
    }
    let (latencies, first) = receiver.await.unwrap();
    (sent, latencies, first)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (calls, seconds) = (env("CALLS", 200) as usize, env("SECONDS", 10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    common::print_machine();
    println!(
        "{calls} calls, WebRTC (str0m peer) on side A, plain RTP on side B, PCMU both ways, {seconds} s\n"
    );
    runtime.block_on(async move {
        let mut relay = RelayManager::new(
            "127.0.0.1".parse().unwrap(),
            PortRange {
                low: 40000,
                high: 49999,
            },
        );
        let start = Instant::now();
        let connected_by = start + Duration::from_secs(3); // time to connect them all
        let until = connected_by + Duration::from_secs(seconds);
        let cpu_before = common::cpu_seconds();
        let mut peers = Vec::new();
        let mut far_ends = Vec::new();
        for i in 0..calls as u64 {
            let id = SessionId::new(0, (i as u128).to_le_bytes()[..10].try_into().unwrap());
            let ports = relay.open(id).unwrap();
            let far = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            relay.set_remote(id, Side::B, far.local_addr().unwrap());
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let offered = Instant::now();
            let mut rtc = Rtc::builder()
                .clear_codecs()
                .enable_pcmu(true, false)
                .build(offered);
            rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
            let mut change = rtc.sdp_api();
            let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
            let (offer, pending) = change.apply().unwrap();
            let bridged = relay
                .bridge_webrtc(id, Some(Side::A), &offer.to_sdp_string(), "127.0.0.1".parse().unwrap())
                .unwrap();
            // The call engine would take the bridge's address from its plain offer.
            let plain_port: u16 = bridged
                .plain_offer
                .lines()
                .find_map(|l| l.strip_prefix("m=audio "))
                .and_then(|m| m.split_whitespace().next())
                .and_then(|p| p.parse().ok())
                .unwrap();
            relay.set_remote(id, Side::A, SocketAddr::from(([127, 0, 0, 1], plain_port)));
            let answer = SdpAnswer::from_sdp_string(&bridged.answer).unwrap();
            rtc.sdp_api().accept_answer(pending, answer).unwrap();
            peers.push(tokio::spawn(peer(rtc, socket, mid, offered, start, until)));
            let to = SocketAddr::from(([127, 0, 0, 1], ports.b));
            far_ends.push((offered, tokio::spawn(far_end(far, to, start, connected_by, until))));
        }
        let (mut to_far, mut to_peer) = (Vec::new(), Vec::new());
        let (mut peer_sent, mut far_sent) = (0, 0);
        let mut setups = Vec::new();
        let mut first_audio = Vec::new();
        let mut gaps = 0;
        for p in peers {
            let o = p.await.unwrap();
            gaps += o.gaps;
            peer_sent += o.sent;
            to_peer.extend(o.latencies);
            setups.extend(o.setup.map(|d| d.as_micros() as u32));
        }
        for f in far_ends {
            let (offered, far_end) = f;
            let (sent, latencies, first) = far_end.await.unwrap();
            first_audio.extend(first.map(|t| (t - offered).as_micros() as u32));
            far_sent += sent;
            to_far.extend(latencies);
        }
        let cpu = common::cpu_seconds() - cpu_before;
        let elapsed = start.elapsed().as_secs_f64();
        for list in [&mut to_far, &mut to_peer, &mut setups, &mut first_audio] {
            list.sort_unstable();
        }
        println!("| direction | packets sent | received | loss | latency p50 | p90 | p99 |");
        println!("|---|---|---|---|---|---|---|");
        for (name, sent, got) in [
            ("browser → far end", peer_sent, &to_far),
            ("far end → browser", far_sent, &to_peer),
        ] {
            println!(
                "| {name} | {sent} | {} | {:.3} % | {} µs | {} µs | {} µs |",
                got.len(),
                100.0 * (sent as f64 - got.len() as f64) / sent.max(1) as f64,
                percentile(got, 0.5),
                percentile(got, 0.9),
                percentile(got, 0.99)
            );
        }
        println!("\nframes the peers got after a sequence gap: {gaps}");
        println!(
            "{} of {calls} legs connected (ICE + DTLS); set-up p50 {:.1} ms, p99 {:.1} ms",
            setups.len(),
            f64::from(percentile(&setups, 0.5)) / 1000.0,
            f64::from(percentile(&setups, 0.99)) / 1000.0
        );
        println!(
            "offer to the far end's first audio packet from the peer: p50 {:.1} ms, p99 {:.1} ms ({} legs)",
            f64::from(percentile(&first_audio, 0.5)) / 1000.0,
            f64::from(percentile(&first_audio, 0.99)) / 1000.0,
            first_audio.len()
        );
        println!(
            "CPU {cpu:.2} s over {elapsed:.1} s = {:.2} cores for {calls} legs, peers included ({:.1} ms of CPU per leg-second)",
            cpu / elapsed,
            1000.0 * cpu / elapsed / calls as f64
        );
    });
}
