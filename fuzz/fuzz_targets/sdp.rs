//! An SDP body from a device or a carrier: read, its codecs picked, rewritten for the
//! host's media address, answered, stamped with the host's origin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpbx_sip::sdp;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let address = "192.0.2.10".parse().unwrap();
    if let Ok(media) = sdp::parse(&text) {
        if let Some(codec) = sdp::first_g711(&media) {
            let event = sdp::telephone_event_pt(&text);
            let answer = sdp::endpoint(address, 20000, codec, event);
            assert!(
                sdp::parse(&answer).is_ok(),
                "the host's own answer must parse"
            );
        }
    }
    if let Ok(rewritten) = sdp::rewrite(&text, address, 20002) {
        let _ = sdp::parse(&rewritten);
    }
    let _ = sdp::is_webrtc(&text);
    let _ = sdp::audio_payload_types(&text);
    let _ = sdp::Origin::new(1).stamp(&text);
});
