//! Carrier trunks at run time, sans-IO: each trunk's targets (as resolved by the driver)
//! and their health, which target a call tries first and which next, the registration
//! with the carrier (refresh, back-off, digest), OPTIONS health checks, and answering a
//! carrier's digest challenge.
//!
//! Names are resolved outside (the server's resolver, RFC 3263) and come in through
//! [`Trunks::resolved`]; an IP-literal trunk has its one target from the start.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::entropy::Entropy;
use crate::sip::digest::Challenge;
use crate::sip::local::LocalAddrs;
use crate::sip::message::{self, Request, Response, SipMessage};
use crate::sip::transaction::{ClientTxnId, Peer, T1, TransactionLayer, Transport};
use wasmpbx_types::trunk::{Destination, InboundSource, Trunk, TrunkTransport};

/// How long a target that failed a call stays out of rotation unless a health check
/// finds it answering again.
pub const FAILED_TARGET_HOLD: Duration = Duration::from_secs(30);
/// The longest a 503's Retry-After keeps a target out of rotation: a carrier's typo of a
/// day must not take an edge away for a day.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Registration retries back off from this…
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// …doubling up to this.
const RETRY_CAP: Duration = Duration::from_secs(300);

/// A resolved target as the resolver hands it over (SRV priority and weight; A records
/// have 0 and 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub addr: SocketAddr,
    pub priority: u16,
    pub weight: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not tried yet.
    Unknown,
    Up,
    Down,
}

#[derive(Debug, Clone)]
struct Target {
    resolved: ResolvedTarget,
    health: Health,
    /// Out of rotation until then, or (none) until a health check answers.
    down_until: Option<Instant>,
    /// Out of rotation until then whatever a health check says: the target answered 503
    /// with a Retry-After (RFC 3261 §21.5.4), so it is overloaded or in maintenance.
    held_until: Option<Instant>,
    last_failure: Option<String>,
    next_probe: Option<Instant>,
    probing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationState {
    /// The first REGISTER is due (or its target is not resolved yet).
    Waiting,
    Registering,
    Registered,
    Failing,
}

#[derive(Debug)]
struct Registration {
    state: RegistrationState,
    call_id: String,
    from_tag: String,
    cseq: u32,
    next_at: Option<Instant>,
    expires_at: Option<Instant>,
    failures: u32,
    last_reason: Option<String>,
    /// The target the registration lives on.
    target: Option<SocketAddr>,
    /// Challenges answered since the last REGISTER sent afresh, to refuse a loop.
    challenges_answered: u32,
    /// The expiry asked for: the trunk's `register_expires`, or the registrar's
    /// Min-Expires after a 423.
    expires: u32,
}

struct TrunkState {
    config: Trunk,
    targets: Vec<Target>,
    /// Why the last resolution failed.
    resolve_error: Option<String>,
    registration: Option<Registration>,
    /// Addresses of `inbound` host names, as resolved.
    inbound_addresses: Vec<IpAddr>,
}

impl TrunkState {
    fn new(trunk: &Trunk) -> Self {
        let targets = match trunk.destination() {
            Some(Destination::Address(addr)) => vec![Target::new(
                ResolvedTarget {
                    addr,
                    priority: 0,
                    weight: 0,
                },
                trunk.options_interval,
                None,
            )],
            _ => Vec::new(),
        };
        TrunkState {
            registration: trunk.register.then(|| Registration {
                state: RegistrationState::Waiting,
                call_id: String::new(),
                from_tag: String::new(),
                cseq: 0,
                next_at: None,
                expires_at: None,
                failures: 0,
                last_reason: None,
                target: None,
                challenges_answered: 0,
                expires: trunk.register_expires,
            }),
            config: trunk.clone(),
            targets,
            resolve_error: None,
            inbound_addresses: Vec::new(),
        }
    }

    fn start(&mut self, now: Instant) {
        if let Some(registration) = &mut self.registration {
            registration.next_at = Some(now);
        }
        for target in &mut self.targets {
            target.next_probe = (self.config.options_interval > 0).then_some(now);
        }
    }
}

enum TrunkTxn {
    Register {
        trunk: usize,
        request: Request,
    },
    Options {
        trunk: usize,
        target: SocketAddr,
    },
    /// A call's request in a dialog through the trunk (BYE, re-INVITE, NOTIFY): a
    /// challenge to it is answered here, and the rest handed to the call under the
    /// transaction it knows (`original`).
    InDialog {
        trunk: usize,
        request: Request,
        peer: Peer,
        original: ClientTxnId,
        challenges_answered: u32,
    },
}

/// Everything the host knows of its trunks.
pub struct Trunks {
    trunks: Vec<TrunkState>,
    txns: HashMap<ClientTxnId, TrunkTxn>,
    domain: String,
    /// Targets found down or up again since [`Trunks::take_news`], for the host's
    /// other signalling shards.
    news: Vec<TargetNews>,
}

/// A target found down (`failure`) or answering again, by one shard: the others take it
/// as if they had found it ([`Trunks::heard`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetNews {
    pub trunk: String,
    pub target: SocketAddr,
    pub failure: Option<String>,
    /// Until when it asked not to be sent to (a 503's Retry-After).
    pub held_until: Option<Instant>,
}

/// What `/api/trunks` shows of a trunk.
#[derive(Debug, Clone, Serialize)]
pub struct TrunkStatus {
    pub name: String,
    pub host: String,
    pub targets: Vec<TargetStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub address: SocketAddr,
    pub priority: u16,
    pub weight: u16,
    pub state: Health,
    /// In rotation now (up or unknown, and not held out after a failure).
    pub in_rotation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistrationStatus {
    pub state: RegistrationState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_with: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_try_in_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    pub failures: u32,
}

/// Why a carrier's challenge was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("challenged, but the trunk has no username and password")]
    NoCredentials,
    #[error("no usable challenge: {0}")]
    Challenge(String),
    #[error("challenged for realm {0:?}, not the trunk's")]
    ForeignRealm(String),
    #[error("the carrier refused the credentials (challenged again)")]
    Refused,
    #[error("challenged {0} times running, each nonce stale")]
    StaleLoop(u32),
}

/// The most challenges one request answers: the first, and a few with `stale=true` (its
/// nonce expired, the credentials were right, RFC 2617 §3.2.1). A carrier saying stale
/// to every answer would otherwise keep the request going round for ever.
const MOST_CHALLENGES_ANSWERED: u32 = 3;

/// Answer a 401/407 to `request` with the trunk's credentials: the request to send again.
/// `challenges_answered` counts the challenges this request answered already: a second
/// challenge that is not `stale` means the credentials are wrong, and is not answered
/// again; nor is one past [`MOST_CHALLENGES_ANSWERED`].
pub fn answer_challenge(
    trunk: &Trunk,
    request: &Request,
    response: &Response,
    challenges_answered: u32,
    entropy: &mut Entropy,
) -> Result<Request, AuthError> {
    let (user, password) = trunk.credentials().ok_or(AuthError::NoCredentials)?;
    let code = response.status_code.code();
    let (challenge_header, answer_header) = if code == 407 {
        ("Proxy-Authenticate", "Proxy-Authorization")
    } else {
        ("WWW-Authenticate", "Authorization")
    };
    let message = SipMessage::Response(response.clone());
    let mut last_error = String::from("no challenge header");
    let challenge = message::header_values(&message, challenge_header)
        .iter()
        .find_map(|value| match Challenge::parse(value) {
            // Several challenges (MD5 and SHA-256): take the first answerable one.
            Ok(c) => Some(c),
            Err(e) => {
                last_error = e.to_string();
                None
            }
        })
        .ok_or(AuthError::Challenge(last_error))?;
    if let Some(realm) = &trunk.realm
        && realm != &challenge.realm
    {
        return Err(AuthError::ForeignRealm(challenge.realm));
    }
    if challenges_answered > 0 && !challenge.stale {
        return Err(AuthError::Refused);
    }
    if challenges_answered >= MOST_CHALLENGES_ANSWERED {
        return Err(AuthError::StaleLoop(challenges_answered));
    }
    let request_message = SipMessage::Request(request.clone());
    let cseq = message::cseq(&request_message).map_or(1, |(n, _)| n) + 1;
    let method = request.method.to_string();
    let uri = request.uri.to_string();
    let cnonce = entropy.token();
    let value = challenge.answer(user, password, &method, &uri, &cnonce, 1);
    message::resend(
        request,
        cseq,
        &entropy.token(),
        Some((answer_header, &value)),
    )
    .ok_or_else(|| AuthError::Challenge("could not rebuild the request".into()))
}

impl Trunks {
    /// The configured trunks, idle until [`Trunks::start`].
    pub fn new(config: &Config) -> Self {
        Self {
            trunks: config.trunks.iter().map(TrunkState::new).collect(),
            txns: HashMap::new(),
            domain: config.sip.domain.clone(),
            news: Vec::new(),
        }
    }

    /// Begin registering and health-checking (the server has its sockets).
    pub fn start(&mut self, now: Instant) {
        for trunk in &mut self.trunks {
            trunk.start(now);
        }
    }

    /// A re-read config's trunks: an unchanged trunk keeps its state (targets and their
    /// health, registration); a new or changed one starts afresh (a changed trunk
    /// registers again); a removed one is forgotten (its registration left to expire at
    /// the carrier). Live calls keep the trunk they started with. Requests of calls in
    /// dialog through a trunk still configured stay tracked.
    pub fn reconfigure(&mut self, config: &Config, now: Instant) {
        let mut old: Vec<Option<TrunkState>> = std::mem::take(&mut self.trunks)
            .into_iter()
            .map(Some)
            .collect();
        let mut kept = HashMap::new(); // old index → new index, state carried over
        let mut by_name = HashMap::new(); // old index → new index, same name
        for (i, trunk) in config.trunks.iter().enumerate() {
            let same_name = old
                .iter()
                .position(|t| t.as_ref().is_some_and(|t| t.config.name == trunk.name));
            let mut fresh = TrunkState::new(trunk);
            if let Some(j) = same_name {
                by_name.insert(j, i);
                if old[j].as_ref().is_some_and(|t| &t.config == trunk) {
                    kept.insert(j, i);
                    self.trunks.extend(old[j].take());
                    continue;
                }
                // Still the same host: its resolved targets serve until the resolver
                // answers again.
                if let Some(before) = old[j].take() {
                    if before.config.destination() == trunk.destination() {
                        fresh.targets = before.targets;
                        fresh.resolve_error = before.resolve_error;
                        // Their health checks under way are the old trunk's, dropped
                        // below: the new one probes afresh, or never would again.
                        for target in &mut fresh.targets {
                            target.probing = false;
                        }
                    }
                    if before.config.inbound == trunk.inbound {
                        fresh.inbound_addresses = before.inbound_addresses;
                    }
                }
            }
            fresh.start(now);
            self.trunks.push(fresh);
        }
        self.txns.retain(|_, txn| match txn {
            TrunkTxn::Register { trunk, .. } | TrunkTxn::Options { trunk, .. } => {
                kept.get(trunk).map(|i| *trunk = *i).is_some()
            }
            TrunkTxn::InDialog { trunk, .. } => by_name.get(trunk).map(|i| *trunk = *i).is_some(),
        });
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.trunks.iter().position(|t| t.config.name == name)
    }

    pub fn config(&self, name: &str) -> Option<&Trunk> {
        self.index(name).map(|i| &self.trunks[i].config)
    }

    /// The resolver's answer for a trunk's host: the targets, best first (or why none).
    pub fn resolved(
        &mut self,
        now: Instant,
        name: &str,
        answer: Result<Vec<ResolvedTarget>, String>,
    ) {
        let Some(i) = self.index(name) else {
            return;
        };
        let trunk = &mut self.trunks[i];
        let targets = match answer {
            Err(error) => {
                if trunk.resolve_error.as_ref() != Some(&error) {
                    tracing::warn!(trunk = name, "trunk host does not resolve: {error}");
                }
                trunk.resolve_error = Some(error);
                // Keep the last good targets: a resolver hiccup is no reason to stop calling.
                return;
            }
            Ok(targets) => targets,
        };
        trunk.resolve_error = None;
        let interval = trunk.config.options_interval;
        let old = std::mem::take(&mut trunk.targets);
        trunk.targets = targets
            .into_iter()
            .map(
                |resolved| match old.iter().find(|t| t.resolved.addr == resolved.addr) {
                    Some(known) => Target {
                        resolved,
                        ..known.clone()
                    },
                    None => Target::new(resolved, interval, Some(now)),
                },
            )
            .collect();
        if old
            .iter()
            .map(|t| t.resolved.addr)
            .ne(trunk.targets.iter().map(|t| t.resolved.addr))
        {
            let list: Vec<String> = trunk
                .targets
                .iter()
                .map(|t| t.resolved.addr.to_string())
                .collect();
            tracing::info!(trunk = name, targets = %list.join(", "), "trunk targets");
        }
        // A registration on an address the name no longer gives moves.
        if let Some(registration) = &mut trunk.registration {
            let moved = registration
                .target
                .is_some_and(|at| !trunk.targets.iter().any(|t| t.resolved.addr == at));
            let idle = registration.state != RegistrationState::Registering
                && registration.next_at.is_none()
                && registration.last_reason.is_some();
            if moved || idle {
                registration.next_at = Some(now);
            }
        }
    }

    /// Addresses the trunk's `inbound` host names resolved to.
    pub fn inbound_resolved(&mut self, name: &str, addresses: Vec<IpAddr>) {
        if let Some(i) = self.index(name) {
            self.trunks[i].inbound_addresses = addresses;
        }
    }

    /// The trunk a request from `source` belongs to: its `inbound` addresses, networks and
    /// names, then — for a trunk that registers — the addresses its host resolved to (a
    /// carrier sends calls to our registration from its edge).
    pub fn trunk_of_source(&self, source: IpAddr) -> Option<&Trunk> {
        let listed = self.trunks.iter().find(|t| {
            t.config.inbound.iter().any(|s| match s {
                InboundSource::Net(net) => net.contains(source),
                InboundSource::Name(_) => false,
            }) || t.inbound_addresses.contains(&source)
        });
        listed
            .or_else(|| {
                self.trunks.iter().find(|t| {
                    t.config.register
                        && t.targets
                            .iter()
                            .any(|target| target.resolved.addr.ip() == source)
                })
            })
            .map(|t| &t.config)
    }

    /// The targets to try for a call, in order: those in rotation by priority, each
    /// priority's in a weighted random order (RFC 2782: a target of weight 90 goes first
    /// nine times as often as one of weight 10; equal weights spread calls evenly), then
    /// those held out, as a last resort.
    pub fn candidates(&self, name: &str, now: Instant, entropy: &mut Entropy) -> Vec<SocketAddr> {
        let Some(i) = self.index(name) else {
            return Vec::new();
        };
        let trunk = &self.trunks[i];
        let (mut usable, held): (Vec<&Target>, Vec<&Target>) =
            trunk.targets.iter().partition(|t| t.in_rotation(now));
        usable.sort_by_key(|t| t.resolved.priority);
        let mut ordered = Vec::with_capacity(trunk.targets.len());
        for group in usable.chunk_by(|a, b| a.resolved.priority == b.resolved.priority) {
            let mut left: Vec<&Target> = group.to_vec();
            while !left.is_empty() {
                // Weight + 1: a weight-0 target is still tried first now and then.
                let weight = |t: &Target| u64::from(t.resolved.weight) + 1;
                let total: u64 = left.iter().map(|t| weight(t)).sum();
                let mut pick = entropy.next_u64() % total;
                let chosen = left
                    .iter()
                    .position(|t| match pick.checked_sub(weight(t)) {
                        Some(rest) => {
                            pick = rest;
                            false
                        }
                        None => true,
                    })
                    .unwrap_or(0);
                ordered.push(left.remove(chosen).resolved.addr);
            }
        }
        ordered.extend(held.iter().map(|t| t.resolved.addr));
        ordered
    }

    /// A call to `addr` found the target gone (timeout, 503, transport failure); with a
    /// `retry_after` (a 503's), it stays out of rotation at least that long.
    pub fn target_failed(
        &mut self,
        name: &str,
        addr: SocketAddr,
        reason: &str,
        retry_after: Option<Duration>,
        now: Instant,
    ) {
        let Some(target) = self.target_mut(name, addr) else {
            return;
        };
        let held_until = retry_after.map(|d| now + d.min(LONGEST_RETRY_AFTER));
        if target.health != Health::Down || held_until.is_some() {
            tracing::warn!(trunk = name, target = %addr, retry_after_s = retry_after.map(|d| d.as_secs()), "trunk target down: {reason}");
            self.news.push(TargetNews {
                trunk: name.to_owned(),
                target: addr,
                failure: Some(reason.to_owned()),
                held_until,
            });
        }
        let until = self.back_in_rotation(name, now);
        mark_down(self.target_mut(name, addr), reason, until, held_until);
    }

    /// When a target of trunk `name` found down may be tried again: once a health check
    /// answers, on a trunk that checks (none here), else after [`FAILED_TARGET_HOLD`].
    fn back_in_rotation(&self, name: &str, now: Instant) -> Option<Instant> {
        let checked = self
            .index(name)
            .is_some_and(|i| self.trunks[i].config.options_interval > 0);
        (!checked).then_some(now + FAILED_TARGET_HOLD)
    }

    /// `addr` answered something (a call's response, a health check).
    pub fn target_answered(&mut self, name: &str, addr: SocketAddr) {
        let Some(target) = self.target_mut(name, addr) else {
            return;
        };
        if target.health != Health::Up {
            if target.health == Health::Down {
                tracing::info!(trunk = name, target = %addr, "trunk target up again");
            }
            self.news.push(TargetNews {
                trunk: name.to_owned(),
                target: addr,
                failure: None,
                held_until: None,
            });
        }
        mark_up(self.target_mut(name, addr));
    }

    /// What this shard found since the last call, for the others.
    pub fn take_news(&mut self) -> Vec<TargetNews> {
        std::mem::take(&mut self.news)
    }

    /// What another shard found, taken as found here (nothing logged, nothing passed
    /// on).
    pub fn heard(&mut self, news: &[TargetNews], now: Instant) {
        for TargetNews {
            trunk,
            target,
            failure,
            held_until,
        } in news
        {
            let until = self.back_in_rotation(trunk, now);
            let found = self.target_mut(trunk, *target);
            match failure {
                Some(reason) => mark_down(found, reason, until, *held_until),
                None => mark_up(found),
            }
        }
    }

    fn target_mut(&mut self, name: &str, addr: SocketAddr) -> Option<&mut Target> {
        let i = self.index(name)?;
        self.trunks[i]
            .targets
            .iter_mut()
            .find(|t| t.resolved.addr == addr)
    }

    /// When [`Trunks::handle_timeout`] is next due; `register`: whether this core
    /// registers with carriers (a host's home shard) or only checks their health.
    /// When the next health check or REGISTER is due; `home`: whether this is the home
    /// shard, the only one that registers and probes (the others hear of the targets'
    /// health through [`Trunks::heard`]).
    pub fn poll_timeout(&self, home: bool) -> Option<Instant> {
        if !home {
            return None;
        }
        self.trunks
            .iter()
            .flat_map(|t| {
                let probes = t
                    .targets
                    .iter()
                    .filter(|x| !x.probing)
                    .filter_map(|x| x.next_probe);
                let registration = t
                    .registration
                    .as_ref()
                    .filter(|r| r.state != RegistrationState::Registering)
                    .and_then(|r| r.next_at);
                probes.chain(registration)
            })
            .min()
    }

    /// Send the health checks and the REGISTERs that are due, on the home shard (`home`).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        local: LocalAddrs,
        entropy: &mut Entropy,
        home: bool,
    ) {
        if !home {
            return;
        }
        for i in 0..self.trunks.len() {
            self.probe_due(i, now, layer, local, entropy);
            let due = self.trunks[i].registration.as_ref().is_some_and(|r| {
                r.state != RegistrationState::Registering && r.next_at.is_some_and(|at| at <= now)
            });
            if due {
                self.register(i, now, layer, local, entropy);
            }
        }
    }

    fn probe_due(
        &mut self,
        i: usize,
        now: Instant,
        layer: &mut TransactionLayer,
        local: LocalAddrs,
        entropy: &mut Entropy,
    ) {
        let trunk = &mut self.trunks[i];
        let host = trunk.config.request_host();
        let transport = transport(&trunk.config);
        let via = local.for_transport(transport);
        for target in &mut trunk.targets {
            if target.probing || target.next_probe.is_none_or(|at| at > now) {
                continue;
            }
            let Some(options) = options_request(&host, transport, via, &self.domain, entropy)
            else {
                continue;
            };
            let peer = Peer {
                transport,
                addr: target.resolved.addr,
            };
            let txn = layer.send_request(now, options, peer);
            target.probing = true;
            self.txns.insert(
                txn,
                TrunkTxn::Options {
                    trunk: i,
                    target: target.resolved.addr,
                },
            );
        }
    }

    fn register(
        &mut self,
        i: usize,
        now: Instant,
        layer: &mut TransactionLayer,
        local: LocalAddrs,
        entropy: &mut Entropy,
    ) {
        // A registration stays on its registrar while that one is in rotation (RFC 3261
        // §10.2: one Call-ID per registrar); the choice among equals is made once.
        let trunk = &self.trunks[i];
        let current = trunk
            .registration
            .as_ref()
            .and_then(|r| r.target)
            .filter(|at| {
                trunk
                    .targets
                    .iter()
                    .any(|t| t.resolved.addr == *at && t.in_rotation(now))
            });
        let Some(target) = current.or_else(|| {
            self.candidates(&self.trunks[i].config.name, now, entropy)
                .first()
                .copied()
        }) else {
            // Nothing resolved yet: the resolver's answer schedules the REGISTER.
            if let Some(r) = &mut self.trunks[i].registration {
                r.next_at = None;
                r.last_reason = Some("the trunk host has not resolved".into());
            }
            return;
        };
        let trunk = &mut self.trunks[i];
        let config = &trunk.config;
        let Some(registration) = trunk.registration.as_mut() else {
            return;
        };
        if registration.call_id.is_empty() || registration.target != Some(target) {
            // A new registration (RFC 3261 §10.2: one Call-ID per registrar binding).
            registration.call_id = entropy.call_id(local.udp.ip());
            registration.from_tag = entropy.token();
        }
        registration.cseq += 1;
        registration.target = Some(target);
        registration.challenges_answered = 0;
        let host = config.request_host();
        let domain = config.from_domain(&self.domain);
        let user = config.username.as_deref().unwrap_or_default();
        let contact_user = config.contact_user().unwrap_or(user);
        let transport = transport(config);
        let via = local.for_transport(transport);
        let contact = local.contact(contact_user, transport);
        let text = format!(
            "REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/{} {via};branch=z9hG4bK{};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag={}\r\nTo: <sip:{user}@{domain}>\r\n\
Call-ID: {}\r\nCSeq: {} REGISTER\r\nContact: <{contact}>\r\n\
Expires: {}\r\nAllow: {}\r\nContent-Length: 0\r\n\r\n",
            transport.as_str().to_ascii_uppercase(),
            entropy.token(),
            registration.from_tag,
            registration.call_id,
            registration.cseq,
            registration.expires,
            message::ALLOW,
        );
        let Ok(SipMessage::Request(request)) = message::parse(text.as_bytes()) else {
            registration.fail(
                now,
                "could not build the REGISTER (check username and host)",
            );
            return;
        };
        if registration.state != RegistrationState::Registered {
            registration.state = RegistrationState::Registering;
        }
        registration.next_at = None;
        let peer = Peer {
            transport,
            addr: target,
        };
        let txn = layer.send_request(now, request.clone(), peer);
        self.txns
            .insert(txn, TrunkTxn::Register { trunk: i, request });
    }

    /// A call sent `request` in a dialog to `peer`: if that is a target of a trunk with
    /// credentials, a challenge to it will be answered.
    pub fn track_in_dialog(&mut self, txn: ClientTxnId, request: &Request, peer: Peer) {
        let trunk = self.trunks.iter().position(|t| {
            t.config.credentials().is_some()
                && t.targets.iter().any(|x| x.resolved.addr == peer.addr)
        });
        if let Some(trunk) = trunk {
            let tracked = TrunkTxn::InDialog {
                trunk,
                request: request.clone(),
                peer,
                original: txn,
                challenges_answered: 0,
            };
            self.txns.insert(txn, tracked);
        }
    }

    pub fn owns(&self, txn: ClientTxnId) -> bool {
        self.txns.contains_key(&txn)
    }

    /// A response to a request the trunks sent or track. A call's in-dialog request's
    /// response comes back (under the call's transaction) unless it was a challenge
    /// answered here.
    pub fn handle_response(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        local: LocalAddrs,
        entropy: &mut Entropy,
        txn: ClientTxnId,
        response: Response,
    ) -> Option<(ClientTxnId, Response)> {
        let code = response.status_code.code();
        if let Some(TrunkTxn::InDialog { original, .. }) = self.txns.get(&txn) {
            let original = *original;
            if code < 200 {
                return Some((original, response));
            }
            let Some(TrunkTxn::InDialog {
                trunk,
                request,
                peer,
                challenges_answered,
                ..
            }) = self.txns.remove(&txn)
            else {
                return None;
            };
            if !matches!(code, 401 | 407) {
                return Some((original, response));
            }
            let config = &self.trunks[trunk].config;
            return match answer_challenge(config, &request, &response, challenges_answered, entropy)
            {
                Ok(request) => {
                    let again = layer.send_request(now, request.clone(), peer);
                    let tracked = TrunkTxn::InDialog {
                        trunk,
                        request,
                        peer,
                        original,
                        challenges_answered: challenges_answered + 1,
                    };
                    self.txns.insert(again, tracked);
                    None
                }
                Err(error) => {
                    tracing::warn!(trunk = %config.name, method = %request.method, "in-dialog request not authorised: {error}");
                    Some((original, response))
                }
            };
        }
        if code < 200 {
            return None;
        }
        match self.txns.remove(&txn)? {
            TrunkTxn::Options { trunk, target } => {
                // Any answer at all means the target is there (a 404 or 405 included).
                let name = self.trunks[trunk].config.name.clone();
                self.probe_done(trunk, target, now);
                self.target_answered(&name, target);
            }
            TrunkTxn::Register { trunk, request } => {
                match self.register_answered(trunk, now, entropy, &request, &response) {
                    RegisterNext::Again(request) => {
                        self.register_again(trunk, now, layer, *request)
                    }
                    RegisterNext::Afresh => self.register(trunk, now, layer, local, entropy),
                    RegisterNext::Nothing => {}
                }
            }
            TrunkTxn::InDialog { .. } => {}
        }
        None
    }

    fn probe_done(&mut self, trunk: usize, target: SocketAddr, now: Instant) {
        let interval = self.trunks[trunk].config.options_interval;
        if let Some(t) = self.trunks[trunk]
            .targets
            .iter_mut()
            .find(|t| t.resolved.addr == target)
        {
            t.probing = false;
            t.next_probe = (interval > 0).then(|| now + Duration::from_secs(interval.into()));
        }
    }

    fn register_answered(
        &mut self,
        i: usize,
        now: Instant,
        entropy: &mut Entropy,
        request: &Request,
        response: &Response,
    ) -> RegisterNext {
        let code = response.status_code.code();
        let trunk = &mut self.trunks[i];
        let name = trunk.config.name.clone();
        if let Some(target) = trunk.registration.as_ref().and_then(|r| r.target) {
            self.target_answered(&name, target);
        }
        let trunk = &mut self.trunks[i];
        let Some(registration) = trunk.registration.as_mut() else {
            return RegisterNext::Nothing;
        };
        match code {
            200..=299 => {
                let granted = granted_expires(response, request)
                    .unwrap_or(registration.expires)
                    .max(1);
                let granted = Duration::from_secs(granted.into());
                // Refresh at half the time, or a minute before it ends if that is later.
                let refresh = (granted / 2).max(granted.saturating_sub(Duration::from_secs(60)));
                if registration.state != RegistrationState::Registered {
                    tracing::info!(trunk = %name, target = ?registration.target, expires_s = granted.as_secs(), "registered with the carrier");
                }
                registration.state = RegistrationState::Registered;
                registration.expires_at = Some(now + granted);
                registration.next_at = Some(now + refresh);
                registration.failures = 0;
                registration.last_reason = None;
                RegisterNext::Nothing
            }
            401 | 407 => {
                let answered = answer_challenge(
                    &trunk.config,
                    request,
                    response,
                    registration.challenges_answered,
                    entropy,
                );
                match answered {
                    Ok(request) => {
                        registration.challenges_answered += 1;
                        registration.cseq += 1;
                        RegisterNext::Again(Box::new(request))
                    }
                    Err(error) => {
                        let reason = format!("{code} {}: {error}", message::reason_phrase(code));
                        registration.fail(now, &reason);
                        tracing::warn!(trunk = %name, "registration failed: {reason}");
                        RegisterNext::Nothing
                    }
                }
            }
            // Interval Too Brief (RFC 3261 §10.2.8): asked again at once for the
            // registrar's Min-Expires, if it is longer than what was asked.
            423 if min_expires(response).is_some_and(|min| min > registration.expires) => {
                let min = min_expires(response).unwrap_or(registration.expires);
                tracing::info!(trunk = %name, expires_s = min, "the registrar wants a longer expiry");
                registration.expires = min;
                // Built afresh, unauthenticated: a challenge to it is a first one.
                RegisterNext::Afresh
            }
            _ => {
                let reason = format!("{code} {}", message::reason_phrase(code));
                tracing::warn!(trunk = %name, "registration failed: {reason}");
                registration.fail(now, &reason);
                let retry_after = (code == 503)
                    .then(|| message::retry_after_of(response))
                    .flatten()
                    .map(|d| d.min(LONGEST_RETRY_AFTER));
                if let Some(wait) = retry_after {
                    // Not asked again before the registrar said (RFC 3261 §21.5.4).
                    registration.next_at = registration.next_at.max(Some(now + wait));
                }
                if matches!(code, 408 | 500 | 503 | 504)
                    && let Some(target) = registration.target
                {
                    self.target_failed(&name, target, &reason, retry_after, now);
                }
                RegisterNext::Nothing
            }
        }
    }

    /// Send trunk `i`'s REGISTER again, answering a challenge, to the target the
    /// registration lives on.
    fn register_again(
        &mut self,
        i: usize,
        now: Instant,
        layer: &mut TransactionLayer,
        request: Request,
    ) {
        let trunk = &self.trunks[i];
        let Some(target) = trunk.registration.as_ref().and_then(|r| r.target) else {
            return;
        };
        let peer = Peer {
            transport: transport(&trunk.config),
            addr: target,
        };
        let txn = layer.send_request(now, request.clone(), peer);
        self.txns
            .insert(txn, TrunkTxn::Register { trunk: i, request });
    }

    /// A request the trunks sent or track had no answer at all; a call's in-dialog
    /// request's timeout goes back to the call under the transaction it knows.
    pub fn handle_txn_timeout(&mut self, now: Instant, txn: ClientTxnId) -> Option<ClientTxnId> {
        match self.txns.remove(&txn)? {
            TrunkTxn::InDialog { original, .. } => return Some(original),
            TrunkTxn::Options { trunk, target } => {
                let name = self.trunks[trunk].config.name.clone();
                self.probe_done(trunk, target, now);
                self.target_failed(&name, target, "no answer to OPTIONS", None, now);
            }
            TrunkTxn::Register { trunk, .. } => {
                let name = self.trunks[trunk].config.name.clone();
                let registration = self.trunks[trunk].registration.as_mut()?;
                let target = registration.target;
                registration.fail(now, "no answer to REGISTER");
                tracing::warn!(trunk = %name, target = ?target, "registration failed: no answer");
                if let Some(target) = target {
                    self.target_failed(&name, target, "no answer to REGISTER", None, now);
                }
            }
        }
        None
    }

    pub fn status(&self, now: Instant) -> Vec<TrunkStatus> {
        self.trunks
            .iter()
            .map(|t| TrunkStatus {
                name: t.config.name.clone(),
                host: t.config.request_host(),
                targets: t
                    .targets
                    .iter()
                    .map(|x| TargetStatus {
                        address: x.resolved.addr,
                        priority: x.resolved.priority,
                        weight: x.resolved.weight,
                        state: x.health,
                        in_rotation: x.in_rotation(now),
                        last_failure: x.last_failure.clone(),
                    })
                    .collect(),
                resolve_error: t.resolve_error.clone(),
                registration: t.registration.as_ref().map(|r| RegistrationStatus {
                    state: r.state,
                    registered_with: r
                        .target
                        .filter(|_| r.state == RegistrationState::Registered),
                    expires_in_s: r
                        .expires_at
                        .filter(|_| r.state == RegistrationState::Registered)
                        .map(|at| at.saturating_duration_since(now).as_secs()),
                    next_try_in_s: r
                        .next_at
                        .map(|at| at.saturating_duration_since(now).as_secs()),
                    last_reason: r.last_reason.clone(),
                    failures: r.failures,
                }),
            })
            .collect()
    }
}

impl Target {
    /// A target; its first health check at `start` (none before the trunks start).
    fn new(resolved: ResolvedTarget, options_interval: u32, start: Option<Instant>) -> Self {
        Self {
            resolved,
            health: Health::Unknown,
            down_until: None,
            held_until: None,
            last_failure: None,
            next_probe: start.filter(|_| options_interval > 0),
            probing: false,
        }
    }

    fn in_rotation(&self, now: Instant) -> bool {
        if self.held_until.is_some_and(|until| now < until) {
            return false;
        }
        match self.health {
            Health::Down => self.down_until.is_some_and(|until| until <= now),
            Health::Up | Health::Unknown => true,
        }
    }
}

impl Registration {
    /// Give up this try; the next comes after a back-off that doubles with each failure.
    fn fail(&mut self, now: Instant, reason: &str) {
        self.failures += 1;
        let backoff = RETRY_FIRST
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(RETRY_CAP);
        self.state = RegistrationState::Failing;
        self.last_reason = Some(reason.to_owned());
        self.next_at = Some(now + backoff);
        // The binding may still hold if it had not expired: a later success says.
        self.challenges_answered = 0;
    }
}

/// What a trunk's registration does after an answer to its REGISTER.
enum RegisterNext {
    /// Send this one (a challenge answered).
    Again(Box<Request>),
    /// Build and send a new one (a 423: with the registrar's Min-Expires).
    Afresh,
    Nothing,
}

/// A 423's Min-Expires.
fn min_expires(response: &Response) -> Option<u32> {
    let message = SipMessage::Response(response.clone());
    message::header_value(&message, "Min-Expires")?
        .trim()
        .parse()
        .ok()
}

/// The expiry a registrar granted: our Contact's `expires`, else the Expires header.
fn granted_expires(response: &Response, request: &Request) -> Option<u32> {
    let message = SipMessage::Response(response.clone());
    let ours = message::header_value(&SipMessage::Request(request.clone()), "Contact")
        .map(|c| crate::sip::dialog::addr_spec(&c))?;
    let from_contact = message::header_values(&message, "Contact")
        .iter()
        .flat_map(|value| value.split(','))
        .filter(|c| crate::sip::dialog::addr_spec(c) == ours)
        .find_map(|c| {
            c.split(';')
                .skip(1)
                .find_map(|p| p.trim().strip_prefix("expires="))
                .and_then(|v| v.trim().parse().ok())
        });
    from_contact
        .or_else(|| message::header_value(&message, "Expires").and_then(|v| v.trim().parse().ok()))
}

fn mark_down(
    target: Option<&mut Target>,
    reason: &str,
    until: Option<Instant>,
    held_until: Option<Instant>,
) {
    if let Some(target) = target {
        target.health = Health::Down;
        target.down_until = until;
        target.held_until = held_until.max(target.held_until);
        target.last_failure = Some(reason.to_owned());
    }
}

fn mark_up(target: Option<&mut Target>) {
    if let Some(target) = target {
        target.health = Health::Up;
        target.down_until = None;
    }
}

/// A health check: `OPTIONS sip:host` from `via`, out of dialog. None only if the host
/// makes no valid Request-URI.
pub fn options_request(
    host: &str,
    transport: Transport,
    via: SocketAddr,
    domain: &str,
    entropy: &mut Entropy,
) -> Option<Request> {
    let text = format!(
        "OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/{} {via};branch=z9hG4bK{};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:wasmpbx@{domain}>;tag={}\r\nTo: <sip:{host}>\r\nCall-ID: {}\r\n\
CSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n",
        transport.as_str().to_ascii_uppercase(),
        entropy.token(),
        entropy.token(),
        entropy.call_id(via.ip()),
    );
    match message::parse(text.as_bytes()) {
        Ok(SipMessage::Request(options)) => Some(options),
        _ => None,
    }
}

/// The transport a trunk's requests go over.
pub fn transport(trunk: &Trunk) -> Transport {
    match trunk.transport {
        TrunkTransport::Udp => Transport::Udp,
        TrunkTransport::Tcp => Transport::Tcp,
        TrunkTransport::Tls => Transport::Tls,
    }
}

/// How long one target of `count` gets before the next is tried: Timer B shared out.
pub fn target_share(count: usize) -> Duration {
    (64 * T1) / u32::try_from(count.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
