//! Bytes on a SIP TCP or TLS connection: framed as the reader frames them, each whole message
//! parsed; the stream ends at the first invalid frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpbx_sip::message;
use wasmpbx_sip::stream::{Frame, frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match frame(rest) {
            Frame::Incomplete | Frame::Invalid(_) => return,
            Frame::Ping(len) | Frame::KeepAlive(len) => {
                assert!(len > 0 && len <= rest.len());
                rest = &rest[len..];
            }
            Frame::Message(len) => {
                assert!(len > 0 && len <= rest.len());
                let _ = message::parse(&rest[..len]);
                rest = &rest[len..];
            }
        }
    }
});
