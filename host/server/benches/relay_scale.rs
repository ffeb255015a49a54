//! The relay at scale, with the load made by another process: CALLS (default 2 000)
//! concurrent G.711 calls, 50 packets/s each way (172-byte packets, so 100 packets/s in
//! per call), through `RelayManager` on a tokio runtime of two workers (as the server
//! runs it), for SECONDS (default 10).
//!
//!     CALLS=2000 SECONDS=10 cargo bench -p wasmpbx --bench relay_scale
//!
//! The generator is this binary again, in a child process, on plain threads: every
//! 20 ms it sends each call's packet for side A from one socket and side B's from
//! another (the relay latches each call's sides to them; its cost per packet is the same
//! as with a socket per device), spread over the 20 ms in 0.5 ms slices as devices on
//! their own clocks would send, and it receives what comes back. The call, side,
//! sequence and send time ride in the payload, which the relay passes on untouched (it
//! rewrites the header). A direct pass first — the generator's two sockets sending to
//! each other — gives its own latency and loss at the same rate. The relay's CPU is this
//! process's (it runs nothing else); the generator reports its own.

// Measuring happens on real time here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmpbx::call::SessionId;
use wasmpbx::config::PortRange;
use wasmpbx::media::{MediaAllocator, RelayManager, Side};

const PACKET: usize = 172;
/// Set in the child process that generates the load.
const GENERATOR: &str = "WASMPBX_BENCH_GENERATOR";
const ROUND: Duration = Duration::from_millis(20);
/// A round's packets go out in this many even slices (every 0.5 ms).
const SLOTS: u32 = 40;

/// What the generator saw in one pass.
struct Pass {
    sent: u64,
    received: u64,
    p50_us: u32,
    p99_us: u32,
    max_us: u32,
    generator_cpu_s: f64,
}

impl Pass {
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {:.3}",
            self.sent, self.received, self.p50_us, self.p99_us, self.max_us, self.generator_cpu_s
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split_whitespace().collect();
        Some(Self {
            sent: f.first()?.parse().ok()?,
            received: f.get(1)?.parse().ok()?,
            p50_us: f.get(2)?.parse().ok()?,
            p99_us: f.get(3)?.parse().ok()?,
            max_us: f.get(4)?.parse().ok()?,
            generator_cpu_s: f.get(5)?.parse().ok()?,
        })
    }
}

/// A UDP socket on loopback with room for a burst (a round is 2 × CALLS packets).
fn socket() -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    socket.set_recv_buffer_size(16 << 20).unwrap();
    socket.set_send_buffer_size(16 << 20).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    socket.into()
}

/// Receive on `socket` until `done` and a second of quiet; the latencies (µs).
fn receive(socket: &UdpSocket, start: Instant, done: &AtomicBool) -> Vec<u32> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut latencies = Vec::new();
    let mut quiet_since: Option<Instant> = None;
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if n >= 28 => {
                quiet_since = None;
                let sent = u64::from_le_bytes(buf[20..28].try_into().unwrap());
                let now = start.elapsed().as_nanos() as u64;
                latencies.push((now.saturating_sub(sent) / 1000) as u32);
            }
            Ok(_) => {}
            Err(_) if done.load(Ordering::Relaxed) => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    return latencies;
                }
            }
            Err(_) => {}
        }
    }
}

/// One pass: every 20 ms for `seconds`, each call's packet from `a` to `to_a[i]` and
/// from `b` to `to_b[i]`, spread over the round.
fn pass(
    a: &Arc<UdpSocket>,
    b: &Arc<UdpSocket>,
    to_a: &[SocketAddr],
    to_b: &[SocketAddr],
    seconds: u64,
) -> Pass {
    let cpu_before = common::cpu_seconds();
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|socket| {
            let done = done.clone();
            std::thread::spawn(move || receive(&socket, start, &done))
        })
        .collect();
    let mut packet = [0u8; PACKET];
    packet[0] = 0x80;
    let mut sent = 0u64;
    let rounds = seconds * 1000 / ROUND.as_millis() as u64;
    // Every call's packets, side A's and side B's, in the order they go out in a round.
    let sends: Vec<(&UdpSocket, usize, &SocketAddr)> = to_a
        .iter()
        .enumerate()
        .flat_map(|(call, to)| [(&**a, call * 2, to), (&**b, call * 2 + 1, &to_b[call])])
        .collect();
    let per_slot = sends.len().div_ceil(SLOTS as usize);
    for round in 0..rounds {
        // Spread over the round, as devices with their own clocks would send.
        for (slot, chunk) in sends.chunks(per_slot).enumerate() {
            let due = start + ROUND * round as u32 + ROUND / SLOTS * slot as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            for (socket, stream, target) in chunk {
                packet[2..4].copy_from_slice(&(round as u16).to_be_bytes());
                packet[8..12].copy_from_slice(&(*stream as u32).to_be_bytes());
                let stamp = start.elapsed().as_nanos() as u64;
                packet[20..28].copy_from_slice(&stamp.to_le_bytes());
                if socket.send_to(&packet, target).is_ok() {
                    sent += 1;
                }
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let mut latencies: Vec<u32> = receivers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    latencies.sort_unstable();
    let pick = |p: f64| common::quantile(&latencies, p);
    Pass {
        sent,
        received: latencies.len() as u64,
        p50_us: pick(0.5),
        p99_us: pick(0.99),
        max_us: latencies.last().copied().unwrap_or(0),
        generator_cpu_s: common::cpu_seconds() - cpu_before,
    }
}

/// The generator (the child): print its two sockets' ports; on `direct`, a pass between
/// them; on `relay PORTS…` (side A's and side B's relay port for each call), a pass
/// through the relay; each pass's figures on a line.
fn generator(calls: usize, seconds: u64) {
    let (a, b) = (Arc::new(socket()), Arc::new(socket()));
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    println!("{} {}", a_addr.port(), b_addr.port());
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let (to_a, to_b): (Vec<SocketAddr>, Vec<SocketAddr>) = match words.next() {
            Some("direct") => (vec![b_addr; calls], vec![a_addr; calls]),
            Some("relay") => {
                let ports: Vec<u16> = words.filter_map(|w| w.parse().ok()).collect();
                let at = |port: &u16| SocketAddr::from(([127, 0, 0, 1], *port));
                (
                    ports.iter().step_by(2).map(at).collect(),
                    ports.iter().skip(1).step_by(2).map(at).collect(),
                )
            }
            _ => return,
        };
        println!("{}", pass(&a, &b, &to_a, &to_b, seconds).line());
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (calls, seconds) = (number("CALLS", 2000) as usize, number("SECONDS", 10));
    if std::env::var_os(GENERATOR).is_some() {
        return generator(calls, seconds);
    }
    common::raise_open_files_limit();
    common::print_machine();
    println!(
        "{calls} calls, G.711 both ways (50 packets/s per direction, {} packets/s into the relay), {seconds} s; \
         the generator in another process\n",
        calls * 100
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env(GENERATOR, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = || from_child.next().unwrap().unwrap();
    let ports: Vec<u16> = next_line()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let generator = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    writeln!(to_child, "direct").unwrap();
    let direct = Pass::parse(&next_line()).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut relay = RelayManager::new(
        "127.0.0.1".parse().unwrap(),
        PortRange {
            low: 20000,
            high: 39999,
        },
    );
    // Each call's side A is the generator's first socket, side B its second.
    let relay_ports = runtime.block_on(async {
        let mut list = String::new();
        for i in 0..calls {
            let id = SessionId::new(1, (i as u128).to_le_bytes()[..10].try_into().unwrap());
            let opened = relay.open(id).unwrap();
            relay.set_remote(id, Side::A, generator(ports[0]));
            relay.set_remote(id, Side::B, generator(ports[1]));
            list.push_str(&format!(" {} {}", opened.a, opened.b));
        }
        list
    });
    let cpu_before = common::cpu_seconds();
    writeln!(to_child, "relay{relay_ports}").unwrap();
    let relayed = Pass::parse(&next_line()).unwrap();
    let relay_cpu = common::cpu_seconds() - cpu_before;
    drop(to_child);
    child.wait().unwrap();

    println!(
        "| pass | packets sent | received | loss | latency p50 | p99 | max | generator CPU (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, p) in [
        ("direct (generator to itself)", &direct),
        ("through the relay", &relayed),
    ] {
        println!(
            "| {name} | {} | {} | {:.3} % | {} µs | {} µs | {} µs | {:.2} |",
            p.sent,
            p.received,
            100.0 * (p.sent as f64 - p.received as f64) / p.sent.max(1) as f64,
            p.p50_us,
            p.p99_us,
            p.max_us,
            p.generator_cpu_s
        );
    }
    let per_packet_us = relay_cpu / relayed.received.max(1) as f64 * 1e6;
    println!();
    println!(
        "Relay: {:.2} CPU-s over the pass ({:.2} cores), {per_packet_us:.1} µs per relayed packet \
         (about {:.0} packets/s per core); added latency p50 {} µs, p99 {} µs.",
        relay_cpu,
        relay_cpu / (seconds as f64 + 1.0),
        1e6 / per_packet_us.max(f64::MIN_POSITIVE),
        relayed.p50_us.saturating_sub(direct.p50_us),
        relayed.p99_us.saturating_sub(direct.p99_us),
    );
}
