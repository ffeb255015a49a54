//! WebRTC legs (browsers). str0m terminates ICE (lite: the host only answers checks),
//! DTLS-SRTP and RTCP with the browser, and bridges its G.711 audio to plain RTP on a
//! socket of the host's own, which the call's relay treats like any phone's. Nothing is
//! transcoded: browsers are offered PCMU and PCMA only.
//!
//! ```text
//!  browser ──ICE/DTLS-SRTP──▶ [bridge task: str0m Rtc] ──plain RTP──▶ relay side ──▶ …
//! ```

use crate::clock::monotonic_now;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use str0m::change::SdpOffer;
use str0m::media::{MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::rtp;

/// Whether an SDP body is a WebRTC offer (ICE and DTLS-SRTP), which only a bridge can
/// take.
pub fn is_webrtc(sdp: &str) -> bool {
    sdp.contains("UDP/TLS/RTP/SAVPF")
}

/// A browser's media, bridged: what to answer the browser, what the relay sees of it,
/// and the task doing the work (stopped when this is dropped).
pub struct Bridge {
    /// The SDP answer for the browser (ICE credentials, DTLS fingerprint, candidate).
    pub answer: String,
    /// The browser as a plain RTP phone: an SDP offer at the bridge's plain socket.
    pub plain_offer: String,
    task: JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Bridge {
    /// Answer a browser's offer. The bridge listens for the browser on `bind_ip`
    /// (announced as `public_ip`) and sends the browser's audio to the relay at `relay`.
    pub fn accept(
        offer: &str,
        bind_ip: IpAddr,
        public_ip: IpAddr,
        relay: SocketAddr,
    ) -> Result<Self, String> {
        let browser = bind(bind_ip)?;
        let plain = bind(bind_ip)?;
        let browser_local = browser.local_addr().map_err(|e| e.to_string())?;
        let plain_port = plain.local_addr().map_err(|e| e.to_string())?.port();
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .build(monotonic_now());
        let candidate = Candidate::host(SocketAddr::new(public_ip, browser_local.port()), "udp")
            .map_err(|e| format!("ICE candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| format!("WebRTC offer: {e}"))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("WebRTC offer: {e}"))?
            .to_sdp_string();
        let payload_types = audio_payload_types(&answer);
        if payload_types.is_empty() {
            return Err("the browser offered neither PCMU nor PCMA".into());
        }
        let plain_offer = plain_sdp(bind_ip, plain_port, &payload_types);
        let task = tokio::spawn(run(BridgeTask {
            rtc,
            browser: Arc::new(to_tokio(browser)?),
            browser_local,
            plain: to_tokio(plain)?,
            relay,
        }));
        Ok(Self {
            answer,
            plain_offer,
            task,
        })
    }
}

fn bind(ip: IpAddr) -> Result<std::net::UdpSocket, String> {
    std::net::UdpSocket::bind((ip, 0)).map_err(|e| format!("binding a WebRTC port: {e}"))
}

fn to_tokio(socket: std::net::UdpSocket) -> Result<UdpSocket, String> {
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    UdpSocket::from_std(socket).map_err(|e| e.to_string())
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

fn plain_sdp(ip: IpAddr, port: u16, payload_types: &[u8]) -> String {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let list: Vec<String> = payload_types.iter().map(u8::to_string).collect();
    let mut sdp = format!(
        "v=0\r\no=- 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n",
        list.join(" ")
    );
    for pt in payload_types {
        let name = if *pt == 0 { "PCMU" } else { "PCMA" };
        sdp.push_str(&format!("a=rtpmap:{pt} {name}/8000\r\n"));
    }
    sdp
}

struct BridgeTask {
    rtc: Rtc,
    browser: Arc<UdpSocket>,
    browser_local: SocketAddr,
    plain: UdpSocket,
    relay: SocketAddr,
}

/// The RTP the relay gets: one stream of the bridge's own, numbered as it goes.
struct PlainStream {
    ssrc: u32,
    sequence: u16,
}

impl PlainStream {
    fn packet(&mut self, payload_type: u8, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut packet = Vec::with_capacity(12 + payload.len());
        packet.extend_from_slice(&[0x80, payload_type & 0x7f]);
        packet.extend_from_slice(&self.sequence.to_be_bytes());
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&self.ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }
}

/// Extends the relay's 32-bit RTP timestamps to the 64-bit media time str0m writes.
#[derive(Default)]
struct Unwrap {
    last: Option<(u32, u64)>,
}

impl Unwrap {
    fn extend(&mut self, timestamp: u32) -> u64 {
        let extended = match self.last {
            None => u64::from(timestamp),
            Some((last, extended)) => {
                let step = i64::from(timestamp.wrapping_sub(last) as i32);
                extended.saturating_add_signed(step)
            }
        };
        self.last = Some((timestamp, extended));
        extended
    }
}

async fn run(mut b: BridgeTask) {
    let mut mid: Option<Mid> = None;
    let mut stream = PlainStream {
        ssrc: rand_u32(),
        sequence: rand_u32() as u16,
    };
    let mut unwrap = Unwrap::default();
    let mut from_browser = vec![0u8; 2048];
    let mut from_relay = vec![0u8; 2048];
    loop {
        // Drain everything the engine has to say before the next input.
        let timeout = loop {
            match b.rtc.poll_output() {
                Ok(Output::Timeout(at)) => break at,
                Ok(Output::Transmit(t)) => {
                    let _ = b.browser.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::MediaAdded(added))) => mid = Some(added.mid),
                Ok(Output::Event(Event::MediaData(data))) => {
                    let timestamp = data.time.rebase(str0m::media::Frequency::EIGHT_KHZ).numer();
                    let packet = stream.packet(*data.pt, timestamp as u32, &data.data);
                    let _ = b.plain.send_to(&packet, b.relay).await;
                }
                Ok(Output::Event(Event::IceConnectionStateChange(state))) => {
                    tracing::debug!(?state, "webrtc: ICE");
                    if state == IceConnectionState::Disconnected {
                        return;
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    tracing::info!("webrtc: {e}; the browser's media ends");
                    return;
                }
            }
        };
        let wait = timeout.saturating_duration_since(monotonic_now());
        let input = tokio::select! {
            received = b.browser.recv_from(&mut from_browser) => {
                let Ok((n, source)) = received else { continue };
                let Ok(contents) = from_browser[..n].try_into() else { continue };
                Input::Receive(monotonic_now(), Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: b.browser_local,
                    contents,
                })
            }
            received = b.plain.recv_from(&mut from_relay) => {
                let Ok((n, _)) = received else { continue };
                let packet = &from_relay[..n];
                let (Some(mid), Some(header)) = (mid, rtp::parse(packet)) else { continue };
                let time = MediaTime::new(
                    unwrap.extend(header.timestamp),
                    str0m::media::Frequency::EIGHT_KHZ,
                );
                let Some(writer) = b.rtc.writer(mid) else { continue };
                let payload = packet[header.payload_offset..].to_vec();
                if let Err(e) = writer.write(header.payload_type.into(), monotonic_now(), time, payload) {
                    tracing::debug!("webrtc: not sent to the browser: {e}");
                }
                continue;
            }
            _ = tokio::time::sleep(wait) => Input::Timeout(monotonic_now()),
        };
        if let Err(e) = b.rtc.handle_input(input) {
            tracing::debug!("webrtc: {e}");
        }
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    u32::from_le_bytes(bytes)
}
