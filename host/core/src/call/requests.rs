//! The SIP requests a B2BUA leg sends, and the header bits it reads, built as text and
//! parsed back through the one message parser.

use rsip::prelude::*;

pub(super) use crate::sip::dialog::{
    Dialog, Via, addr_spec, route_set_of_request, tag_of, with_tag,
};
use crate::sip::local::LocalAddrs;
use crate::sip::message::{self, Header, Request, Response, SipMessage};
use crate::sip::transaction::Transport;

pub(super) fn request_from(text: String) -> Option<Request> {
    match message::parse_own(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => Some(r),
        _ => None,
    }
}

/// The host's Contact header value towards a peer reached over `transport`.
pub(super) fn host_contact(local: &LocalAddrs, transport: Transport) -> String {
    format!("<{}>", local.contact("wasmpbx", transport))
}

/// Give a response the host's Contact (`contact`, from [`host_contact`]) and an SDP body.
pub(super) fn attach_sdp(reply: &mut Response, contact: String, sdp: String) {
    reply
        .headers
        .push(Header::Contact(rsip::headers::Contact::new(contact)));
    reply
        .headers
        .push(Header::ContentType(rsip::headers::ContentType::new(
            "application/sdp",
        )));
    reply.body = sdp.into_bytes();
}

/// What differs between the INVITEs the host sends.
pub(super) struct InviteParts<'a> {
    pub(super) uri: &'a str,
    pub(super) transport: Transport,
    pub(super) local: LocalAddrs,
    pub(super) max_forwards: u32,
    pub(super) from: &'a str,
    pub(super) to: &'a str,
    pub(super) call_id: &'a str,
    pub(super) offer: &'a str,
    /// The Via branch of this INVITE's transaction.
    pub(super) branch: &'a str,
    /// More headers (`Name: value`, no CRLF): P-Asserted-Identity, Diversion.
    pub(super) extra: &'a [String],
}

/// An outbound leg's INVITE, carrying the offer that points at the host's relay.
pub(super) fn initial_invite(p: &InviteParts<'_>) -> Option<Request> {
    let text = format!(
        "INVITE {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bK{};rport\r\nMax-Forwards: {}\r\n\
From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: {}\r\n\
Allow: {}\r\n{}Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{}",
        p.uri,
        p.transport.as_str().to_ascii_uppercase(),
        p.local.for_transport(p.transport),
        p.branch,
        p.max_forwards,
        p.from,
        p.to,
        p.call_id,
        host_contact(&p.local, p.transport),
        message::ALLOW,
        p.extra
            .iter()
            .map(|h| format!("{h}\r\n"))
            .collect::<String>(),
        p.offer.len(),
        p.offer
    );
    request_from(text)
}

/// A response on the caller's dialog (its To tag is the host's) with the host's Contact
/// (from [`host_contact`]).
pub(super) fn caller_response(
    invite: &Request,
    code: u16,
    a_local: &str,
    contact: String,
) -> Response {
    let mut reply = message::response_to(invite, code, Some(&tag_of(a_local)));
    reply
        .headers
        .push(Header::Contact(rsip::headers::Contact::new(contact)));
    reply
}

/// The NOTIFY that tells a device how the flip it asked for by REFER went (RFC 3515):
/// `status` is the sipfrag's status line (`100 Trying`, `200 OK`, `480 …`).
pub(super) fn refer_notify(
    dialog: &Dialog,
    cseq: u32,
    via: &Via<'_>,
    status: &str,
) -> Option<Request> {
    let state = if status.starts_with('1') {
        "active;expires=60"
    } else {
        "terminated;reason=noresource"
    };
    let headers = [
        format!(
            "Contact: {}",
            host_contact(&via.local, dialog.peer.transport)
        ),
        "Event: refer".to_owned(),
        format!("Subscription-State: {state}"),
    ];
    let body = format!("SIP/2.0 {status}\r\n");
    let sipfrag = Some(("message/sipfrag;version=2.0", body.as_str()));
    dialog.request_with_body("NOTIFY", cseq, via, &headers, sipfrag)
}

/// CANCEL for an INVITE the host sent (RFC 3261 9.1): same URI, top Via, From, To,
/// Call-ID and CSeq number.
pub(super) fn cancel_for(invite: &Request) -> Option<Request> {
    let message = SipMessage::Request(invite.clone());
    let (cseq, _) = message::cseq(&message)?;
    let text = format!(
        "CANCEL {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} CANCEL\r\nContent-Length: 0\r\n\r\n",
        invite.uri,
        message::header_value(&message, "Via")?,
        message::header_value(&message, "From")?,
        message::header_value(&message, "To")?,
        message::call_id(&message)?,
    );
    request_from(text)
}

/// The digit of an `application/dtmf-relay` (`Signal=5`) or `application/dtmf` (`5`) body.
pub(super) fn dtmf_from_info(body: &[u8]) -> Option<char> {
    let text = String::from_utf8_lossy(body);
    let value = text
        .lines()
        .find_map(|l| {
            l.split_once('=')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("signal"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| text.trim().to_owned());
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D' | 'a'..='d') => {
            Some(c.to_ascii_uppercase())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_invites_allow_what_responses_allow() {
        let invite = initial_invite(&InviteParts {
            uri: "sip:100@127.0.0.1:5090",
            transport: Transport::Udp,
            local: LocalAddrs::udp("127.0.0.1:5060".parse().unwrap()),
            max_forwards: 69,
            from: "<sip:0400@pbx>;tag=t",
            to: "<sip:100@127.0.0.1:5090>",
            call_id: "c1",
            offer: "v=0\r\n",
            branch: "z9hG4bKtest",
            extra: &["Diversion: <sip:+61290000001@pbx>;reason=unconditional".into()],
        })
        .unwrap();
        let text = String::from_utf8(invite.to_string().into_bytes()).unwrap();
        assert!(
            text.contains(&format!("Allow: {}\r\n", message::ALLOW)),
            "{text}"
        );
        assert!(text.contains("\r\nDiversion: <sip:+61290000001@pbx>;reason=unconditional\r\n"));
        // The host takes REFER (the transfer key's push) in the dialogs it sets up.
        assert!(message::ALLOW.contains("REFER"));
    }

    #[test]
    fn dtmf_info_bodies() {
        assert_eq!(dtmf_from_info(b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(dtmf_from_info(b"signal= #\r\n"), Some('#'));
        assert_eq!(dtmf_from_info(b"7"), Some('7'));
        assert_eq!(dtmf_from_info(b"Signal=55"), None);
    }
}
