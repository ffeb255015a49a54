//! The host's RTP ports: pairs (an even port for RTP, the odd one above it for RTCP)
//! bound in turn from `[media] rtp_ports`.

use std::collections::VecDeque;
use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::config::PortRange;

/// One RTP/RTCP pair, bound.
pub(crate) struct PortPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub port: u16,
}

/// Hands out port pairs round the range: each search starts after the pair handed out
/// last, so a port a call just released is the last to serve the next one (a late
/// packet of the ended call reaches nothing), and ports something else holds are
/// skipped.
pub(crate) struct RtpPorts {
    bind_ip: IpAddr,
    range: PortRange,
    /// The even ports that start a pair inside the range: `first..=last`, by twos.
    first: u32,
    last: u32,
    next: u32,
}

impl RtpPorts {
    pub(crate) fn new(bind_ip: IpAddr, range: PortRange) -> Self {
        let (low, high) = (u32::from(range.low), u32::from(range.high));
        let first = low + low % 2;
        // The highest even port whose odd neighbour is still in the range; below `first`
        // when the range holds no whole pair (every bind then fails with a clear error).
        let last = (high + 1 - (high + 1) % 2).saturating_sub(2);
        Self {
            bind_ip,
            range,
            first,
            last,
            next: first,
        }
    }

    /// The address the pairs are bound on.
    pub(crate) fn bind_ip(&self) -> IpAddr {
        self.bind_ip
    }

    /// The next pair whose two ports are free, bound.
    pub(crate) fn bind_pair(&mut self) -> Result<PortPair, String> {
        let pairs = if self.last >= self.first {
            (self.last - self.first) / 2 + 1
        } else {
            0
        };
        for _ in 0..pairs {
            let port = self.next;
            self.next = if port + 2 > self.last {
                self.first
            } else {
                port + 2
            };
            // In range by construction: `last + 1` is at most the range's high port.
            let (Ok(rtp_port), Ok(rtcp_port)) = (u16::try_from(port), u16::try_from(port + 1))
            else {
                continue;
            };
            let bound = UdpSocket::bind((self.bind_ip, rtp_port))
                .and_then(|rtp| UdpSocket::bind((self.bind_ip, rtcp_port)).map(|rtcp| (rtp, rtcp)));
            match bound {
                Ok((rtp, rtcp)) => {
                    return Ok(PortPair {
                        rtp,
                        rtcp,
                        port: rtp_port,
                    });
                }
                // Held by something else: the next pair.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                // Not about this port (out of open files, the address gone): every other
                // pair would fail alike, and trying them all stalls signalling.
                Err(e) => return Err(format!("binding RTP port {rtp_port}: {e}")),
            }
        }
        Err(format!(
            "no free RTP port pair in {}-{}",
            self.range.low, self.range.high
        ))
    }
}

/// How long an ended call's pair rests before it serves another call: the late packets
/// of the call it served (in flight when it hung up) have stopped coming by then, and
/// those that came meanwhile are discarded when it is taken. About as long as a pair
/// rests under load when each is bound anew round the range (the default range of
/// 10 000 ports comes round in ~1.3 s at 2 000 calls/s).
pub(crate) const REST: Duration = Duration::from_secs(1);

/// How many ended calls' pairs a relay keeps bound for the next calls, at most (two open
/// files each; the server gives each relay its share of the open-files limit).
pub const MAX_SPARE: usize = 2048;

/// Ended calls' port pairs, kept bound for the next calls: at thousands of calls a
/// second, creating, binding, registering and closing four sockets a call was a tenth of
/// the host's CPU. A pair serves again only after it has rested ([`REST`]), oldest first;
/// when `capacity` rest, a released pair is closed instead. Generic over the pair, so
/// its rules are tested without sockets.
pub(crate) struct SparePairs<P> {
    resting: VecDeque<(Instant, P)>,
    capacity: usize,
    rest: Duration,
}

impl<P> SparePairs<P> {
    pub(crate) fn new(capacity: usize, rest: Duration) -> Self {
        Self {
            resting: VecDeque::new(),
            capacity,
            rest,
        }
    }

    /// Keep a released pair; gives it back when there is no room (to be closed).
    pub(crate) fn release(&mut self, now: Instant, pair: P) -> Option<P> {
        if self.resting.len() >= self.capacity {
            return Some(pair);
        }
        self.resting.push_back((now, pair));
        None
    }

    /// The pair that has rested longest, if it has rested long enough.
    pub(crate) fn take(&mut self, now: Instant) -> Option<P> {
        let (released, _) = self.resting.front()?;
        if now.saturating_duration_since(*released) < self.rest {
            return None;
        }
        self.take_resting()
    }

    /// The pair that has rested longest, rested enough or not.
    pub(crate) fn take_resting(&mut self) -> Option<P> {
        self.resting.pop_front().map(|(_, pair)| pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test binds on its own loopback address, so tests running at once (and the
    /// relay's, on 127.0.0.1) never take each other's ports.
    fn ports(ip: &str, low: u16, high: u16) -> RtpPorts {
        RtpPorts::new(ip.parse().unwrap(), PortRange { low, high })
    }

    #[test]
    fn pairs_are_an_even_port_and_the_one_above_in_turn_round_the_range() {
        let mut ports = ports("127.0.77.1", 40001, 40006);
        let first = ports.bind_pair().unwrap();
        let second = ports.bind_pair().unwrap();
        assert_eq!((first.port, second.port), (40002, 40004));
        assert_eq!(first.rtp.local_addr().unwrap().port(), 40002);
        assert_eq!(first.rtcp.local_addr().unwrap().port(), 40003);
        drop(first);
        // 40006 has no 40007 in the range: round to the start, free again.
        assert_eq!(ports.bind_pair().unwrap().port, 40002);
    }

    #[test]
    fn a_port_something_else_holds_is_skipped() {
        let mut ports = ports("127.0.77.2", 40010, 40015);
        let _taken = UdpSocket::bind(("127.0.77.2", 40011)).unwrap();
        let pair = ports.bind_pair().unwrap();
        assert_eq!(pair.port, 40012);
    }

    #[test]
    fn a_full_range_says_so() {
        let mut ports = ports("127.0.77.3", 40020, 40023);
        let _held = (ports.bind_pair().unwrap(), ports.bind_pair().unwrap());
        assert_eq!(
            ports.bind_pair().err().unwrap(),
            "no free RTP port pair in 40020-40023"
        );
    }

    #[test]
    fn a_range_without_a_whole_pair_binds_nothing_outside_it() {
        let mut ports = ports("127.0.77.4", 40031, 40031);
        assert_eq!(
            ports.bind_pair().err().unwrap(),
            "no free RTP port pair in 40031-40031"
        );
    }

    #[test]
    fn the_top_of_the_port_space_is_handed_out_and_rounded_without_overflow() {
        let mut ports = ports("127.0.77.5", 65532, 65535);
        let first = ports.bind_pair().unwrap();
        assert_eq!(first.port, 65532);
        assert_eq!(ports.bind_pair().unwrap().port, 65534);
        drop(first);
        assert_eq!(ports.bind_pair().unwrap().port, 65532);
    }

    #[test]
    fn a_spare_pair_serves_again_only_after_resting_oldest_first_and_the_overflow_is_closed() {
        let t0 = crate::clock::monotonic_now();
        let mut spare = SparePairs::new(2, REST);
        assert_eq!(spare.take(t0), None, "none yet");
        assert_eq!(spare.release(t0, 20000), None);
        assert_eq!(spare.release(t0 + Duration::from_millis(500), 20002), None);
        assert_eq!(
            spare.release(t0 + Duration::from_millis(600), 20004),
            Some(20004),
            "no room: closed"
        );
        assert_eq!(
            spare.take(t0 + REST - Duration::from_millis(1)),
            None,
            "still resting"
        );
        assert_eq!(spare.take(t0 + REST), Some(20000));
        assert_eq!(spare.take(t0 + REST), None, "the next has rested 1.5 s");
        assert_eq!(spare.release(t0 + REST, 20004), None);
        assert_eq!(
            spare.take_resting(),
            Some(20002),
            "rested or not, when nothing else is left"
        );
        assert_eq!(spare.take(t0 + REST + REST), Some(20004));
        assert_eq!(spare.take_resting(), None);
    }
}
