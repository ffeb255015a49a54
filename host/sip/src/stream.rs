//! SIP over a stream (TCP, TLS): where one message ends. Headers end at the first blank
//! line; the body is Content-Length bytes (RFC 3261 §18.3: mandatory on streams). A
//! leading CRLFCRLF is a keep-alive ping to answer with CRLF, other leading CRLFs (a pong)
//! are skipped (RFC 5626 §3.5.1). A message over 64 KiB, a missing or bad
//! Content-Length, or headers that are not UTF-8 make the stream unusable: it cannot be
//! re-synchronised. A connection's [`Framer`] remembers how far it has looked.

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

/// Where each message on one connection ends, as its bytes arrive: it remembers how far
/// it has looked, so a peer sending its headers (or body) a byte at a time costs a look
/// at each byte once, not the whole buffer again at every read.
#[derive(Debug, Default)]
pub struct Framer {
    /// How far the buffer has been searched for the blank line ending the headers.
    searched: usize,
    /// The whole message's length, once its headers are in.
    total: Option<usize>,
}

impl Framer {
    /// What the start of `buf` holds: the same buffer as last time, more bytes on its
    /// end, unless the last answer was a whole frame (which the caller then takes off
    /// its start).
    pub fn next(&mut self, buf: &[u8]) -> Frame {
        let frame = self.look(buf);
        if frame != Frame::Incomplete {
            *self = Self::default();
        }
        frame
    }

    fn look(&mut self, buf: &[u8]) -> Frame {
        const PING: &[u8] = b"\r\n\r\n";
        if let Some(total) = self.total {
            return match buf.len() < total {
                true => Frame::Incomplete,
                false => Frame::Message(total),
            };
        }
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
        // The blank line may straddle what was searched and what is new.
        let from = self.searched.saturating_sub(PING.len() - 1).min(buf.len());
        let Some(end) = buf[from..]
            .windows(PING.len())
            .position(|w| w == PING)
            .map(|at| from + at)
        else {
            self.searched = buf.len();
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
            (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
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
        self.total = Some(total);
        self.look(buf)
    }
}

/// What the start of `buf` holds, looked at afresh.
pub fn frame(buf: &[u8]) -> Frame {
    Framer::default().next(buf)
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
        // Header names, compact ones too, are case-insensitive (RFC 3261 §7.3.1).
        let upper = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKx\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nL: 2\r\n\r\nab";
        assert_eq!(frame(upper), Frame::Message(upper.len()));
        assert!(
            crate::message::parse(upper).is_ok(),
            "and the message reads"
        );
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

    /// Frame `bytes` arriving `step` at a time, as the reader does: the frames found.
    fn framed_in_steps(bytes: &[u8], step: usize) -> Vec<Frame> {
        let (mut framer, mut buf, mut frames) = (Framer::default(), Vec::new(), Vec::new());
        for piece in bytes.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                let frame = framer.next(&buf);
                match frame {
                    Frame::Incomplete => break,
                    Frame::Invalid(_) => return frames,
                    Frame::Message(len) | Frame::Ping(len) | Frame::KeepAlive(len) => {
                        buf.drain(..len);
                    }
                }
                frames.push(frame);
            }
        }
        frames
    }

    #[test]
    fn bytes_arriving_one_at_a_time_frame_as_they_would_all_at_once() {
        let first = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 3\r\n\r\nabc";
        let second = b"OPTIONS sip:y SIP/2.0\r\nl: 0\r\n\r\n";
        let bytes = [&first[..], b"\r\n\r\n", b"\r\n", &second[..]].concat();
        let expected = vec![
            Frame::Message(first.len()),
            Frame::Ping(4),
            Frame::KeepAlive(2),
            Frame::Message(second.len()),
        ];
        for step in [1, 2, 3, 5, 7, 64, bytes.len()] {
            assert_eq!(framed_in_steps(&bytes, step), expected, "{step} at a time");
        }
    }

    #[test]
    fn headers_dripped_in_are_searched_once() {
        let mut framer = Framer::default();
        let mut buf = b"OPTIONS sip:x SIP/2.0\r\n".to_vec();
        assert_eq!(framer.next(&buf), Frame::Incomplete);
        for _ in 0..1000 {
            buf.push(b'a');
            let searched = framer.searched;
            assert_eq!(framer.next(&buf), Frame::Incomplete);
            // Each look starts a blank line's length before the last one ended.
            assert_eq!(framer.searched, searched + 1);
        }
        buf.extend_from_slice(b": 1\r\nContent-Length: 2\r\n\r\na");
        assert_eq!(
            framer.next(&buf),
            Frame::Incomplete,
            "the body is not all in"
        );
        assert!(framer.total.is_some(), "the headers are not read again");
        buf.push(b'b');
        assert_eq!(framer.next(&buf), Frame::Message(buf.len()));
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
