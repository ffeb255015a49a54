//! The host's own SIP addresses: one per transport it listens on. Via and Contact name the
//! address of the transport a message goes over, so a TLS phone's next request comes back
//! over TLS to the TLS listener, not in the clear to the UDP one.

use std::net::SocketAddr;

use crate::transaction::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddrs {
    pub udp: SocketAddr,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

impl LocalAddrs {
    /// A host that listens on UDP only.
    pub fn udp(udp: SocketAddr) -> Self {
        Self {
            udp,
            tcp: None,
            tls: None,
        }
    }

    /// The address Via and Contact carry on a message over `transport`: its listener's,
    /// else the UDP one (a WebSocket's messages, or a connection the host opened to a
    /// carrier without listening on that transport itself).
    pub fn for_transport(&self, transport: Transport) -> SocketAddr {
        let listener = match transport {
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
            Transport::Udp | Transport::Ws => None,
        };
        listener.unwrap_or(self.udp)
    }

    /// The host's Contact URI for a peer reached over `transport` (`user` as its user
    /// part): `sip:wasmpbx@127.0.0.1:5061;transport=tls`.
    pub fn contact(&self, user: &str, transport: Transport) -> String {
        format!(
            "sip:{user}@{}{}",
            self.for_transport(transport),
            transport_param(transport)
        )
    }
}

/// `;transport=tcp`/`;transport=tls` for a URI reached over a stream (RFC 3261 §19.1.1);
/// nothing for UDP (the default) and WebSockets (whose peers use their one connection).
pub fn transport_param(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        Transport::Udp | Transport::Ws => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_names_its_own_listener() {
        let locals = LocalAddrs {
            udp: "127.0.0.1:5060".parse().unwrap(),
            tcp: Some("127.0.0.1:5060".parse().unwrap()),
            tls: Some("127.0.0.1:5061".parse().unwrap()),
        };
        assert_eq!(
            locals.contact("wasmpbx", Transport::Tls),
            "sip:wasmpbx@127.0.0.1:5061;transport=tls"
        );
        assert_eq!(
            locals.contact("wasmpbx", Transport::Tcp),
            "sip:wasmpbx@127.0.0.1:5060;transport=tcp"
        );
        assert_eq!(
            locals.contact("wasmpbx", Transport::Ws),
            "sip:wasmpbx@127.0.0.1:5060"
        );
        // A TLS connection the host opened with no TLS listener of its own.
        let udp_only = LocalAddrs::udp("127.0.0.1:5060".parse().unwrap());
        assert_eq!(
            udp_only.contact("acct", Transport::Tls),
            "sip:acct@127.0.0.1:5060;transport=tls"
        );
    }
}
