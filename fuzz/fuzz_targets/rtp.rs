//! A datagram on a media port: read as RTP, relayed onto the host's stream (header
//! rebuilt), read as RTCP and rewritten in place, and watched for RFC 4733 key presses.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use wasmpbx_media::rtp::{self, DtmfWatch, KeyFilter, OutStream};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let header = rtp::parse(data);
    let mut stream = OutStream::new(0x1234_5678, 1000);
    if let Some(out) = stream.relay(data, now) {
        // The host's own header (no CSRCs, extension or padding) before the same payload.
        let header = header.expect("relayed, so it was RTP");
        let padding = if data[0] & 0x20 != 0 {
            usize::from(data[data.len() - 1])
        } else {
            0
        };
        let payload = &data[header.payload_offset..data.len() - padding];
        assert_eq!(&out[12..], payload, "the payload goes through untouched");
        let rewritten = rtp::parse(&out).expect("the host's packet is RTP");
        assert_eq!(
            (rewritten.ssrc, rewritten.payload_offset),
            (0x1234_5678, 12)
        );
    }
    if let Some(out) = stream.relay_rtcp(data) {
        assert_eq!(out.len(), data.len(), "RTCP is rewritten in place");
    }
    let _ = OutStream::adopting().relay(data, now);
    let _ = DtmfWatch::new(101).inspect(data);
    let mut keys = KeyFilter::new(101, "*77");
    let _ = keys.passes(data);
    let _ = keys.process(data, now);
});
