//! Anchored media, the I/O half: per call, an RTP/RTCP port pair per leg (handed out by
//! `ports.rs`), the tasks that move packets between them, and (on a leg the host
//! answered) the task that sends the host's own 20 ms frames. What each packet does is
//! decided by the call's `CallPackets` (`packets.rs`, free of sockets); these tasks
//! receive, ask and send.
//!
//! Symmetric RTP: each side's destination starts as the address its SDP announced and
//! latches to wherever that side's packets really come from (NAT).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::packets::{CallPackets, Endpoint, EngineFeed, HostFrame, Latch};
use super::playout::Playout;
pub use super::ports::MAX_SPARE;
use super::ports::{REST, RtpPorts, SparePairs};
use super::recorder::{Recorder, RecordingFiles};
use super::rtp::{self, DtmfWatch, FRAME, KeyFilter, OutStream};
use super::srtp::{LegSrtp, Refused};
use super::stream::EngineLink;
use super::{
    Codec, EngineAudio, MediaAllocator, MediaEvent, MediaPorts, MediaReport, Playback, Prompt,
    RecordingEnd, Side, StreamRequest, redacted_url,
};
use crate::clock::monotonic_now;
use crate::config::PortRange;
use wasmpbx_sip::sdp::{SdesKey, SrtpSuite};
use wasmpbx_types::ids::SessionId;

/// Totals for `/metrics`.
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub rtp_packets: AtomicU64,
    pub rtcp_packets: AtomicU64,
    pub open_calls: AtomicU64,
    /// Packets of the host's own (prompts, ringback).
    pub played_packets: AtomicU64,
    /// Caller digits not passed on because the core's queue was full (a DTMF flood).
    pub digits_dropped: AtomicU64,
    /// Browsers' WebRTC bridges running now.
    pub webrtc_bridges: AtomicU64,
    /// Media streams to engines running now.
    pub streams_active: AtomicU64,
    /// Audio frames sent to engines, and lost on the way (a full queue, a connection
    /// down or stalled).
    pub stream_frames_sent: AtomicU64,
    pub stream_frames_dropped: AtomicU64,
    /// Stream connections that failed or were lost.
    pub stream_failures: AtomicU64,
    /// SRTP and SRTCP packets dropped on encrypted legs: failed authentication, or
    /// replays.
    pub srtp_rejected: AtomicU64,
    /// Sample frames (8 kHz) of recordings left silent because the disk fell behind.
    pub recording_frames_dropped: Arc<AtomicU64>,
}

/// How long at most a device switched away from is still heard while the new one has
/// sent nothing (make before break): a browser takes ~60–80 ms for ICE and DTLS on a
/// quiet host, but was seen taking 1.5 s on a loaded one (the far end heard the rest as
/// silence with a one-second cap). As long as the core waits to release it.
const RETIRING_AT_MOST: std::time::Duration = std::time::Duration::from_secs(3);

/// Played marks a bidirectional stream holds for its engine before it loses them.
const MARKS_WAITING: usize = 64;

fn lock(shared: &Mutex<CallPackets>) -> MutexGuard<'_, CallPackets> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

struct Call {
    session: SessionId,
    shared: Arc<Mutex<CallPackets>>,
    /// Per side: the RTP and RTCP sockets, and the RTP one's port.
    rtp: [Arc<UdpSocket>; 2],
    rtcp: [Arc<UdpSocket>; 2],
    ports: [u16; 2],
    /// The tasks moving packets between the sides.
    forwarding: Vec<JoinHandle<()>>,
    /// The task sending the host's own frames to A, once it answered.
    host_sender: Option<JoinHandle<()>>,
    /// Packets from A, and packets sent to A.
    packets: Arc<[AtomicU64; 2]>,
    /// Ports bound for a device that may take over a side.
    reserved: Option<Reserved>,
    /// Wakes the host's sender when something is to be played (it sleeps in silence).
    playing: Arc<tokio::sync::Notify>,
    /// Browsers' media, bridged to plain RTP, by the number the call engine knows them
    /// by. A bridge stops when the leg socket it feeds is gone (its browser was flipped
    /// away from, or did not take a flip) or with the call.
    bridges: HashMap<usize, super::webrtc::Bridge>,
    next_bridge: usize,
}

impl Call {
    /// Start (again) the task sending the host's frames to `side`, from that side's port.
    fn spawn_host_sender(&mut self, side: Side, counters: &Arc<RelayCounters>) {
        if let Some(sender) = self.host_sender.take() {
            sender.abort();
        }
        self.host_sender = Some(tokio::spawn(send_host_frames(HostSender {
            socket: self.rtp[side as usize].clone(),
            shared: self.shared.clone(),
            playing: self.playing.clone(),
            packets: self.packets.clone(),
            counters: counters.clone(),
        })));
    }

    fn add_bridge(&mut self, bridge: super::webrtc::Bridge, counters: &RelayCounters) -> usize {
        let n = self.next_bridge;
        self.next_bridge += 1;
        self.bridges.insert(n, bridge);
        counters.webrtc_bridges.fetch_add(1, Relaxed);
        n
    }

    /// Stop the bridges whose leg socket is no longer one of the call's.
    fn prune_bridges(&mut self, counters: &RelayCounters) {
        let sockets: Vec<SocketAddr> = self
            .rtp
            .iter()
            .chain(self.reserved.as_ref().map(|r| &r.rtp))
            .filter_map(|s| s.local_addr().ok())
            .collect();
        let before = self.bridges.len();
        self.bridges
            .retain(|_, b| sockets.iter().any(|s| s.port() == b.relay().port()));
        let stopped = before - self.bridges.len();
        if stopped > 0 {
            counters.webrtc_bridges.fetch_sub(stopped as u64, Relaxed);
            tracing::debug!(stopped, "webrtc bridges of departed browsers stopped");
        }
    }
}

/// Ports bound for a device that may take over a side, and what the host says to that
/// device before it does (the PIN prompt).
struct Reserved {
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    port: u16,
    /// The task prompting the device and listening for its keys, and where to send it
    /// the next prompt.
    prompter: Option<(JoinHandle<()>, mpsc::Sender<Arc<Prompt>>)>,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some((task, _)) = self.prompter.take() {
            task.abort();
        }
    }
}

/// The real media: binds UDP ports and spawns tasks on the current runtime.
pub struct RelayManager {
    ports: RtpPorts,
    /// Ended calls' pairs, still bound, for the next calls.
    spare: SparePairs<LegPair>,
    calls: HashMap<SessionId, Call>,
    events: Option<mpsc::Sender<MediaEvent>>,
    pub counters: Arc<RelayCounters>,
    /// The thread writing recordings (the server's, shared by its shards; or started at
    /// the first recording).
    recordings: Option<RecordingFiles>,
}

/// A leg's RTP/RTCP pair, bound and registered with the runtime.
struct LegPair {
    port: u16,
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
}

impl LegPair {
    /// Whether an ended call's pair may serve another call: nothing holds it any more
    /// (the ended call's tasks are gone) and what reached it while it rested is thrown
    /// away, so no late packet of the old call can reach (or latch) the new one.
    fn ready_again(&self) -> bool {
        Arc::strong_count(&self.rtp) == 1
            && Arc::strong_count(&self.rtcp) == 1
            && discard_waiting(&self.rtp)
            && discard_waiting(&self.rtcp)
    }
}

/// Read and drop the datagrams queued on `socket`; false if they keep coming (a flood:
/// the pair is not worth keeping). Read with system calls of its own, so nothing the
/// runtime remembers about the socket can hide a queued datagram.
fn discard_waiting(socket: &UdpSocket) -> bool {
    /// More than a socket's receive buffer holds of small packets.
    const MOST: usize = 1024;
    let mut buf = [0u8; 64]; // the rest of a longer datagram is dropped with it
    for _ in 0..MOST {
        // Anything but "nothing queued" (a datagram, or an error one left behind such as
        // an ICMP unreachable): read on.
        if let Err(rustix::io::Errno::AGAIN) =
            rustix::net::recv(socket, &mut buf, rustix::net::RecvFlags::DONTWAIT)
        {
            return true;
        }
    }
    false
}

impl RelayManager {
    pub fn new(bind_ip: IpAddr, range: PortRange) -> Self {
        Self {
            ports: RtpPorts::new(bind_ip, range),
            spare: SparePairs::new(MAX_SPARE, REST),
            calls: HashMap::new(),
            events: None,
            counters: Arc::default(),
            recordings: None,
        }
    }

    /// A pair for a leg: an ended call's that has rested, or one bound now — or, when
    /// every free port of the range is resting, the one that has rested longest.
    fn leg_pair(&mut self) -> Result<LegPair, String> {
        if let Some(pair) = self.spare_pair(true) {
            return Ok(pair);
        }
        match self.ports.bind_pair() {
            Ok(pair) => Ok(LegPair {
                port: pair.port,
                rtp: to_tokio(pair.rtp)?,
                rtcp: to_tokio(pair.rtcp)?,
            }),
            Err(e) => self.spare_pair(false).ok_or(e),
        }
    }

    /// The first resting pair (one that has rested, if `rested`) that is ready to serve
    /// again; those that are not are closed on the way.
    fn spare_pair(&mut self, rested: bool) -> Option<LegPair> {
        let now = monotonic_now();
        loop {
            let pair = match rested {
                true => self.spare.take(now)?,
                false => self.spare.take_resting()?,
            };
            if pair.ready_again() {
                return Some(pair);
            }
        }
    }

    /// Keep at most `pairs` ended calls' pairs for the next calls (two open files each;
    /// 0: none, each call binds its own).
    pub fn with_spare_pairs(mut self, pairs: usize) -> Self {
        self.spare = SparePairs::new(pairs, REST);
        self
    }

    /// Ended calls' pairs rest `rest` before serving again (tests: not seconds).
    #[cfg(test)]
    fn resting_for(mut self, rest: std::time::Duration) -> Self {
        self.spare = SparePairs::new(MAX_SPARE, rest);
        self
    }

    /// Keep an ended call's pair for the next calls (closed if there is no room).
    fn release_pair(&mut self, pair: LegPair) {
        self.spare.release(monotonic_now(), pair);
    }

    /// Count into `counters` (shared with the other signalling shards' relays).
    pub fn with_counters(mut self, counters: Arc<RelayCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Recordings are written by `files`.
    pub fn with_recordings(mut self, files: RecordingFiles) -> Self {
        self.recordings = Some(files);
        self
    }

    fn recording_files(&mut self) -> Result<RecordingFiles, String> {
        if let Some(files) = &self.recordings {
            return Ok(files.clone());
        }
        let dropped = self.counters.recording_frames_dropped.clone();
        let files = RecordingFiles::start(dropped)
            .map_err(|e| format!("starting the recordings' writer: {e}"))?;
        Ok(self.recordings.insert(files).clone())
    }

    /// Where live events (the caller's digits) go.
    pub fn with_events(mut self, events: mpsc::Sender<MediaEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// Where a leg's packets reach the host: `side`'s RTP port, or (none) the reserved one.
    fn leg_address(&self, session: SessionId, side: Option<Side>) -> Result<SocketAddr, String> {
        let call = self.calls.get(&session).ok_or("no such call")?;
        let socket = match side {
            Some(side) => &call.rtp[side as usize],
            None => &call.reserved.as_ref().ok_or("no ports reserved")?.rtp,
        };
        let port = socket.local_addr().map_err(|e| e.to_string())?.port();
        Ok(SocketAddr::new(self.ports.bind_ip(), port))
    }

    /// Start the tasks that move one call's packets between its sides.
    fn spawn_forwarding(&self, call: &mut Call) {
        for task in call.forwarding.drain(..) {
            task.abort();
        }
        for from in [Side::A, Side::B] {
            for (sockets, is_rtcp) in [(&call.rtp, false), (&call.rtcp, true)] {
                let i = from as usize;
                call.forwarding.push(tokio::spawn(forward(Forwarding {
                    session: call.session,
                    inbound: sockets[i].clone(),
                    outbound: sockets[1 - i].clone(),
                    from,
                    is_rtcp,
                    shared: call.shared.clone(),
                    packets: call.packets.clone(),
                    counters: self.counters.clone(),
                    events: self.events.clone(),
                })));
            }
        }
    }
}

fn to_tokio(socket: std::net::UdpSocket) -> Result<Arc<UdpSocket>, String> {
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    UdpSocket::from_std(socket)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

impl MediaAllocator for RelayManager {
    fn open(&mut self, session: SessionId) -> Result<MediaPorts, String> {
        let a = self.leg_pair()?;
        let b = match self.leg_pair() {
            Ok(b) => b,
            Err(e) => {
                self.release_pair(a);
                return Err(e);
            }
        };
        let ports = MediaPorts {
            a: a.port,
            b: b.port,
        };
        let mut call = Call {
            session,
            shared: Arc::new(Mutex::new(CallPackets::new())),
            rtp: [a.rtp, b.rtp],
            rtcp: [a.rtcp, b.rtcp],
            ports: [a.port, b.port],
            forwarding: Vec::with_capacity(4),
            host_sender: None,
            packets: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
            reserved: None,
            playing: Arc::default(),
            bridges: HashMap::new(),
            next_bridge: 0,
        };
        self.spawn_forwarding(&mut call);
        self.calls.insert(session, call);
        self.counters.open_calls.fetch_add(1, Relaxed);
        Ok(ports)
    }

    fn reserve_leg(&mut self, session: SessionId) -> Result<u16, String> {
        if !self.calls.contains_key(&session) {
            return Err("no such call".into());
        }
        let pair = self.leg_pair()?;
        let reserved = Reserved {
            rtp: pair.rtp,
            rtcp: pair.rtcp,
            port: pair.port,
            prompter: None,
        };
        let call = self.calls.get_mut(&session).expect("checked");
        call.reserved = Some(reserved);
        lock(&call.shared).reserved_srtp = None;
        Ok(pair.port)
    }

    fn switch_leg(&mut self, session: SessionId, side: Side) -> Result<(), String> {
        let Some(mut call) = self.calls.remove(&session) else {
            return Err("no such call".into());
        };
        let Some(reserved) = call.reserved.take() else {
            self.calls.insert(session, call);
            return Err("no ports reserved".into());
        };
        let i = side as usize;
        let old_rtp = std::mem::replace(&mut call.rtp[i], reserved.rtp.clone());
        call.rtcp[i] = reserved.rtcp.clone();
        call.ports[i] = reserved.port;
        drop(reserved); // its prompter stops
        call.prune_bridges(&self.counters);
        let host_speaks_here = {
            let mut shared = lock(&call.shared);
            shared.switch(side, monotonic_now() + RETIRING_AT_MOST);
            shared.endpoint.as_ref().is_some_and(|e| e.side == side)
        };
        if host_speaks_here {
            // The host's frames (prompts, ringback, an engine's speech) reach the new
            // device from its own port, as its audio does.
            call.spawn_host_sender(side, &self.counters);
        }
        self.spawn_forwarding(&mut call);
        call.forwarding.push(tokio::spawn(retire(Retire {
            inbound: old_rtp,
            outbound: call.rtp[1 - i].clone(),
            shared: call.shared.clone(),
            counters: self.counters.clone(),
        })));
        self.calls.insert(session, call);
        Ok(())
    }

    fn prompt_reserved(
        &mut self,
        session: SessionId,
        remote: SocketAddr,
        codec: Codec,
        event_pt: Option<u8>,
        prompt: Arc<Prompt>,
    ) {
        let Some(call) = self.calls.get_mut(&session) else {
            return;
        };
        let Some(reserved) = call.reserved.as_mut() else {
            return;
        };
        if let Some((_, next)) = &reserved.prompter {
            // Full only if prompts are asked for faster than keys can be pressed.
            let _ = next.try_send(prompt);
            return;
        }
        let (next, prompts) = mpsc::channel(4);
        let task = tokio::spawn(prompt_device(DevicePrompter {
            session,
            shared: call.shared.clone(),
            socket: reserved.rtp.clone(),
            remote,
            latch: Latch::default(),
            codec,
            keys: event_pt.map(DtmfWatch::new).unwrap_or_default(),
            prompt,
            prompts,
            events: self.events.clone(),
            counters: self.counters.clone(),
        }));
        reserved.prompter = Some((task, next));
    }

    fn bridge_webrtc(
        &mut self,
        session: SessionId,
        side: Option<Side>,
        offer: &str,
        public_ip: IpAddr,
    ) -> Result<super::WebRtcAnswer, String> {
        let relay = self.leg_address(session, side)?;
        // The browser's port is one of the media range's (its RTCP twin is not needed:
        // WebRTC multiplexes RTCP).
        let browser = self.ports.bind_pair()?.rtp;
        let (bridge, answer, plain_offer) =
            super::webrtc::Bridge::accept(offer, browser, public_ip, relay)?;
        let call = self.calls.get_mut(&session).expect("found");
        call.add_bridge(bridge, &self.counters);
        Ok(super::WebRtcAnswer {
            answer,
            plain_offer,
        })
    }

    fn offer_webrtc(
        &mut self,
        session: SessionId,
        side: Option<Side>,
        public_ip: IpAddr,
    ) -> Result<(usize, String), String> {
        let relay = self.leg_address(session, side)?;
        let browser = self.ports.bind_pair()?.rtp;
        let (bridge, offer) = super::webrtc::Bridge::offer(browser, public_ip, relay)?;
        let call = self.calls.get_mut(&session).expect("found");
        Ok((call.add_bridge(bridge, &self.counters), offer))
    }

    fn answer_webrtc(
        &mut self,
        session: SessionId,
        bridge: usize,
        answer: &str,
    ) -> Result<String, String> {
        self.calls
            .get_mut(&session)
            .and_then(|c| c.bridges.get_mut(&bridge))
            .ok_or("no such bridge")?
            .complete(answer)
    }

    fn release_reserved(&mut self, session: SessionId) {
        if let Some(call) = self.calls.get_mut(&session) {
            call.reserved = None;
            lock(&call.shared).reserved_srtp = None;
            call.prune_bridges(&self.counters);
        }
    }

    fn secure_leg(
        &mut self,
        session: SessionId,
        side: Option<Side>,
        suite: SrtpSuite,
        remote: Option<&SdesKey>,
    ) -> Result<SdesKey, String> {
        let call = self.calls.get(&session).ok_or("no such call")?;
        if side.is_none() && call.reserved.is_none() {
            return Err("no ports reserved".into());
        }
        let mut shared = lock(&call.shared);
        let leg = match side {
            Some(side) => &mut shared.srtp[side as usize],
            None => &mut shared.reserved_srtp,
        };
        if leg.as_ref().is_none_or(|l| l.suite() != suite) {
            *leg = Some(Box::new(LegSrtp::random(suite)?));
        }
        let leg = leg.as_mut().expect("just made");
        if let Some(remote) = remote {
            leg.set_remote(remote)?;
        }
        Ok(leg.host_key().clone())
    }

    fn plain_leg(&mut self, session: SessionId, side: Option<Side>) {
        if let Some(call) = self.calls.get(&session) {
            let mut shared = lock(&call.shared);
            match side {
                Some(side) => shared.srtp[side as usize] = None,
                None => shared.reserved_srtp = None,
            }
        }
    }

    fn set_remote(&mut self, session: SessionId, side: Side, rtp: SocketAddr) {
        if let Some(call) = self.calls.get(&session) {
            let remotes = &mut lock(&call.shared).remotes;
            let i = side as usize;
            if !remotes.latches[i].is_latched() {
                remotes.rtp[i] = Some(rtp);
                remotes.rtcp[i] = Some(SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1)));
            }
        }
    }

    fn watch_keys(
        &mut self,
        session: SessionId,
        side: Side,
        payload_type: u8,
        swallow: Option<&str>,
    ) {
        if let Some(call) = self.calls.get(&session) {
            let mut shared = lock(&call.shared);
            let i = side as usize;
            shared.dtmf[i] = DtmfWatch::new(payload_type);
            shared.keys_filter[i] = swallow.map(|code| KeyFilter::new(payload_type, code));
        }
    }

    fn answer(&mut self, session: SessionId, side: Side, codec: Codec) {
        let Some(call) = self.calls.get_mut(&session) else {
            return;
        };
        let mut shared = lock(&call.shared);
        if shared.endpoint.as_ref().is_some_and(|e| e.side == side) {
            return;
        }
        if let Some(sender) = call.host_sender.take() {
            sender.abort();
        }
        let i = side as usize;
        if shared.out[i].is_fresh() {
            // A stream of the host's own; one that already carries the other leg's audio
            // (a connected call) goes on with the host's frames in it.
            let random = crate::os_random::random_u64();
            shared.out[i] = OutStream::new(random as u32, (random >> 32) as u16);
        }
        shared.endpoint = Some(Endpoint {
            side,
            codec,
            playback: Playback::Silence,
            position: 0,
        });
        drop(shared);
        call.spawn_host_sender(side, &self.counters);
    }

    fn play(&mut self, session: SessionId, playback: Playback) {
        let Some(call) = self.calls.get(&session) else {
            return;
        };
        let mut shared = lock(&call.shared);
        let shared = &mut *shared;
        if let Some(endpoint) = shared.endpoint.as_mut() {
            let audible = !matches!(playback, Playback::Silence);
            endpoint.playback = playback;
            endpoint.position = 0;
            shared.out[endpoint.side as usize].pause();
            if audible {
                call.playing.notify_one();
            }
        }
    }

    fn start_recording(&mut self, session: SessionId, path: &Path) -> Result<(), String> {
        if !self.calls.contains_key(&session) {
            return Err("no such call".into());
        }
        let files = self.recording_files()?;
        let call = &self.calls[&session];
        let mut shared = lock(&call.shared);
        if shared.recorder.is_none() {
            let recorder = Recorder::create(&files, path, monotonic_now());
            shared.recorder = Some(Box::new(recorder));
        }
        Ok(())
    }

    fn stop_recording(&mut self, session: SessionId) -> Option<RecordingEnd> {
        let call = self.calls.get(&session)?;
        let recorder = lock(&call.shared).recorder.take()?;
        Some(recorder.finish(monotonic_now()))
    }

    fn start_stream(&mut self, session: SessionId, request: StreamRequest) {
        let Some(call) = self.calls.get(&session) else {
            return;
        };
        let stream_sid = format!(
            "MZ{:016x}{:016x}",
            crate::os_random::random_u64(),
            crate::os_random::random_u64()
        );
        tracing::info!(url = %redacted_url(&request.url), stream = %stream_sid, engine_audio = ?request.engine_audio, "media stream starts");
        let mut shared = lock(&call.shared);
        let engine = (request.engine_audio != EngineAudio::Ignore).then(|| {
            let (marks_out, marks) = mpsc::channel(MARKS_WAITING);
            let playout = Arc::new(Mutex::new(Playout::new(marks_out)));
            if shared.engine.is_some() {
                tracing::info!("a newer bidirectional stream speaks to the caller");
            }
            shared.engine = Some(EngineFeed {
                mode: request.engine_audio,
                playout: playout.clone(),
            });
            EngineLink {
                playout,
                marks,
                playing: call.playing.clone(),
            }
        });
        let tap = super::stream::start(request, stream_sid, self.counters.clone(), engine);
        shared.taps.push(tap);
    }

    fn close(&mut self, session: SessionId) -> MediaReport {
        let Some(call) = self.calls.remove(&session) else {
            return MediaReport::default();
        };
        for task in call.forwarding.into_iter().chain(call.host_sender) {
            task.abort();
        }
        // The legs' pairs rest, then serve other calls (the aborted tasks let go of
        // them meanwhile).
        let pairs = call.rtp.into_iter().zip(call.rtcp).zip(call.ports);
        for ((rtp, rtcp), port) in pairs {
            self.release_pair(LegPair { port, rtp, rtcp });
        }
        self.counters.open_calls.fetch_sub(1, Relaxed);
        let bridges = call.bridges.len() as u64;
        self.counters.webrtc_bridges.fetch_sub(bridges, Relaxed);
        let mut shared = lock(&call.shared);
        let digits = std::mem::take(&mut shared.dtmf[0].digits);
        let recording = shared.recorder.take().map(|r| r.finish(monotonic_now()));
        // Dropping the taps ends their streams (each sends its `stop`).
        let streams = shared.taps.drain(..).map(|tap| tap.report()).collect();
        MediaReport {
            packets: (call.packets[0].load(Relaxed), call.packets[1].load(Relaxed)),
            digits,
            recording,
            streams,
        }
    }
}

/// One direction of one call's RTP or RTCP.
struct Forwarding {
    session: SessionId,
    inbound: Arc<UdpSocket>,
    outbound: Arc<UdpSocket>,
    from: Side,
    is_rtcp: bool,
    shared: Arc<Mutex<CallPackets>>,
    packets: Arc<[AtomicU64; 2]>,
    counters: Arc<RelayCounters>,
    events: Option<mpsc::Sender<MediaEvent>>,
}

impl Forwarding {
    /// Tell the core about a key (a flood beyond its queue is dropped and counted).
    fn report(&self, side: Side, digit: char) {
        let event = MediaEvent::Digit {
            session: self.session,
            side,
            digit,
        };
        if !self.send_event(event) {
            self.counters.digits_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Tell the core; false if its queue is full.
    fn send_event(&self, event: MediaEvent) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.try_send(event).is_ok())
    }
}

/// The largest datagram a leg takes (RTP of G.711 is 172 bytes; RTCP compound packets,
/// SRTP's tag, a WebRTC bridge's packets all fit).
const DATAGRAM: usize = 2048;

thread_local! {
    /// Where forwarding tasks read their datagrams: one buffer per runtime thread, not
    /// one per task (four a call, idle most of the time), as each packet is handled
    /// before the task waits again.
    static RECEIVED: std::cell::RefCell<Box<[u8; DATAGRAM]>> =
        std::cell::RefCell::new(Box::new([0; DATAGRAM]));
}

async fn forward(f: Forwarding) {
    loop {
        if f.inbound.readable().await.is_err() {
            return; // the runtime is going away
        }
        let relay = RECEIVED.with_borrow_mut(|buf| {
            // WouldBlock (readiness was stale) or an ICMP report of an earlier send:
            // nothing to do but wait again.
            let (n, source) = f.inbound.try_recv_from(&mut buf[..]).ok()?;
            let packet = &buf[..n];
            let now = monotonic_now();
            let mut call = lock(&f.shared);
            Some(if f.is_rtcp {
                call.rtcp_in(f.from, source, packet)
            } else {
                if f.from == Side::A {
                    f.packets[0].fetch_add(1, Relaxed);
                }
                call.rtp_in(f.from, source, packet, now)
            })
        });
        let Some(relay) = relay else {
            continue;
        };
        if relay.rejected {
            f.counters.srtp_rejected.fetch_add(1, Relaxed);
        }
        if let Some(digit) = relay.digit {
            f.report(f.from, digit);
        }
        if relay.heard {
            f.send_event(MediaEvent::Heard {
                session: f.session,
                side: f.from,
            });
        }
        let Some(destination) = relay.to else {
            continue;
        };
        for packet in &relay.packets {
            if f.outbound.send_to(packet, destination).await.is_err() {
                continue;
            }
            if f.is_rtcp {
                f.counters.rtcp_packets.fetch_add(1, Relaxed);
                continue;
            }
            f.counters.rtp_packets.fetch_add(1, Relaxed);
            if f.from == Side::B {
                f.packets[1].fetch_add(1, Relaxed);
            }
        }
    }
}

/// The device a side was switched away from, heard until the new device is.
struct Retire {
    inbound: Arc<UdpSocket>,
    outbound: Arc<UdpSocket>,
    shared: Arc<Mutex<CallPackets>>,
    counters: Arc<RelayCounters>,
}

/// Relay the old device's RTP (to the other side, in its stream) until the new device
/// is heard, or [`RETIRING_AT_MOST`] has passed; then let its socket go.
async fn retire(r: Retire) {
    let mut buf = vec![0u8; 2048];
    loop {
        let received = tokio::time::timeout(RETIRING_AT_MOST, r.inbound.recv_from(&mut buf));
        let Ok(received) = received.await else {
            return; // it went quiet
        };
        let Ok((n, _)) = received else {
            continue; // an ICMP report of an earlier send
        };
        let Some(relay) = lock(&r.shared).retiring_rtp_in(&buf[..n], monotonic_now()) else {
            return;
        };
        if relay.rejected {
            r.counters.srtp_rejected.fetch_add(1, Relaxed);
        }
        let Some(to) = relay.to else {
            continue;
        };
        for packet in &relay.packets {
            if r.outbound.send_to(packet, to).await.is_ok() {
                r.counters.rtp_packets.fetch_add(1, Relaxed);
            }
        }
    }
}

/// What sends a side the host's own stream.
struct HostSender {
    socket: Arc<UdpSocket>,
    shared: Arc<Mutex<CallPackets>>,
    playing: Arc<tokio::sync::Notify>,
    packets: Arc<[AtomicU64; 2]>,
    counters: Arc<RelayCounters>,
}

/// A side's stream from the host: one frame every 20 ms while something plays; asleep
/// (no timer) while nothing does, as for the whole of a connected call.
async fn send_host_frames(h: HostSender) {
    let mut ticker = tokio::time::interval(FRAME);
    // A late tick sends its frame at once: the prompt keeps its length and the timestamps
    // stay on the 20 ms grid.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        ticker.tick().await;
        let now: Instant = monotonic_now();
        let outgoing = lock(&h.shared).host_frame(now);
        match outgoing {
            HostFrame::Stopped => return,
            HostFrame::Frame {
                packet,
                to: Some(to),
            } => {
                if h.socket.send_to(&packet, to).await.is_ok() {
                    h.packets[1].fetch_add(1, Relaxed);
                    h.counters.played_packets.fetch_add(1, Relaxed);
                }
            }
            HostFrame::Frame { to: None, .. } => {} // nowhere to send yet
            HostFrame::Silent => {
                // Silence: sleep until `play` has something, then start a fresh grid.
                h.playing.notified().await;
                ticker.reset_immediately();
            }
        }
    }
}

/// What talks to a device on reserved ports before it takes a call over.
struct DevicePrompter {
    session: SessionId,
    shared: Arc<Mutex<CallPackets>>,
    socket: Arc<UdpSocket>,
    /// Where the device's packets come from (its signalled address until it latches).
    remote: SocketAddr,
    latch: Latch,
    codec: Codec,
    keys: DtmfWatch,
    prompt: Arc<Prompt>,
    /// Prompts to play next, each from its start.
    prompts: mpsc::Receiver<Arc<Prompt>>,
    events: Option<mpsc::Sender<MediaEvent>>,
    counters: Arc<RelayCounters>,
}

/// Play prompts to the device (a stream of its own: the call's streams are untouched)
/// and report the keys it presses; the device's other packets go nowhere.
async fn prompt_device(mut p: DevicePrompter) {
    let random = crate::os_random::random_u64();
    let mut stream = OutStream::new(random as u32, (random >> 32) as u16);
    let mut position = 0;
    let mut ticker = tokio::time::interval(FRAME);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            _ = ticker.tick(), if position < p.prompt.frames() => {
                let frame = p.prompt.frame(p.codec, position);
                let packet = stream.host_frame(p.codec.payload_type(), frame, monotonic_now());
                position += 1;
                if position == p.prompt.frames() {
                    stream.pause();
                }
                let Some(packet) = lock(&p.shared).encrypt_for_reserved(packet) else {
                    continue;
                };
                if p.socket.send_to(&packet, p.remote).await.is_ok() {
                    p.counters.played_packets.fetch_add(1, Relaxed);
                }
            }
            received = p.socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else {
                    continue; // an ICMP report of an earlier send
                };
                let packet = match lock(&p.shared).decrypt_from_reserved(&buf[..n]) {
                    Ok(packet) => packet,
                    Err(refused) => {
                        if refused == Refused::Rejected {
                            p.counters.srtp_rejected.fetch_add(1, Relaxed);
                        }
                        continue;
                    }
                };
                let packet = packet.as_deref().unwrap_or(&buf[..n]);
                if !p.latch.admit(Some(p.remote), source, packet, monotonic_now()) {
                    continue; // not the device's: neither its keys nor where it is
                }
                p.remote = source;
                let Some(digit) = p.keys.inspect(packet) else {
                    continue;
                };
                lock(&p.shared).stale_key = rtp::parse(packet).map(|h| h.timestamp);
                if let Some(events) = &p.events {
                    let event = MediaEvent::ReservedDigit { session: p.session, digit };
                    if events.try_send(event).is_err() {
                        p.counters.digits_dropped.fetch_add(1, Relaxed);
                    }
                }
            }
            next = p.prompts.recv() => {
                let Some(prompt) = next else {
                    return;
                };
                p.prompt = prompt;
                position = 0;
                ticker.reset_immediately();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Prompt;
    use std::time::Duration;
    use wasmpbx_types::media::g711;

    /// A call id for the tests, told apart by `n`.
    fn id(n: u8) -> SessionId {
        SessionId::new(0, [n; 10])
    }

    fn manager() -> (RelayManager, mpsc::Receiver<MediaEvent>) {
        let (tx, rx) = mpsc::channel(16);
        let relay = RelayManager::new(
            "127.0.0.1".parse().unwrap(),
            PortRange {
                low: 42000,
                high: 42999,
            },
        )
        .with_events(tx);
        (relay, rx)
    }

    async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
            .await
            .expect("a packet within 2 s")
            .unwrap();
        (buf[..n].to_vec(), from)
    }

    /// A browser's SDP offer (str0m standing in for the browser).
    fn browser_offer() -> String {
        use str0m::media::{Direction, MediaKind};
        let mut rtc = str0m::Rtc::builder()
            .clear_codecs()
            .enable_pcmu(true, false)
            .build(monotonic_now());
        let candidate = str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap();
        rtc.add_local_candidate(candidate);
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        change.apply().unwrap().0.to_sdp_string()
    }

    #[tokio::test]
    async fn a_browsers_bridge_stops_when_its_leg_is_flipped_away_or_not_taken() {
        let (mut relay, _) = manager();
        relay.open(id(7)).unwrap();
        let ip = "127.0.0.1".parse().unwrap();
        let bridges = |relay: &RelayManager| relay.counters.webrtc_bridges.load(Relaxed);
        relay
            .bridge_webrtc(id(7), Some(Side::A), &browser_offer(), ip)
            .unwrap();
        assert_eq!(bridges(&relay), 1, "a browser placed the call");
        // A push rings the user's other browser, which does not answer.
        relay.reserve_leg(id(7)).unwrap();
        relay.offer_webrtc(id(7), None, ip).unwrap();
        assert_eq!(bridges(&relay), 2);
        relay.release_reserved(id(7));
        assert_eq!(
            bridges(&relay),
            1,
            "the unanswered browser's bridge stopped"
        );
        // A desk phone pulls the call: the browser's leg is replaced.
        relay.reserve_leg(id(7)).unwrap();
        relay.switch_leg(id(7), Side::A).unwrap();
        assert_eq!(
            bridges(&relay),
            0,
            "the flipped-away browser's bridge stopped"
        );
        // Another browser pulls it, and the call ends.
        relay.reserve_leg(id(7)).unwrap();
        relay
            .bridge_webrtc(id(7), None, &browser_offer(), ip)
            .unwrap();
        relay.switch_leg(id(7), Side::A).unwrap();
        assert_eq!(bridges(&relay), 1);
        relay.close(id(7));
        assert_eq!(bridges(&relay), 0);
    }

    #[tokio::test]
    async fn packets_cross_and_sides_latch_to_their_real_source() {
        let (mut relay, _) = manager();
        let ports = relay.open(id(1)).unwrap();
        let alice = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let bob = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Bob's SDP is right; Alice's SDP announced a wrong port (she is behind NAT).
        relay.set_remote(id(1), Side::B, bob.local_addr().unwrap());
        relay.set_remote(id(1), Side::A, "127.0.0.1:9".parse().unwrap());
        // What isn't RTP goes nowhere; RTP on A's port goes to B as it is (each side
        // hears one stream, whose first source passes unchanged).
        alice
            .send_to(b"hello bob", ("127.0.0.1", ports.a))
            .await
            .unwrap();
        let hello = rtp(7, 1600, 5);
        alice.send_to(&hello, ("127.0.0.1", ports.a)).await.unwrap();
        let (data, from) = recv(&bob).await;
        assert_eq!(data, hello);
        assert_eq!(from.port(), ports.b, "bob hears the host's B port");
        // Bob answers; it reaches Alice where her packets came from, not where her SDP
        // said.
        let answer = rtp(1, 160, 9);
        bob.send_to(&answer, ("127.0.0.1", ports.b)).await.unwrap();
        let (data, from) = recv(&alice).await;
        assert_eq!(data, answer);
        assert_eq!(from.port(), ports.a);
        assert_eq!(relay.close(id(1)).packets, (2, 1));
        assert_eq!(relay.counters.open_calls.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn an_ended_calls_ports_serve_the_next_call_after_resting_without_its_late_packets() {
        let rest = Duration::from_millis(100);
        let (relay, _) = manager();
        let mut relay = relay.resting_for(rest);
        let first = relay.open(id(1)).unwrap();
        relay.close(id(1));
        // Straight after, the next call gets ports of its own.
        let second = relay.open(id(2)).unwrap();
        assert!(
            ![first.a, first.b].contains(&second.a),
            "{first:?} {second:?}"
        );
        // A late packet of the first call, to its A port, while it rests.
        let old_caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        old_caller
            .send_to(&rtp(9, 9000, 0x0bad), ("127.0.0.1", first.a))
            .await
            .unwrap();
        tokio::time::sleep(rest + Duration::from_millis(20)).await;
        // Rested: the next call gets the first call's pairs, oldest first.
        let third = relay.open(id(3)).unwrap();
        assert_eq!((third.a, third.b), (first.a, first.b));
        let (alice, bob) = (
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        );
        relay.set_remote(id(3), Side::B, bob.local_addr().unwrap());
        relay.set_remote(id(3), Side::A, alice.local_addr().unwrap());
        let hello = rtp(1, 160, 5);
        alice.send_to(&hello, ("127.0.0.1", third.a)).await.unwrap();
        // Bob hears the new caller's first packet, not the old call's late one.
        assert_eq!(recv(&bob).await.0, hello);
        let answer = rtp(1, 160, 6);
        bob.send_to(&answer, ("127.0.0.1", third.b)).await.unwrap();
        // A latched to the new caller, never to the old one.
        assert_eq!(recv(&alice).await.0, answer);
        assert_eq!(relay.close(id(3)).packets, (1, 1));
    }

    #[tokio::test]
    async fn when_every_free_port_is_resting_a_call_takes_a_pair_that_has_not_rested() {
        let (tx, _events) = mpsc::channel(16);
        // Room for one call's two pairs, on an address of its own (no other test's
        // ports in the way).
        let mut relay = RelayManager::new(
            "127.0.88.1".parse().unwrap(),
            PortRange {
                low: 42990,
                high: 42993,
            },
        )
        .with_events(tx);
        let first = relay.open(id(1)).unwrap();
        relay.close(id(1));
        // The aborted tasks let go of the sockets when the runtime drops them.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = relay.open(id(2)).unwrap();
        assert_eq!((second.a, second.b), (first.a, first.b));
    }

    #[tokio::test]
    async fn an_answered_caller_hears_the_prompt_then_the_other_leg_in_one_stream() {
        let (mut relay, mut events) = manager();
        let ports = relay.open(id(2)).unwrap();
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let callee = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay.set_remote(id(2), Side::A, caller.local_addr().unwrap());
        relay.set_remote(id(2), Side::B, callee.local_addr().unwrap());
        relay.watch_keys(id(2), Side::A, 101, None);
        relay.answer(id(2), Side::A, Codec::Pcma);
        let prompt = Arc::new(Prompt::from_samples("three-frames", vec![1000; 480]));
        relay.play(id(2), Playback::Once(prompt));
        let mut headers = Vec::new();
        for _ in 0..3 {
            let (packet, _) = recv(&caller).await;
            assert_eq!(packet.len(), 12 + 160);
            headers.push(rtp::parse(&packet).unwrap());
        }
        assert!(headers[0].marker && !headers[1].marker);
        assert!(headers.iter().all(|h| h.payload_type == 8));
        assert_eq!(headers[2].timestamp, headers[0].timestamp.wrapping_add(320));
        // The prompt is over; the callee's audio is renumbered into the same stream.
        let mut theirs = vec![0x80, 8, 0, 9, 0, 0, 0, 0, 0xca, 0xfe, 0, 1];
        theirs.extend_from_slice(&[0xd5; 160]);
        callee
            .send_to(&theirs, ("127.0.0.1", ports.b))
            .await
            .unwrap();
        let (packet, _) = recv(&caller).await;
        let relayed = rtp::parse(&packet).unwrap();
        assert_eq!(relayed.ssrc, headers[0].ssrc);
        assert_eq!(relayed.sequence, headers[2].sequence.wrapping_add(1));
        assert!(relayed.marker);
        // The caller's digit is reported as it happens, once.
        let mut digit = vec![0x80, 101, 0, 1, 0, 0, 1, 0, 0, 0, 0, 7, 2, 0, 0, 160];
        caller
            .send_to(&digit, ("127.0.0.1", ports.a))
            .await
            .unwrap();
        digit[13] = 0x80; // end
        caller
            .send_to(&digit, ("127.0.0.1", ports.a))
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(2), events.recv())
            .await
            .unwrap();
        assert_eq!(
            event,
            Some(MediaEvent::Digit {
                session: id(2),
                side: Side::A,
                digit: '2'
            })
        );
        let report = relay.close(id(2));
        assert_eq!(report.digits, "2");
        assert!(
            events.try_recv().is_err(),
            "the end packet is the same event"
        );
    }

    fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    #[tokio::test]
    async fn a_new_device_on_side_b_continues_the_stream_side_a_hears() {
        let (mut relay, _) = manager();
        let ports = relay.open(id(3)).unwrap();
        let far_end = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let desk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mobile = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay.set_remote(id(3), Side::A, far_end.local_addr().unwrap());
        relay.set_remote(id(3), Side::B, desk.local_addr().unwrap());
        desk.send_to(&rtp(100, 8000, 1), ("127.0.0.1", ports.b))
            .await
            .unwrap();
        let before = rtp::parse(&recv(&far_end).await.0).unwrap();
        // The mobile takes over on new ports; the desk's port is gone.
        let new_port = relay.reserve_leg(id(3)).unwrap();
        relay.switch_leg(id(3), Side::B).unwrap();
        assert_ne!(new_port, ports.b);
        relay.set_remote(id(3), Side::B, mobile.local_addr().unwrap());
        mobile
            .send_to(&rtp(5, 777_000, 2), ("127.0.0.1", new_port))
            .await
            .unwrap();
        let after = rtp::parse(&recv(&far_end).await.0).unwrap();
        assert_eq!(after.ssrc, before.ssrc, "one SSRC for the far end");
        assert_eq!(after.sequence, before.sequence.wrapping_add(1));
        assert!(after.timestamp.wrapping_sub(before.timestamp) >= 160);
        // The far end's audio reaches the mobile, from the new port.
        let for_the_mobile = rtp(3, 480, 7);
        far_end
            .send_to(&for_the_mobile, ("127.0.0.1", ports.a))
            .await
            .unwrap();
        let (data, from) = recv(&mobile).await;
        assert_eq!((data, from.port()), (for_the_mobile, new_port));
        relay.close(id(3));
    }

    #[tokio::test]
    async fn the_hosts_frames_reach_a_new_device_from_its_own_port() {
        let (mut relay, _) = manager();
        let ports = relay.open(id(14)).unwrap();
        let desk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mobile = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay.set_remote(id(14), Side::B, desk.local_addr().unwrap());
        // The host speaks to side B (the far end is away); the mobile takes B over.
        relay.answer(id(14), Side::B, Codec::Pcmu);
        relay.play(
            id(14),
            Playback::Loop(Arc::new(Prompt::from_samples("tone", vec![500; 160]))),
        );
        assert_eq!(recv(&desk).await.1.port(), ports.b);
        let new_port = relay.reserve_leg(id(14)).unwrap();
        relay.switch_leg(id(14), Side::B).unwrap();
        relay.set_remote(id(14), Side::B, mobile.local_addr().unwrap());
        let (_, from) = recv(&mobile).await;
        assert_eq!(from.port(), new_port, "not from the port the desk had");
        relay.close(id(14));
    }

    #[tokio::test]
    async fn ringback_to_a_connected_far_end_continues_its_stream() {
        let (mut relay, _) = manager();
        let ports = relay.open(id(4)).unwrap();
        let far_end = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let desk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay.set_remote(id(4), Side::A, far_end.local_addr().unwrap());
        relay.set_remote(id(4), Side::B, desk.local_addr().unwrap());
        desk.send_to(&rtp(100, 8000, 1), ("127.0.0.1", ports.b))
            .await
            .unwrap();
        let relayed = rtp::parse(&recv(&far_end).await.0).unwrap();
        // The desk has gone; the host plays ringback in the same stream.
        relay.answer(id(4), Side::A, Codec::Pcmu);
        relay.play(
            id(4),
            Playback::Loop(Arc::new(Prompt::from_samples("tone", vec![500; 160]))),
        );
        let (packet, _) = recv(&far_end).await;
        let host = rtp::parse(&packet).unwrap();
        assert_eq!(host.ssrc, relayed.ssrc, "one stream for the far end");
        assert_eq!(host.sequence, relayed.sequence.wrapping_add(1));
        assert!(host.marker);
        relay.close(id(4));
    }

    #[tokio::test]
    async fn a_device_on_reserved_ports_hears_a_prompt_and_its_keys_are_reported() {
        let (mut relay, mut events) = manager();
        let ports = relay.open(id(5)).unwrap();
        let far_end = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let desk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let lobby = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay.set_remote(id(5), Side::A, far_end.local_addr().unwrap());
        relay.set_remote(id(5), Side::B, desk.local_addr().unwrap());
        let reserved = relay.reserve_leg(id(5)).unwrap();
        let prompt = Arc::new(Prompt::from_samples("enter-pin", vec![700; 320]));
        relay.prompt_reserved(
            id(5),
            lobby.local_addr().unwrap(),
            Codec::Pcmu,
            Some(101),
            prompt,
        );
        let (packet, from) = recv(&lobby).await;
        assert_eq!(from.port(), reserved);
        let first = rtp::parse(&packet).unwrap();
        assert!(first.marker && first.payload_type == 0);
        let (packet, _) = recv(&lobby).await;
        assert_eq!(
            rtp::parse(&packet).unwrap().sequence,
            first.sequence.wrapping_add(1)
        );
        // The device's key is reported; its audio goes nowhere.
        let digit = [0x80, 101, 0, 1, 0, 0, 1, 0, 0, 0, 0, 7, 4, 0x80, 0, 160];
        lobby
            .send_to(&digit, ("127.0.0.1", reserved))
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(2), events.recv())
            .await
            .unwrap();
        assert_eq!(
            event,
            Some(MediaEvent::ReservedDigit {
                session: id(5),
                digit: '4'
            })
        );
        // Another sender's keys are not the device's: they are not reported.
        let intruder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let nine = [0x80, 101, 0, 2, 0, 0, 2, 0, 0, 0, 0, 8, 9, 0x80, 0, 160];
        intruder
            .send_to(&nine, ("127.0.0.1", reserved))
            .await
            .unwrap();
        let heard = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
        assert!(heard.is_err(), "{heard:?}");
        // Meanwhile the call goes on between the far end and the desk.
        desk.send_to(&rtp(1, 160, 9), ("127.0.0.1", ports.b))
            .await
            .unwrap();
        assert_eq!(rtp::parse(&recv(&far_end).await.0).unwrap().ssrc, 9);
        // Once the device takes the call, its packets are the call's.
        relay.switch_leg(id(5), Side::B).unwrap();
        relay.set_remote(id(5), Side::B, lobby.local_addr().unwrap());
        // ... except the repeated end of the last key it pressed before.
        lobby
            .send_to(&digit, ("127.0.0.1", reserved))
            .await
            .unwrap();
        lobby
            .send_to(&rtp(50, 99_000, 4), ("127.0.0.1", reserved))
            .await
            .unwrap();
        let relayed = rtp::parse(&recv(&far_end).await.0).unwrap();
        assert_eq!((relayed.ssrc, relayed.sequence), (9, 2));
        relay.close(id(5));
    }

    #[tokio::test]
    async fn the_host_can_speak_to_side_b_in_the_stream_it_hears() {
        let (mut relay, _) = manager();
        let ports = relay.open(id(6)).unwrap();
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let desk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay.set_remote(id(6), Side::A, caller.local_addr().unwrap());
        relay.set_remote(id(6), Side::B, desk.local_addr().unwrap());
        caller
            .send_to(&rtp(40, 3200, 11), ("127.0.0.1", ports.a))
            .await
            .unwrap();
        let relayed = rtp::parse(&recv(&desk).await.0).unwrap();
        relay.answer(id(6), Side::B, Codec::Pcmu);
        relay.play(
            id(6),
            Playback::Once(Arc::new(Prompt::from_samples("beep", vec![500; 160]))),
        );
        let (packet, from) = recv(&desk).await;
        let host = rtp::parse(&packet).unwrap();
        assert_eq!(from.port(), ports.b);
        assert_eq!(
            (host.ssrc, host.sequence),
            (11, relayed.sequence.wrapping_add(1))
        );
        assert!(host.marker);
        relay.close(id(6));
    }

    /// An RTP packet of G.711 μ-law whose every payload byte is `byte`.
    fn rtp_saying(seq: u16, byte: u8) -> Vec<u8> {
        let mut p = rtp(seq, u32::from(seq) * 160, 40 + u32::from(byte));
        let end = p.len();
        p[12..end].fill(byte);
        p
    }

    async fn next(messages: &mut mpsc::UnboundedReceiver<serde_json::Value>) -> serde_json::Value {
        tokio::time::timeout(Duration::from_secs(5), messages.recv())
            .await
            .expect("the engine got a message")
            .expect("the engine is listening")
    }

    /// `from` says `byte` (packet `seq`) to the relay's `port` and `to` hears it: what the
    /// engine got of it.
    async fn said_through(
        from: &UdpSocket,
        port: u16,
        to: &UdpSocket,
        (seq, byte): (u16, u8),
        messages: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    ) -> serde_json::Value {
        from.send_to(&rtp_saying(seq, byte), ("127.0.0.1", port))
            .await
            .unwrap();
        recv(to).await;
        next(messages).await
    }

    fn payload(media: &serde_json::Value) -> Vec<u8> {
        use base64::Engine as _;
        let text = media["media"]["payload"].as_str().unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    #[tokio::test]
    async fn a_calls_stream_goes_on_through_a_flip_and_ends_with_the_call() {
        use futures_util::StreamExt;
        // The engine: the first connection's messages, in order.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/engine", listener.local_addr().unwrap());
        let (kept, mut messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            while let Some(Ok(message)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                    let _ = kept
                        .send(serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap());
                }
            }
        });
        let (mut relay, _) = manager();
        let ports = relay.open(id(9)).unwrap();
        let far_end = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let desk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mobile = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay.set_remote(id(9), Side::A, far_end.local_addr().unwrap());
        relay.set_remote(id(9), Side::B, desk.local_addr().unwrap());
        relay.start_stream(
            id(9),
            StreamRequest {
                url: url.clone(),
                tracks: super::super::Tracks::Both,
                engine_audio: EngineAudio::Ignore,
                call_sid: "call-9".into(),
                parameters: vec![("location".into(), "sydney".into())],
            },
        );
        assert_eq!(next(&mut messages).await["event"], "connected");
        let start = next(&mut messages).await;
        assert_eq!(start["start"]["callSid"], "call-9", "{start}");
        assert_eq!(start["start"]["customParameters"]["location"], "sydney");

        // The caller (side A) speaks: inbound; the desk answers: outbound.
        let said = said_through(&far_end, ports.a, &desk, (1, 0x11), &mut messages).await;
        assert_eq!(
            (said["media"]["track"].as_str(), payload(&said)),
            (Some("inbound"), vec![0x11; 160])
        );
        let heard = said_through(&desk, ports.b, &far_end, (1, 0x22), &mut messages).await;
        assert_eq!(
            (heard["media"]["track"].as_str(), payload(&heard)),
            (Some("outbound"), vec![0x22; 160])
        );

        // The mobile takes side B over: the same stream, its outbound track goes on.
        let new_port = relay.reserve_leg(id(9)).unwrap();
        relay.switch_leg(id(9), Side::B).unwrap();
        relay.set_remote(id(9), Side::B, mobile.local_addr().unwrap());
        let heard = said_through(&mobile, new_port, &far_end, (2, 0x33), &mut messages).await;
        assert_eq!(heard["media"]["track"], "outbound");
        assert_eq!(heard["media"]["chunk"], "2", "the track goes on: {heard}");
        assert_eq!(payload(&heard), vec![0x33; 160]);
        let said = said_through(&far_end, ports.a, &mobile, (2, 0x44), &mut messages).await;
        assert_eq!(
            (said["media"]["chunk"].as_str(), payload(&said)),
            (Some("2"), vec![0x44; 160])
        );

        // The call ends: the record's count, and `stop`.
        let report = relay.close(id(9));
        assert_eq!(report.streams.len(), 1);
        assert_eq!(
            (report.streams[0].frames, report.streams[0].dropped),
            (4, 0)
        );
        assert_eq!(report.streams[0].url, url);
        let stop = next(&mut messages).await;
        assert_eq!(stop["event"], "stop", "{stop}");
        assert_eq!(stop["stop"]["callSid"], "call-9");
        assert_eq!(relay.counters.stream_frames_sent.load(Relaxed), 4);
    }

    #[tokio::test]
    async fn an_engine_speaks_to_the_caller_hears_its_marks_back_and_loses_only_its_connection_to_an_oversized_message()
     {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        // The engine: once started, it sends garbage, says 0x5a for 100 ms and marks it;
        // once the mark comes back, a message far too big.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/engine", listener.local_addr().unwrap());
        let (kept, mut messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            use base64::Engine as _;
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let message = serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap();
                if message["event"] == "start" {
                    let audio = base64::engine::general_purpose::STANDARD.encode([0x5a; 800]);
                    let replies = [
                        "not json".to_string(),
                        serde_json::json!({"event": "media", "media": {"payload": audio}})
                            .to_string(),
                        serde_json::json!({"event": "mark", "mark": {"name": "said"}}).to_string(),
                    ];
                    for reply in replies {
                        ws.send(Message::text(reply)).await.unwrap();
                    }
                }
                if message["event"] == "mark" {
                    // Then a message past the host's limit: the host drops the connection.
                    let _ = ws.send(Message::text("x".repeat(100_000))).await;
                }
                let _ = kept.send(message);
            }
        });
        let (mut relay, _) = manager();
        relay.open(id(10)).unwrap();
        let far_end = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay.set_remote(id(10), Side::A, far_end.local_addr().unwrap());
        // The host answered the caller and plays nothing: the engine is all it hears.
        relay.answer(id(10), Side::A, Codec::Pcma);
        relay.start_stream(
            id(10),
            StreamRequest {
                url,
                tracks: super::super::Tracks::Inbound,
                engine_audio: EngineAudio::Replace,
                call_sid: "call-10".into(),
                parameters: Vec::new(),
            },
        );
        let expected = g711::encode(Codec::Pcma, g711::ulaw_decode(0x5a));
        for i in 0..5 {
            let (packet, _) = recv(&far_end).await;
            let header = rtp::parse(&packet).unwrap();
            assert_eq!(header.payload_type, 8, "in the caller's codec");
            assert_eq!(header.marker, i == 0, "one talk spurt");
            assert_eq!(packet[header.payload_offset..], [expected; 160]);
        }
        assert_eq!(next(&mut messages).await["event"], "connected");
        assert_eq!(next(&mut messages).await["event"], "start");
        let mark = next(&mut messages).await;
        assert_eq!(mark["event"], "mark", "{mark}");
        assert_eq!(mark["mark"]["name"], "said");
        // Then silence: nothing more is sent.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), far_end.recv_from(&mut [0; 64]))
                .await
                .is_err()
        );
        // The oversized message costs the connection (counted, retried), not the call.
        for _ in 0..100 {
            if relay.counters.stream_failures.load(Relaxed) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(relay.counters.stream_failures.load(Relaxed), 1);
        let report = relay.close(id(10));
        assert_eq!(report.streams[0].played, 5);
    }
}
