//! A dialog (RFC 3261 §12) as one side keeps it — Call-ID, tags, the remote target, the
//! route set, its own CSeq and its SDP session towards the other side — and the requests
//! it sends in it. Requests go through the route set (loose routing, RFC 3261 §12.2.1.1):
//! the Request-URI is the remote target and the route set becomes Route headers, so a
//! proxy that record-routed (a carrier's edge, Kamailio in front of a cluster) sees the
//! dialog's requests again.

use crate::message::{self, Request, SipMessage};
use crate::sdp;
use crate::transaction::Peer;

/// One side's dialog state.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Our side's URI header value, tag included (From on a dialog we set up, To on one
    /// the other side did).
    pub local: String,
    /// The other side's header value, tag included once known.
    pub remote: String,
    /// Where requests in the dialog go (the other side's Contact).
    pub target: String,
    /// The proxies that asked to stay in the path (Record-Route), in the order a request
    /// passes them.
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    /// The CSeq of the last request the other side sent in the dialog (none yet): a
    /// lower one is out of order (RFC 3261 §12.2.2).
    pub remote_cseq: Option<u32>,
    /// Where the dialog's requests are sent (the transport's next hop).
    pub peer: Peer,
    /// The host's SDP session towards this party: every description sent in this
    /// dialog is stamped by it.
    pub sdp: sdp::Origin,
}

impl Dialog {
    /// The dialog a 2xx to an INVITE of ours sets up, read from the 2xx alone: for a
    /// dialog the host never kept (a second branch of a forking proxy answering too,
    /// RFC 3261 §13.2.2.4), only to acknowledge and hang up. Its SDP session is unused.
    pub fn from_answer(answer: &SipMessage, peer: Peer) -> Option<Dialog> {
        let mut dialog = Dialog {
            call_id: message::call_id(answer)?,
            local: message::header_value(answer, "From")?,
            remote: message::header_value(answer, "To")?,
            target: String::new(),
            route_set: Vec::new(),
            local_cseq: message::cseq(answer)?.0,
            remote_cseq: None,
            peer,
            sdp: sdp::Origin::new(0),
        };
        dialog.take_answer(answer);
        Some(dialog)
    }

    /// What a 2xx to the INVITE that set this dialog up fixes (RFC 3261 §12.1.2): the
    /// remote tag, the remote target (its Contact) and the route set (its Record-Route,
    /// reversed).
    pub fn take_answer(&mut self, answer: &SipMessage) {
        if let Some(tag) = message::to_tag(answer) {
            self.remote = retagged(&self.remote, &tag);
        }
        if let Some(contact) = message::header_value(answer, "Contact") {
            self.target = addr_spec(&contact);
        }
        self.route_set = route_set_of_response(answer);
    }

    /// Where RFC 3261 §8.1.2 and §12.2.1.1 send the dialog's requests: the first Route
    /// when the route set is loose-routing (`;lr`), else the remote target — when that
    /// URI's host is an address (a name would need resolving; the caller keeps `peer`).
    pub fn next_hop(&self) -> Option<std::net::SocketAddr> {
        let uri = match self.route_set.first() {
            Some(route) if route.contains(";lr") => addr_spec(route),
            Some(_) => return None, // strict routing: not followed
            None => self.target.clone(),
        };
        let (rest, tls) = match uri.strip_prefix("sips:") {
            Some(rest) => (rest, true),
            None => (uri.strip_prefix("sip:")?, false),
        };
        let tls = tls || rest.to_ascii_lowercase().contains(";transport=tls");
        let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let hostport = hostport.split([';', '?']).next()?;
        hostport.parse().ok().or_else(|| {
            hostport
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, if tls { 5061 } else { 5060 }))
        })
    }

    /// A request in this dialog with no body of its own (BYE, ACK for a 2xx).
    pub fn request(&self, method: &str, cseq: u32, local: &Via<'_>) -> Option<Request> {
        self.request_with_body(method, cseq, local, &[], None)
    }

    /// A request in this dialog carrying `body` (`content_type`), with `extra` headers
    /// (`Name: value`, each without CRLF).
    pub fn request_with_body(
        &self,
        method: &str,
        cseq: u32,
        via: &Via<'_>,
        extra: &[String],
        body: Option<(&str, &str)>,
    ) -> Option<Request> {
        let mut text = format!(
            "{method} {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\n",
            self.target,
            self.peer.transport.as_str().to_ascii_uppercase(),
            via.local.for_transport(self.peer.transport),
            via.branch
        );
        for route in &self.route_set {
            text.push_str(&format!("Route: {route}\r\n"));
        }
        text.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n",
            self.local, self.remote, self.call_id
        ));
        for header in extra {
            text.push_str(header);
            text.push_str("\r\n");
        }
        match body {
            Some((content_type, body)) => text.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => text.push_str("Content-Length: 0\r\n\r\n"),
        }
        match message::parse_own(text.as_bytes()) {
            Ok(SipMessage::Request(request)) => Some(request),
            _ => None,
        }
    }
}

/// Who sends a request: the host's addresses for Via (the one of the dialog's transport)
/// and the branch of its transaction.
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    pub local: crate::local::LocalAddrs,
    pub branch: &'a str,
}

/// The route set the side that received a dialog-creating request keeps: the request's
/// Record-Route values in order (RFC 3261 §12.1.1).
pub fn route_set_of_request(request: &SipMessage) -> Vec<String> {
    record_routes(request)
}

/// The route set the side that sent a dialog-creating request keeps: the response's
/// Record-Route values in reverse (RFC 3261 §12.1.2).
pub fn route_set_of_response(response: &SipMessage) -> Vec<String> {
    let mut routes = record_routes(response);
    routes.reverse();
    routes
}

/// Every Record-Route value of a message, in order (several headers, or several values
/// in one separated by commas outside `<…>`).
fn record_routes(message: &SipMessage) -> Vec<String> {
    message::header_values(message, "Record-Route")
        .iter()
        .flat_map(|value| split_outside_brackets(value))
        .collect()
}

fn split_outside_brackets(value: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth) = (Vec::new(), String::new(), 0u32);
    for c in value.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current).trim().to_owned());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current.trim().to_owned());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The URI inside a name-addr (`"Bob" <sip:b@h>;tag=x` → `sip:b@h`).
pub fn addr_spec(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_owned(),
        _ => value.split(';').next().unwrap_or(value).trim().to_owned(),
    }
}

/// A header value with `tag` added, unless it has one.
pub fn with_tag(value: &str, tag: &str) -> String {
    if value.contains(";tag=") {
        value.to_owned()
    } else {
        format!("{value};tag={tag}")
    }
}

/// A header value whose tag is `tag`, any earlier one replaced: a 2xx's To tag is the
/// dialog's, whatever tag a provisional response carried (RFC 3261 §12.1.2; a forking
/// element, or another target after a failover, answers with its own).
pub fn retagged(value: &str, tag: &str) -> String {
    let untagged = match value.find(";tag=") {
        Some(start) => {
            let rest = &value[start + ";tag=".len()..];
            let end = rest
                .find(';')
                .map_or(value.len(), |i| start + ";tag=".len() + i);
            format!("{}{}", &value[..start], &value[end..])
        }
        None => value.to_owned(),
    };
    format!("{untagged};tag={tag}")
}

/// The tag inside a header value (`…;tag=x`).
pub fn tag_of(value: &str) -> String {
    value
        .split(";tag=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_hop_is_the_first_loose_route_or_else_the_remote_target() {
        let mut dialog = Dialog {
            call_id: "c".into(),
            local: "<sip:a@h>;tag=1".into(),
            remote: "<sip:b@h>;tag=2".into(),
            target: "sip:pstn@127.0.0.1:5070;transport=udp".into(),
            route_set: Vec::new(),
            local_cseq: 1,
            remote_cseq: None,
            peer: crate::transaction::Peer {
                transport: crate::transaction::Transport::Udp,
                addr: "127.0.0.2:5060".parse().unwrap(),
            },
            sdp: crate::sdp::Origin::new(1),
        };
        assert_eq!(dialog.next_hop(), Some("127.0.0.1:5070".parse().unwrap()));
        dialog.route_set = vec!["<sip:127.0.0.3;lr>".into(), "<sip:127.0.0.4;lr>".into()];
        assert_eq!(dialog.next_hop(), Some("127.0.0.3:5060".parse().unwrap()));
        // A TLS hop without a port is on SIP's TLS port.
        dialog.route_set = vec!["<sip:127.0.0.3;transport=tls;lr>".into()];
        assert_eq!(dialog.next_hop(), Some("127.0.0.3:5061".parse().unwrap()));
        dialog.route_set = vec!["<sips:127.0.0.3;lr>".into()];
        assert_eq!(dialog.next_hop(), Some("127.0.0.3:5061".parse().unwrap()));
        dialog.route_set = vec!["<sip:edge.carrier.example;lr>".into()];
        assert_eq!(dialog.next_hop(), None, "a name is not resolved here");
        dialog.route_set = vec!["<sip:127.0.0.3>".into()];
        assert_eq!(dialog.next_hop(), None, "strict routing is not followed");
    }
    use crate::transaction::Transport;

    fn parse(text: &str) -> SipMessage {
        message::parse(text.as_bytes()).unwrap()
    }

    const INVITE: &str = "INVITE sip:100@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10;branch=z9hG4bK1\r\n\
Record-Route: <sip:10.0.0.10;lr>, <sip:edge.example;lr;transport=tcp>\r\n\
Record-Route: <sip:10.0.0.9;lr>\r\nFrom: <sip:a@x>;tag=a\r\nTo: <sip:100@pbx>\r\n\
Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@10.0.0.20>\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn the_route_set_is_the_record_route_in_order_or_reversed() {
        let request = parse(INVITE);
        let uas = route_set_of_request(&request);
        assert_eq!(
            uas,
            [
                "<sip:10.0.0.10;lr>",
                "<sip:edge.example;lr;transport=tcp>",
                "<sip:10.0.0.9;lr>"
            ]
        );
        let mut uac = uas.clone();
        uac.reverse();
        let Ok(SipMessage::Request(r)) = message::parse(INVITE.as_bytes()) else {
            panic!()
        };
        let ok = SipMessage::Response(message::response_to(&r, 200, Some("t")));
        assert_eq!(route_set_of_response(&ok), uac, "the 2xx carries them back");
        assert!(route_set_of_request(&parse(&INVITE.replace("Record-Route", "X-RR"))).is_empty());
    }

    #[test]
    fn a_2xx_fixes_the_remote_tag_target_and_route_set() {
        let Ok(SipMessage::Request(invite)) = message::parse(INVITE.as_bytes()) else {
            panic!()
        };
        let mut ok = message::response_to(&invite, 200, Some("b2"));
        ok.headers.push(rsip::Header::Other(
            "Contact".into(),
            "<sip:b@10.0.0.30:5070>".into(),
        ));
        let ok = SipMessage::Response(ok);
        let peer = Peer {
            transport: Transport::Udp,
            addr: "10.0.0.10:5060".parse().unwrap(),
        };
        let dialog = Dialog::from_answer(&ok, peer).expect("a dialog");
        assert_eq!(dialog.call_id, "c1");
        assert_eq!(dialog.local, "<sip:a@x>;tag=a");
        assert_eq!(dialog.remote, "<sip:100@pbx>;tag=b2");
        assert_eq!(dialog.target, "sip:b@10.0.0.30:5070");
        assert_eq!(dialog.route_set[0], "<sip:10.0.0.9;lr>", "reversed");
        assert_eq!(dialog.local_cseq, 1);
        let mut early = dialog.clone();
        early.remote = "<sip:100@pbx>;tag=b1".into();
        early.take_answer(&ok);
        assert_eq!(early.remote, "<sip:100@pbx>;tag=b2", "the 2xx's tag wins");
    }

    #[test]
    fn requests_in_a_dialog_follow_the_route_set() {
        let peer = Peer {
            transport: Transport::Tcp,
            addr: "10.0.0.10:5060".parse().unwrap(),
        };
        let dialog = Dialog {
            call_id: "c1".into(),
            local: "<sip:100@pbx>;tag=h".into(),
            remote: "<sip:a@x>;tag=a".into(),
            target: "sip:a@10.0.0.20".into(),
            route_set: route_set_of_request(&parse(INVITE)),
            local_cseq: 1,
            remote_cseq: Some(1),
            peer,
            sdp: sdp::Origin::new(1),
        };
        let via = Via {
            local: crate::local::LocalAddrs::udp("10.0.0.11:5060".parse().unwrap()),
            branch: "b1",
        };
        let bye = dialog.request("BYE", 2, &via).unwrap();
        let text = bye.to_string();
        assert!(
            text.starts_with("BYE sip:a@10.0.0.20 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Via: SIP/2.0/TCP 10.0.0.11:5060;branch=z9hG4bKb1"),
            "{text}"
        );
        let routes: Vec<&str> = text.lines().filter(|l| l.starts_with("Route:")).collect();
        assert_eq!(
            routes,
            [
                "Route: <sip:10.0.0.10;lr>",
                "Route: <sip:edge.example;lr;transport=tcp>",
                "Route: <sip:10.0.0.9;lr>"
            ]
        );
        let reinvite = dialog
            .request_with_body(
                "INVITE",
                3,
                &via,
                &["Contact: <sip:wasmpbx@10.0.0.11>".into()],
                Some(("application/sdp", "v=0\r\n")),
            )
            .unwrap()
            .to_string();
        assert!(
            reinvite.contains("Content-Type: application/sdp\r\n"),
            "{reinvite}"
        );
        assert!(reinvite.ends_with("\r\n\r\nv=0\r\n"), "{reinvite}");
    }

    #[test]
    fn name_addr_parts() {
        assert_eq!(
            addr_spec("\"Bob\" <sip:b@h:5060;transport=udp>;tag=x"),
            "sip:b@h:5060;transport=udp"
        );
        assert_eq!(with_tag("<sip:a@h>", "t1"), "<sip:a@h>;tag=t1");
        assert_eq!(with_tag("<sip:a@h>;tag=t0", "t1"), "<sip:a@h>;tag=t0");
        assert_eq!(retagged("<sip:a@h>;tag=t0", "t1"), "<sip:a@h>;tag=t1");
        assert_eq!(
            retagged("<sip:a@h>;tag=t0;x=y", "t1"),
            "<sip:a@h>;x=y;tag=t1"
        );
        assert_eq!(retagged("<sip:a@h>", "t1"), "<sip:a@h>;tag=t1");
        assert_eq!(tag_of("<sip:a@h>;tag=t1;x=y"), "t1");
    }
}
