//! SIP over a stream (TCP, TLS): where one message ends. Headers end at the first blank
//! line; the body is Content-Length bytes (RFC 3261 §18.3: mandatory on streams). A
//! leading CRLFCRLF is a keep-alive ping to answer with CRLF, other leading CRLFs (a pong)
//! are skipped (RFC 5626 §3.5.1). A message over 64 KiB, a missing or bad
//! Content-Length, or headers that are not UTF-8 make the stream unusable: it cannot be
//! re-synchronised.

use crate::message::MAX_MESSAGE_BYTES;

/// What the start of a stream buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not a whole message yet.
    Incomplete,
    /// A whole message of this many bytes.
    Message(usize),
    /// A keep-alive ping (CRLFCRLF, RFC 5626) of this many bytes: answer CRLF.
    Ping(usize),
    /// Line ends between messages (a pong) of this many bytes: skip them.
    KeepAlive(usize),
    Invalid(&'static str),
}

pub fn frame(buf: &[u8]) -> Frame {
    const PING: &[u8] = b"\r\n\r\n";
    if buf.starts_with(PING) {
        return Frame::Ping(PING.len());
    }
    // Possibly the first half of a ping: wait for the rest.
    if !buf.is_empty() && PING.starts_with(buf) {
        return Frame::Incomplete;
    }
    let leading = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if leading > 0 {
        return Frame::KeepAlive(leading);
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE_BYTES {
            Frame::Invalid("headers over 64 KiB")
        } else {
            Frame::Incomplete
        };
    };
    let head = &buf[..end];
    let Ok(head) = std::str::from_utf8(head) else {
        return Frame::Invalid("headers are not UTF-8");
    };
    let length = head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("content-length") || name == "l")
            .then(|| value.trim().parse::<usize>())
    });
    let length = match length {
        Some(Ok(length)) => length,
        Some(Err(_)) => return Frame::Invalid("bad Content-Length"),
        None => return Frame::Invalid("no Content-Length on a stream"),
    };
    // A Content-Length near usize::MAX must not wrap around.
    let total = (end + 4).saturating_add(length);
    if total > MAX_MESSAGE_BYTES {
        return Frame::Invalid("message over 64 KiB");
    }
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_framing() {
        let msg = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(frame(msg), Frame::Message(msg.len()));
        assert_eq!(frame(&msg[..msg.len() - 1]), Frame::Incomplete);
        assert_eq!(frame(b"\r\n\r\nOPTIONS"), Frame::Ping(4));
        assert_eq!(frame(b"\r\n"), Frame::Incomplete);
        assert_eq!(frame(b"\r\nOPTIONS"), Frame::KeepAlive(2));
        assert_eq!(frame(b"\n\nOPTIONS"), Frame::KeepAlive(2));
        let compact = b"OPTIONS sip:x SIP/2.0\r\nl: 2\r\n\r\nab";
        assert_eq!(frame(compact), Frame::Message(compact.len()));
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
            Frame::Invalid(_)
        ));
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: x\r\n\r\n"),
            Frame::Invalid(_)
        ));
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999\r\n\r\n"),
            Frame::Invalid(_)
        ));
        assert!(matches!(
            frame(&vec![b'a'; MAX_MESSAGE_BYTES + 1]),
            Frame::Invalid(_)
        ));
    }

    #[test]
    fn a_content_length_near_the_top_of_usize_is_invalid_not_a_wrap() {
        let huge = format!(
            "OPTIONS sip:x SIP/2.0\r\nContent-Length: {}\r\n\r\n",
            usize::MAX - 2
        );
        assert_eq!(
            frame(huge.as_bytes()),
            Frame::Invalid("message over 64 KiB")
        );
    }
}
