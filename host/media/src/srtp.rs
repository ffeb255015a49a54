//! One leg's SDES-SRTP (RFC 3711, keys from RFC 4568): what the host sends the leg is
//! encrypted with the host's key for it, what arrives is checked and decrypted with the
//! party's. The ciphers are webrtc-srtp's; this only keeps a leg's contexts.

use std::collections::HashSet;

use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

use wasmpbx_sip::sdp::{KEY_AND_SALT, SdesKey, SrtpSuite};

/// Packets a receiver remembers to refuse a replay (RFC 3711 §3.3.2 asks for at least 64).
const REPLAY_WINDOW: usize = 128;

/// Packets of unknown streams that may fail authentication before the context that
/// checked them is replaced by a fresh one (see `Inbound`).
const PROBE_FAILURES: usize = 64;

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
    inbound: Option<Inbound>,
}

/// What checks and decrypts the party's packets. webrtc-srtp keeps state for every SSRC
/// a packet names *before* it checks the packet's tag, and never forgets it: anyone who
/// can reach the port could grow that map without bound with forged SSRCs. So a packet
/// of a stream not yet authenticated is first checked by `probe`, a context holding
/// nothing worth keeping and replaced after `PROBE_FAILURES` failures; only a packet it
/// authenticates reaches `party`, whose streams (rollover counters, replay windows) are
/// the party's alone.
struct Inbound {
    suite: SrtpSuite,
    key: SdesKey,
    party: Context,
    rtp_streams: HashSet<u32>,
    rtcp_streams: HashSet<u32>,
    probe: Context,
    probe_failures: usize,
}

/// Which of a packet's protocols, where its SSRC is.
#[derive(Clone, Copy)]
enum Protocol {
    Rtp,
    Rtcp,
}

impl Protocol {
    fn decrypt(self, context: &mut Context, packet: &[u8]) -> Result<Vec<u8>, Refused> {
        match self {
            Protocol::Rtp => context.decrypt_rtp(packet),
            Protocol::Rtcp => context.decrypt_rtcp(packet),
        }
        .map(|p| p.to_vec())
        .map_err(|_| Refused::Rejected)
    }

    /// The sender's SSRC (RFC 3550 §5.1, §6.4).
    fn ssrc(self, packet: &[u8]) -> Option<u32> {
        let at = match self {
            Protocol::Rtp => 8,
            Protocol::Rtcp => 4,
        };
        let bytes = packet.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl Inbound {
    fn new(suite: SrtpSuite, key: &SdesKey) -> Result<Self, String> {
        Ok(Self {
            suite,
            key: key.clone(),
            party: context(suite, key, true)?,
            rtp_streams: HashSet::new(),
            rtcp_streams: HashSet::new(),
            probe: context(suite, key, false)?,
            probe_failures: 0,
        })
    }

    fn decrypt(&mut self, protocol: Protocol, packet: &[u8]) -> Result<Vec<u8>, Refused> {
        let ssrc = protocol.ssrc(packet).ok_or(Refused::Rejected)?;
        let streams = match protocol {
            Protocol::Rtp => &mut self.rtp_streams,
            Protocol::Rtcp => &mut self.rtcp_streams,
        };
        if !streams.contains(&ssrc) {
            if protocol.decrypt(&mut self.probe, packet).is_err() {
                self.probe_failures += 1;
                if self.probe_failures >= PROBE_FAILURES {
                    self.probe =
                        context(self.suite, &self.key, false).map_err(|_| Refused::Rejected)?;
                    self.probe_failures = 0;
                }
                return Err(Refused::Rejected);
            }
            streams.insert(ssrc);
        }
        protocol.decrypt(&mut self.party, packet)
    }

    /// The streams whose state is kept: the party's, and at most the probe's failures.
    #[cfg(test)]
    fn streams_kept(&self) -> usize {
        self.rtp_streams.len() + self.rtcp_streams.len() + self.probe_failures
    }
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
        if self.inbound.as_ref().map(|inbound| &inbound.key) != Some(key) {
            self.inbound = Some(Inbound::new(self.suite, key)?);
        }
        Ok(())
    }

    pub(crate) fn decrypt_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, Refused> {
        let inbound = self.inbound.as_mut().ok_or(Refused::NoKey)?;
        inbound.decrypt(Protocol::Rtp, packet)
    }

    pub(crate) fn decrypt_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, Refused> {
        let inbound = self.inbound.as_mut().ok_or(Refused::NoKey)?;
        // The RTCP header and sender's SSRC, the E flag and SRTCP index, the tag
        // (RFC 3711 §3.4): webrtc-srtp reads them before it checks the length.
        if packet.len() < 8 + 4 + profile(self.suite).rtcp_auth_tag_len() {
            return Err(Refused::Rejected);
        }
        inbound.decrypt(Protocol::Rtcp, packet)
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

    #[test]
    fn forged_packets_of_unknown_streams_leave_no_state_behind() {
        let (mut host, mut party) = pair(SrtpSuite::AesCm128HmacSha1_80);
        let first = host.encrypt_rtp(&rtp(1, &[5; 160])).unwrap();
        assert!(party.decrypt_rtp(&first).is_ok());
        let report = host.encrypt_rtcp(&[0x80, 201, 0, 1, 0, 0, 0, 7]).unwrap();
        assert!(party.decrypt_rtcp(&report).is_ok());
        // Anyone reaching the port, each packet naming a new SSRC.
        for ssrc in 1000..11_000u32 {
            let mut forged = first.clone();
            forged[8..12].copy_from_slice(&ssrc.to_be_bytes());
            assert_eq!(party.decrypt_rtp(&forged), Err(Refused::Rejected));
            let mut forged = report.clone();
            forged[4..8].copy_from_slice(&ssrc.to_be_bytes());
            assert_eq!(party.decrypt_rtcp(&forged), Err(Refused::Rejected));
        }
        let kept = party.inbound.as_ref().unwrap().streams_kept();
        assert!(kept <= 2 + PROBE_FAILURES, "{kept} streams kept");
        // The party's own streams go on, their replay windows intact.
        for sequence in 2..200 {
            let sent = host.encrypt_rtp(&rtp(sequence, &[5; 160])).unwrap();
            assert!(party.decrypt_rtp(&sent).is_ok(), "sequence {sequence}");
        }
        assert_eq!(
            party.decrypt_rtp(&first),
            Err(Refused::Rejected),
            "a replay"
        );
        // A new stream of the party's is authenticated by a probe replaced meanwhile.
        let mut other = rtp(1, &[6; 160]);
        other[8..12].copy_from_slice(&1500u32.to_be_bytes());
        let sent = host.encrypt_rtp(&other).unwrap();
        assert_eq!(party.decrypt_rtp(&sent), Ok(other));
    }
}
