//! The I/O edge of SIP: UDP sockets, TCP and TLS listeners and connections, the clock and
//! the timers, around the sans-IO [`Pbx`] cores — one per signalling shard
//! (`sip.shards`), each owned by a task of its own; [`dispatch`] picks a message's shard.
//!
//! Stream framing (TCP, TLS) is `sip::stream`'s: a message over 64 KiB, a missing or bad
//! Content-Length, or garbage closes the connection (a stream cannot be
//! re-synchronised). A CRLFCRLF keep-alive is answered with CRLF (RFC 5626 §3.5.1).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::call::{CallSummary, PullSearch, SessionId, UserCall};
use crate::clock::{Clock, SystemClock, monotonic_now};
use crate::config::{Config, Transport as ConfigTransport};
use crate::directory::{DeviceInfo, MemoryDirectory};
use crate::pbx::{Ambient, Pbx, PbxCounters, PbxOutput};
use crate::registrar::{Binding, BindingChange, EdgePhone, PasswordRefusal};
use crate::routing::{Decision, Disposition, Event, Fallback};
use crate::script::{EventWorld, LoadedScript, ScriptHost};
use crate::sip::local::LocalAddrs;
use crate::sip::message::MAX_MESSAGE_BYTES;
use crate::sip::stream::{self, Frame};
use crate::sip::transaction::{Peer, Transport};
use crate::tls::{TlsTrunks, TrunkTls};
use crate::trunks::{Health as TargetHealth, ResolvedTarget, TargetNews, TrunkStatus};
use crate::writer::{Progress, StoreWriter, Write};
use wasmpbx_types::script::ScriptVersion;

mod dispatch;
mod script_lane;
use crate::stream_slots::{self, StreamSlot, StreamSlots};
use dispatch::{Dispatch, Handed, PIN_RENEW};

/// What the listeners, connections and the other shards send a core task.
enum Input {
    Query(Query),
    Bytes {
        bytes: Vec<u8>,
        peer: Peer,
        /// When it was read off the socket: how long it then waited for the core is
        /// the overload signal.
        received: std::time::Instant,
    },
    /// A pull INVITE another shard handed here (`PbxOutput::HandOff`).
    HandedOff {
        bytes: Vec<u8>,
        peer: Peer,
        search: PullSearch,
    },
    Decision {
        session: SessionId,
        decision: Decision,
        pinned: Option<ScriptVersion>,
    },
    /// The script's answer to a call's `call-ended` (its tags rewrite the record).
    CallEndedDecision {
        session: SessionId,
        decision: Decision,
    },
    /// The script's answer to an external event (an engine's intent).
    ExternalDecision {
        session: SessionId,
        decision: Decision,
    },
    FlipDecision {
        flip: u64,
        decision: Result<crate::flip::FlipDecision, String>,
    },
    /// A stream connection opened (its writer is in the dispatcher's table): what
    /// waited for it may go.
    Connected {
        peer: Peer,
    },
    Disconnected {
        peer: Peer,
    },
    /// A connection the core asked for (towards a TCP or TLS trunk) could not be made.
    DialFailed {
        peer: Peer,
    },
    /// A trunk's host name resolved (or failed to).
    TrunkResolved {
        trunk: String,
        answer: Result<Vec<ResolvedTarget>, String>,
    },
    /// The config file was re-read (restart-only keys already the running ones).
    Reconfigure(Arc<Config>),
    /// The phones the edge has registered, as the shared store lists them now.
    PhonesBehindEdge(Vec<EdgePhone>),
    /// A trunk's `inbound` host names resolved.
    TrunkInbound {
        trunk: String,
        addresses: Vec<std::net::IpAddr>,
    },
    /// The home shard's registrar changed these bindings: for this shard's copy.
    Bindings(Arc<[BindingChange]>),
    /// Trunk targets another shard found down or up again.
    TrunkNews(Arc<[TargetNews]>),
}

/// The receive buffer asked for on SIP UDP sockets.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// The bound SIP listeners (ports resolved when the config asked for port 0).
#[derive(Debug, Clone)]
pub struct Listeners {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl Listeners {
    /// The host's own address per transport (the first listener of each), for Via and
    /// Contact; a listener on every interface (`0.0.0.0`, `::`) is named by `public_ip`,
    /// the address peers reach the host on. `None` without a UDP listener.
    pub fn locals(&self, public_ip: std::net::IpAddr) -> Option<LocalAddrs> {
        let reachable = |addr: &SocketAddr| match addr.ip().is_unspecified() {
            true => SocketAddr::new(public_ip, addr.port()),
            false => *addr,
        };
        Some(LocalAddrs {
            udp: reachable(self.udp.first()?),
            tcp: self.tcp.first().map(reachable),
            tls: self.tls.first().map(reachable),
        })
    }
}

/// The bound SIP sockets.
pub struct Sockets {
    pub udp: Vec<Arc<UdpSocket>>,
    pub tcp: Vec<TcpListener>,
    /// TLS listeners: plain TCP until each connection's handshake.
    pub tls: Vec<TcpListener>,
}

/// How often [`bind`] draws new ports when a TCP listener on port 0 finds its UDP
/// sibling's port taken.
const BIND_ATTEMPTS: usize = 10;

/// Bind every configured listener. A TCP listener on port 0 reuses the port its UDP
/// sibling on the same address got, so one port serves both; when that port is taken
/// for TCP (another program's connection), all are bound again on new ports.
pub async fn bind(config: &Config) -> anyhow::Result<(Sockets, Listeners)> {
    let mut attempt = 1;
    loop {
        match try_bind(config).await {
            Err(BindError::SiblingTaken(why)) if attempt < BIND_ATTEMPTS => {
                tracing::debug!("sip.listen: {why}; binding again on new ports");
                attempt += 1;
            }
            Err(BindError::SiblingTaken(why)) => return Err(why),
            Err(BindError::Other(why)) => return Err(why),
            Ok(bound) => return Ok(bound),
        }
    }
}

enum BindError {
    /// A TCP listener on port 0 could not have its UDP sibling's port.
    SiblingTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for BindError {
    fn from(e: anyhow::Error) -> Self {
        BindError::Other(e)
    }
}

impl From<std::io::Error> for BindError {
    fn from(e: std::io::Error) -> Self {
        BindError::Other(e.into())
    }
}

async fn try_bind(config: &Config) -> Result<(Sockets, Listeners), BindError> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    let mut tls = Vec::new();
    let mut listeners = Listeners {
        udp: Vec::new(),
        tcp: Vec::new(),
        tls: Vec::new(),
    };
    for l in config
        .sip
        .listen
        .iter()
        .filter(|l| l.transport == ConfigTransport::Udp)
    {
        let socket = UdpSocket::bind(l.addr)
            .await
            .with_context(|| format!("sip.listen: cannot bind {l}"))?;
        // Bursts of a thousand calls a second overflow the default receive buffer
        // (~208 KiB) while the core task is busy; the kernel caps what it grants.
        if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
            tracing::warn!("sip.listen: cannot enlarge the receive buffer of {l}: {e}");
        }
        listeners.udp.push(socket.local_addr()?);
        udp.push(Arc::new(socket));
    }
    for l in config
        .sip
        .listen
        .iter()
        .filter(|l| l.transport == ConfigTransport::Tcp)
    {
        let mut addr = l.addr;
        let mut sibling_port = false;
        if addr.port() == 0
            && let Some(sibling) = listeners.udp.iter().find(|u| u.ip() == addr.ip())
        {
            addr.set_port(sibling.port());
            sibling_port = true;
        }
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                let why =
                    anyhow::Error::new(e).context(format!("sip.listen: cannot bind tcp:{addr}"));
                return Err(match sibling_port {
                    true => BindError::SiblingTaken(why),
                    false => BindError::Other(why),
                });
            }
        };
        listeners.tcp.push(listener.local_addr()?);
        tcp.push(listener);
    }
    for l in config
        .sip
        .listen
        .iter()
        .filter(|l| l.transport == ConfigTransport::Tls)
    {
        let listener = TcpListener::bind(l.addr)
            .await
            .with_context(|| format!("sip.listen: cannot bind {l}"))?;
        listeners.tls.push(listener.local_addr()?);
        tls.push(listener);
    }
    Ok((Sockets { udp, tcp, tls }, listeners))
}

/// Finished calls by disposition and their flips by result, for `/metrics`.
#[derive(Debug, Default)]
pub struct CallStats {
    pub answered: std::sync::atomic::AtomicU64,
    pub abandoned: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    /// Flips: done, denied, no answer, cancelled.
    pub flips: [std::sync::atomic::AtomicU64; 4],
    /// Store writes dropped because the store fell too far behind.
    pub store_writes_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Messages sent before the call record they follow was written (the store was
    /// more than [`RECORD_WAIT`] behind).
    pub records_late: std::sync::atomic::AtomicU64,
    /// The SIP loop's timers that fired over 10 ms, 100 ms and 1 s late ([`TIMER_LATE`]):
    /// a busy or stalled loop, which every message waits for too.
    pub timers_late: [std::sync::atomic::AtomicU64; 3],
    /// The latest a timer has fired since start, in microseconds.
    pub timer_lag_max_us: std::sync::atomic::AtomicU64,
    /// Connections to a `tls:` listener whose handshake failed (no shared cipher, not
    /// TLS at all, no answer in time).
    pub tls_handshakes_failed: std::sync::atomic::AtomicU64,
    /// SIP datagrams dropped because their shard's inbox was full (the shard stalled).
    pub sip_dropped_busy: std::sync::atomic::AtomicU64,
    /// How long SIP messages wait for the core, smoothed (microseconds): the overload
    /// signal ([`crate::overload::Admission`]).
    pub sip_wait_us: std::sync::atomic::AtomicU64,
    /// Finished calls to a location's flip number: location → counts per disposition
    /// ([`crate::metrics::DISPOSITIONS`]). Bounded by the locations configured.
    by_location: std::sync::Mutex<std::collections::BTreeMap<String, [u64; 3]>>,
}

impl CallStats {
    /// Count a finished call.
    fn record(&self, record: &wasmpbx_types::record::CallRecord) {
        let (counter, index) = match record.disposition {
            Disposition::Answered => (&self.answered, 0),
            Disposition::Abandoned => (&self.abandoned, 1),
            Disposition::Failed => (&self.failed, 2),
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(location) = &record.location {
            let mut by_location = self.by_location.lock().unwrap_or_else(|p| p.into_inner());
            match by_location.get_mut(location) {
                Some(counts) => counts[index] += 1,
                None => {
                    let mut counts = [0; 3];
                    counts[index] = 1;
                    by_location.insert(location.clone(), counts);
                }
            }
        }
        for flip in &record.flips {
            let i = match flip.result {
                crate::flip::FlipResult::Done => 0,
                crate::flip::FlipResult::Denied(_) => 1,
                crate::flip::FlipResult::NoAnswer => 2,
                crate::flip::FlipResult::Cancelled => 3,
            };
            self.flips[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Finished calls per location and disposition, by location name.
    pub fn by_location(&self) -> Vec<(String, [u64; 3])> {
        let by_location = self.by_location.lock().unwrap_or_else(|p| p.into_inner());
        by_location.iter().map(|(l, c)| (l.clone(), *c)).collect()
    }
}

/// Say when an overload begins (new calls refused) and when it ends.
fn note_overload(episode: crate::overload::Episode, wait: std::time::Duration) {
    match episode {
        crate::overload::Episode::Began => tracing::warn!(
            wait_ms = wait.as_millis() as u64,
            "overloaded: refusing part of the new calls with 503"
        ),
        crate::overload::Episode::Ended => {
            tracing::info!("no longer overloaded: taking every new call")
        }
    }
}

/// How late a SIP timer fired, counted in [`CallStats::timers_late`].
pub const TIMER_LATE: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(10),
    std::time::Duration::from_millis(100),
    std::time::Duration::from_secs(1),
];

/// How often the loop's and the receivers' warnings of an overloaded host are logged, at
/// most.
const SAY_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A timer fired `lag` after it was due: count it, and say so when it is over a second
/// (once a minute at most: a loop that late means the machine or the host is overloaded).
fn note_timer_lag(
    stats: &CallStats,
    lag: std::time::Duration,
    now: std::time::Instant,
    said: &mut Option<std::time::Instant>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    for (bound, count) in TIMER_LATE.iter().zip(&stats.timers_late) {
        if lag > *bound {
            count.fetch_add(1, Relaxed);
        }
    }
    let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
    stats.timer_lag_max_us.fetch_max(micros, Relaxed);
    let quiet = said.is_some_and(|at| now.saturating_duration_since(at) < SAY_AT_MOST_EVERY);
    if lag > TIMER_LATE[2] && !quiet {
        tracing::warn!(
            lag_ms = lag.as_millis() as u64,
            "the SIP loop ran its timers {} ms late: every message waited about as long (the machine or the host is overloaded)",
            lag.as_millis()
        );
        *said = Some(now);
    }
}

/// How long a message waits for the call record it follows (the answer's 200 for the
/// record of an answered call, the BYE's 200 for an ended one) before it goes anyway: a
/// sick disk delays calls' messages by this much, and stops no call.
pub const RECORD_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// At the end of a drain, or once the rest was hung up: how long the ended calls' scripts
/// have to answer `call-ended` (their tags complete the records) before the shard stops
/// anyway. Each answer takes at most the script deadline; this covers a queue of them
/// behind a slow one.
const LAST_WORDS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A step's network output, sent once its call records are written.
enum Io {
    Send { peer: Peer, bytes: Vec<u8> },
    Close { peer: Peer },
}

/// What the SIP cores work with besides sockets, shared by the shards.
#[derive(Clone)]
pub struct Wiring {
    /// Where records and registration changes go (written off this task).
    pub store: StoreWriter,
    pub directory: Arc<MemoryDirectory>,
    pub scripts: Arc<ScriptHost>,
    /// Text-to-speech for `say`.
    pub speaker: Arc<wasmpbx_media::speech::Speaker>,
    pub stats: Arc<CallStats>,
    /// The TLS trunks' client settings, checked at start.
    pub tls_trunks: TlsTrunks,
    /// The event stream (`/api/events`).
    pub events: Arc<crate::events::Events>,
    /// The decision journal: served events are recorded and shadowed there.
    pub journal: crate::decisions::Journal,
    /// Told when a call is answered, flipped or ended: the node's status says so at
    /// once (`cluster::heartbeat`), not at the next beat.
    pub calls_changed: Arc<tokio::sync::Notify>,
}

/// Asks the core tasks about their state (the admin API): a question about one call
/// goes to each shard until one holds it; one about all calls gathers every shard's
/// answer; registrations, sign-ins and trunks are the home shard's.
#[derive(Clone)]
pub struct CoreHandle {
    dispatch: Arc<Dispatch>,
}

/// The receiving end of one shard's inputs.
pub struct Inbox {
    shard: usize,
    dispatch: Arc<Dispatch>,
    rx: mpsc::Receiver<Input>,
}

/// The cores' input channels, one per shard: a handle for queries, the inboxes for
/// [`run`].
pub fn channel(shards: usize) -> (CoreHandle, Vec<Inbox>) {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..shards.max(1))
        .map(|_| mpsc::channel::<Input>(4096))
        .unzip();
    let dispatch = Arc::new(Dispatch::new(txs));
    let inboxes = rxs
        .into_iter()
        .enumerate()
        .map(|(shard, rx)| Inbox {
            shard,
            dispatch: dispatch.clone(),
            rx,
        })
        .collect();
    (CoreHandle { dispatch }, inboxes)
}

/// The home shard: the registrar, the sign-ins, the registrations with carriers.
const HOME: usize = 0;

impl CoreHandle {
    /// Ask one shard; None if it has stopped.
    async fn ask<T>(
        &self,
        shard: usize,
        query: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Query,
    ) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if !self.dispatch.to(shard, Input::Query(query(reply))).await {
            return None;
        }
        answer.await.ok()
    }

    /// Ask every shard; None if any has stopped.
    async fn ask_all<T>(
        &self,
        query: impl Fn(tokio::sync::oneshot::Sender<T>) -> Query,
    ) -> Option<Vec<T>> {
        let mut answers = Vec::with_capacity(self.dispatch.shards());
        for shard in 0..self.dispatch.shards() {
            answers.push(self.ask(shard, &query).await?);
        }
        Some(answers)
    }

    /// The live registrations (None if the core has stopped).
    pub async fn registrations(&self) -> Option<Registrations> {
        self.ask(HOME, Query::Registrations).await
    }

    /// How many registrations there are, and phones behind the edge: counted on the
    /// home shard's task, nothing copied (a scrape of `/metrics` asks every 15 s or so).
    pub async fn registration_counts(&self) -> Option<(usize, usize)> {
        self.ask(HOME, Query::RegistrationCounts).await
    }

    /// The cores' message counters, summed.
    pub async fn counters(&self) -> Option<PbxCounters> {
        let all = self.ask_all(Query::Counters).await?;
        Some(
            all.into_iter()
                .fold(PbxCounters::default(), |sum, c| sum + c),
        )
    }

    /// Ask each shard in turn until the one holding `session` answers.
    async fn ask_holder<T>(
        &self,
        query: impl Fn(tokio::sync::oneshot::Sender<Option<T>>) -> Query,
    ) -> Option<Option<T>> {
        for shard in 0..self.dispatch.shards() {
            if let Some(answer) = self.ask(shard, &query).await? {
                return Some(Some(answer));
            }
        }
        Some(None)
    }

    /// Push a live call to the user's other devices (`POST /api/calls/{id}/flip`).
    pub async fn flip(
        &self,
        session: SessionId,
        targets: Vec<String>,
    ) -> Option<Result<(), crate::call::Refusal>> {
        let answer = self
            .ask_holder(|reply| Query::Flip {
                session,
                targets: targets.clone(),
                reply,
            })
            .await?;
        Some(answer.unwrap_or_else(|| Err((404, "No Such Call".into()))))
    }

    /// An outside system's event for a live call (`POST /api/calls/{id}/events`).
    pub async fn call_event(
        &self,
        session: SessionId,
        event: CallEventRequest,
    ) -> Option<Result<(), crate::call::Refusal>> {
        let answer = self
            .ask_holder(|reply| Query::Event {
                session,
                event: event.clone(),
                reply,
            })
            .await?;
        Some(answer.unwrap_or_else(|| Err((404, "no such live call".into()))))
    }

    /// The phones the edge has registered now (`[cluster] edge`): the users' devices
    /// there, for pushes and scripts. False if the core has stopped.
    pub async fn phones_behind_edge(&self, phones: Vec<EdgePhone>) -> bool {
        self.dispatch
            .to_all(|| Input::PhonesBehindEdge(phones.clone()))
            .await
    }

    /// Run on a re-read config from now on; false if the core has stopped.
    pub async fn reconfigure(&self, config: Arc<Config>) -> bool {
        self.dispatch
            .to_all(|| Input::Reconfigure(config.clone()))
            .await
    }

    /// Whether the core drains, and how many calls are live (None once it has stopped).
    pub async fn health(&self) -> Option<Health> {
        let all = self.ask_all(Query::Health).await?;
        Some(Health {
            draining: all.iter().any(|h| h.draining),
            live_calls: all.iter().map(|h| h.live_calls).sum(),
            users_in_calls: latest_of_each(all.into_iter().flat_map(|h| h.users_in_calls)),
        })
    }

    /// Each trunk's targets, health and registration: the registration as the home
    /// shard keeps it; a target down on any shard (a call there failed on it) is down.
    pub async fn trunks(&self) -> Option<Vec<TrunkStatus>> {
        let mut shards = self.ask_all(Query::Trunks).await?.into_iter();
        let mut trunks = shards.next()?;
        for other in shards.flatten() {
            let Some(trunk) = trunks.iter_mut().find(|t| t.name == other.name) else {
                continue;
            };
            for seen in other.targets {
                if let Some(target) = trunk.targets.iter_mut().find(|t| t.address == seen.address)
                    && seen.state == TargetHealth::Down
                {
                    *target = seen;
                }
            }
        }
        Some(trunks)
    }

    /// The live calls.
    pub async fn calls(&self) -> Option<Vec<CallSummary>> {
        Some(self.ask_all(Query::Calls).await?.concat())
    }

    /// Check a user's extension and password (failures count towards the throttle):
    /// the user's id, or why not.
    pub async fn sign_in(
        &self,
        extension: String,
        password: String,
        source: std::net::IpAddr,
    ) -> Option<Result<String, PasswordRefusal>> {
        self.ask(HOME, |reply| Query::SignIn {
            extension,
            password,
            source,
            reply,
        })
        .await
    }

    /// A user's live calls, on any of their devices.
    pub async fn user_calls(&self, user_id: String) -> Option<Vec<UserCall>> {
        let all = self
            .ask_all(|reply| Query::UserCalls {
                user_id: user_id.clone(),
                reply,
            })
            .await?;
        Some(all.concat())
    }
}

/// The devices the node knows: registered with it, and (with an edge) the phones
/// registered with the edge, as the last heartbeat read them.
pub struct Registrations {
    pub here: Vec<Binding>,
    pub behind_edge: Vec<Binding>,
}

enum Query {
    Registrations(tokio::sync::oneshot::Sender<Registrations>),
    RegistrationCounts(tokio::sync::oneshot::Sender<(usize, usize)>),
    Calls(tokio::sync::oneshot::Sender<Vec<CallSummary>>),
    SignIn {
        extension: String,
        password: String,
        source: std::net::IpAddr,
        reply: tokio::sync::oneshot::Sender<Result<String, PasswordRefusal>>,
    },
    UserCalls {
        user_id: String,
        reply: tokio::sync::oneshot::Sender<Vec<UserCall>>,
    },
    Counters(tokio::sync::oneshot::Sender<PbxCounters>),
    Trunks(tokio::sync::oneshot::Sender<Vec<TrunkStatus>>),
    Health(tokio::sync::oneshot::Sender<Health>),
    /// None when the call is not on this shard.
    Flip {
        session: SessionId,
        targets: Vec<String>,
        reply: tokio::sync::oneshot::Sender<Option<Result<(), crate::call::Refusal>>>,
    },
    /// None when the call is not on this shard.
    Event {
        session: SessionId,
        event: CallEventRequest,
        reply: tokio::sync::oneshot::Sender<Option<Result<(), crate::call::Refusal>>>,
    },
}

/// An event for a call, as the admin API took it (already checked).
#[derive(Debug, Clone)]
pub struct CallEventRequest {
    pub name: String,
    pub value: String,
    pub confidence: Option<f64>,
}

/// The SIP core's state for `/api/health`, `/healthz` and the node's status.
#[derive(Debug, Clone)]
pub struct Health {
    pub draining: bool,
    pub live_calls: usize,
    /// The users with a device on a connected call here, and when the most recent of
    /// each one's calls arrived.
    pub users_in_calls: BTreeMap<String, jiff::Timestamp>,
}

/// Each user once, with the latest of their times.
fn latest_of_each(
    users: impl Iterator<Item = (String, jiff::Timestamp)>,
) -> BTreeMap<String, jiff::Timestamp> {
    let mut latest = BTreeMap::new();
    for (user, at) in users {
        latest
            .entry(user)
            .and_modify(|l: &mut jiff::Timestamp| *l = (*l).max(at))
            .or_insert(at);
    }
    latest
}

/// What the service's signals asked of the SIP core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Running,
    /// SIGTERM: take no new calls; stop when the last live call ends, or at the drain
    /// timeout (then hang up what is left).
    Drain,
    /// A second signal: hang up what is left now.
    Now,
}

/// One signalling shard: its core, its inbox, and what its calls' media noticed (the
/// callers' digits).
pub struct Shard {
    pub pbx: Pbx,
    pub inbox: Inbox,
    pub media_events: mpsc::Receiver<crate::media::MediaEvent>,
}

/// Run SIP until `stop` says so and the drain is over; `tls` serves the TLS listeners.
/// Each shard runs on a task of its own; the first to fail stops the rest.
pub async fn run(
    shards: Vec<Shard>,
    sockets: Sockets,
    tls: Option<TlsAcceptor>,
    wiring: Wiring,
    stop: tokio::sync::watch::Receiver<Stop>,
) -> anyhow::Result<()> {
    let dispatch = shards
        .first()
        .context("no signalling shard to run")?
        .inbox
        .dispatch
        .clone();
    let Sockets {
        udp,
        tcp,
        tls: tls_listeners,
    } = sockets;
    for socket in &udp {
        tokio::spawn(udp_receiver(
            socket.clone(),
            dispatch.clone(),
            wiring.stats.clone(),
        ));
    }
    let slots = StreamSlots::new(stream_slots::PER_SOURCE, stream_slots::IN_ALL);
    for listener in tcp {
        tokio::spawn(tcp_acceptor(listener, dispatch.clone(), slots.clone()));
    }
    if let Some(acceptor) = &tls {
        for listener in tls_listeners {
            tokio::spawn(tls_acceptor(
                listener,
                acceptor.clone(),
                dispatch.clone(),
                wiring.stats.clone(),
                slots.clone(),
            ));
        }
    }
    let udp: Vec<(bool, Arc<UdpSocket>)> = udp
        .into_iter()
        .filter_map(|socket| Some((socket.local_addr().ok()?.is_ipv4(), socket)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards {
        tasks.spawn(run_shard(shard, udp.clone(), wiring.clone(), stop.clone()));
    }
    while let Some(ended) = tasks.join_next().await {
        let failure = match ended {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("a signalling shard ended: {e}"),
        };
        tasks.abort_all();
        return Err(failure);
    }
    Ok(())
}

/// One shard's loop: its inputs into its core, the core's outputs out.
async fn run_shard(
    shard: Shard,
    udp: Vec<(bool, Arc<UdpSocket>)>,
    wiring: Wiring,
    mut stop: tokio::sync::watch::Receiver<Stop>,
) -> anyhow::Result<()> {
    let Shard {
        mut pbx,
        inbox,
        mut media_events,
    } = shard;
    let Wiring {
        store,
        directory,
        scripts,
        speaker,
        stats,
        tls_trunks,
        events,
        journal,
        calls_changed,
    } = wiring;
    let Inbox {
        shard,
        dispatch,
        mut rx,
    } = inbox;
    let home = shard == HOME;
    // This shard's own inbox, for the answers of scripts run off the task.
    let tx = dispatch.inbox(shard);
    let lane = script_lane::ScriptLane::start(shard).context("starting a script thread")?;
    let mut tracker = crate::events::Tracker::default();
    if home {
        tracker.restored(
            pbx.registrar
                .all()
                .map(|b| (b.user_id.clone(), b.contact.clone())),
        );
    }
    let clock = SystemClock;
    let ambient = || Ambient {
        now: monotonic_now(),
        wall_ms: clock.now().as_millisecond(),
        random: wasmpbx_media::os_random::random_u64(),
    };
    let mut network = Network {
        udp,
        dialing: HashMap::new(),
        tls_trunks,
        dispatch: dispatch.clone(),
        shard,
    };
    // One step's messages, then the messages waiting for call records to be written.
    let mut step: Vec<Io> = Vec::new();
    let mut held = Held::new(store.progress());
    let mut written = store.progress().watch();
    if home {
        publish_directory(&pbx, &directory);
    }
    // The home shard looks the trunks' names up, for every shard.
    let mut resolvers = match home {
        true => spawn_trunk_resolvers(&pbx.config().clone(), &dispatch)?,
        false => Vec::new(),
    };
    pbx.start_trunks_and_edges(ambient());
    // A shard holding dialogs handed to it keeps the dispatcher sending them here.
    let mut renew_pins = tokio::time::interval(PIN_RENEW);
    let sharded = dispatch.shards() > 1;
    // Set while draining: when what is left is hung up.
    let mut drain_until: Option<std::time::Instant> = None;
    // Set once what was left is hung up (drain timeout or second signal): this shard
    // stops as soon as its ended calls' scripts have had their last word.
    let mut hung_up_all = false;
    // Once no call is left: until when the ended calls' `call-ended` answers are awaited.
    let mut last_words_until: Option<std::time::Instant> = None;
    // Whether this shard has no call left while draining, and how many have.
    let (mut drained, mut all_drained) = (false, dispatch.watch_drained());
    // When the loop last said it ran late.
    let mut lag_said: Option<std::time::Instant> = None;
    let mut admission = crate::overload::Admission::default();

    loop {
        let deadline = pbx
            .poll_timeout()
            .into_iter()
            .chain(held.deadline())
            .chain(last_words_until.filter(|_| !drained))
            .min();
        let drain_over = async {
            match drain_until {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            input = rx.recv() => match input {
                Some(Input::Bytes { bytes, peer, received }) => {
                    let now = ambient();
                    let (refused, episode) = admission.observe(now.now.saturating_duration_since(received));
                    if let Some(episode) = episode {
                        note_overload(episode, admission.wait());
                    }
                    pbx.set_refused_share(refused);
                    stats
                        .sip_wait_us
                        .store(admission.wait().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
                    pbx.handle_bytes(now, &bytes, peer);
                }
                Some(Input::HandedOff { bytes, peer, search }) => pbx.handle_handed_off(ambient(), &bytes, peer, search),
                Some(Input::Decision { session, decision, pinned }) => pbx.handle_decision(ambient(), session, decision, pinned),
                Some(Input::CallEndedDecision { session, decision }) => pbx.handle_call_ended_decision(ambient(), session, decision),
                Some(Input::ExternalDecision { session, decision }) => pbx.handle_external_decision(ambient(), session, decision),
                Some(Input::FlipDecision { flip, decision }) => pbx.handle_flip_decision(ambient(), flip, decision),
                Some(Input::Connected { peer }) => network.connected(peer),
                Some(Input::DialFailed { peer }) => {
                    network.dialing.remove(&peer.addr);
                    pbx.transport_failed(ambient(), peer);
                }
                Some(Input::Disconnected { peer }) => pbx.connection_closed(ambient(), peer),
                Some(Input::TrunkResolved { trunk, answer }) => {
                    if let Ok(targets) = &answer {
                        network.tls_trunks.resolved(&trunk, targets.iter().map(|t| t.addr));
                    }
                    pbx.trunk_resolved(ambient(), &trunk, answer);
                }
                Some(Input::Reconfigure(config)) => {
                    // Trunk names are looked up again: added or changed trunks need it.
                    if home {
                        for resolver in resolvers.drain(..) {
                            resolver.abort();
                        }
                        match spawn_trunk_resolvers(&config, &dispatch) {
                            Ok(spawned) => resolvers = spawned,
                            Err(e) => tracing::error!("trunk resolvers after the reload: {e}"),
                        }
                    }
                    network.tls_trunks = TlsTrunks::reloaded(&config);
                    pbx.reconfigure(ambient(), config);
                    if home {
                        publish_directory(&pbx, &directory);
                    }
                }
                Some(Input::PhonesBehindEdge(phones)) => {
                    // Listed at every heartbeat: the directory is rebuilt only on a change.
                    if pbx.registrar.set_phones_behind_edge(phones) && home {
                        publish_directory(&pbx, &directory);
                    }
                }
                Some(Input::Bindings(changes)) => pbx.replicate_bindings(&changes),
                Some(Input::TrunkNews(news)) => pbx.hear_trunk_news(ambient(), &news),
                Some(Input::TrunkInbound { trunk, addresses }) => pbx.trunk_inbound_resolved(&trunk, addresses),
                Some(Input::Query(query)) => match query {
                    Query::Registrations(reply) => {
                        let _ = reply.send(Registrations {
                            here: pbx.registrar.all().cloned().collect(),
                            behind_edge: pbx.registrar.behind_edge().cloned().collect(),
                        });
                    }
                    Query::RegistrationCounts(reply) => {
                        let _ = reply.send((pbx.registrar.all().count(), pbx.registrar.behind_edge().count()));
                    }
                    Query::Calls(reply) => { let _ = reply.send(pbx.calls.summaries()); }
                    Query::SignIn { extension, password, source, reply } => {
                        let _ = reply.send(pbx.sign_in(ambient(), &extension, &password, source));
                    }
                    Query::UserCalls { user_id, reply } => {
                        let _ = reply.send(pbx.user_calls(&user_id));
                    }
                    Query::Counters(reply) => {
                        let _ = reply.send(pbx.counters());
                    }
                    Query::Trunks(reply) => { let _ = reply.send(pbx.trunk_status(monotonic_now())); }
                    Query::Health(reply) => {
                        let _ = reply.send(Health {
                            draining: pbx.is_draining(),
                            live_calls: pbx.calls.count(),
                            users_in_calls: pbx.calls.users_in_calls(),
                        });
                    }
                    Query::Flip { session, targets, reply } => {
                        let held = pbx.calls.holds(session);
                        let _ = reply.send(held.then(|| pbx.request_push(ambient(), session, targets)));
                    }
                    Query::Event { session, event, reply } => {
                        let CallEventRequest { name, value, confidence } = event;
                        let held = pbx.calls.holds(session);
                        let _ = reply.send(held.then(|| pbx.call_event(ambient(), session, name, value, confidence)));
                    }
                },
                None => return Ok(()),
            },
            Some(event) = media_events.recv() => pbx.handle_media_event(ambient(), event),
            _ = renew_pins.tick(), if sharded => {
                dispatch.renew(shard, pbx.calls.foreign_call_ids(pbx.shard()), monotonic_now());
            }
            // The store wrote something: held messages may go (below).
            Ok(()) = written.changed(), if !held.is_empty() => {}
            _ = sleep => {
                if let Some(due) = deadline {
                    let now = monotonic_now();
                    note_timer_lag(&stats, now.saturating_duration_since(due), now, &mut lag_said);
                }
                pbx.handle_timeout(ambient());
            }
            changed = stop.changed(), if !hung_up_all => {
                let asked = if changed.is_ok() { *stop.borrow() } else { Stop::Now };
                if asked == Stop::Drain && drain_until.is_none() {
                    let drain_timeout = std::time::Duration::from_secs(pbx.config().server.drain_timeout_s.into());
                    let live = pbx.calls.count();
                    tracing::info!(live_calls = live, timeout_s = drain_timeout.as_secs(), "draining: new calls get 503");
                    pbx.start_draining(u32::try_from(drain_timeout.as_secs()).unwrap_or(u32::MAX).max(1));
                    drain_until = Some(monotonic_now() + drain_timeout);
                } else if asked == Stop::Now {
                    tracing::info!(live_calls = pbx.calls.count(), "second signal: hanging up what is left");
                    if drain_until.is_none() {
                        // No new call while the last words are awaited.
                        pbx.start_draining(1);
                    }
                    pbx.hang_up_all(ambient());
                    hung_up_all = true;
                }
            }
            // Another shard drained: this one may be the last waiting (below).
            Ok(()) = all_drained.changed(), if drained => {}
            _ = drain_over, if !hung_up_all => {
                tracing::info!(live_calls = pbx.calls.count(), "drain timeout: hanging up what is left");
                pbx.hang_up_all(ambient());
                hung_up_all = true;
            }
        }
        // Call records go to the store before the messages they describe leave, so a
        // call its far end saw answered (or ended) is on disk even if the host dies the
        // next instant: the step's messages are held until the writer has them (at most
        // RECORD_WAIT), while the task goes on with the next input.
        let mut record_ticket = None;
        while let Some(output) = pbx.poll_output() {
            match output {
                PbxOutput::Transmit { peer, bytes } => step.push(Io::Send { peer, bytes }),
                PbxOutput::Close { peer } => step.push(Io::Close { peer }),
                PbxOutput::Route {
                    session,
                    script,
                    location,
                    pinned,
                    call,
                    event,
                    span,
                } => {
                    // Scripts run off the task (the shard's script lane): a slow one (up
                    // to its deadline) never stalls SIP. The decision comes back as an input.
                    let (scripts, speaker, tx, events, journal) = (
                        scripts.clone(),
                        speaker.clone(),
                        tx.clone(),
                        events.clone(),
                        journal.clone(),
                    );
                    lane.run(move || {
                        let _span = span.entered();
                        let serve = || {
                            let config = scripts.services.config.load_full();
                            let location = location.as_deref().and_then(|l| config.location(l));
                            // The call engine holds the version opaquely; only the runtime
                            // looks inside.
                            let pinned = pinned.and_then(|v| v.get::<LoadedScript>());
                            let mut world = EventWorld::live(scripts.services.clock.now());
                            let (mut decision, loaded) = scripts.route_in(
                                &mut world,
                                &script,
                                pinned.as_ref(),
                                location,
                                &call,
                                &event,
                            );
                            // To the journal, off this path: recorded with what the script
                            // saw, and given to the location's shadow script.
                            let shadow = location.and_then(|l| journal.choices.of(l));
                            let record = loaded.clone().filter(|_| config.scripts.record_decisions);
                            if shadow.is_some() || record.is_some() {
                                journal.submit(crate::decisions::Job {
                                    served: crate::decisions::Served {
                                        location: location.map(|l| l.name.clone()),
                                        session: session.to_string(),
                                        call: call.clone(),
                                        event: event.clone(),
                                        decision: decision.clone(),
                                        world,
                                    },
                                    record,
                                    shadow,
                                    span: tracing::Span::current(),
                                });
                            }
                            if let Some(fallback) = &decision.fallback {
                                events.publish(|| crate::events::What::Fallback {
                                    session: session.to_string(),
                                    script: script.clone(),
                                    cause: fallback.cause,
                                });
                            }
                            // Speech is rendered here, off the call engine's task.
                            speaker.render_actions(&mut decision.actions, &config.media.say_voice);
                            (decision, loaded)
                        };
                        let (decision, loaded) = script_lane::answer_or(serve, || {
                            let config = scripts.services.config.load_full();
                            let location = location.as_deref().and_then(|l| config.location(l));
                            let cause = "host";
                            // Counted and told like a script's own failure: whichever
                            // code failed, the call took the fallback.
                            scripts.metrics.record_fallback(&script, "", cause);
                            events.publish(|| crate::events::What::Fallback {
                                session: session.to_string(),
                                script: script.clone(),
                                cause,
                            });
                            let fallback = Fallback {
                                cause,
                                message: "the host failed running the script".into(),
                            };
                            (Decision::fallback(&event, location, None, fallback), None)
                        });
                        // Every decision comes back, `call-ended`'s too: its tags
                        // complete the call's record.
                        let input = match event {
                            Event::CallEnded { .. } => {
                                Input::CallEndedDecision { session, decision }
                            }
                            Event::External { .. } => Input::ExternalDecision { session, decision },
                            _ => Input::Decision {
                                session,
                                decision,
                                pinned: loaded.map(ScriptVersion::new),
                            },
                        };
                        let _ = tx.blocking_send(input);
                    });
                }
                PbxOutput::DecideFlip {
                    flip,
                    policy,
                    request,
                    span,
                } => {
                    tracker.flip_requested(&events, &request);
                    let (scripts, tx) = (scripts.clone(), tx.clone());
                    lane.run(move || {
                        let _span = span.entered();
                        let decision = script_lane::answer_or(
                            || {
                                scripts
                                    .decide_flip(&policy, &request)
                                    .map_err(|failure| failure.to_string())
                            },
                            || Err("the host failed asking the flip policy".into()),
                        );
                        let _ = tx.blocking_send(Input::FlipDecision { flip, decision });
                    });
                }
                PbxOutput::CallStarted { session, call } => {
                    tracker.call_started(&events, session, &call);
                }
                PbxOutput::Record(record) => {
                    calls_changed.notify_one();
                    stats.record(&record);
                    tracker.ended_record(&events, &record);
                    record_ticket = Some(store.write(Write::Record(Box::new(record))));
                }
                PbxOutput::RecordLive(record) => {
                    calls_changed.notify_one();
                    tracker.live_record(&events, &record);
                    record_ticket = Some(store.write(Write::Record(Box::new(record))));
                }
                // Tags from the script, after the call: nothing waits on them.
                PbxOutput::RecordRewritten(record) => {
                    store.write(Write::Record(Box::new(record)));
                }
                PbxOutput::TrunkNews(news) => {
                    if sharded {
                        let news: Arc<[TargetNews]> = news.into();
                        dispatch.tell_others(shard, || Input::TrunkNews(news.clone()));
                    }
                }
                PbxOutput::HandOff {
                    shard: to,
                    peer,
                    bytes,
                    search,
                } => {
                    dispatch.hand_off(to, peer, bytes, search);
                }
                PbxOutput::Bindings(changes) => {
                    // The home shard's registrar: the other shards keep copies.
                    let changes: Arc<[BindingChange]> = changes.into();
                    if sharded {
                        dispatch
                            .to_others(shard, || Input::Bindings(changes.clone()))
                            .await;
                    }
                    let mut users: Vec<String> = Vec::new();
                    for change in changes.iter() {
                        let user_id = match change {
                            BindingChange::Upsert(binding) => &binding.user_id,
                            BindingChange::Remove { user_id, .. } => user_id,
                        };
                        if !users.contains(user_id) {
                            users.push(user_id.clone());
                        }
                        tracker.bindings(&events, change);
                        store.write(Write::Binding(Box::new(change.clone())));
                    }
                    // Only the users whose bindings changed: a pass over every binding
                    // at each registration made registering N phones cost N².
                    for user_id in users {
                        directory.replace_user(&user_id, devices_of(&pbx, &user_id));
                    }
                }
            }
        }
        if record_ticket.is_none() && held.is_empty() {
            // Most steps: no record to wait for, nothing held ahead.
            for io in step.drain(..) {
                network.perform(io).await;
            }
        } else {
            held.push(record_ticket, step.drain(..), monotonic_now());
            held.release(&mut network, monotonic_now(), &stats).await;
        }
        // The drain is over when the last call has ended (its BYEs and record are out) on
        // every shard, and the ended calls' scripts have answered `call-ended` (their tags
        // complete the records) or were given LAST_WORDS_WAIT to.
        let none_left = hung_up_all || (drain_until.is_some() && pbx.calls.count() == 0);
        if none_left && !drained {
            let now = monotonic_now();
            let until = *last_words_until.get_or_insert(now + LAST_WORDS_WAIT);
            let unanswered = pbx.calls.awaiting_call_ended();
            if unanswered == 0 || now >= until {
                if unanswered > 0 {
                    tracing::warn!(
                        calls = unanswered,
                        "stopping without the call-ended answers of {unanswered} calls (their records stand without those tags)"
                    );
                }
                drained = true;
                dispatch.drained();
            }
        }
        if drained && (hung_up_all || *all_drained.borrow_and_update() == dispatch.shards()) {
            held.flush(&mut network, &stats).await;
            if hung_up_all {
                // The BYEs just queued for TCP and WebSocket peers: let their writers send.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            tracing::info!("SIP stopped");
            return Ok(());
        }
    }
}

/// Where the core's messages go: the UDP sockets, the TCP, TLS and WebSocket connections,
/// and connections being made towards TCP and TLS trunks.
struct Network {
    /// The UDP listeners, each with whether it is IPv4 (looked up once, not per send).
    udp: Vec<(bool, Arc<UdpSocket>)>,
    /// Messages for peers being connected to, sent once the connection is up.
    dialing: HashMap<SocketAddr, Vec<Vec<u8>>>,
    tls_trunks: TlsTrunks,
    dispatch: Arc<Dispatch>,
    /// The shard these are, told when its connections fail.
    shard: usize,
}

impl Network {
    /// Queue `bytes` for `peer` and connect to it (over TLS with `tls`) unless already
    /// connecting.
    fn dial(&mut self, peer: Peer, bytes: Vec<u8>, tls: Option<TrunkTls>) {
        let queue = self.dialing.entry(peer.addr).or_default();
        if queue.is_empty() {
            tokio::spawn(dial(peer, tls, self.dispatch.clone(), self.shard));
        }
        queue.push(bytes);
    }

    fn connected(&mut self, peer: Peer) {
        let waiting = self.dialing.remove(&peer.addr).unwrap_or_default();
        if let Some(writer) = self.dispatch.connection(peer.addr) {
            for bytes in waiting {
                let _ = writer.try_send(bytes);
            }
        }
    }

    /// A device's connection that closed: it must connect again, so what was to go to it
    /// fails at once (the transaction ends now, not at Timer B or F).
    fn unreachable(&self, peer: Peer) {
        let transport = peer.transport.as_str();
        tracing::info!(peer = %peer.addr, "no {transport} connection to send on");
        let tx = self.dispatch.inbox(self.shard);
        tokio::spawn(async move { tx.send(Input::DialFailed { peer }).await });
    }

    async fn perform(&mut self, io: Io) {
        let (peer, bytes) = match io {
            Io::Send { peer, bytes } => (peer, bytes),
            Io::Close { peer } => {
                self.dispatch.close(peer.addr);
                return;
            }
        };
        match peer.transport {
            Transport::Udp => {
                // UDP sends do not block for long; a failure is a lost datagram, which
                // the transaction layer's retransmissions cover.
                let family = self.udp.iter().find(|(v4, _)| *v4 == peer.addr.is_ipv4());
                if let Some((_, socket)) = family
                    && let Err(e) = socket.send_to(&bytes, peer.addr).await
                {
                    tracing::debug!(peer = %peer.addr, "udp send failed: {e}");
                }
            }
            Transport::Tcp | Transport::Tls | Transport::Ws => {
                match self.dispatch.connection(peer.addr) {
                    Some(writer) => {
                        if writer.try_send(bytes).is_err() {
                            tracing::warn!(peer = %peer.addr, "connection backlog full: dropping a message");
                        }
                    }
                    // A request towards a trunk: connect first (RFC 3261 §18.1.1).
                    None if peer.transport == Transport::Tcp => self.dial(peer, bytes, None),
                    None if peer.transport == Transport::Tls => {
                        match self.tls_trunks.for_target(peer.addr) {
                            Some(tls) => self.dial(peer, bytes, Some(tls)),
                            None => self.unreachable(peer),
                        }
                    }
                    // A browser's WebSocket that closed: nobody can open it again but the
                    // browser.
                    None => self.unreachable(peer),
                }
            }
        }
    }
}

/// The core's messages on their way out, in the order it made them. A step that wrote a
/// call record holds its messages until the writer has done that write (its ticket from
/// [`StoreWriter::write`]), or for [`RECORD_WAIT`] at most; a step behind a held one
/// waits behind it, so nothing overtakes. The SIP task never waits: it goes on with the
/// next input, and sends when the writer moves.
struct Held {
    queue: std::collections::VecDeque<HeldIo>,
    progress: Arc<Progress>,
    /// The last message went before its record was written.
    late: bool,
}

struct HeldIo {
    ticket: u64,
    since: std::time::Instant,
    io: Io,
}

impl Held {
    fn new(progress: Arc<Progress>) -> Self {
        Self {
            queue: std::collections::VecDeque::new(),
            progress,
            late: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the oldest message stops waiting for its record.
    fn deadline(&self) -> Option<std::time::Instant> {
        self.queue.front().map(|h| h.since + RECORD_WAIT)
    }

    /// A step's messages, and the ticket of the last record it wrote, if any.
    fn push(
        &mut self,
        ticket: Option<u64>,
        ios: impl Iterator<Item = Io>,
        now: std::time::Instant,
    ) {
        // Ticket 0 is always reached: nothing to wait for but what is ahead.
        let ticket = ticket
            .or_else(|| self.queue.back().map(|h| h.ticket))
            .unwrap_or(0);
        self.queue.extend(ios.map(|io| HeldIo {
            ticket,
            since: now,
            io,
        }));
    }

    /// Send what may go: its record written, or waited for long enough.
    async fn release(&mut self, network: &mut Network, now: std::time::Instant, stats: &CallStats) {
        while let Some(front) = self.queue.front() {
            let written = self.progress.reached(front.ticket);
            if !written && now < front.since + RECORD_WAIT {
                break;
            }
            // Said once when the store falls behind, and once when it has caught up.
            if !written {
                stats
                    .records_late
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !self.late {
                    tracing::warn!(
                        "the store is over {} ms behind: messages go before the call records they follow",
                        RECORD_WAIT.as_millis()
                    );
                }
            } else if self.late {
                tracing::info!("the store has caught up with the calls");
            }
            self.late = !written;
            if let Some(held) = self.queue.pop_front() {
                network.perform(held.io).await;
            }
        }
    }

    /// At the end: wait for the writer (at most RECORD_WAIT), then send everything.
    async fn flush(&mut self, network: &mut Network, stats: &CallStats) {
        if let Some(last) = self.queue.back() {
            self.progress.reach(last.ticket, RECORD_WAIT).await;
        }
        let now = monotonic_now() + RECORD_WAIT;
        self.release(network, now, stats).await;
    }
}

/// Refresh the scripts' view of registered devices.
fn publish_directory(pbx: &Pbx, directory: &MemoryDirectory) {
    let mut by_user: HashMap<String, Vec<DeviceInfo>> = HashMap::new();
    for b in pbx.registrar.all_devices() {
        by_user
            .entry(b.user_id.clone())
            .or_default()
            .push(device_info(b));
    }
    directory.replace_all(by_user);
}

/// A user's registered devices, as scripts see them.
fn devices_of(pbx: &Pbx, user_id: &str) -> Vec<DeviceInfo> {
    pbx.registrar.devices(user_id).map(device_info).collect()
}

fn device_info(b: &Binding) -> DeviceInfo {
    DeviceInfo {
        name: b.device.clone(),
        user_id: b.user_id.clone(),
        user_agent: b.user_agent.clone(),
        transport: b.transport.as_str().into(),
    }
}

/// One task per trunk host name (and per `inbound` name), resolving it again when its
/// answer's TTL runs out and handing the answers to every shard.
fn spawn_trunk_resolvers(
    config: &Config,
    dispatch: &Arc<Dispatch>,
) -> anyhow::Result<Vec<tokio::task::AbortHandle>> {
    use wasmpbx_types::trunk::{Destination, InboundSource};
    let mut tasks = Vec::new();
    let names = config.trunks.iter().any(|t| {
        matches!(t.destination(), Some(Destination::Name { .. }))
            || t.inbound
                .iter()
                .any(|s| matches!(s, InboundSource::Name(_)))
    });
    if !names {
        return Ok(tasks);
    }
    let resolver = Arc::new(crate::dns::Resolver::new(&config.sip.dns_servers)?);
    for trunk in &config.trunks {
        if let Some(Destination::Name { host, port }) = trunk.destination() {
            let (resolver, dispatch, name, transport) = (
                resolver.clone(),
                dispatch.clone(),
                trunk.name.clone(),
                trunk.transport,
            );
            let task = tokio::spawn(async move {
                loop {
                    let answer = resolver.trunk_targets(&host, port, transport).await;
                    let wait = answer
                        .as_ref()
                        .map_or(crate::dns::RETRY_AFTER_FAILURE, |a| a.valid_for);
                    let answer = answer.map(|a| a.value);
                    let input = || Input::TrunkResolved {
                        trunk: name.clone(),
                        answer: answer.clone(),
                    };
                    if !dispatch.to_all(input).await {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            });
            tasks.push(task.abort_handle());
        }
        let inbound: Vec<String> = trunk
            .inbound
            .iter()
            .filter_map(|s| match s {
                InboundSource::Name(name) => Some(name.clone()),
                InboundSource::Net(_) => None,
            })
            .collect();
        if !inbound.is_empty() {
            let (resolver, dispatch, name) =
                (resolver.clone(), dispatch.clone(), trunk.name.clone());
            let task = tokio::spawn(async move {
                let mut names = crate::dns::InboundNames::default();
                loop {
                    // Each name again when its own answer runs out (or soon, if it failed).
                    let mut wait = std::time::Duration::MAX;
                    for host in &inbound {
                        let answer = resolver.ips(host).await;
                        if let Err(e) = &answer {
                            tracing::warn!(trunk = %name, "inbound host does not resolve (its last addresses kept): {e}");
                        }
                        wait = wait.min(names.answered(host, answer));
                    }
                    let addresses = names.addresses();
                    let input = || Input::TrunkInbound {
                        trunk: name.clone(),
                        addresses: addresses.clone(),
                    };
                    if !dispatch.to_all(input).await {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            });
            tasks.push(task.abort_handle());
        }
    }
    Ok(tasks)
}

async fn udp_receiver(socket: Arc<UdpSocket>, dispatch: Arc<Dispatch>, stats: Arc<CallStats>) {
    // One byte more than the limit, so an oversized datagram is seen as such.
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
    // When the log last said a shard was dropping datagrams.
    let mut said: Option<std::time::Instant> = None;
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, addr)) => {
                let peer = Peer {
                    transport: Transport::Udp,
                    addr,
                };
                let now = monotonic_now();
                match dispatch.datagram(buf[..n].to_vec(), peer, now) {
                    Handed::Queued => {}
                    Handed::Dropped { shard } => {
                        stats
                            .sip_dropped_busy
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if said
                            .is_none_or(|at| now.saturating_duration_since(at) >= SAY_AT_MOST_EVERY)
                        {
                            tracing::warn!(
                                shard,
                                "a signalling shard is far behind: its datagrams are dropped"
                            );
                            said = Some(now);
                        }
                    }
                    Handed::Stopped => return,
                }
            }
            // ICMP port unreachable surfaces as an error on Linux: keep serving.
            Err(e) => tracing::debug!("udp receive: {e}"),
        }
    }
}

async fn tcp_acceptor(listener: TcpListener, dispatch: Arc<Dispatch>, slots: Arc<StreamSlots>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let Some(slot) = admit(&slots, addr) else {
                    continue; // dropped: closed
                };
                let _ = stream.set_nodelay(true);
                let peer = Peer {
                    transport: Transport::Tcp,
                    addr,
                };
                let dispatch = dispatch.clone();
                tokio::spawn(async move {
                    let _slot = slot; // held while the connection is
                    serve_stream(stream, peer, dispatch, STREAM_DEADLINES).await;
                });
            }
            Err(e) => {
                tracing::warn!("tcp accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A place for an accepted connection from `addr`, or none (and a line in the log) when
/// its source or the host holds as many as it may.
fn admit(slots: &Arc<StreamSlots>, addr: SocketAddr) -> Option<StreamSlot> {
    let slot = slots.take(addr.ip());
    if slot.is_none() {
        tracing::warn!(%addr, "sip stream connection refused: too many held (at most {} from one address, {} in all)", stream_slots::PER_SOURCE, stream_slots::IN_ALL);
    }
    slot
}

/// How long a connect (and TLS handshake) to a trunk may take.
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a client of a `tls:` listener has to finish its handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn tls_acceptor(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    dispatch: Arc<Dispatch>,
    stats: Arc<CallStats>,
    slots: Arc<StreamSlots>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let Some(slot) = admit(&slots, addr) else {
                    continue; // dropped: closed
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, dispatch, stats) =
                    (acceptor.clone(), dispatch.clone(), stats.clone());
                tokio::spawn(async move {
                    let _slot = slot; // held while the connection is
                    let failure = match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => {
                            let peer = Peer {
                                transport: Transport::Tls,
                                addr,
                            };
                            return serve_stream(stream, peer, dispatch, STREAM_DEADLINES).await;
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
                    };
                    stats
                        .tls_handshakes_failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(peer = %addr, "sip tls: handshake failed: {failure}");
                });
            }
            Err(e) => {
                tracing::warn!("tls accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connect to a trunk's target (over TLS with `tls`, its certificate checked) and serve
/// the connection like an accepted one; a failure fails what waited for it on `shard`.
async fn dial(peer: Peer, tls: Option<TrunkTls>, dispatch: Arc<Dispatch>, shard: usize) {
    let connect = async {
        let stream = TcpStream::connect(peer.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(Either::Tcp(stream)),
            Some(TrunkTls {
                connector,
                server_name,
            }) => connector
                .connect(server_name, stream)
                .await
                .map(|s| Either::Tls(Box::new(s)))
                .map_err(|e| format!("handshake: {e}")),
        }
    };
    let failure = match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
        Ok(Ok(Either::Tcp(stream))) => {
            return serve_stream(stream, peer, dispatch, STREAM_DEADLINES).await;
        }
        Ok(Ok(Either::Tls(stream))) => {
            return serve_stream(*stream, peer, dispatch, STREAM_DEADLINES).await;
        }
        Ok(Err(e)) => e,
        Err(_) => format!("no connection within {DIAL_TIMEOUT:?}"),
    };
    let transport = peer.transport.as_str();
    tracing::warn!(peer = %peer.addr, "{transport} connect failed: {failure}");
    dispatch.to(shard, Input::DialFailed { peer }).await;
}

/// A connection made towards a trunk.
enum Either {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// How long a stream connection may take over what it must send: its first message
/// (a phone registers or calls at once; a carrier answers the host's request), and the
/// rest of any message once its first bytes came (as long as a transaction's Timer F).
/// A connection that keeps either waiting is closed: idle or half-sent connections
/// would otherwise hold a task, buffers and a file descriptor for ever.
#[derive(Debug, Clone, Copy)]
struct StreamDeadlines {
    first_message: std::time::Duration,
    message: std::time::Duration,
}

/// What a stream connection must send by its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    FirstMessage,
    RestOfMessage,
}

impl Owed {
    /// What a connection closed for missing the deadline did not send in time.
    fn missed(self) -> &'static str {
        match self {
            Owed::FirstMessage => "no message",
            Owed::RestOfMessage => "the rest of a message not",
        }
    }
}

const STREAM_DEADLINES: StreamDeadlines = StreamDeadlines {
    first_message: std::time::Duration::from_secs(32),
    message: std::time::Duration::from_secs(32),
};

/// Serve one SIP stream connection (TCP, or TLS after its handshake) until it closes:
/// framed messages to their shards, the shards' messages out (every shard may write on
/// it), keep-alive pings answered; closed when it misses a deadline.
async fn serve_stream<S>(stream: S, peer: Peer, dispatch: Arc<Dispatch>, deadlines: StreamDeadlines)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    // Weak, so that a shard closing the connection (dropping its writer) still ends it.
    let pong = out_tx.downgrade();
    let ours = out_tx.downgrade();
    dispatch.open(peer.addr, out_tx);
    if !dispatch.to_all(|| Input::Connected { peer }).await {
        return;
    }
    let write_task = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let addr = peer.addr;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let mut framer = stream::Framer::default();
    // What must come by when: the first message, or the rest of the one begun.
    let mut due = Some((
        monotonic_now() + deadlines.first_message,
        Owed::FirstMessage,
    ));
    let mut heard = false;
    'read: loop {
        let wait = due.map(|(at, _)| at.saturating_duration_since(monotonic_now()));
        let n = tokio::select! {
            read = reader.read(&mut chunk) => match read { Ok(0) | Err(_) => break 'read, Ok(n) => n },
            // The core closed this connection (garbage on it): stop reading.
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)), if write_task.is_finished() => break 'read,
            _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {
                let missed = due.map_or("", |(_, owed)| owed.missed());
                tracing::debug!(%addr, "closing {} connection: {missed} in time", peer.transport.as_str());
                break 'read;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match framer.next(&buf) {
                Frame::Incomplete => break,
                Frame::Message(len) => {
                    let bytes: Vec<u8> = buf.drain(..len).collect();
                    heard = true;
                    if !dispatch.bytes(bytes, peer, monotonic_now()).await {
                        break 'read;
                    }
                }
                Frame::Ping(len) => {
                    buf.drain(..len);
                    if let Some(pong) = pong.upgrade() {
                        let _ = pong.try_send(b"\r\n".to_vec());
                    }
                }
                Frame::KeepAlive(len) => {
                    buf.drain(..len);
                }
                Frame::Invalid(why) => {
                    tracing::debug!(%addr, "closing {} connection: {why}", peer.transport.as_str());
                    break 'read;
                }
            }
        }
        if heard {
            // Idle between messages is fine (a phone between its requests); a message
            // begun must be finished, by the deadline set when it began.
            let begun = due.filter(|&(_, owed)| owed == Owed::RestOfMessage);
            due = match buf.is_empty() {
                true => None,
                false => begun.or(Some((
                    monotonic_now() + deadlines.message,
                    Owed::RestOfMessage,
                ))),
            };
        }
    }
    write_task.abort();
    // Another connection to the same address may have taken this one's place: the
    // calls over the address go on there.
    if dispatch.closed(peer.addr, &ours) {
        dispatch.to_all(|| Input::Disconnected { peer }).await;
    }
}

impl CoreHandle {
    /// Serve one SIP-over-WebSocket connection (RFC 7118) until it closes: each text or
    /// binary frame is one SIP message; what the core sends the peer goes out as a text
    /// frame, or binary if it is not UTF-8 (`ws_message`). An oversized or broken frame
    /// ends the connection.
    pub async fn serve_ws<S>(&self, addr: SocketAddr, stream: tokio_tungstenite::WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        let peer = Peer {
            transport: Transport::Ws,
            addr,
        };
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
        let ours = out_tx.downgrade();
        self.dispatch.open(addr, out_tx);
        if !self.dispatch.to_all(|| Input::Connected { peer }).await {
            return;
        }
        let (mut sink, mut frames) = stream.split();
        loop {
            tokio::select! {
                frame = frames.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let bytes = text.as_bytes().to_vec();
                        if !self.dispatch.bytes(bytes, peer, monotonic_now()).await {
                            break;
                        }
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        if !self.dispatch.bytes(bytes.to_vec(), peer, monotonic_now()).await {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {} // ping, pong: answered by the WebSocket layer
                    Some(Err(e)) => {
                        tracing::info!(%addr, "websocket: {e}; closing");
                        break;
                    }
                },
                outgoing = out_rx.recv() => {
                    let Some(bytes) = outgoing else { break };
                    if sink.send(ws_message(bytes)).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
        if self.dispatch.closed(addr, &ours) {
            self.dispatch.to_all(|| Input::Disconnected { peer }).await;
        }
    }
}

/// A SIP message as a WebSocket frame: text when it is UTF-8, else binary (RFC 7118
/// §5.1) — a lossy conversion would change a body's bytes under its Content-Length.
fn ws_message(bytes: Vec<u8>) -> tokio_tungstenite::tungstenite::Message {
    use tokio_tungstenite::tungstenite::Message;
    match String::from_utf8(bytes) {
        Ok(text) => Message::text(text),
        Err(not_text) => Message::binary(not_text.into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: StreamDeadlines = StreamDeadlines {
        first_message: std::time::Duration::from_millis(300),
        message: std::time::Duration::from_millis(300),
    };

    /// Serve the server end of an in-memory stream on SHORT deadlines, `client` writes
    /// `sent` (each with a pause after it), and then waits; whether the server closed the
    /// connection within two seconds, and the messages it handed on.
    async fn closed_after(sent: &[(&[u8], u64)]) -> (bool, usize) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (inbox, mut inputs) = mpsc::channel(64);
        let dispatch = Arc::new(Dispatch::new(vec![inbox]));
        let peer = Peer {
            transport: Transport::Tcp,
            addr: "192.0.2.7:5060".parse().unwrap(),
        };
        let served = tokio::spawn(serve_stream(server, peer, dispatch, SHORT));
        let (_reading, mut writing) = tokio::io::split(client);
        for (bytes, pause_ms) in sent {
            if writing.write_all(bytes).await.is_err() {
                break; // closed on us already
            }
            tokio::time::sleep(std::time::Duration::from_millis(*pause_ms)).await;
        }
        let closed = tokio::time::timeout(std::time::Duration::from_secs(2), served)
            .await
            .is_ok();
        let mut messages = 0;
        while let Ok(input) = inputs.try_recv() {
            messages += usize::from(matches!(input, Input::Bytes { .. }));
        }
        (closed, messages)
    }

    const OPTIONS: &[u8] = b"OPTIONS sip:h SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";

    #[tokio::test]
    async fn a_connection_that_never_speaks_or_stalls_mid_message_is_closed() {
        // Connected, never a message.
        assert_eq!(closed_after(&[]).await, (true, 0));
        // Half a message, then nothing.
        assert_eq!(closed_after(&[(&OPTIONS[..20], 0)]).await, (true, 0));
        // A whole message, then half of the next one.
        assert_eq!(
            closed_after(&[(OPTIONS, 0), (&OPTIONS[..20], 0)]).await,
            (true, 1)
        );
        // A message dribbled out a byte at a time past the deadline.
        let dribble: Vec<(&[u8], u64)> = OPTIONS.chunks(1).map(|b| (b, 20)).collect();
        assert!(closed_after(&dribble).await.0);
    }

    #[tokio::test]
    async fn a_connection_idle_between_whole_messages_stays_open() {
        // Idle twice the deadline between two messages, then idle on: still open.
        let (closed, messages) = closed_after(&[(OPTIONS, 600), (OPTIONS, 0)]).await;
        assert_eq!((closed, messages), (false, 2));
    }

    #[test]
    fn a_message_that_is_not_utf8_goes_out_as_binary_unchanged() {
        use tokio_tungstenite::tungstenite::Message;
        let text = b"MESSAGE sip:a SIP/2.0\r\nContent-Length: 1\r\n\r\nx".to_vec();
        assert!(matches!(ws_message(text), Message::Text(_)));
        let binary = b"MESSAGE sip:a SIP/2.0\r\nContent-Length: 1\r\n\r\n\xff".to_vec();
        match ws_message(binary.clone()) {
            Message::Binary(sent) => assert_eq!(sent.to_vec(), binary),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn listeners_on_every_interface_are_named_by_the_public_address() {
        let listeners = Listeners {
            udp: vec!["0.0.0.0:5060".parse().unwrap()],
            tcp: vec!["127.0.0.1:5060".parse().unwrap()],
            tls: vec!["0.0.0.0:5061".parse().unwrap()],
        };
        let locals = listeners.locals("203.0.113.5".parse().unwrap()).unwrap();
        assert_eq!(locals.udp, "203.0.113.5:5060".parse().unwrap());
        assert_eq!(locals.tcp, Some("127.0.0.1:5060".parse().unwrap()));
        assert_eq!(locals.tls, Some("203.0.113.5:5061".parse().unwrap()));
    }

    #[test]
    fn timers_are_counted_by_how_late_they_fired() {
        use std::sync::atomic::Ordering::Relaxed;
        use std::time::Duration;
        let stats = CallStats::default();
        let (now, mut said) = (monotonic_now(), None);
        for ms in [2, 50, 50, 1500] {
            note_timer_lag(&stats, Duration::from_millis(ms), now, &mut said);
        }
        let late: Vec<u64> = stats.timers_late.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(late, [3, 1, 1], "over 10 ms, 100 ms, 1 s");
        assert_eq!(stats.timer_lag_max_us.load(Relaxed), 1_500_000);
        assert_eq!(said, Some(now), "over a second is said");
    }

    #[tokio::test]
    async fn a_message_for_a_browser_whose_websocket_closed_fails_at_once() {
        let (_, mut inboxes) = channel(1);
        let mut network = Network {
            udp: Vec::new(),
            dialing: HashMap::new(),
            tls_trunks: TlsTrunks::reloaded(&Config::embedded_default()),
            dispatch: inboxes[0].dispatch.clone(),
            shard: 0,
        };
        let peer = Peer {
            addr: "127.0.0.1:40000".parse().unwrap(),
            transport: Transport::Ws,
        };
        let bytes = b"INVITE sip:2001@h SIP/2.0\r\n\r\n".to_vec();
        network.perform(Io::Send { peer, bytes }).await;
        let told = tokio::time::timeout(std::time::Duration::from_secs(2), inboxes[0].rx.recv())
            .await
            .expect("the shard is told at once");
        assert!(matches!(told, Some(Input::DialFailed { peer: p }) if p == peer));
    }

    /// Messages wait for their step's record, later steps wait behind them, and a
    /// store that does not answer holds nothing longer than RECORD_WAIT.
    #[tokio::test]
    async fn held_messages_go_in_order_once_their_record_is_written() {
        use std::sync::atomic::Ordering::Relaxed;
        let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = Peer {
            addr: phone.local_addr().unwrap(),
            transport: Transport::Udp,
        };
        let (_, inboxes) = channel(1);
        let mut network = Network {
            udp: vec![(
                true,
                Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            )],
            dialing: HashMap::new(),
            tls_trunks: TlsTrunks::reloaded(&Config::embedded_default()),
            dispatch: inboxes[0].dispatch.clone(),
            shard: 0,
        };
        let send = |text: &str| Io::Send {
            peer,
            bytes: text.as_bytes().to_vec(),
        };
        let stats = CallStats::default();
        let progress = Arc::new(Progress::default());
        let mut held = Held::new(progress.clone());
        let start = monotonic_now();
        // Tickets count writes from 1; none is done yet.
        held.push(Some(1), [send("200 answer")].into_iter(), start);
        held.push(None, [send("BYE behind")].into_iter(), start);
        held.release(&mut network, start, &stats).await;
        assert_eq!(
            held.queue.len(),
            2,
            "nothing goes before the record is written"
        );
        progress.one_done();
        held.release(&mut network, start, &stats).await;
        assert!(held.is_empty());
        let mut buf = [0u8; 64];
        for expected in ["200 answer", "BYE behind"] {
            let (n, _) = phone.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], expected.as_bytes());
        }
        assert_eq!(stats.records_late.load(Relaxed), 0);

        // A record that is never written: the message goes at RECORD_WAIT, counted.
        held.push(Some(2), [send("late")].into_iter(), start);
        held.release(&mut network, start + RECORD_WAIT / 2, &stats)
            .await;
        assert_eq!(held.deadline(), Some(start + RECORD_WAIT));
        held.release(&mut network, start + RECORD_WAIT, &stats)
            .await;
        assert!(held.is_empty());
        assert_eq!(stats.records_late.load(Relaxed), 1);
    }
}
