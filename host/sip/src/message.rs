//! SIP messages: parsing and printing over rsip, and the header lookups the rest of the
//! host needs. rsip stays behind this module so it can be swapped.

use std::fmt::Write as _;

use rsip::prelude::*;
pub use rsip::{Header, Headers, Method, Request, Response, SipMessage, StatusCode};

/// The largest message the host accepts (the 64 KiB rule).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The methods the host takes, in every Allow header it sends (responses to OPTIONS
/// and 405, and its own INVITEs). Not UPDATE: the host answers one (a session refresh)
/// but does not pass an offer in it on, so it must not invite one.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, NOTIFY, REFER";

/// Why bytes are not a SIP message the host can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("missing or bad {0} header")]
    MissingHeader(&'static str),
    #[error("Content-Length {declared} but {actual} body bytes")]
    BadContentLength { declared: usize, actual: usize },
}

/// Parse one datagram (or one framed stream message) into a SIP message and check the
/// headers every message must have. A request's Via, From and To must also parse whole
/// (a request that fails gets a 400, and its From and To are read for routing); a
/// response needs them present only: it belongs to one of the host's own transactions
/// only if its top Via carries the branch the host drew, and only the tag of its To is
/// read (from the text). Parsing those three typed was 4.6 % of the host's samples at
/// 3 000 calls/s, nearly half of it for responses.
pub fn parse(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    let message = read(bytes)?;
    let whole = matches!(message, SipMessage::Request(_));
    for (name, ok) in [
        ("Via", checked(message.via_header(), whole)),
        ("From", checked(message.from_header(), whole)),
        ("To", checked(message.to_header(), whole)),
        ("Call-ID", message.call_id_header().is_ok()),
        ("CSeq", cseq(&message).is_some()),
    ] {
        if !ok {
            return Err(ParseError::MissingHeader(name));
        }
    }
    Ok(message)
}

/// Whether a header is there and, if `whole`, parses as its typed form.
fn checked<'a, H: ToTypedHeader<'a>>(header: Result<&H, rsip::Error>, whole: bool) -> bool {
    header.is_ok_and(|h| !whole || h.typed().is_ok())
}

/// Read a request the host wrote itself into rsip's form (what [`parse`] gives, without
/// checking the headers the host wrote): every request the host sends passes through
/// here, so it is read line by line, each header by rsip's reader of one header, not by
/// the message parser (7 % of the host's CPU at 3 000 calls/s for these requests alone).
/// Text that reader does not take goes to the parser.
pub fn parse_own(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    match read_own_request(bytes) {
        Some(request) => Ok(SipMessage::Request(request)),
        None => read(bytes),
    }
}

/// A request as the host writes them: a request line, `Name: value` lines and the body
/// after the blank line (no folded lines, the body whole).
fn read_own_request(bytes: &[u8]) -> Option<Request> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let (method, rest) = request_line.split_once(' ')?;
    let (uri, version) = rest.split_once(' ')?;
    if version != "SIP/2.0" || uri.is_empty() {
        return None;
    }
    let method: Method = method.parse().ok()?;
    // With what follows it, as the message parser reads it (the URI ends at the space).
    let uri = rsip::Uri::try_from(rest).ok()?;
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':')?;
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return None;
            }
            let value = value.trim_start_matches([' ', '\t']);
            let header = rsip::headers::header::Tokenizer {
                name: name.as_bytes(),
                value: value.as_bytes(),
            };
            header.try_into().ok()
        })
        .collect::<Option<Vec<Header>>>()?;
    Some(Request {
        method,
        uri,
        version: rsip::Version::V2,
        headers: headers.into(),
        body: body.as_bytes().to_vec(),
    })
}

/// RFC 3261 §25.1 `token`: what a header's name is made of.
fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

/// Parse without checking the headers every message must have.
fn read(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge(bytes.len()));
    }
    // rsip is not hardened against every input: a panic inside it must not take the
    // host down, so it is caught and reported as malformed.
    let parsed = std::panic::catch_unwind(|| parse_either(bytes))
        .map_err(|_| ParseError::Malformed("the parser gave up".into()))?;
    let mut message = parsed.map_err(|e| ParseError::Malformed(first_line(&e.to_string())))?;
    // rsip takes any number (`SIP/2.0 000`); RFC 3261 §7.2 has three digits, 1xx to 6xx.
    if let SipMessage::Response(response) = &message {
        let code = response.status_code.code();
        if !(100..=699).contains(&code) {
            return Err(ParseError::Malformed(format!(
                "status code {code} is not 100 to 699"
            )));
        }
    }
    let declared = content_length(&message);
    let actual = message.body().len();
    match declared {
        Some(declared) if declared > actual => {
            return Err(ParseError::BadContentLength { declared, actual });
        }
        // Extra bytes after the declared body are discarded (RFC 3261 18.3).
        Some(declared) => message.body_mut().truncate(declared),
        None => {}
    }
    Ok(message)
}

/// A response starts with the SIP version, a request with its method. rsip's own choice
/// tries the response first, and building the error of that failed try cost a request
/// a fifth of its parse.
fn parse_either(bytes: &[u8]) -> Result<SipMessage, rsip::Error> {
    match bytes.get(..4) {
        Some(start) if start.eq_ignore_ascii_case(b"SIP/") => {
            rsip::Response::try_from(bytes).map(SipMessage::Response)
        }
        _ => rsip::Request::try_from(bytes).map(SipMessage::Request),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

fn content_length(message: &SipMessage) -> Option<usize> {
    message.headers().iter().find_map(|h| match h {
        Header::ContentLength(l) => l.value().trim().parse().ok(),
        _ => None,
    })
}

/// Print a message with a correct Content-Length (any Content-Length it carries is
/// replaced).
pub fn serialize(message: &SipMessage) -> Vec<u8> {
    let mut out = String::with_capacity(512 + message.body().len());
    match message {
        SipMessage::Request(r) => {
            let _ = write!(out, "{} {} SIP/2.0\r\n", r.method, r.uri);
        }
        SipMessage::Response(r) => {
            let code = r.status_code.code();
            let reason = match &r.status_code {
                StatusCode::Other(_, reason) if reason != "Other" => reason.as_str(),
                _ => reason_phrase(code),
            };
            let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
        }
    }
    for header in message.headers().iter() {
        if !matches!(header, Header::ContentLength(_)) {
            let _ = write!(out, "{header}\r\n");
        }
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", message.body().len());
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(message.body());
    bytes
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

/// The branch of the top Via. Read from the header's text: the transaction layer asks
/// with every message.
pub fn branch(message: &SipMessage) -> Option<String> {
    branch_of(message.via_header().ok()?.value())
}

/// The `branch` parameter of a Via value (of its first entry, should it hold several).
fn branch_of(via: &str) -> Option<String> {
    param_of(via.split(',').next()?, "branch")
}

/// The value of the parameter `name` among those after the first `;` of `text`.
fn param_of(text: &str, name: &str) -> Option<String> {
    text.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// The Call-ID (of a message, a request or a response).
pub fn call_id(message: &impl HeadersExt) -> Option<String> {
    message
        .call_id_header()
        .ok()
        .map(|c| c.value().trim().to_owned())
}

/// The CSeq number and method.
pub fn cseq(message: &impl HeadersExt) -> Option<(u32, Method)> {
    let cseq = message.cseq_header().ok()?.typed().ok()?;
    Some((cseq.seq, cseq.method))
}

/// The From header's tag. Read from the header's text, like the branch: the transaction
/// and dialog layers ask with nearly every message.
pub fn from_tag(message: &SipMessage) -> Option<String> {
    tag_of(message.from_header().ok()?.value())
}

/// The To header's tag (none on a request outside a dialog).
pub fn to_tag(message: &SipMessage) -> Option<String> {
    tag_of(message.to_header().ok()?.value())
}

/// The `tag` parameter of a From or To value. Header parameters follow the address:
/// after the `>` when it is in angle brackets, else after the URI, which then cannot
/// hold a `;` of its own (RFC 3261 §20.10). A quoted display name may hold any of them.
fn tag_of(value: &str) -> Option<String> {
    let mut rest = value.trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        // An unterminated quote is read as text, as rsip reads it.
        rest = after_closing_quote(quoted).unwrap_or(rest);
    }
    if let Some(open) = rest.find('<') {
        let address = &rest[open..];
        rest = &address[address.find('>')? + 1..];
    }
    param_of(rest, "tag")
}

/// What follows a quoted string's closing quote (`\` escapes the next character).
fn after_closing_quote(quoted: &str) -> Option<&str> {
    let mut chars = quoted.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => return Some(&quoted[at + 1..]),
            _ => {}
        }
    }
    None
}

/// The user part of a header's URI (`From`/`To`), e.g. "2001" of `<sip:2001@pbx>`.
pub fn from_user(message: &SipMessage) -> Option<String> {
    message.from_header().ok()?.uri().ok()?.auth.map(|a| a.user)
}

/// The display name of the From header, if any.
pub fn from_header_display_name(message: &SipMessage) -> Option<String> {
    message
        .from_header()
        .ok()?
        .display_name()
        .ok()?
        .map(|n| n.trim_matches('"').to_owned())
        .filter(|n| !n.is_empty())
}

pub fn to_user(message: &SipMessage) -> Option<String> {
    message.to_header().ok()?.uri().ok()?.auth.map(|a| a.user)
}

/// The value of the first header with this name (case-insensitive), for headers rsip
/// keeps untyped.
pub fn header_value(message: &SipMessage, name: &str) -> Option<String> {
    header_value_in(message.headers(), name)
}

/// [`header_value`] of a request's or response's headers.
pub fn header_value_in(headers: &Headers, name: &str) -> Option<String> {
    header_values_of(headers, name).next()
}

/// The values of every header with this name (case-insensitive), in order.
pub fn header_values(message: &SipMessage, name: &str) -> Vec<String> {
    header_values_of(message.headers(), name).collect()
}

/// [`header_values`] of a request's or response's headers.
pub fn header_values_in(headers: &Headers, name: &str) -> Vec<String> {
    header_values_of(headers, name).collect()
}

fn header_values_of<'h>(headers: &'h Headers, name: &'h str) -> impl Iterator<Item = String> + 'h {
    headers.iter().filter_map(move |h| {
        let text = h.to_string();
        let (n, v) = text.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A response to `request`, with its Via, From, To (with `to_tag` added if it has none),
/// Call-ID and CSeq, and no body. A provisional or 2xx response to an INVITE carries the
/// request's Record-Route too: it may set up a dialog, whose route set the caller
/// learns from it (RFC 3261 §12.1.1).
/// The same request sent again as a new transaction (RFC 3261 §8.1.3.5 and §22.2): a new
/// Via branch, CSeq `cseq`, and an authorization header (`Authorization` for a 401's
/// challenge, `Proxy-Authorization` for a 407's) in place of any earlier one.
pub fn resend(
    request: &Request,
    cseq: u32,
    branch: &str,
    authorization: Option<(&str, &str)>,
) -> Option<Request> {
    let text = String::from_utf8(serialize(&SipMessage::Request(request.clone()))).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let method = request.method.to_string();
    let mut out = String::with_capacity(text.len() + 256);
    let mut first_via = true;
    for line in head.split("\r\n") {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("Authorization")
            || name.eq_ignore_ascii_case("Proxy-Authorization")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("CSeq") {
            out.push_str(&format!("CSeq: {cseq} {method}\r\n"));
            continue;
        }
        if first_via && (name.eq_ignore_ascii_case("Via") || name == "v") {
            first_via = false;
            let start = line.find(";branch=")? + ";branch=".len();
            let end = line[start..].find(';').map_or(line.len(), |e| start + e);
            out.push_str(&format!(
                "{}z9hG4bK{branch}{}\r\n",
                &line[..start],
                &line[end..]
            ));
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if let Some((name, value)) = authorization {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    match parse(out.as_bytes()) {
        Ok(SipMessage::Request(request)) => Some(request),
        _ => None,
    }
}

pub fn response_to(request: &Request, code: u16, to_tag: Option<&str>) -> Response {
    let mut headers = Headers::default();
    let sets_up_dialog = request.method == Method::Invite && (101..300).contains(&code);
    for header in request.headers.iter() {
        match header {
            Header::RecordRoute(_) if sets_up_dialog => headers.push(header.clone()),
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(header.clone())
            }
            Header::To(to) => {
                let to = match to_tag {
                    Some(tag) if tag_of(to.value()).is_none() => {
                        rsip::headers::To::new(format!("{};tag={tag}", to.value()))
                    }
                    _ => to.clone(),
                };
                headers.push(Header::To(to));
            }
            _ => {}
        }
    }
    Response {
        status_code: StatusCode::from(code),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// Give a response a reason phrase of its own (e.g. "404 No Live Call").
pub fn with_reason(mut response: Response, reason: &str) -> Response {
    response.status_code = StatusCode::Other(response.status_code.code(), reason.to_owned());
    response
}

/// A response with `Retry-After: secs` (RFC 3261 §20.33): a 503 while the host drains.
pub fn retry_after(mut response: Response, secs: u32) -> Response {
    response
        .headers
        .push(Header::Other("Retry-After".into(), secs.to_string()));
    response
}

/// A response's Retry-After (RFC 3261 §20.33: seconds, then an optional comment and
/// parameters), if it has a valid one.
pub fn retry_after_of(response: &Response) -> Option<std::time::Duration> {
    let value = response.headers.iter().find_map(|h| match h {
        Header::RetryAfter(v) => Some(v.value().to_owned()),
        Header::Other(name, v) if name.eq_ignore_ascii_case("Retry-After") => Some(v.clone()),
        _ => None,
    })?;
    let digits = value.trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let secs: u64 = digits[..end].parse().ok()?;
    Some(std::time::Duration::from_secs(secs))
}

/// RFC 3581 / RFC 3261 18.2.1: note on the top Via where a request really came from, so
/// responses find their way back through NAT.
pub fn stamp_received(request: &mut Request, source: std::net::SocketAddr) {
    let Some(Header::Via(via)) = request
        .headers
        .iter_mut()
        .find(|h| matches!(h, Header::Via(_)))
    else {
        return;
    };
    let mut value = via.value().to_owned();
    let params_start = value.find(';').unwrap_or(value.len());
    let mut params: Vec<String> = value[params_start..]
        .split(';')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let had_rport = params
        .iter()
        .any(|p| p.trim() == "rport" || p.trim().starts_with("rport="));
    params.retain(|p| !p.trim().starts_with("rport") && !p.trim().starts_with("received="));
    params.push(format!("received={}", source.ip()));
    if had_rport {
        params.push(format!("rport={}", source.port()));
    }
    value.truncate(params_start);
    for p in params {
        value.push(';');
        value.push_str(&p);
    }
    *via = rsip::headers::Via::new(value);
}

/// A best-effort `400 Bad Request` for a request the parser rejected, built from its raw
/// Via, From, To, Call-ID and CSeq lines; none if those cannot be found.
pub fn bad_request_from_raw(bytes: &[u8], reason: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_MESSAGE_BYTES)]);
    let mut lines = text.split("\r\n");
    let first = lines.next()?;
    if first.starts_with("SIP/") || first.split_whitespace().count() != 3 {
        return None; // a response, or not even a request line
    }
    let wanted = ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"];
    let mut kept = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if wanted.contains(&name.as_str()) && line.len() < 1024 {
            kept.push(line);
        }
    }
    let has = |names: &[&str]| {
        kept.iter().any(|l| {
            names.contains(
                &l.split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
                    .as_str(),
            )
        })
    };
    if !(has(&["via", "v"])
        && has(&["call-id", "i"])
        && has(&["cseq"])
        && has(&["from", "f"])
        && has(&["to", "t"]))
    {
        return None;
    }
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    let mut out = String::from("SIP/2.0 400 Bad Request\r\n");
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "Warning: 399 wasmpbx \"{}\"\r\nContent-Length: 0\r\n\r\n",
        reason.replace('"', "'")
    ));
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_its_leading_seconds() {
        let with = |value: Option<&str>| {
            let headers = value.map_or(String::new(), |v| format!("Retry-After: {v}\r\n"));
            let text = format!(
                "SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{headers}\
Content-Length: 0\r\n\r\n"
            );
            let Ok(SipMessage::Response(response)) = parse(text.as_bytes()) else {
                panic!("{text}")
            };
            retry_after_of(&response).map(|d| d.as_secs())
        };
        assert_eq!(with(Some("120")), Some(120));
        assert_eq!(
            with(Some("18000 (in maintenance);duration=3600")),
            Some(18000)
        );
        assert_eq!(with(Some("soon")), None);
        assert_eq!(with(None), None);
    }

    #[test]
    fn the_hosts_own_requests_read_line_by_line_are_what_the_parser_reads() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\n";
        let invite = format!(
            "INVITE sip:+15550101@127.0.0.1:5070;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport\r\nMax-Forwards: 69\r\n\
From: \"Caller\" <sip:+61400000001@example.test>;tag=a1\r\nTo: <sip:+15550101@127.0.0.1>\r\n\
Call-ID: 3f9a@wasmpbx\r\nCSeq: 1 INVITE\r\nContact: <sip:wasmpbx@127.0.0.1:5060;transport=udp>\r\n\
Allow: {ALLOW}\r\nP-Asserted-Identity: <sip:+61400000001@example.test>\r\n\
Diversion: <sip:+15550100@example.test>;reason=unconditional\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        let bye = "BYE sip:alice@127.0.0.3:5062;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP [::1]:5060;branch=z9hG4bKdef;rport\r\nMax-Forwards: 70\r\n\
Route: <sip:[::1]:5080;lr>\r\nRoute: <sip:10.0.0.1;lr;transport=tcp>\r\n\
From: <sip:wasmpbx@[::1]>;tag=h1\r\nTo: <sip:alice@[::1]>;tag=x9\r\nCall-ID: b@1\r\n\
CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let notify = "NOTIFY sips:desk@example.test SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKn;rport\r\nMax-Forwards: 70\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: n\r\nCSeq: 3 NOTIFY\r\n\
Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n\
Content-Type: message/sipfrag;version=2.0\r\nContent-Length: 16\r\n\r\nSIP/2.0 200 OK\r\n";
        for text in [invite.as_str(), bye, notify] {
            let fast = read_own_request(text.as_bytes()).expect("read line by line");
            let Ok(SipMessage::Request(parsed)) = read(text.as_bytes()) else {
                panic!("parses: {text}");
            };
            assert_eq!(fast, parsed, "{text}");
        }
        // What the line reader does not take still reads, through the parser.
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: r\r\nCSeq: 1 BYE\r\n\
Content-Length: 0\r\n\r\n";
        assert_eq!(read_own_request(ok.as_bytes()), None);
        assert!(matches!(
            parse_own(ok.as_bytes()),
            Ok(SipMessage::Response(_))
        ));
    }

    #[test]
    fn the_tag_read_from_the_text_is_the_one_the_parsed_header_has() {
        for (value, expected) in [
            ("<sip:2001@127.0.0.1>;tag=a1", Some("a1")),
            ("sip:2001@127.0.0.1;tag=a1", Some("a1")),
            (
                "\"Alice\" <sip:2001@127.0.0.1;transport=udp>;tag=a1",
                Some("a1"),
            ),
            (
                "Alice <sip:2001@127.0.0.1;tag=inside>;x=1;TAG=a1",
                Some("a1"),
            ),
            ("<sip:2001@127.0.0.1;tag=inside>", None),
            ("\"A <b>;tag=no\" <sip:2001@h>;tag=a1", Some("a1")),
            ("\"A \\\" ;tag=no\" <sip:2001@h>", None),
            ("<sip:15550101@127.0.0.1:5060>", None),
            ("sip:2001@127.0.0.1", None),
            ("\"unterminated <sip:2001@h>;tag=a1", Some("a1")),
        ] {
            assert_eq!(tag_of(value).as_deref(), expected, "{value}");
            // Where rsip reads the header, it reads the same.
            if let Ok(Some(tag)) = rsip::headers::To::new(value).tag() {
                assert_eq!(Some(tag.to_string()).as_deref(), expected, "{value}");
            }
        }
        // Space around `;` and `=` is allowed (RFC 3261 §25.1).
        assert_eq!(tag_of("<sip:a@h> ; tag = a1 ").as_deref(), Some("a1"));
    }

    #[test]
    fn the_branch_read_from_the_text_is_the_one_the_parsed_header_has() {
        for (via, expected) in [
            (
                "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa1;rport",
                Some("z9hG4bKa1"),
            ),
            (
                "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKa1",
                Some("z9hG4bKa1"),
            ),
            (
                "SIP/2.0/TCP [::1]:5060;BRANCH=z9hG4bKa1;received=::1",
                Some("z9hG4bKa1"),
            ),
            (
                "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKa2",
                Some("z9hG4bKa1"),
            ),
            (
                "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKnashds7",
                Some("z9hG4bKnashds7"),
            ),
            ("SIP/2.0/UDP 127.0.0.1:5060;rport", None),
        ] {
            assert_eq!(branch_of(via).as_deref(), expected, "{via}");
            // Where rsip reads the header (what `parse` lets in), it reads the same.
            if let Ok(typed) = rsip::headers::Via::new(via).typed() {
                assert_eq!(
                    typed.branch().map(|b| b.to_string()).as_deref(),
                    expected,
                    "{via}"
                );
            }
        }
        // Space around `;` and `=` is allowed (RFC 3261 §25.1, SEMI and EQUAL); rsip's
        // parsed header loses the parameter then.
        assert_eq!(
            branch_of("SIP/2.0/UDP 10.0.0.1 ; branch = z9hG4bKa1 ;rport").as_deref(),
            Some("z9hG4bKa1")
        );
    }

    #[test]
    fn a_resent_request_is_a_new_transaction_with_its_authorization() {
        let raw = "INVITE sip:+61290000099@carrier.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKold;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:+61400000001@carrier.test>;tag=a\r\nTo: <sip:+61290000099@carrier.test>\r\n\
Call-ID: c1\r\nCSeq: 1 INVITE\r\nProxy-Authorization: Digest old\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n";
        let Ok(SipMessage::Request(invite)) = parse(raw.as_bytes()) else {
            panic!("parses")
        };
        let again = resend(
            &invite,
            2,
            "new",
            Some(("Proxy-Authorization", "Digest new")),
        )
        .unwrap();
        let again = SipMessage::Request(again);
        assert_eq!(branch(&again).as_deref(), Some("z9hG4bKnew"));
        assert_eq!(cseq(&again).map(|(n, _)| n), Some(2));
        assert_eq!(
            header_values(&again, "Proxy-Authorization"),
            vec!["Digest new".to_owned()]
        );
        assert_eq!(call_id(&again).as_deref(), Some("c1"));
        assert_eq!(from_tag(&again).as_deref(), Some("a"));
        assert_eq!(again.body(), b"v=0\n");
        let plain = SipMessage::Request(resend(&invite, 3, "x", None).unwrap());
        assert!(header_value(&plain, "Proxy-Authorization").is_none());
    }

    const INVITE: &str = "INVITE sip:+61290000001@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-1;rport\r\n\
From: \"Caller\" <sip:+61400000001@127.0.0.2>;tag=abc\r\n\
To: <sip:+61290000001@127.0.0.1>\r\n\
Call-ID: call-1@127.0.0.2\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:caller@127.0.0.2:5070>\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn a_response_needs_its_via_from_and_to_present_a_request_needs_them_whole() {
        // Headers rsip cannot read whole.
        let (via, to) = ("Via: garbage;branch=z9hG4bK-1\r\n", "To: <sip:>;tag=b2\r\n");
        let response = format!(
            "SIP/2.0 200 OK\r\n{via}From: <sip:a@h>;tag=a1\r\n{to}Call-ID: c1\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let parsed = parse(response.as_bytes()).unwrap();
        assert_eq!(branch(&parsed).as_deref(), Some("z9hG4bK-1"));
        assert_eq!(to_tag(&parsed).as_deref(), Some("b2"));
        for (header, name) in [(via, "Via"), (to, "To")] {
            let without = response.replace(header, "");
            assert_eq!(
                parse(without.as_bytes()),
                Err(ParseError::MissingHeader(name))
            );
        }
        let request = INVITE.replace(
            "Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-1;rport\r\n",
            via,
        );
        assert_eq!(
            parse(request.as_bytes()),
            Err(ParseError::MissingHeader("Via"))
        );
        let request = INVITE.replace("To: <sip:+61290000001@127.0.0.1>\r\n", to);
        assert_eq!(
            parse(request.as_bytes()),
            Err(ParseError::MissingHeader("To"))
        );
    }

    #[test]
    fn parse_and_print_round_trip() {
        let message = parse(INVITE.as_bytes()).unwrap();
        assert_eq!(branch(&message).as_deref(), Some("z9hG4bK-1"));
        assert_eq!(call_id(&message).as_deref(), Some("call-1@127.0.0.2"));
        assert_eq!(cseq(&message), Some((1, Method::Invite)));
        assert_eq!(from_tag(&message).as_deref(), Some("abc"));
        assert_eq!(to_tag(&message), None);
        assert_eq!(from_user(&message).as_deref(), Some("+61400000001"));
        assert_eq!(to_user(&message).as_deref(), Some("+61290000001"));
        assert_eq!(
            header_value(&message, "max-forwards").as_deref(),
            Some("70")
        );
        let printed = serialize(&message);
        assert_eq!(parse(&printed).unwrap(), message);
        assert!(
            String::from_utf8(printed)
                .unwrap()
                .ends_with("Content-Length: 4\r\n\r\nv=0\n")
        );
    }

    #[test]
    fn responses_copy_the_dialog_headers_and_tag_the_to() {
        let SipMessage::Request(request) = parse(INVITE.as_bytes()).unwrap() else {
            panic!()
        };
        let response = response_to(&request, 486, Some("xyz"));
        let message = SipMessage::Response(response);
        let text = String::from_utf8(serialize(&message)).unwrap();
        assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"), "{text}");
        assert_eq!(to_tag(&message).as_deref(), Some("xyz"));
        assert_eq!(branch(&message).as_deref(), Some("z9hG4bK-1"));
        let custom = with_reason(response_to(&request, 404, None), "No Live Call");
        let text = String::from_utf8(serialize(&SipMessage::Response(custom))).unwrap();
        assert!(text.starts_with("SIP/2.0 404 No Live Call\r\n"), "{text}");
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert!(matches!(
            parse(&vec![b'A'; MAX_MESSAGE_BYTES + 1]),
            Err(ParseError::TooLarge(_))
        ));
        assert!(matches!(
            parse(b"garbage\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
        assert!(parse(&INVITE.as_bytes()[..100]).is_err());
        let no_call_id = INVITE.replace("Call-ID: call-1@127.0.0.2\r\n", "");
        assert_eq!(
            parse(no_call_id.as_bytes()),
            Err(ParseError::MissingHeader("Call-ID"))
        );
        let long_body = INVITE.replace("Content-Length: 4", "Content-Length: 400");
        assert!(matches!(
            parse(long_body.as_bytes()),
            Err(ParseError::BadContentLength { .. })
        ));
        for i in 0..INVITE.len() {
            let _ = parse(&INVITE.as_bytes()[..i]);
        }
        let _ = parse(&[0xff, 0xfe, 0, 1, 2, 3]);
    }

    /// Inputs the fuzz targets (`fuzz/`) found, minimised: each must stay an error, or
    /// parse into something the host can print and read back.
    #[test]
    fn what_the_fuzzers_found_stays_fixed() {
        let reprinted = |bytes: &[u8]| {
            parse(bytes).map(|m| {
                let printed = serialize(&m);
                parse(&printed)
                    .map(|_| ())
                    .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&printed)))
            })
        };
        // A status code of 000 parsed, and printed as `SIP/2.0 0`, which did not.
        let status_000 = "SIP/2.0 000 Trying\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-1\r\n\
From: <sip:a@127.0.0.2>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";
        assert!(matches!(
            reprinted(status_000.as_bytes()),
            Err(ParseError::Malformed(m)) if m.contains("status code 0")
        ));
    }

    #[test]
    fn rport_and_received_are_stamped() {
        let SipMessage::Request(mut request) = parse(INVITE.as_bytes()).unwrap() else {
            panic!()
        };
        stamp_received(&mut request, "10.1.2.3:40000".parse().unwrap());
        let message = SipMessage::Request(request);
        let via = header_value(&message, "Via").unwrap();
        assert_eq!(
            via,
            "SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-1;received=10.1.2.3;rport=40000"
        );
        assert_eq!(branch(&message).as_deref(), Some("z9hG4bK-1"));
    }

    #[test]
    fn a_rejected_request_still_gets_a_400_when_its_dialog_headers_are_there() {
        let broken = INVITE.replace("CSeq: 1 INVITE", "CSeq: one INVITE");
        assert!(parse(broken.as_bytes()).is_err());
        let reply = String::from_utf8(
            bad_request_from_raw(broken.as_bytes(), "missing or bad CSeq header").unwrap(),
        )
        .unwrap();
        assert!(
            reply.starts_with("SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP 127.0.0.2:5070"),
            "{reply}"
        );
        assert!(reply.contains("Call-ID: call-1@127.0.0.2"));
        assert!(bad_request_from_raw(b"garbage", "x").is_none());
        assert!(bad_request_from_raw(b"SIP/2.0 200 OK\r\n\r\n", "x").is_none());
    }
}
