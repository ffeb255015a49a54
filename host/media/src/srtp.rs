//! One leg's SDES-SRTP (RFC 3711, keys from RFC 4568): what the host sends the leg is
//! encrypted with the host's key for it, what arrives is checked and decrypted with the
//! party's. The ciphers are webrtc-srtp's; this only keeps a leg's two contexts.

use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

use wasmpbx_sip::sdp::{KEY_AND_SALT, SdesKey, SrtpSuite};

/// Packets a receiver remembers to refuse a replay (RFC 3711 §3.3.2 asks for at least 64).
const REPLAY_WINDOW: usize = 128;

/// Why a packet that arrived on an encrypted leg is not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The party's key is not known yet (its answer has not come).
    NoKey,
    /// It failed authentication, or repeats one already received.
    Rejected,
}

/// A leg's SRTP: the host's key (for what it sends) and the party's (for what arrives).
pub(crate) struct LegSrtp {
    suite: SrtpSuite,
    host_key: SdesKey,
    outbound: Context,
    remote_key: Option<SdesKey>,
    inbound: Option<Context>,
}

fn profile(suite: SrtpSuite) -> ProtectionProfile {
    match suite {
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
    }
}

fn context(suite: SrtpSuite, key: &SdesKey, replay: bool) -> Result<Context, String> {
    let (rtp, rtcp) = match replay {
        true => (
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
        ),
        false => (None, None),
    };
    Context::new(key.key(), key.salt(), profile(suite), rtp, rtcp).map_err(|e| e.to_string())
}

impl LegSrtp {
    /// A leg encrypted in `suite` with the host's `host_key`.
    pub(crate) fn new(suite: SrtpSuite, host_key: SdesKey) -> Result<Self, String> {
        Ok(Self {
            outbound: context(suite, &host_key, false)?,
            suite,
            host_key,
            remote_key: None,
            inbound: None,
        })
    }

    /// A leg with a fresh random key of the host's.
    pub(crate) fn random(suite: SrtpSuite) -> Result<Self, String> {
        let mut key = [0; KEY_AND_SALT];
        crate::os_random::secret(&mut key)?;
        Self::new(suite, SdesKey(key))
    }

    pub(crate) fn suite(&self) -> SrtpSuite {
        self.suite
    }

    pub(crate) fn host_key(&self) -> &SdesKey {
        &self.host_key
    }

    /// The party's key. The same key again (a re-offer) keeps the context, and with it
    /// the stream's rollover counter and replay window.
    pub(crate) fn set_remote(&mut self, key: &SdesKey) -> Result<(), String> {
        if self.remote_key.as_ref() != Some(key) {
            self.inbound = Some(context(self.suite, key, true)?);
            self.remote_key = Some(key.clone());
        }
        Ok(())
    }

    pub(crate) fn decrypt_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, Refused> {
        let inbound = self.inbound.as_mut().ok_or(Refused::NoKey)?;
        inbound
            .decrypt_rtp(packet)
            .map(|p| p.to_vec())
            .map_err(|_| Refused::Rejected)
    }

    pub(crate) fn decrypt_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, Refused> {
        let inbound = self.inbound.as_mut().ok_or(Refused::NoKey)?;
        // The RTCP header and sender's SSRC, the E flag and SRTCP index, the tag
        // (RFC 3711 §3.4): webrtc-srtp reads them before it checks the length.
        if packet.len() < 8 + 4 + profile(self.suite).rtcp_auth_tag_len() {
            return Err(Refused::Rejected);
        }
        inbound
            .decrypt_rtcp(packet)
            .map(|p| p.to_vec())
            .map_err(|_| Refused::Rejected)
    }

    /// `packet` encrypted for the party; none if it is not an RTP packet (the host only
    /// sends ones it built or relayed, so never in practice).
    pub(crate) fn encrypt_rtp(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        self.outbound.encrypt_rtp(packet).ok().map(|p| p.to_vec())
    }

    pub(crate) fn encrypt_rtcp(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        self.outbound.encrypt_rtcp(packet).ok().map(|p| p.to_vec())
    }
}

/// Two ends of one leg, for tests: the host's SRTP and the party's, each with the
/// other's key.
#[cfg(test)]
pub(crate) fn pair(suite: SrtpSuite) -> (LegSrtp, LegSrtp) {
    let mut host = LegSrtp::random(suite).unwrap();
    let mut party = LegSrtp::random(suite).unwrap();
    host.set_remote(&party.host_key().clone()).unwrap();
    party.set_remote(&host.host_key().clone()).unwrap();
    (host, party)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(sequence: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&sequence.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn what_one_end_encrypts_the_other_decrypts_and_nothing_else_passes() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ] {
            let (mut host, mut party) = pair(suite);
            let plain = rtp(1, &[0xAA; 160]);
            let sent = host.encrypt_rtp(&plain).unwrap();
            let tag = if suite == SrtpSuite::AesCm128HmacSha1_80 {
                10
            } else {
                4
            };
            assert_eq!(sent.len(), plain.len() + tag);
            assert_eq!(sent[..12], plain[..12], "the header stays readable");
            assert_ne!(sent[12..172], plain[12..], "the payload does not");
            assert_eq!(party.decrypt_rtp(&sent), Ok(plain.clone()));
            assert_eq!(party.decrypt_rtp(&sent), Err(Refused::Rejected), "a replay");
            let mut forged = host.encrypt_rtp(&rtp(2, &[0xAA; 160])).unwrap();
            forged[20] ^= 1;
            assert_eq!(party.decrypt_rtp(&forged), Err(Refused::Rejected));
            assert_eq!(
                party.decrypt_rtp(&plain),
                Err(Refused::Rejected),
                "plain RTP"
            );
        }
    }

    #[test]
    fn nothing_is_decrypted_before_the_party_key_is_known() {
        let (mut host, _) = pair(SrtpSuite::AesCm128HmacSha1_80);
        let mut unanswered = LegSrtp::random(SrtpSuite::AesCm128HmacSha1_80).unwrap();
        let sent = host.encrypt_rtp(&rtp(1, &[1; 20])).unwrap();
        assert_eq!(unanswered.decrypt_rtp(&sent), Err(Refused::NoKey));
    }

    #[test]
    fn a_repeated_key_keeps_the_stream_going_past_a_rollover() {
        let (mut host, mut party) = pair(SrtpSuite::AesCm128HmacSha1_80);
        for sequence in [65534u16, 65535, 0, 1] {
            let sent = host.encrypt_rtp(&rtp(sequence, &[3; 160])).unwrap();
            // A re-offer repeating the same key must not reset the rollover counter.
            party.set_remote(&host.host_key().clone()).unwrap();
            assert!(party.decrypt_rtp(&sent).is_ok(), "sequence {sequence}");
        }
    }

    #[test]
    fn rtcp_goes_through_too() {
        let (mut host, mut party) = pair(SrtpSuite::AesCm128HmacSha1_80);
        // A receiver report with no blocks, from SSRC 7.
        let report = [0x80, 201, 0, 1, 0, 0, 0, 7];
        let sent = host.encrypt_rtcp(&report).unwrap();
        assert_ne!(sent.len(), report.len());
        assert_eq!(party.decrypt_rtcp(&sent), Ok(report.to_vec()));
    }

    #[test]
    fn short_packets_from_the_network_are_refused_not_a_panic() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ] {
            let (mut host, _) = pair(suite);
            let sent = {
                let (mut other, _) = pair(suite);
                other.encrypt_rtcp(&[0x80, 201, 0, 1, 0, 0, 0, 7]).unwrap()
            };
            for len in 0..sent.len() {
                let _ = host.decrypt_rtp(&sent[..len]);
                if len >= 4 {
                    assert_eq!(
                        host.decrypt_rtcp(&sent[..len]),
                        Err(Refused::Rejected),
                        "{len} bytes"
                    );
                }
            }
        }
    }
}
