//! The registrar: REGISTER with digest authentication, bindings per user (each one a
//! device), expiry, and a throttle on sources that keep failing. Sans-IO: wall time comes
//! in as unix seconds, changes go out as [`BindingChange`]s for the store.
//!
//! An unknown user and a wrong password get the same answer (403), so extensions cannot
//! be enumerated; the log tells them apart.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use rsip::prelude::*;

pub use wasmpbx_types::registration::{Binding, BindingChange};
pub use wasmpbx_types::store::EdgePhone;

use crate::config::{Config, User};
use crate::directory::DeviceInfo;
use crate::entropy::Entropy;
use crate::sip::digest::{AuthFailure, Credentials, DigestAuth, NonceCounts, Secret};
use crate::sip::message::{self, Header, Headers, Request, Response, SipMessage};
use crate::sip::transaction::{Peer, Transport};

/// The device name of [`Registrar::edge_binding`] until one of the phones answers.
pub const PHONES_BEHIND_EDGE: &str = "phones-behind-edge";
/// Registrations last at most this long (and this long when the device does not say).
pub const MAX_EXPIRES: u32 = 3600;
/// Shorter registrations are refused with 423.
pub const MIN_EXPIRES: u32 = 60;
/// The most devices one user may have registered at once: a REGISTER that would take a
/// user past it is refused (403), as is one listing more contacts.
pub const MAX_BINDINGS_PER_USER: usize = 16;
/// Failures from one address within [`THROTTLE_WINDOW_SECS`] that block it.
pub const THROTTLE_FAILURES: usize = 10;
pub const THROTTLE_WINDOW_SECS: i64 = 60;
pub const THROTTLE_BLOCK_SECS: i64 = 300;

/// Why a password given in the clear was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRefusal {
    #[error("wrong extension or password")]
    Wrong,
    #[error("too many failed sign-ins from this address; try again later")]
    Throttled,
}

/// An extension's secret, as the config gives it.
fn secret_of(config: &Config, extension: &str) -> Option<Secret> {
    let user = config.user_by_extension(extension)?;
    match (&user.password, &user.ha1) {
        (Some(p), _) => Some(Secret::Password(p.clone())),
        (None, Some(h)) => Some(Secret::Md5Ha1(h.clone())),
        (None, None) => None,
    }
}

#[derive(Default)]
struct SourceRecord {
    failures: VecDeque<i64>,
    blocked_until: Option<i64>,
}

/// The sources failing authentication: their recent failures and blocks.
#[derive(Clone, Default)]
pub struct FailingSources(Arc<Mutex<Sources>>);

#[derive(Default)]
struct Sources {
    /// By [`throttle_key`].
    records: HashMap<IpAddr, SourceRecord>,
    /// When the table was last cut back to [`SOURCES_KEPT`] (once a second at most, so a
    /// flood of failures from ever new sources does not scan it at each one).
    cut_at: i64,
}

/// How many failing sources the throttle tracks before it forgets some.
const SOURCES_KEPT: usize = 10_000;

impl FailingSources {
    fn lock(&self) -> MutexGuard<'_, Sources> {
        // Failures left by a panicking holder are still failures.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sources {
    /// Forget the sources with nothing recent; if that is not enough (a flood from ever
    /// new addresses), forget sources that are not blocked, then any, down to the bound.
    fn cut(&mut self, now_secs: i64) {
        self.cut_at = now_secs;
        self.records.retain(|_, r| {
            r.blocked_until.is_some_and(|u| u > now_secs)
                || r.failures
                    .back()
                    .is_some_and(|t| now_secs - t < THROTTLE_WINDOW_SECS)
        });
        for keep_blocked in [true, false] {
            let mut over = self.records.len().saturating_sub(SOURCES_KEPT);
            self.records.retain(|_, r| {
                let blocked = r.blocked_until.is_some_and(|u| u > now_secs);
                let forget = over > 0 && !(keep_blocked && blocked);
                over -= usize::from(forget);
                !forget
            });
        }
    }
}

/// What the throttle counts a source as: its address, or for IPv6 its /64 (one host's
/// usual allocation, every address of which it may send from).
fn throttle_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
    }
}

/// What the registrars of the host's signalling shards (`sip.shards`) keep together:
/// the digest answers' nonce-counts, so a replayed answer is refused whichever shard it
/// reaches, and the sources failing authentication, so a guesser gets the throttle's
/// allowance once, not once per shard.
#[derive(Clone, Default)]
pub struct SharedAuth {
    pub nonce_counts: NonceCounts,
    pub failing_sources: FailingSources,
}

/// The outcome of one REGISTER.
#[derive(Debug)]
pub struct RegisterOutcome {
    pub response: Response,
    pub changes: Vec<BindingChange>,
}

pub struct Registrar {
    config: Arc<Config>,
    auth: DigestAuth,
    bindings: HashMap<String, Vec<Binding>>,
    /// The phones the edge registered, by user: as the store last listed them.
    behind_edge: HashMap<String, Vec<Binding>>,
    /// The edge the phones behind it are reached through now (`Edges::current`).
    edge: Option<SocketAddr>,
    sources: FailingSources,
    /// Failed authentications (wrong password, unknown user, another's extension) and
    /// requests refused from a blocked source, since start.
    pub auth_failed: u64,
    pub auth_throttled: u64,
}

impl Registrar {
    pub fn new(config: Arc<Config>, secret: [u8; 32]) -> Self {
        let auth = DigestAuth::new(&config.sip.domain, secret);
        let edge = config.cluster.edge_addrs().first().copied();
        Self {
            config,
            auth,
            bindings: HashMap::new(),
            behind_edge: HashMap::new(),
            edge,
            sources: FailingSources::default(),
            auth_failed: 0,
            auth_throttled: 0,
        }
    }

    /// A re-read config: users removed from it lose their registrations (the changes to
    /// persist); a changed password applies from the next REGISTER.
    pub fn reconfigure(&mut self, config: Arc<Config>) -> Vec<BindingChange> {
        self.config = config;
        let config = self.config.clone();
        self.remove_where(
            |b| config.user(&b.user_id).is_none(),
            "unregistered: the user is no longer configured",
        )
    }

    /// The config of a registrar that keeps copies (another signalling shard's): the
    /// bindings a re-read config removes arrive from the home shard's registrar.
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.config = config;
    }

    /// A change the home shard's registrar made, applied to this copy (in order: a
    /// moved contact comes as its removal, then the new binding).
    pub fn apply_from_home(&mut self, change: &BindingChange) {
        match change {
            BindingChange::Upsert(binding) => {
                let list = self.bindings.entry(binding.user_id.clone()).or_default();
                match list.iter_mut().find(|b| b.contact == binding.contact) {
                    Some(known) => *known = binding.clone(),
                    None => list.push(binding.clone()),
                }
            }
            BindingChange::Remove { user_id, contact } => {
                if let Some(list) = self.bindings.get_mut(user_id) {
                    list.retain(|b| &b.contact != contact);
                    if list.is_empty() {
                        self.bindings.remove(user_id);
                    }
                }
            }
        }
    }

    /// Bindings restored from the store at start-up (expired ones are skipped).
    pub fn restore(&mut self, now_secs: i64, bindings: Vec<Binding>) -> usize {
        let mut restored = 0;
        for binding in bindings {
            if binding.expires_at > now_secs && self.config.user(&binding.user_id).is_some() {
                self.bindings
                    .entry(binding.user_id.clone())
                    .or_default()
                    .push(binding);
                restored += 1;
            }
        }
        restored
    }

    /// A user's live bindings.
    pub fn bindings(&self, user_id: &str) -> &[Binding] {
        self.bindings.get(user_id).map_or(&[], Vec::as_slice)
    }

    /// A user's devices: the ones registered here, then the phones behind the edge.
    pub fn devices(&self, user_id: &str) -> impl Iterator<Item = &Binding> {
        let behind_edge = self.behind_edge.get(user_id).map_or(&[][..], Vec::as_slice);
        self.bindings(user_id).iter().chain(behind_edge)
    }

    /// The phones the edge has registered now (from the shared store), replacing the
    /// last list: each one a device of its extension's user, named as
    /// [`Registrar::device_behind_edge`] names it when it calls, and reached through the
    /// edge in use, which relays to its contact. Phones of unknown extensions are left
    /// out; none without an edge. Whether the list changed (the directory then needs
    /// publishing again).
    pub fn set_phones_behind_edge(&mut self, phones: Vec<EdgePhone>) -> bool {
        let before = std::mem::take(&mut self.behind_edge);
        let Some(edge) = self.edge else {
            return !before.is_empty();
        };
        for phone in phones {
            let Some(user) = self.config.user_by_extension(&phone.username) else {
                continue;
            };
            let instance = phone
                .instance
                .map(|i| i.trim_matches('"').to_owned())
                .filter(|i| !i.is_empty());
            let device = edge_device_name(
                user,
                instance.as_deref(),
                phone.user_agent.as_deref(),
                &phone.contact,
            );
            let devices = self.behind_edge.entry(user.id.clone()).or_default();
            // One phone registered twice (a new contact): its latest registration.
            devices.retain(|d| d.device != device);
            devices.push(Binding {
                user_id: user.id.clone(),
                device,
                contact: phone.contact,
                instance,
                user_agent: phone.user_agent,
                transport: Transport::Udp,
                source: edge,
                expires_at: 0,
                call_id: String::new(),
                cseq: 0,
            });
        }
        self.behind_edge != before
    }

    /// Reach the phones behind the edge through `edge` from now on (another edge took
    /// over from one that stopped answering).
    pub fn reach_phones_through(&mut self, edge: Option<SocketAddr>) {
        if self.edge == edge {
            return;
        }
        self.edge = edge;
        match edge {
            Some(edge) => self
                .behind_edge
                .values_mut()
                .flatten()
                .for_each(|phone| phone.source = edge),
            None => self.behind_edge.clear(),
        }
    }

    /// Every live binding, by user.
    pub fn all(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values().flatten()
    }

    /// The phones the edge registered, as [`Registrar::set_phones_behind_edge`] last
    /// listed them.
    pub fn behind_edge(&self) -> impl Iterator<Item = &Binding> {
        self.behind_edge.values().flatten()
    }

    /// Every user's devices: the live bindings and the phones behind the edge.
    pub fn all_devices(&self) -> impl Iterator<Item = &Binding> {
        self.all().chain(self.behind_edge())
    }

    pub fn count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// Drop expired bindings.
    pub fn expire(&mut self, now_secs: i64) -> Vec<BindingChange> {
        self.remove_where(|b| b.expires_at <= now_secs, "registration expired")
    }

    /// Drop the bindings registered over a WebSocket connection from `source` that closed.
    pub fn drop_connection(&mut self, source: SocketAddr) -> Vec<BindingChange> {
        self.remove_where(
            |b| b.transport == Transport::Ws && b.source == source,
            "unregistered: its websocket closed",
        )
    }

    /// Drop the bindings `gone` picks, logging `why` for each; the changes to persist.
    fn remove_where(&mut self, gone: impl Fn(&Binding) -> bool, why: &str) -> Vec<BindingChange> {
        let mut changes = Vec::new();
        for list in self.bindings.values_mut() {
            list.retain(|b| {
                if !gone(b) {
                    return true;
                }
                tracing::info!(user = %b.user_id, device = %b.device, "{why}");
                changes.push(BindingChange::Remove {
                    user_id: b.user_id.clone(),
                    contact: b.contact.clone(),
                });
                false
            });
        }
        self.bindings.retain(|_, l| !l.is_empty());
        changes
    }

    /// Whether `source` is blocked by the throttle.
    pub fn is_throttled(&self, now_secs: i64, source: IpAddr) -> bool {
        self.sources
            .lock()
            .records
            .get(&throttle_key(source))
            .and_then(|r| r.blocked_until)
            .is_some_and(|until| until > now_secs)
    }

    /// Count a failed authentication from `source`; block it when it fails too often.
    fn record_failure(&mut self, now_secs: i64, source: IpAddr) {
        self.auth_failed += 1;
        let mut sources = self.sources.lock();
        if sources.records.len() >= SOURCES_KEPT && sources.cut_at != now_secs {
            sources.cut(now_secs);
        }
        let record = sources.records.entry(throttle_key(source)).or_default();
        record.failures.push_back(now_secs);
        while record
            .failures
            .front()
            .is_some_and(|t| now_secs - t >= THROTTLE_WINDOW_SECS)
        {
            record.failures.pop_front();
        }
        if record.failures.len() >= THROTTLE_FAILURES
            && record.blocked_until.is_none_or(|u| u <= now_secs)
        {
            record.blocked_until = Some(now_secs + THROTTLE_BLOCK_SECS);
            record.failures.clear();
            tracing::warn!(%source, "{THROTTLE_FAILURES} failed authentications within {THROTTLE_WINDOW_SECS} s: blocking {source} for {THROTTLE_BLOCK_SECS} s");
        }
    }

    /// Check an extension's password given in the clear (the browser phone asking for
    /// its user's live calls over HTTP(S)): the user id, or why not. Failures count
    /// towards the same throttle as SIP's, so a guesser is blocked alike.
    pub fn check_password(
        &mut self,
        now_secs: i64,
        source: IpAddr,
        extension: &str,
        password: &str,
    ) -> Result<String, PasswordRefusal> {
        if self.is_throttled(now_secs, source) {
            self.auth_throttled += 1;
            return Err(PasswordRefusal::Throttled);
        }
        let user = self.config.user_by_extension(extension);
        let matches = user
            .zip(secret_of(&self.config, extension))
            .is_some_and(|(_, secret)| self.auth.password_matches(extension, password, &secret));
        match user {
            Some(user) if matches => Ok(user.id.clone()),
            _ => {
                tracing::warn!(%source, extension, "phone sign-in: wrong extension or password");
                self.record_failure(now_secs, source);
                Err(PasswordRefusal::Wrong)
            }
        }
    }

    /// Authenticate a request (REGISTER with WWW-Authenticate, anything else with
    /// Proxy-Authenticate). `Ok` is the user id; `Err` is the response to send.
    pub fn authenticate(
        &mut self,
        now_secs: i64,
        entropy: &mut Entropy,
        request: &Request,
        source: Peer,
    ) -> Result<String, Response> {
        let register = request.method == rsip::Method::Register;
        let ip = source.addr.ip();
        if self.is_throttled(now_secs, ip) {
            self.auth_throttled += 1;
            tracing::debug!(%ip, "throttled source refused");
            return Err(message::response_to(request, 403, Some(&entropy.token())));
        }
        let (auth_header, challenge_header) = if register {
            ("Authorization", "WWW-Authenticate")
        } else {
            ("Proxy-Authorization", "Proxy-Authenticate")
        };
        let message = SipMessage::Request(request.clone());
        let challenge = |this: &Self, entropy: &mut Entropy, stale: bool| {
            let nonce = this.auth.nonce(now_secs, entropy.next_u64());
            let mut response = message::response_to(
                request,
                if register { 401 } else { 407 },
                Some(&entropy.token()),
            );
            for value in this
                .auth
                .challenges(&this.config.sip.digest_algorithms, &nonce, stale)
            {
                response
                    .headers
                    .push(Header::Other(challenge_header.into(), value));
            }
            response
        };
        let Some(value) = message::header_value(&message, auth_header) else {
            return Err(challenge(self, entropy, false));
        };
        let config = self.config.clone();
        let result = Credentials::parse(&value).and_then(|credentials| {
            credentials.check_request_uri(&request.uri)?;
            let method = request.method.to_string();
            self.auth
                .verify(now_secs, &method, &credentials, |username| {
                    secret_of(&config, username)
                })
        });
        match result {
            Ok(extension) => {
                let user = self
                    .config
                    .user_by_extension(&extension)
                    .map(|u| u.id.clone())
                    .unwrap_or_default();
                // A device may only register (or call as) its own extension.
                let claimed = if register {
                    message::to_user(&message)
                } else {
                    message::from_user(&message)
                };
                if claimed.as_deref() != Some(extension.as_str()) {
                    tracing::warn!(%ip, extension, ?claimed, "authenticated as one extension, claiming another");
                    self.record_failure(now_secs, ip);
                    return Err(message::response_to(request, 403, Some(&entropy.token())));
                }
                Ok(user)
            }
            Err(AuthFailure::Stale) => Err(challenge(self, entropy, true)),
            // Credentials for another request (RFC 2617 §3.2.2.5 asks for a 400): no
            // password was tried against this one, so not counted either.
            Err(failure @ AuthFailure::OtherRequestUri(_)) => {
                tracing::warn!(%ip, method = %request.method, "authentication refused: {failure}");
                Err(message::response_to(request, 400, Some(&entropy.token())))
            }
            // A nonce this host did not issue: one from before a restart (a phone sending
            // its credentials up front), another node's, or made up. Nothing was tried
            // against a password: a fresh challenge, not counted.
            Err(AuthFailure::ForeignNonce) => {
                tracing::info!(%ip, method = %request.method, "a nonce this host did not issue: challenged afresh");
                Err(challenge(self, entropy, false))
            }
            Err(failure) => {
                tracing::warn!(%ip, method = %request.method, "authentication failed: {failure}");
                // Only a password tried counts towards the throttle: anything else (a
                // malformed header) anyone could send from a forged address for free.
                if failure.tried_a_password() {
                    self.record_failure(now_secs, ip);
                }
                Err(message::response_to(request, 403, Some(&entropy.token())))
            }
        }
    }

    /// Count nonces and failing sources with the other shards' registrars.
    pub fn share_auth(&mut self, shared: SharedAuth) {
        self.auth.share_counts(shared.nonce_counts);
        self.sources = shared.failing_sources;
    }

    /// A request this registrar authenticated goes to another shard, which checks its
    /// answer again: the answer's nonce-count is given back, so that check is not taken
    /// for a replay.
    pub fn give_back_answer(&self, request: &Request) {
        let header = if request.method == rsip::Method::Register {
            "Authorization"
        } else {
            "Proxy-Authorization"
        };
        let message = SipMessage::Request(request.clone());
        if let Some(credentials) = message::header_value(&message, header)
            .and_then(|value| Credentials::parse(&value).ok())
        {
            self.auth.give_back(&credentials);
        }
    }

    /// The user and device of a request an edge authenticated (`[cluster] edge`): from an
    /// edge's address, with a P-Asserted-Identity (RFC 3325: the edge and the nodes are
    /// one trust domain) naming one of the config's extensions in `[sip] domain`; the
    /// device as [`Registrar::device_behind_edge`] names it, its transport the one of its
    /// own (bottom) Via. None for anything else — the carrier's calls come through the
    /// edge too, without one (the edge drops a carrier's).
    pub fn asserted_by_edge(&self, request: &Request, source: Peer) -> Option<DeviceInfo> {
        if !self.config.cluster.is_edge(source.addr.ip()) {
            return None;
        }
        let identity = message::header_value_in(&request.headers, "P-Asserted-Identity")?;
        let spec = parse_contacts(&identity).into_iter().next()?;
        let (user_part, host) = spec.uri.strip_prefix("sip:")?.split_once('@')?;
        let host = host.split([';', ':']).next().unwrap_or_default();
        if !host.eq_ignore_ascii_case(&self.config.sip.domain) {
            return None;
        }
        let user = self.config.user_by_extension(user_part)?;
        let mut device = self.device_behind_edge(&user.id, &request.headers)?;
        // The bottom Via is the device's own: `SIP/2.0/UDP host:port;…`.
        if let Some(transport) = message::header_values_in(&request.headers, "Via")
            .last()
            .and_then(|via| via.trim().strip_prefix("SIP/2.0/"))
            .and_then(|rest| rest.split_whitespace().next())
        {
            device.transport = transport.to_ascii_lowercase();
        }
        Some(device)
    }

    /// A device of `user_id` the edge registered, from the headers of a message it sent
    /// (a request, or its answer to a call the edge forked): named as a registration
    /// would name it (`[[users]] devices`), else by its User-Agent (or Server) and
    /// Contact address — the edge holds the registration, the node only sees the
    /// message. None without a Contact or for an unknown user.
    pub fn device_behind_edge(&self, user_id: &str, headers: &Headers) -> Option<DeviceInfo> {
        let user = self.config.user(user_id)?;
        let contact = message::header_value_in(headers, "Contact")
            .and_then(|value| parse_contacts(&value).into_iter().next())?;
        let user_agent = message::header_value_in(headers, "User-Agent")
            .or_else(|| message::header_value_in(headers, "Server"));
        let name = edge_device_name(
            user,
            contact.instance.as_deref(),
            user_agent.as_deref(),
            &contact.uri,
        );
        Some(DeviceInfo {
            name,
            user_id: user.id.clone(),
            user_agent,
            transport: Transport::Udp.as_str().to_owned(),
        })
    }

    /// All of a user's phones behind the edge (the one in use, see
    /// [`Registrar::reach_phones_through`]), as one binding: an INVITE to
    /// `sip:extension@domain` there rings every phone the edge registered for the user.
    /// None without an edge or for an unknown user.
    pub fn edge_binding(&self, user_id: &str) -> Option<Binding> {
        let edge = self.edge?;
        let user = self.config.user(user_id)?;
        Some(Binding {
            user_id: user.id.clone(),
            device: PHONES_BEHIND_EDGE.to_owned(),
            contact: format!("sip:{}@{}", user.extension, self.config.sip.domain),
            instance: None,
            user_agent: None,
            transport: Transport::Udp,
            source: edge,
            expires_at: 0,
            call_id: String::new(),
            cseq: 0,
        })
    }

    /// Handle one REGISTER.
    pub fn handle_register(
        &mut self,
        now_secs: i64,
        entropy: &mut Entropy,
        request: &Request,
        source: Peer,
    ) -> RegisterOutcome {
        let user_id = match self.authenticate(now_secs, entropy, request, source) {
            Ok(user_id) => user_id,
            Err(response) => {
                return RegisterOutcome {
                    response,
                    changes: Vec::new(),
                };
            }
        };
        let message = SipMessage::Request(request.clone());
        let to_tag = entropy.token();
        let default_expires = message::header_value(&message, "Expires")
            .and_then(|e| e.parse::<u32>().ok())
            .unwrap_or(MAX_EXPIRES);
        let contacts: Vec<ContactSpec> = request
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Contact(c) => Some(c.value().to_owned()),
                _ => None,
            })
            .flat_map(|v| parse_contacts(&v))
            .collect();
        let call_id = message::call_id(&message).unwrap_or_default();
        let cseq = message::cseq(&message).map_or(0, |c| c.0);
        let user_agent = message::header_value(&message, "User-Agent");
        let wildcard = contacts.iter().any(|c| c.uri == "*");
        if wildcard && (contacts.len() != 1 || default_expires != 0) {
            return RegisterOutcome {
                response: message::response_to(request, 400, Some(&to_tag)),
                changes: Vec::new(),
            };
        }
        // RFC 3261 §10.3 steps 6–7: every contact is checked before any binding changes,
        // so a request that fails changes nothing.
        let refusal = |code: u16| RegisterOutcome {
            response: message::response_to(request, code, Some(&to_tag)),
            changes: Vec::new(),
        };
        let held = self.bindings.get(&user_id).map_or(&[][..], Vec::as_slice);
        let mut added = 0;
        for spec in contacts.iter().filter(|c| c.uri != "*") {
            let expires = spec.expires.unwrap_or(default_expires);
            if expires > 0 && expires < MIN_EXPIRES {
                let mut response = message::response_to(request, 423, Some(&to_tag));
                response
                    .headers
                    .push(Header::Other("Min-Expires".into(), MIN_EXPIRES.to_string()));
                return RegisterOutcome {
                    response,
                    changes: Vec::new(),
                };
            }
            match held.iter().find(|b| spec.names(b)) {
                Some(b) if b.call_id == call_id && b.cseq >= cseq => {
                    tracing::info!(user = %user_id, cseq, "REGISTER older than the binding it updates: refused");
                    return refusal(400);
                }
                Some(_) => {}
                None => added += usize::from(expires > 0),
            }
        }
        if wildcard && held.iter().any(|b| b.call_id == call_id && b.cseq >= cseq) {
            tracing::info!(user = %user_id, cseq, "REGISTER older than the bindings it removes: refused");
            return refusal(400);
        }
        if contacts.len() > MAX_BINDINGS_PER_USER || held.len() + added > MAX_BINDINGS_PER_USER {
            tracing::warn!(user = %user_id, held = held.len(), added, "registration refused: more than {MAX_BINDINGS_PER_USER} devices");
            return refusal(403);
        }

        let mut changes = Vec::new();
        if wildcard {
            for b in self.bindings.remove(&user_id).unwrap_or_default() {
                changes.push(BindingChange::Remove {
                    user_id: b.user_id,
                    contact: b.contact,
                });
            }
            tracing::info!(user = %user_id, "all registrations removed");
        }
        for spec in contacts.iter().filter(|c| c.uri != "*") {
            let expires = spec.expires.unwrap_or(default_expires);
            let list = self.bindings.entry(user_id.clone()).or_default();
            let existing = list.iter().position(|b| spec.names(b));
            if expires == 0 {
                if let Some(i) = existing {
                    let b = list.remove(i);
                    tracing::info!(user = %user_id, device = %b.device, "unregistered");
                    changes.push(BindingChange::Remove {
                        user_id: b.user_id,
                        contact: b.contact,
                    });
                }
                continue;
            }
            let expires = expires.min(MAX_EXPIRES);
            let device = match existing {
                Some(i) => list[i].device.clone(),
                None => {
                    let configured = self.config.user(&user_id).and_then(|u| {
                        u.device_name(spec.instance.as_deref(), user_agent.as_deref())
                    });
                    match configured {
                        Some(name) if !list.iter().any(|b| b.device == name) => name.to_owned(),
                        _ => unique_device_name(list, user_agent.as_deref()),
                    }
                }
            };
            let binding = Binding {
                user_id: user_id.clone(),
                device,
                contact: spec.uri.clone(),
                instance: spec.instance.clone(),
                user_agent: user_agent.clone(),
                transport: source.transport,
                source: source.addr,
                expires_at: now_secs + i64::from(expires),
                call_id: call_id.clone(),
                cseq,
            };
            match existing {
                Some(i) => {
                    if list[i].contact != binding.contact {
                        changes.push(BindingChange::Remove {
                            user_id: user_id.clone(),
                            contact: list[i].contact.clone(),
                        });
                    }
                    list[i] = binding.clone();
                }
                None => {
                    tracing::info!(user = %user_id, device = %binding.device, contact = %binding.contact, "registered");
                    list.push(binding.clone());
                }
            }
            changes.push(BindingChange::Upsert(binding));
        }
        self.bindings.retain(|_, l| !l.is_empty());

        let mut response = message::response_to(request, 200, Some(&to_tag));
        for b in self.bindings(&user_id) {
            let left = (b.expires_at - now_secs).max(0);
            response
                .headers
                .push(Header::Contact(rsip::headers::Contact::new(format!(
                    "<{}>;expires={left}",
                    b.contact
                ))));
        }
        RegisterOutcome { response, changes }
    }
}

/// A device name from its User-Agent ("Linphone/5.2 (belle-sip)" → "linphone-5.2"),
/// made unique among the user's devices.
fn unique_device_name(existing: &[Binding], user_agent: Option<&str>) -> String {
    let base = device_base_name(user_agent);
    let taken = |name: &str| existing.iter().any(|b| b.device == name);
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|n| !taken(n))
        .expect("some suffix is free")
}

/// "Linphone/5.2 (belle-sip)" → "linphone-5.2"; "device" without a usable User-Agent.
/// A phone behind the edge: named as the config's `devices` name it, else by its
/// User-Agent and the address of its contact (`yealink@10.0.0.31:5060`) — the same
/// whether the node sees its request or the edge's record of its registration.
fn edge_device_name(
    user: &User,
    instance: Option<&str>,
    user_agent: Option<&str>,
    contact_uri: &str,
) -> String {
    if let Some(name) = user.device_name(instance, user_agent) {
        return name.to_owned();
    }
    let address = contact_uri.split('@').next_back().unwrap_or_default();
    let address = address.split(';').next().unwrap_or_default();
    format!("{}@{address}", device_base_name(user_agent))
}

fn device_base_name(user_agent: Option<&str>) -> String {
    let base: String = user_agent
        .and_then(|ua| ua.split_whitespace().next())
        .unwrap_or("device")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    if base.trim_matches('-').is_empty() {
        "device".to_owned()
    } else {
        base.trim_matches('-').to_owned()
    }
}

struct ContactSpec {
    uri: String,
    expires: Option<u32>,
    instance: Option<String>,
}

impl ContactSpec {
    /// Whether this contact names `binding`: the same instance (RFC 5626), or else the
    /// same URI.
    fn names(&self, binding: &Binding) -> bool {
        match (&self.instance, &binding.instance) {
            (Some(a), Some(b)) => a == b,
            _ => binding.contact == self.uri,
        }
    }
}

/// Contacts from one Contact header value: `*`, or comma-separated `<uri>;params`.
fn parse_contacts(value: &str) -> Vec<ContactSpec> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut in_quotes = false;
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => depth += 1,
            b'>' if !in_quotes => depth -= 1,
            b',' if depth == 0 && !in_quotes => {
                out.extend(parse_contact(&value[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.extend(parse_contact(&value[start..]));
    out
}

fn parse_contact(text: &str) -> Option<ContactSpec> {
    let text = text.trim();
    if text == "*" {
        return Some(ContactSpec {
            uri: "*".into(),
            expires: None,
            instance: None,
        });
    }
    let (uri, params) = match (text.find('<'), text.find('>')) {
        (Some(open), Some(close)) if open < close => (&text[open + 1..close], &text[close + 1..]),
        _ => text.split_once(';').map_or((text, ""), |(u, p)| (u, p)),
    };
    if uri.is_empty() {
        return None;
    }
    let mut spec = ContactSpec {
        uri: uri.trim().to_owned(),
        expires: None,
        instance: None,
    };
    for param in params.split(';') {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "expires" => spec.expires = value.trim().parse().ok(),
            "+sip.instance" => spec.instance = Some(value.trim().trim_matches('"').to_owned()),
            _ => {}
        }
    }
    Some(spec)
}

#[cfg(test)]
mod tests;
