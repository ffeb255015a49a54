//! Bytes on a SIP TCP or TLS connection: framed as the reader frames them, each whole message
//! parsed; the stream ends at the first invalid frame. The same bytes arriving in pieces
//! (of a size drawn from their length) give the same messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpbx_sip::message;
use wasmpbx_sip::stream::{Frame, Framer, frame};

fuzz_target!(|data: &[u8]| {
    let mut messages = Vec::new();
    let mut rest = data;
    loop {
        match frame(rest) {
            Frame::Incomplete | Frame::Invalid(_) => break,
            Frame::Ping(len) | Frame::KeepAlive(len) => {
                assert!(len > 0 && len <= rest.len());
                rest = &rest[len..];
            }
            Frame::Message(len) => {
                assert!(len > 0 && len <= rest.len());
                let _ = message::parse(&rest[..len]);
                messages.push(rest[..len].to_vec());
                rest = &rest[len..];
            }
        }
    }
    // (Line ends between messages may be read as pings and keep-alives differently when
    // they arrive split; the messages may not differ.)
    assert_eq!(messages_in_pieces(data, 1 + data.len() % 13), messages);
});

/// The messages in `data` arriving `step` bytes at a time, up to the first invalid frame.
fn messages_in_pieces(data: &[u8], step: usize) -> Vec<Vec<u8>> {
    let (mut framer, mut buf, mut messages) = (Framer::default(), Vec::new(), Vec::new());
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match framer.next(&buf) {
                Frame::Incomplete => break,
                Frame::Invalid(_) => return messages,
                Frame::Message(len) => messages.push(buf.drain(..len).collect()),
                Frame::Ping(len) | Frame::KeepAlive(len) => {
                    buf.drain(..len);
                }
            }
        }
    }
    messages
}
