//! RTP relay cost: CALLS concurrent calls streaming G.711 both ways (50 packets/s per
//! direction, 172-byte packets) through `RelayManager`, against the same streams sent
//! socket to socket directly, in one run. Reports the host CPU per relayed packet (so
//! packets/s per core) and the latency the relay adds (p50/p99).
//!
//!     cargo bench -p wasmpbx --bench relay            (CALLS=200 SECONDS=10 by default)
//!
//! Senders and receivers run in this process too; their cost is measured by the direct
//! run and subtracted.

// Measuring happens on real time here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use wasmpbx::call::SessionId;
use wasmpbx::config::PortRange;
use wasmpbx::media::{MediaAllocator, RelayManager, Side};

const PACKET: usize = 172;

/// One direction of one call: send every 20 ms for `seconds`, stamping the send time.
async fn stream(from: Arc<UdpSocket>, to: SocketAddr, start: Instant, seconds: u64) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut packet = [0u8; PACKET];
    packet[0] = 0x80;
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let stamp = start.elapsed().as_nanos() as u64;
        packet[12..20].copy_from_slice(&stamp.to_le_bytes());
        if from.send_to(&packet, to).await.is_ok() {
            sent += 1;
        }
    }
    sent
}

/// Receive until quiet, returning one-way latencies in microseconds.
async fn sink(socket: Arc<UdpSocket>, start: Instant) -> Vec<u32> {
    let mut buf = [0u8; 2048];
    let mut latencies = Vec::new();
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await
    {
        if n >= 20 {
            let sent = u64::from_le_bytes(buf[12..20].try_into().unwrap());
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

async fn run(calls: usize, seconds: u64, relay: Option<&mut RelayManager>) -> Outcome {
    let mut pairs = Vec::new();
    for _ in 0..calls {
        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        pairs.push((a, b));
    }
    // Where each side sends: the relay's ports, or straight to the other side.
    let mut targets = Vec::new();
    match relay {
        Some(relay) => {
            for (i, (a, b)) in pairs.iter().enumerate() {
                let id = SessionId::new(0, (i as u128).to_le_bytes()[..10].try_into().unwrap());
                let ports = relay.open(id).unwrap();
                relay.set_remote(id, Side::A, a.local_addr().unwrap());
                relay.set_remote(id, Side::B, b.local_addr().unwrap());
                targets.push((
                    SocketAddr::from(([127, 0, 0, 1], ports.a)),
                    SocketAddr::from(([127, 0, 0, 1], ports.b)),
                ));
            }
        }
        None => {
            for (a, b) in &pairs {
                targets.push((b.local_addr().unwrap(), a.local_addr().unwrap()));
            }
        }
    }
    let start = Instant::now();
    let cpu_before = common::cpu_seconds();
    let mut sinks = Vec::new();
    let mut senders = Vec::new();
    for ((a, b), (a_to, b_to)) in pairs.iter().zip(&targets) {
        sinks.push(tokio::spawn(sink(a.clone(), start)));
        sinks.push(tokio::spawn(sink(b.clone(), start)));
        senders.push(tokio::spawn(stream(a.clone(), *a_to, start, seconds)));
        senders.push(tokio::spawn(stream(b.clone(), *b_to, start, seconds)));
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
    let pick = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    Outcome {
        packets,
        received: latencies.len(),
        cpu,
        p50: pick(0.5),
        p99: pick(0.99),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
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
    let direct = runtime.block_on(run(calls, seconds, None));
    let mut relay = RelayManager::new(
        "127.0.0.1".parse().unwrap(),
        PortRange {
            low: 40000,
            high: 49999,
        },
    );
    let relayed = runtime.block_on(run(calls, seconds, Some(&mut relay)));
    println!("| path | packets sent | received | loss | CPU (s) | latency p50 | latency p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (name, o) in [
        ("direct (socket to socket)", &direct),
        ("through the relay", &relayed),
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
}
