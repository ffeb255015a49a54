//! The host's RTP ports: pairs (an even port for RTP, the odd one above it for RTCP)
//! bound in turn from `[media] rtp_ports`.

use std::net::{IpAddr, UdpSocket};

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
            let Ok(rtp) = UdpSocket::bind((self.bind_ip, rtp_port)) else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind((self.bind_ip, rtcp_port)) else {
                continue;
            };
            return Ok(PortPair {
                rtp,
                rtcp,
                port: rtp_port,
            });
        }
        Err(format!(
            "no free RTP port pair in {}-{}",
            self.range.low, self.range.high
        ))
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
}
