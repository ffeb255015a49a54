//! Anchored media: per call, a pair of RTP/RTCP port pairs (one per leg) and the
//! forwarding between them.
//!
//! Symmetric RTP: each side's destination starts as the address its SDP announced and
//! latches to wherever that side's packets really come from (NAT). Nothing is decoded or
//! re-timed; packets are forwarded as they are.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::config::PortRange;

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The leg the call came in on.
    A,
    /// The leg the host placed.
    B,
}

/// The host's RTP ports for one call (RTCP is each plus one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPorts {
    pub a: u16,
    pub b: u16,
}

/// What the call engine needs of media: ports to put in SDP, and where each side is.
/// The sans-IO core holds it as a trait object; tests use a fake.
pub trait MediaAllocator: Send {
    fn open(&mut self, session: u64) -> Result<MediaPorts, String>;
    /// The address a side's SDP announced (until its packets show the real one).
    fn set_remote(&mut self, session: u64, side: Side, rtp: SocketAddr);
    /// Watch the caller's (side A's) RTP for RFC 4733 telephone-events of this payload
    /// type: the digits are reported when the call closes.
    fn observe_dtmf(&mut self, session: u64, payload_type: u8);
    /// Release the call's ports; the packets it relayed (A→B, B→A).
    fn close(&mut self, session: u64) -> MediaReport;
}

/// What a call's media did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaReport {
    /// RTP packets relayed from A to B, and from B to A.
    pub packets: (u64, u64),
    /// The DTMF digits side A sent as RFC 4733 telephone-events.
    pub digits: String,
}

/// RFC 4733 digits seen on one stream: each event counted once, however many packets
/// (and redundant end packets) carry it.
#[derive(Debug, Default)]
struct DtmfWatch {
    payload_type: Option<u8>,
    /// The RTP timestamp and code of the last event seen: all packets of one event share
    /// them.
    last_event: Option<(u32, u8)>,
    digits: String,
}

impl DtmfWatch {
    fn inspect(&mut self, packet: &[u8]) {
        let Some(pt) = self.payload_type else { return };
        if packet.len() < 16 || packet[0] >> 6 != 2 || packet[1] & 0x7f != pt {
            return;
        }
        let timestamp = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        if self.last_event == Some((timestamp, packet[12])) || self.digits.len() >= 256 {
            return;
        }
        self.last_event = Some((timestamp, packet[12]));
        let digit = match packet[12] {
            e @ 0..=9 => char::from(b'0' + e),
            10 => '*',
            11 => '#',
            e @ 12..=15 => char::from(b'A' + e - 12),
            _ => return,
        };
        self.digits.push(digit);
    }
}

/// Totals for `/metrics`.
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub rtp_packets: AtomicU64,
    pub rtcp_packets: AtomicU64,
    pub open_calls: AtomicU64,
}

/// Where each side's packets go, shared by the forwarding tasks of one call.
#[derive(Debug, Default)]
struct Remotes {
    rtp: [Option<SocketAddr>; 2],
    rtcp: [Option<SocketAddr>; 2],
    latched: [bool; 2],
}

struct Call {
    remotes: Arc<Mutex<Remotes>>,
    dtmf: Arc<Mutex<DtmfWatch>>,
    tasks: Vec<JoinHandle<()>>,
    /// Packets this call relayed, per direction (A→B, B→A).
    packets: Arc<[AtomicU64; 2]>,
}

/// The real relay: binds UDP ports and spawns forwarding tasks on the current runtime.
pub struct RelayManager {
    bind_ip: IpAddr,
    range: PortRange,
    next: u16,
    calls: HashMap<u64, Call>,
    pub counters: Arc<RelayCounters>,
}

impl RelayManager {
    pub fn new(bind_ip: IpAddr, range: PortRange) -> Self {
        let first = range.low + (range.low % 2);
        Self {
            bind_ip,
            range,
            next: first,
            calls: HashMap::new(),
            counters: Arc::default(),
        }
    }

    /// An even port whose odd neighbour is free too, bound for RTP and RTCP.
    fn bind_pair(&mut self) -> Result<(std::net::UdpSocket, std::net::UdpSocket, u16), String> {
        let span = u32::from(self.range.high - self.range.low) + 1;
        for _ in 0..span.div_ceil(2) {
            let port = self.next;
            self.next = if port + 3 > self.range.high {
                self.range.low + (self.range.low % 2)
            } else {
                port + 2
            };
            let Ok(rtp) = std::net::UdpSocket::bind((self.bind_ip, port)) else {
                continue;
            };
            let Ok(rtcp) = std::net::UdpSocket::bind((self.bind_ip, port + 1)) else {
                continue;
            };
            return Ok((rtp, rtcp, port));
        }
        Err(format!(
            "no free RTP port pair in {}-{}",
            self.range.low, self.range.high
        ))
    }
}

impl MediaAllocator for RelayManager {
    fn open(&mut self, session: u64) -> Result<MediaPorts, String> {
        let (a_rtp, a_rtcp, a) = self.bind_pair()?;
        let (b_rtp, b_rtcp, b) = self.bind_pair()?;
        let to_tokio = |socket: std::net::UdpSocket| -> Result<Arc<UdpSocket>, String> {
            socket.set_nonblocking(true).map_err(|e| e.to_string())?;
            UdpSocket::from_std(socket)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        };
        let rtp = [to_tokio(a_rtp)?, to_tokio(b_rtp)?];
        let rtcp = [to_tokio(a_rtcp)?, to_tokio(b_rtcp)?];
        let remotes = Arc::new(Mutex::new(Remotes::default()));
        let packets: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let dtmf = Arc::new(Mutex::new(DtmfWatch::default()));
        let mut tasks = Vec::with_capacity(4);
        for from in [0, 1] {
            for (sockets, is_rtcp) in [(&rtp, false), (&rtcp, true)] {
                tasks.push(tokio::spawn(forward(Forwarding {
                    inbound: sockets[from].clone(),
                    outbound: sockets[1 - from].clone(),
                    from,
                    is_rtcp,
                    remotes: remotes.clone(),
                    dtmf: (from == 0 && !is_rtcp).then(|| dtmf.clone()),
                    packets: packets.clone(),
                    counters: self.counters.clone(),
                })));
            }
        }
        self.calls.insert(
            session,
            Call {
                remotes,
                dtmf,
                tasks,
                packets,
            },
        );
        self.counters.open_calls.fetch_add(1, Relaxed);
        Ok(MediaPorts { a, b })
    }

    fn set_remote(&mut self, session: u64, side: Side, rtp: SocketAddr) {
        if let Some(call) = self.calls.get(&session) {
            let mut remotes = call.remotes.lock().unwrap_or_else(|p| p.into_inner());
            let i = side as usize;
            if !remotes.latched[i] {
                remotes.rtp[i] = Some(rtp);
                remotes.rtcp[i] = Some(SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1)));
            }
        }
    }

    fn observe_dtmf(&mut self, session: u64, payload_type: u8) {
        if let Some(call) = self.calls.get(&session) {
            call.dtmf
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .payload_type = Some(payload_type);
        }
    }

    fn close(&mut self, session: u64) -> MediaReport {
        let Some(call) = self.calls.remove(&session) else {
            return MediaReport::default();
        };
        for task in call.tasks {
            task.abort();
        }
        self.counters.open_calls.fetch_sub(1, Relaxed);
        let digits =
            std::mem::take(&mut call.dtmf.lock().unwrap_or_else(|p| p.into_inner()).digits);
        MediaReport {
            packets: (call.packets[0].load(Relaxed), call.packets[1].load(Relaxed)),
            digits,
        }
    }
}

/// One direction of one call's RTP or RTCP.
struct Forwarding {
    inbound: Arc<UdpSocket>,
    outbound: Arc<UdpSocket>,
    /// The side the packets come from (0 = A, 1 = B).
    from: usize,
    is_rtcp: bool,
    remotes: Arc<Mutex<Remotes>>,
    /// Set on the caller's RTP direction only.
    dtmf: Option<Arc<Mutex<DtmfWatch>>>,
    packets: Arc<[AtomicU64; 2]>,
    counters: Arc<RelayCounters>,
}

async fn forward(f: Forwarding) {
    let to = 1 - f.from;
    let mut buf = vec![0u8; 2048];
    loop {
        // Errors here are ICMP reports of earlier sends: nothing to do but go on.
        let Ok((n, source)) = f.inbound.recv_from(&mut buf).await else {
            continue;
        };
        let destination = {
            let mut remotes = f.remotes.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_rtcp {
                remotes.rtcp[f.from] = Some(source);
                remotes.rtcp[to]
            } else {
                remotes.rtp[f.from] = Some(source);
                remotes.latched[f.from] = true;
                remotes.rtp[to]
            }
        };
        if let Some(dtmf) = &f.dtmf {
            dtmf.lock()
                .unwrap_or_else(|p| p.into_inner())
                .inspect(&buf[..n]);
        }
        let Some(destination) = destination else {
            continue;
        };
        if f.outbound.send_to(&buf[..n], destination).await.is_ok() {
            if f.is_rtcp {
                f.counters.rtcp_packets.fetch_add(1, Relaxed);
            } else {
                f.counters.rtp_packets.fetch_add(1, Relaxed);
                f.packets[f.from].fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(timestamp: u32, event: u8, end: bool) -> Vec<u8> {
        let mut p = vec![0x80, 101, 0, 1];
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, event, if end { 0x80 } else { 0 }, 0, 160]);
        p
    }

    #[test]
    fn telephone_events_are_counted_once_each() {
        let mut watch = DtmfWatch {
            payload_type: Some(101),
            ..Default::default()
        };
        for packet in [
            event(160, 1, false),
            event(160, 1, false),
            event(160, 1, true),
            event(160, 1, true),
            event(960, 11, false),
            event(960, 11, true),
        ] {
            watch.inspect(&packet);
        }
        let mut audio = event(1760, 5, false);
        audio[1] = 8; // PCMA, not an event
        watch.inspect(&audio);
        watch.inspect(&[0x80, 101]); // truncated
        assert_eq!(watch.digits, "1#");
    }

    #[tokio::test]
    async fn packets_cross_and_sides_latch_to_their_real_source() {
        let mut relay = RelayManager::new(
            "127.0.0.1".parse().unwrap(),
            PortRange {
                low: 42000,
                high: 42999,
            },
        );
        let ports = relay.open(1).unwrap();
        let alice = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let bob = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Bob's SDP is right; Alice's SDP announced a wrong port (she is behind NAT).
        relay.set_remote(1, Side::B, bob.local_addr().unwrap());
        relay.set_remote(1, Side::A, "127.0.0.1:9".parse().unwrap());
        alice
            .send_to(b"hello bob", ("127.0.0.1", ports.a))
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) =
            tokio::time::timeout(std::time::Duration::from_secs(2), bob.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(&buf[..n], b"hello bob");
        assert_eq!(from.port(), ports.b, "bob hears the host's B port");
        // Bob answers; it reaches Alice where her packets came from, not where her SDP said.
        bob.send_to(b"hi alice", ("127.0.0.1", ports.b))
            .await
            .unwrap();
        let (n, from) =
            tokio::time::timeout(std::time::Duration::from_secs(2), alice.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(&buf[..n], b"hi alice");
        assert_eq!(from.port(), ports.a);
        assert_eq!(relay.close(1).packets, (1, 1));
        assert_eq!(relay.counters.open_calls.load(Relaxed), 0);
        // The ports are free again once the aborted tasks are dropped.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(std::net::UdpSocket::bind(("127.0.0.1", ports.a)).is_ok());
    }
}
