//! Digest headers: a device's Authorization (checked against a user, with the host's
//! own nonce as the first half of the input wishes) and a carrier's challenge (parsed and
//! answered).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpbx_sip::digest::{Challenge, Credentials, DigestAuth, Secret};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(credentials) = Credentials::parse(&text) {
        let mut auth = DigestAuth::new("pbx.test", [7; 32]);
        let _ = auth.verify(1_790_000_000, "REGISTER", &credentials, |user| {
            (user == "2001").then(|| Secret::Password("s3cret".into()))
        });
    }
    if let Ok(challenge) = Challenge::parse(&text) {
        let _ = challenge.answer("acct", "secret", "INVITE", "sip:x@carrier.test", "cn", 1);
    }
});
