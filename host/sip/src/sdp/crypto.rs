//! SDES (RFC 4568): the `a=crypto` lines that carry a leg's SRTP master keys in its SDP.
//! The host reads the keys a party offers or answers, and writes its own, one per leg;
//! the keys themselves are made and used by the media relay.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// An SRTP crypto suite the host speaks (RFC 4568 §6.2): AES in counter mode with a
/// 128-bit key, and an HMAC-SHA1 tag of 80 or 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ]
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// Bytes of master key (16) and master salt (14) in one inline key.
pub const KEY_AND_SALT: usize = 30;

/// An SRTP master key and salt. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKey(pub [u8; KEY_AND_SALT]);

impl std::fmt::Debug for SdesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SdesKey(..)")
    }
}

impl SdesKey {
    pub fn key(&self) -> &[u8] {
        &self.0[..16]
    }

    pub fn salt(&self) -> &[u8] {
        &self.0[16..]
    }
}

/// One `a=crypto` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: SrtpSuite,
    pub key: SdesKey,
}

/// Why an `a=crypto` line of a suite the host speaks cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("a=crypto line {0:?} is malformed")]
    Malformed(String),
    #[error("a=crypto tag {0}: the key is not 30 bytes of base64")]
    BadKey(u32),
    #[error(
        "a=crypto tag {0}: key parameters the host does not support (MKI, several keys, session parameters)"
    )]
    Unsupported(u32),
}

impl Crypto {
    /// Read an `a=crypto:` attribute's value (`TAG SUITE inline:KEY[|LIFETIME]`). `None`:
    /// a suite the host does not speak (the line is skipped, as RFC 4568 §6.1 says).
    pub fn parse(value: &str) -> Result<Option<Crypto>, CryptoError> {
        let malformed = || CryptoError::Malformed(value.to_owned());
        let mut fields = value.split_whitespace();
        let tag = fields
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|t| *t < 1_000_000_000)
            .ok_or_else(malformed)?;
        let suite = fields.next().ok_or_else(malformed)?;
        let key_params = fields.next().ok_or_else(malformed)?;
        let Some(suite) = SrtpSuite::from_name(suite) else {
            return Ok(None);
        };
        // One key, no MKI, no session parameters: what phones and carriers send.
        if fields.next().is_some() || key_params.contains(';') {
            return Err(CryptoError::Unsupported(tag));
        }
        let inline = key_params.strip_prefix("inline:").ok_or_else(malformed)?;
        let mut parts = inline.split('|');
        let encoded = parts.next().unwrap_or_default();
        // A lifetime (`2^31` or a number) may follow; an MKI (`1:4`) may not.
        if parts.clone().any(|p| p.contains(':')) || parts.count() > 1 {
            return Err(CryptoError::Unsupported(tag));
        }
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| CryptoError::BadKey(tag))?;
        let key = <[u8; KEY_AND_SALT]>::try_from(bytes.as_slice())
            .map_err(|_| CryptoError::BadKey(tag))?;
        Ok(Some(Crypto {
            tag,
            suite,
            key: SdesKey(key),
        }))
    }

    /// The attribute line, `a=crypto:TAG SUITE inline:KEY`.
    pub fn line(&self) -> String {
        format!(
            "a=crypto:{} {} inline:{}",
            self.tag,
            self.suite.name(),
            STANDARD.encode(self.key.0)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4568 §6.2's example key.
    const EXAMPLE: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";

    #[test]
    fn reads_and_writes_a_crypto_line() {
        let line = "2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31";
        let crypto = Crypto::parse(line).unwrap().unwrap();
        assert_eq!(crypto.tag, 2);
        assert_eq!(crypto.suite, SrtpSuite::AesCm128HmacSha1_32);
        assert_eq!(crypto.key.key().len(), 16);
        assert_eq!(crypto.key.salt().len(), 14);
        assert_eq!(
            crypto.line(),
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
        );
        assert_eq!(Crypto::parse(&crypto.line()[9..]).unwrap().unwrap(), crypto);
        assert_eq!(format!("{:?}", crypto.key), "SdesKey(..)");
    }

    #[test]
    fn other_suites_are_skipped_and_bad_lines_refused() {
        let gcm = "1 AEAD_AES_256_GCM inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        assert_eq!(Crypto::parse(gcm), Ok(None));
        assert_eq!(Crypto::parse(EXAMPLE), Err(CryptoError::Unsupported(1)));
        for malformed in [
            "",
            "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80",
            "1 AES_CM_128_HMAC_SHA1_80 PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        ] {
            assert!(
                matches!(Crypto::parse(malformed), Err(CryptoError::Malformed(_))),
                "{malformed:?}"
            );
        }
        assert_eq!(
            Crypto::parse("3 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ="),
            Err(CryptoError::BadKey(3))
        );
        assert_eq!(
            Crypto::parse("3 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!"),
            Err(CryptoError::BadKey(3))
        );
        assert_eq!(
            Crypto::parse(
                "4 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP"
            ),
            Err(CryptoError::Unsupported(4))
        );
    }
}
