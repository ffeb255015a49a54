//! Just enough SDP (RFC 4566) for an anchoring B2BUA: where a party wants its audio,
//! and the same description rewritten to point at the host's relay, with the codecs cut
//! down to what every leg can carry without transcoding (PCMU, PCMA, telephone-event).
//! Each leg's SRTP keys are its own ([`crypto`]): a party's `a=crypto` lines are read
//! here and never passed on; the host's own line goes in with its [`Origin`].

use std::net::{IpAddr, SocketAddr};

pub mod crypto;

pub use crypto::{Crypto, CryptoError, KEY_AND_SALT, SdesKey, SrtpSuite};

/// An 8 kHz G.711 codec and its static RTP payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// What the host reads from a party's SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Where the party receives RTP (none if the stream is disabled: port 0).
    pub rtp: Option<SocketAddr>,
    /// The static or dynamic payload types offered on the audio line, in order.
    pub payload_types: Vec<u8>,
    /// The audio line's profile is `RTP/SAVP`: SRTP or nothing.
    pub savp: bool,
    /// The audio stream's SDES keys of suites the host speaks, in the party's order.
    pub crypto: Vec<Crypto>,
}

/// Why an SDP body is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("no audio stream")]
    NoAudio,
    #[error("no connection address")]
    NoConnection,
    #[error("no codec the host can relay (PCMU or PCMA)")]
    NoCommonCodec,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
}

/// The host's `o=` line towards one party, kept by the dialog (RFC 3264 §8): the
/// session id stays for the dialog's life, and the version goes up by one with every
/// description that differs from the last one sent — so a resume after a hold is news
/// to a strict phone, and a repeated description is recognised as unchanged. It also
/// holds the leg's SRTP: what the host's descriptions to that party say of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    session_id: u64,
    version: u64,
    /// The last description sent.
    last: Option<String>,
    security: Option<Security>,
}

/// The host's SDES-SRTP towards one party: its `a=crypto` line, and whether the audio
/// line says `RTP/SAVP` (an answer keeps the offer's profile: some phones offer SRTP
/// as `RTP/AVP` with keys, meaning "if you can").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    pub crypto: Crypto,
    pub savp: bool,
}

impl Origin {
    /// A new SDP session; `session_id` comes from the core's randomness.
    pub fn new(session_id: u64) -> Self {
        // Kept to 63 bits: some stacks read the id as a signed 64-bit number.
        Self {
            session_id: session_id >> 1,
            version: 0,
            last: None,
            security: None,
        }
    }

    /// From now on the host's descriptions to this party carry `security` (none: plain
    /// RTP).
    pub fn secure(&mut self, security: Option<Security>) {
        self.security = security;
    }

    pub fn security(&self) -> Option<&Security> {
        self.security.as_ref()
    }

    /// `sdp` with this session's `o=` line and the leg's SRTP: the same version as the
    /// last description if nothing else changed, the next one if something did. The line
    /// keeps the address `sdp` had in it (one is added after `v=` if it had none).
    pub fn stamp(&mut self, sdp: &str) -> String {
        let sdp = &with_security(sdp, self.security.as_ref());
        let unchanged = self
            .last
            .as_deref()
            .is_some_and(|last| without_origin(last).eq(without_origin(sdp)));
        if !unchanged {
            self.version += 1;
        }
        let (id, version) = (self.session_id, self.version);
        let address = lines(sdp)
            .find_map(|l| l.strip_prefix("o="))
            .map(|o| o.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "IN IP4 0.0.0.0".to_owned());
        let origin = format!("o=wasmpbx {id} {version} {address}\r\n");
        let mut out = String::with_capacity(sdp.len() + 16);
        let mut placed = false;
        for line in lines(sdp) {
            if line.starts_with("o=") {
                if !placed {
                    out.push_str(&origin);
                    placed = true;
                }
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
            if line.starts_with("v=") && !placed && !sdp.contains("\no=") {
                out.push_str(&origin);
                placed = true;
            }
        }
        self.last = Some(out.clone());
        out
    }

    /// The description last sent to this party, as it was sent: what the host offers
    /// again when the party asks for an offer (a re-INVITE without one), the session
    /// unchanged (RFC 3264 §8: the same version).
    pub fn last_sent(&self) -> Option<&str> {
        self.last.as_deref()
    }
}

/// A description's lines but its `o=` line.
fn without_origin(sdp: &str) -> impl Iterator<Item = &str> {
    lines(sdp).filter(|l| !l.starts_with("o="))
}

/// `sdp` with the audio line's profile and keys as `security` says: `RTP/SAVP` or
/// `RTP/AVP` and the host's `a=crypto` line, or plain `RTP/AVP` without keys. Other
/// profiles (a browser's) and other streams are left alone.
fn with_security(sdp: &str, security: Option<&Security>) -> String {
    let mut out = String::with_capacity(sdp.len() + 80);
    let mut audio_seen = false;
    for line in lines(sdp) {
        if line.starts_with("a=crypto:") {
            continue;
        }
        let mut fields: Vec<&str> = line.split(' ').collect();
        let plain_audio = !audio_seen
            && fields[0] == "m=audio"
            && fields
                .get(2)
                .is_some_and(|p| *p == "RTP/AVP" || *p == "RTP/SAVP");
        if !plain_audio {
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        }
        audio_seen = true;
        fields[2] = match security {
            Some(s) if s.savp => "RTP/SAVP",
            _ => "RTP/AVP",
        };
        out.push_str(&fields.join(" "));
        out.push_str("\r\n");
        if let Some(security) = security {
            out.push_str(&security.crypto.line());
            out.push_str("\r\n");
        }
    }
    out
}

/// Read the audio stream of an SDP body.
pub fn parse(sdp: &str) -> Result<Media, SdpError> {
    let mut session_addr: Option<IpAddr> = None;
    let mut media_addr: Option<IpAddr> = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut in_audio = false;
    let mut savp = false;
    let mut crypto = Vec::new();
    for line in lines(sdp) {
        if let Some(rest) = line.strip_prefix("m=") {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            in_audio = fields.first() == Some(&"audio") && audio.is_none();
            if in_audio {
                let port = fields
                    .get(1)
                    .and_then(|p| p.split('/').next()?.parse().ok())
                    .ok_or_else(|| SdpError::Malformed(line.into()))?;
                let pts = fields
                    .iter()
                    .skip(3)
                    .filter_map(|p| p.parse().ok())
                    .collect();
                audio = Some((port, pts));
                savp = fields.get(2) == Some(&"RTP/SAVP");
            }
        } else if let Some(value) = line.strip_prefix("a=crypto:") {
            if in_audio && let Some(line) = Crypto::parse(value)? {
                crypto.push(line);
            }
        } else if let Some(rest) = line.strip_prefix("c=") {
            let addr = rest
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse().ok());
            if audio.is_none() {
                session_addr = addr;
            } else if in_audio {
                media_addr = addr;
            }
        }
    }
    let (port, payload_types) = audio.ok_or(SdpError::NoAudio)?;
    let ip = media_addr.or(session_addr).ok_or(SdpError::NoConnection)?;
    let rtp = (port != 0).then_some(SocketAddr::new(ip, port));
    Ok(Media {
        rtp,
        payload_types,
        savp,
        crypto,
    })
}

/// The payload type a party uses for RFC 4733 telephone-events, if it offers them.
pub fn telephone_event_pt(sdp: &str) -> Option<u8> {
    lines(sdp).find_map(|l| {
        let rest = l.strip_prefix("a=rtpmap:")?;
        let (pt, codec) = rest.split_once(' ')?;
        codec
            .to_ascii_lowercase()
            .starts_with("telephone-event/")
            .then(|| pt.parse().ok())?
    })
}

/// The G.711 codec the host uses with a party that offered `media`: its first choice of
/// the static PCMU (0) and PCMA (8).
pub fn first_g711(media: &Media) -> Option<Codec> {
    media
        .payload_types
        .iter()
        .find_map(|&pt| Codec::from_payload_type(pt))
}

/// The host's own description as a media endpoint: one audio stream at `address:port`
/// in `codec`, with telephone-events on `event_pt` if the party uses them.
pub fn endpoint(address: IpAddr, port: u16, codec: Codec, event_pt: Option<u8>) -> String {
    let family = if address.is_ipv4() { "IP4" } else { "IP6" };
    let pt = codec.payload_type();
    let mut sdp = format!(
        "v=0\r\no=wasmpbx 0 0 IN {family} {address}\r\n\
         s=wasmpbx\r\nc=IN {family} {address}\r\nt=0 0\r\n"
    );
    match event_pt {
        Some(ev) => sdp.push_str(&format!(
            "m=audio {port} RTP/AVP {pt} {ev}\r\na=rtpmap:{pt} {}/8000\r\n\
             a=rtpmap:{ev} telephone-event/8000\r\na=fmtp:{ev} 0-16\r\n",
            codec.name()
        )),
        None => sdp.push_str(&format!(
            "m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {}/8000\r\n",
            codec.name()
        )),
    }
    sdp.push_str("a=ptime:20\r\na=sendrecv\r\n");
    sdp
}

/// The payload types the host relays: PCMU (0), PCMA (8) and telephone-event (by name).
fn keep_payload_types(sdp: &str) -> Vec<u8> {
    let mut keep = Vec::new();
    for line in lines(sdp) {
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let mut parts = rest.splitn(2, ' ');
            let (Some(pt), Some(codec)) = (
                parts.next().and_then(|p| p.parse::<u8>().ok()),
                parts.next(),
            ) else {
                continue;
            };
            let codec = codec.to_ascii_lowercase();
            if codec.starts_with("pcmu/8000")
                || codec.starts_with("pcma/8000")
                || codec.starts_with("telephone-event/8000")
            {
                keep.push(pt);
            }
        }
    }
    keep
}

/// Rewrite a party's SDP for the other leg: the host's address and relay port, the
/// host's origin (numbered by the dialog's [`Origin`] when sent), and only the codecs
/// the host can relay.
pub fn rewrite(sdp: &str, address: IpAddr, port: u16) -> Result<String, SdpError> {
    let media = parse(sdp)?;
    let mapped = keep_payload_types(sdp);
    let kept: Vec<u8> = media
        .payload_types
        .iter()
        .copied()
        .filter(|pt| *pt == 0 || *pt == 8 || mapped.contains(pt))
        .collect();
    if !kept.iter().any(|pt| {
        *pt == 0 || *pt == 8 || {
            // A dynamic PCMU/PCMA mapping counts too (not telephone-event alone).
            lines(sdp).any(|l| {
                l.strip_prefix(&format!("a=rtpmap:{pt} "))
                    .is_some_and(|c| !c.to_ascii_lowercase().starts_with("telephone-event"))
            })
        }
    }) {
        return Err(SdpError::NoCommonCodec);
    }
    let family = if address.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::new();
    let mut in_audio = false;
    let mut audio_seen = false;
    for line in lines(sdp) {
        let rewritten = if line.starts_with("o=") {
            format!("o=wasmpbx 0 0 IN {family} {address}")
        } else if line.starts_with("c=") {
            format!("c=IN {family} {address}")
        } else if let Some(rest) = line.strip_prefix("m=") {
            in_audio = rest.starts_with("audio") && !audio_seen;
            if in_audio {
                audio_seen = true;
                let proto = rest.split_whitespace().nth(2).unwrap_or("RTP/AVP");
                let pts: Vec<String> = kept.iter().map(u8::to_string).collect();
                let port = if media.rtp.is_some() { port } else { 0 };
                format!("m=audio {port} {proto} {}", pts.join(" "))
            } else {
                // Other streams (video) are declined: the host relays audio only.
                let mut fields: Vec<&str> = rest.split_whitespace().collect();
                if fields.len() > 1 {
                    fields[1] = "0";
                }
                format!("m={}", fields.join(" "))
            }
        } else if let Some(rest) = line.strip_prefix("a=") {
            let name = rest.split([':', ' ']).next().unwrap_or("");
            let drop_attr = matches!(
                name,
                "rtcp"
                    | "candidate"
                    | "ice-ufrag"
                    | "ice-pwd"
                    | "ice-options"
                    | "fingerprint"
                    | "setup"
                    | "end-of-candidates"
                    | "crypto"
            ) || (in_audio && matches!(name, "rtpmap" | "fmtp") && {
                let pt = rest
                    .split(':')
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|p| p.parse::<u8>().ok());
                pt.is_some_and(|pt| !kept.contains(&pt))
            });
            if drop_attr {
                continue;
            }
            line.to_owned()
        } else {
            line.to_owned()
        };
        out.push_str(&rewritten);
        out.push_str("\r\n");
    }
    Ok(out)
}

/// Whether an SDP body is a WebRTC offer (ICE and DTLS-SRTP), which only a bridge can
/// take.
pub fn is_webrtc(sdp: &str) -> bool {
    sdp.contains("UDP/TLS/RTP/SAVPF")
}

/// The static G.711 payload types an SDP's audio line carries.
pub fn audio_payload_types(sdp: &str) -> Vec<u8> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .map(|m| {
            m.split_whitespace()
                .skip(2)
                .filter_map(|pt| pt.parse().ok())
                .filter(|pt| matches!(pt, 0 | 8))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=rtcp:6001\r\na=sendrecv\r\n";

    #[test]
    fn reads_the_audio_address_and_codecs() {
        let media = parse(OFFER).unwrap();
        assert_eq!(media.rtp, Some("127.0.0.2:6000".parse().unwrap()));
        assert_eq!(media.payload_types, [9, 0, 8, 101]);
        assert_eq!(telephone_event_pt(OFFER), Some(101));
        assert_eq!(telephone_event_pt("v=0\r\nm=audio 1 RTP/AVP 0\r\n"), None);
    }

    #[test]
    fn rewrites_address_port_and_codecs() {
        let out = rewrite(OFFER, "127.0.0.1".parse().unwrap(), 20000).unwrap();
        assert!(out.contains("c=IN IP4 127.0.0.1\r\n"), "{out}");
        assert!(out.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"), "{out}");
        assert!(out.contains("o=wasmpbx 0 0 IN IP4 127.0.0.1\r\n"));
        assert!(!out.contains("G722") && !out.contains("a=rtcp:"), "{out}");
        assert!(out.contains("a=fmtp:101 0-16") && out.contains("a=sendrecv"));
        let media = parse(&out).unwrap();
        assert_eq!(media.rtp, Some("127.0.0.1:20000".parse().unwrap()));
    }

    #[test]
    fn refuses_what_it_cannot_relay() {
        let opus =
            "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(
            rewrite(opus, "127.0.0.1".parse().unwrap(), 1),
            Err(SdpError::NoCommonCodec)
        );
        assert_eq!(parse("v=0\r\nc=IN IP4 1.2.3.4\r\n"), Err(SdpError::NoAudio));
        assert_eq!(
            parse("v=0\r\nm=audio 5000 RTP/AVP 0\r\n"),
            Err(SdpError::NoConnection)
        );
        assert!(parse("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n").is_err());
    }

    #[test]
    fn a_held_stream_keeps_port_zero() {
        let held = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(parse(held).unwrap().rtp, None);
        assert!(
            rewrite(held, "127.0.0.1".parse().unwrap(), 20000)
                .unwrap()
                .contains("m=audio 0 RTP/AVP 0")
        );
    }

    #[test]
    fn the_endpoint_description_parses_back() {
        let sdp = endpoint("127.0.0.1".parse().unwrap(), 20_000, Codec::Pcma, Some(101));
        let media = parse(&sdp).unwrap();
        assert_eq!(media.rtp, Some("127.0.0.1:20000".parse().unwrap()));
        assert_eq!(media.payload_types, [8, 101]);
        assert_eq!(telephone_event_pt(&sdp), Some(101));
        assert_eq!(first_g711(&media), Some(Codec::Pcma));
    }

    #[test]
    fn the_origin_keeps_its_id_and_counts_changes() {
        let ip = "127.0.0.1".parse().unwrap();
        let mut origin = Origin::new(0xabc0);
        let first = origin.stamp(&rewrite(OFFER, ip, 20000).unwrap());
        assert!(
            first.starts_with("v=0\r\no=wasmpbx 21984 1 IN IP4 127.0.0.1\r\n"),
            "{first}"
        );
        // The same description again (a session refresh): the same version.
        let again = origin.stamp(&rewrite(OFFER, ip, 20000).unwrap());
        assert_eq!(again, first);
        // Hold, then resume: each a new version of the same session.
        let hold = OFFER.replace("a=sendrecv", "a=sendonly");
        let held = origin.stamp(&rewrite(&hold, ip, 20000).unwrap());
        assert!(
            held.contains("o=wasmpbx 21984 2 IN IP4 127.0.0.1\r\n"),
            "{held}"
        );
        let resumed = origin.stamp(&rewrite(OFFER, ip, 20000).unwrap());
        assert!(
            resumed.contains("o=wasmpbx 21984 3 IN IP4 127.0.0.1\r\n"),
            "{resumed}"
        );
        assert_eq!(resumed.matches("o=").count(), 1);
        // A description without an origin gets one after `v=`.
        let bare = Origin::new(2).stamp("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n");
        assert!(
            bare.starts_with("v=0\r\no=wasmpbx 1 1 IN IP4 0.0.0.0\r\nc="),
            "{bare}"
        );
    }

    const SRTP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
m=audio 6000 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=crypto:1 AEAD_AES_256_GCM inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBRPS1uQCVeeCFCanVm\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n\
a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31\r\n\
a=sendrecv\r\n";

    #[test]
    fn reads_the_keys_an_srtp_offer_carries() {
        let media = parse(SRTP_OFFER).unwrap();
        assert!(media.savp);
        let tags: Vec<u32> = media.crypto.iter().map(|c| c.tag).collect();
        assert_eq!(tags, [2, 3], "suites the host speaks, in the offer's order");
        assert!(!parse(OFFER).unwrap().savp && parse(OFFER).unwrap().crypto.is_empty());
        let bad = SRTP_OFFER.replace(
            "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n",
            "inline:short\r\n",
        );
        assert_eq!(parse(&bad), Err(SdpError::Crypto(CryptoError::BadKey(2))));
    }

    #[test]
    fn a_party_keys_never_reach_the_other_leg_and_the_origin_puts_the_host_in() {
        let ip = "127.0.0.1".parse().unwrap();
        let rewritten = rewrite(SRTP_OFFER, ip, 20000).unwrap();
        assert!(!rewritten.contains("a=crypto"), "{rewritten}");
        // Plain towards a party without SRTP.
        let plain = Origin::new(4).stamp(&rewritten);
        assert!(
            plain.contains("m=audio 20000 RTP/AVP 0 101\r\n") && !plain.contains("crypto"),
            "{plain}"
        );
        // The host's own key towards a party with SRTP, just after the audio line.
        let mut origin = Origin::new(4);
        let crypto = Crypto {
            tag: 7,
            suite: SrtpSuite::AesCm128HmacSha1_80,
            key: SdesKey([9; KEY_AND_SALT]),
        };
        origin.secure(Some(Security {
            crypto: crypto.clone(),
            savp: true,
        }));
        let secured = origin.stamp(&endpoint(ip, 20000, Codec::Pcmu, Some(101)));
        assert!(
            secured.contains(&format!(
                "m=audio 20000 RTP/SAVP 0 101\r\n{}\r\n",
                crypto.line()
            )),
            "{secured}"
        );
        let media = parse(&secured).unwrap();
        assert!(media.savp);
        assert_eq!(media.crypto, std::slice::from_ref(&crypto));
        // Keys in an RTP/AVP answer to an RTP/AVP offer that carried keys.
        origin.secure(Some(Security {
            crypto,
            savp: false,
        }));
        let best_effort = origin.stamp(&rewritten);
        assert!(
            best_effort.contains("m=audio 20000 RTP/AVP 0 101\r\na=crypto:7 "),
            "{best_effort}"
        );
        assert!(
            best_effort.contains("o=wasmpbx 2 2 "),
            "a new key is a new version: {best_effort}"
        );
    }
}
