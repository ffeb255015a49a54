//! WebRTC legs (browsers). str0m terminates ICE (lite: the host only answers checks),
//! DTLS-SRTP and RTCP with the browser, and bridges its G.711 audio to plain RTP on a
//! socket of the host's own, which the call's relay treats like any phone's. Nothing is
//! transcoded: browsers are offered PCMU and PCMA only, with RFC 4733 telephone-events
//! for the keys a browser sends (its RTCDTMFSender); on the plain side events always
//! travel as payload type [`PLAIN_EVENT_PT`]. Events towards a browser are not passed
//! on (str0m sends whole events, not the relay's packets; a browser plays no keys).
//!
//! ```text
//!  browser ──ICE/DTLS-SRTP──▶ [bridge task: str0m Rtc] ──plain RTP──▶ relay side ──▶ …
//! ```

use std::net::{IpAddr, SocketAddr};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::rtp;
use crate::clock::monotonic_now;
use wasmpbx_sip::sdp::audio_payload_types;

/// The payload type of telephone-events on the plain side, whatever the browser uses.
pub const PLAIN_EVENT_PT: u8 = 101;

/// A browser's media, bridged: the task doing the work (stopped when this is dropped)
/// and where the relay finds it.
pub struct Bridge {
    plain: SocketAddr,
    /// The relay socket the browser's audio goes to.
    relay: SocketAddr,
    /// Where the browser's answer goes, when the host made the offer.
    answers: Option<mpsc::Sender<SdpAnswer>>,
    task: JoinHandle<()>,
}

/// The sockets and engine of a bridge not yet running.
struct Parts {
    rtc: Rtc,
    browser: std::net::UdpSocket,
    browser_local: SocketAddr,
    plain: std::net::UdpSocket,
    plain_local: SocketAddr,
}

impl Parts {
    /// `browser` is the port the browser is told of (the host's media range); the plain
    /// side only talks to the relay, on an ephemeral port.
    fn new(browser: std::net::UdpSocket, public_ip: IpAddr) -> Result<Self, String> {
        let browser_local = browser.local_addr().map_err(|e| e.to_string())?;
        let plain = bind(browser_local.ip())?;
        let plain_local = plain.local_addr().map_err(|e| e.to_string())?;
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_pcmu(true, false)
            .enable_pcma(true, false);
        config.codec_config().add_config(
            PLAIN_EVENT_PT.into(),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            FormatParams::parse_line("0-16"),
        );
        let mut rtc = config.build(monotonic_now());
        let candidate = Candidate::host(SocketAddr::new(public_ip, browser_local.port()), "udp")
            .map_err(|e| format!("ICE candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        Ok(Self {
            rtc,
            browser,
            browser_local,
            plain,
            plain_local,
        })
    }

    /// Start the bridge: the browser's audio goes to the relay at `relay`.
    fn spawn(
        self,
        relay: SocketAddr,
        mid: Option<Mid>,
        pending: Option<(SdpPendingOffer, mpsc::Receiver<SdpAnswer>)>,
    ) -> Result<JoinHandle<()>, String> {
        let task = run(BridgeTask {
            rtc: self.rtc,
            browser: to_tokio(self.browser)?,
            browser_local: self.browser_local,
            plain: to_tokio(self.plain)?,
            relay,
            mid,
            pending,
        });
        // In the call's span (current: the call engine asks for the bridge), so the
        // browser's ICE and DTLS lines name the call.
        Ok(tokio::spawn(task.in_current_span()))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Bridge {
    /// Answer a browser's offer. The bridge listens for the browser on `browser`
    /// (announced at `public_ip`) and sends the browser's audio to the relay at `relay`.
    /// The bridge, the SDP answer for the browser, and the browser as a plain RTP offer.
    pub fn accept(
        offer: &str,
        browser: std::net::UdpSocket,
        public_ip: IpAddr,
        relay: SocketAddr,
    ) -> Result<(Self, String, String), String> {
        let mut parts = Parts::new(browser, public_ip)?;
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| format!("WebRTC offer: {e}"))?;
        let answer = parts
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("WebRTC offer: {e}"))?
            .to_sdp_string();
        let plain = parts.plain_local;
        let plain_offer = plain_sdp(plain, &audio_payload_types(&answer), has_events(&answer))?;
        let task = parts.spawn(relay, None, None)?;
        let bridge = Self {
            plain,
            relay,
            answers: None,
            task,
        };
        Ok((bridge, answer, plain_offer))
    }

    /// Make an offer to a browser (the host calls it); its answer goes to
    /// [`Bridge::complete`]. The bridge and the SDP offer.
    pub fn offer(
        browser: std::net::UdpSocket,
        public_ip: IpAddr,
        relay: SocketAddr,
    ) -> Result<(Self, String), String> {
        let mut parts = Parts::new(browser, public_ip)?;
        let mut change = parts.rtc.sdp_api();
        // str0m tells of media the remote side adds; this one the host adds itself.
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = change.apply().ok_or("WebRTC: nothing to offer")?;
        let (answers, answer_rx) = mpsc::channel(1);
        let plain = parts.plain_local;
        let task = parts.spawn(relay, Some(mid), Some((pending, answer_rx)))?;
        let bridge = Self {
            plain,
            relay,
            answers: Some(answers),
            task,
        };
        Ok((bridge, offer.to_sdp_string()))
    }

    /// The relay socket the browser's audio goes to.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// The browser answered the bridge's offer: the browser as a plain RTP answer.
    pub fn complete(&mut self, answer: &str) -> Result<String, String> {
        let parsed =
            SdpAnswer::from_sdp_string(answer).map_err(|e| format!("WebRTC answer: {e}"))?;
        let answers = self.answers.take().ok_or("WebRTC: answered twice")?;
        answers
            .try_send(parsed)
            .map_err(|_| "WebRTC: the bridge has stopped".to_owned())?;
        plain_sdp(self.plain, &audio_payload_types(answer), has_events(answer))
    }
}

fn bind(ip: IpAddr) -> Result<std::net::UdpSocket, String> {
    std::net::UdpSocket::bind((ip, 0)).map_err(|e| format!("binding a WebRTC port: {e}"))
}

fn to_tokio(socket: std::net::UdpSocket) -> Result<UdpSocket, String> {
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    UdpSocket::from_std(socket).map_err(|e| e.to_string())
}

/// Whether a negotiated SDP carries 8 kHz telephone-events.
fn has_events(sdp: &str) -> bool {
    sdp.lines().any(|l| {
        l.starts_with("a=rtpmap:") && l.to_ascii_lowercase().contains(" telephone-event/8000")
    })
}

fn plain_sdp(at: SocketAddr, payload_types: &[u8], events: bool) -> Result<String, String> {
    if payload_types.is_empty() {
        return Err("the browser takes neither PCMU nor PCMA".into());
    }
    let (ip, port) = (at.ip(), at.port());
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut list: Vec<String> = payload_types.iter().map(u8::to_string).collect();
    if events {
        list.push(PLAIN_EVENT_PT.to_string());
    }
    let mut sdp = format!(
        "v=0\r\no=- 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n",
        list.join(" ")
    );
    for pt in payload_types {
        let name = if *pt == 0 { "PCMU" } else { "PCMA" };
        sdp.push_str(&format!("a=rtpmap:{pt} {name}/8000\r\n"));
    }
    if events {
        sdp.push_str(&format!(
            "a=rtpmap:{PLAIN_EVENT_PT} telephone-event/8000\r\na=fmtp:{PLAIN_EVENT_PT} 0-16\r\n"
        ));
    }
    Ok(sdp)
}

struct BridgeTask {
    rtc: Rtc,
    browser: UdpSocket,
    browser_local: SocketAddr,
    plain: UdpSocket,
    relay: SocketAddr,
    /// The audio media, once known.
    mid: Option<Mid>,
    /// The host's offer, until the browser's answer arrives on the channel.
    pending: Option<(SdpPendingOffer, mpsc::Receiver<SdpAnswer>)>,
}

/// The RTP the relay gets: one stream of the bridge's own, numbered as it goes.
struct PlainStream {
    ssrc: u32,
    sequence: u16,
}

impl PlainStream {
    /// `marker` starts a talkspurt (the first packet of a telephone-event).
    fn packet(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut packet = Vec::with_capacity(12 + payload.len());
        packet.extend_from_slice(&[0x80, (u8::from(marker) << 7) | (payload_type & 0x7f)]);
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

/// How many already-due timeouts one turn of a bridge handles before it yields.
const MAX_DUE_TIMEOUTS_PER_TURN: u32 = 4;

async fn run(mut b: BridgeTask) {
    let mut mid = b.mid;
    let mut stream = PlainStream {
        ssrc: crate::os_random::random_u64() as u32,
        sequence: crate::os_random::random_u64() as u16,
    };
    let mut unwrap = Unwrap::default();
    let mut last_event = None;
    let mut from_browser = vec![0u8; 2048];
    let mut from_relay = vec![0u8; 2048];
    loop {
        // Drain everything the engine has to say before the next input. A timeout that
        // is already due is handled here and now: new media asks for one (str0m queues
        // a written frame until its next timeout), and a zero-length sleep would wait
        // for the runtime's timer turn, which under load comes late.
        let mut due_handled = 0;
        let timeout = loop {
            match b.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    let now = monotonic_now();
                    // Bounded, so an engine that keeps asking cannot spin the task.
                    if at > now || due_handled == MAX_DUE_TIMEOUTS_PER_TURN {
                        break at;
                    }
                    due_handled += 1;
                    if let Err(e) = b.rtc.handle_input(Input::Timeout(now)) {
                        tracing::debug!("webrtc: {e}");
                    }
                }
                Ok(Output::Transmit(t)) => {
                    let _ = b.browser.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::MediaAdded(added))) => mid = Some(added.mid),
                Ok(Output::Event(Event::MediaData(data))) => {
                    let timestamp = data.time.rebase(Frequency::EIGHT_KHZ).numer() as u32;
                    // All packets of one telephone-event share its timestamp.
                    let (pt, marker) = match data.params.spec().codec {
                        Codec::Tele => {
                            let first = last_event != Some(timestamp);
                            last_event = Some(timestamp);
                            (PLAIN_EVENT_PT, first)
                        }
                        _ => (*data.pt, false),
                    };
                    let packet = stream.packet(pt, marker, timestamp, &data.data);
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
                let Ok((n, source)) = received else { continue };
                if !from_relay_socket(source, b.relay) {
                    continue; // not the relay's: nobody else may speak to the browser
                }
                let packet = &from_relay[..n];
                let (Some(mid), Some(header)) = (mid, rtp::parse(packet)) else { continue };
                if !matches!(header.payload_type, 0 | 8) {
                    continue; // telephone-events (see the module's notes)
                }
                let time = MediaTime::new(
                    unwrap.extend(header.timestamp),
                    Frequency::EIGHT_KHZ,
                );
                let Some(writer) = b.rtc.writer(mid) else { continue };
                let payload = packet[header.payload_offset..].to_vec();
                if let Err(e) = writer.write(header.payload_type.into(), monotonic_now(), time, payload) {
                    tracing::debug!("webrtc: not sent to the browser: {e}");
                }
                continue;
            }
            answer = next_answer(&mut b.pending) => {
                let (Some(answer), Some((pending, _))) = (answer, b.pending.take()) else {
                    return; // the offer was dropped unanswered
                };
                if let Err(e) = b.rtc.sdp_api().accept_answer(pending, answer) {
                    tracing::info!("webrtc: the browser's answer: {e}");
                    return;
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

/// Whether a datagram on the plain side came from the relay socket at `relay` (bound to
/// every address when its IP is unspecified, so then only the port tells).
fn from_relay_socket(source: SocketAddr, relay: SocketAddr) -> bool {
    source.port() == relay.port() && (relay.ip().is_unspecified() || source.ip() == relay.ip())
}

/// The browser's answer to a pending offer; never, when there is none.
async fn next_answer(
    pending: &mut Option<(SdpPendingOffer, mpsc::Receiver<SdpAnswer>)>,
) -> Option<SdpAnswer> {
    match pending {
        Some((_, answers)) => answers.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_relay_socket_speaks_on_the_plain_side() {
        let relay: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        assert!(from_relay_socket(relay, relay));
        assert!(!from_relay_socket(
            "192.0.2.1:40002".parse().unwrap(),
            relay
        ));
        assert!(!from_relay_socket(
            "192.0.2.9:40000".parse().unwrap(),
            relay
        ));
        // A relay bound to every address sends from whichever one the route picks.
        let anywhere: SocketAddr = "0.0.0.0:40000".parse().unwrap();
        assert!(from_relay_socket(
            "127.0.0.1:40000".parse().unwrap(),
            anywhere
        ));
        assert!(!from_relay_socket(
            "127.0.0.1:40001".parse().unwrap(),
            anywhere
        ));
    }
}
