//! A browser's SIP-over-WebSocket connection after the upgrade: frames read by
//! tungstenite under the host's limits, each text or binary message parsed as SIP.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use tungstenite::Message;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use wasmpbx_sip::message::{self, MAX_MESSAGE_BYTES};

/// The client's bytes in, whatever the server writes thrown away.
struct Wire<'a> {
    input: &'a [u8],
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let mut socket = WebSocket::from_raw_socket(Wire { input: data }, Role::Server, Some(config));
    // Each read consumes input or fails; the input is finite.
    for _ in 0..1024 {
        match socket.read() {
            Ok(Message::Text(text)) => {
                let _ = message::parse(text.as_bytes());
            }
            Ok(Message::Binary(bytes)) => {
                let _ = message::parse(&bytes);
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
});
