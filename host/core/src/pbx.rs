//! The PBX core: the transaction user on top of the transaction layer. Sans-IO like the
//! layer beneath it: bytes and time in, bytes and store changes out.
//!
//! It answers REGISTER (the registrar) and OPTIONS (keep-alives and monitoring), and
//! hands INVITEs and in-dialog requests to the calls ([`crate::call`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use wasmpbx_types::ambient::Ambient;

use crate::call::{CallRecord, Calls, Ctx, PullSearch, SessionId};
use crate::config::Config;
use crate::edges::Edges;
use crate::entropy::Entropy;
use crate::media::{MediaAllocator, MediaEvent, Prompts};
use crate::registrar::{BindingChange, Registrar, SharedAuth};
use crate::routing::{CallInfo, Decision, Event};
use crate::sip::local::LocalAddrs;
use crate::sip::message::{self, Header, Method, ParseError, Request, SipMessage};
use crate::sip::shards::Shard;
use crate::sip::transaction::{Output, Peer, ServerTxnId, TransactionLayer, Transport};
use crate::trunks::{ResolvedTarget, TrunkStatus, Trunks};
use wasmpbx_types::script::ScriptVersion;

/// How often expired registrations are swept.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// What the core asks of its driver.
#[derive(Debug)]
pub enum PbxOutput {
    /// Send bytes to a peer.
    Transmit { peer: Peer, bytes: Vec<u8> },
    /// Registrations changed: persist them and refresh the device directory.
    Bindings(Vec<BindingChange>),
    /// A stream connection delivered something unusable: close it.
    Close { peer: Peer },
    /// Run the routing script on an event of a call; answer with `handle_decision`
    /// (`handle_call_ended_decision` for `call-ended`).
    Route {
        session: SessionId,
        script: String,
        location: Option<String>,
        /// The version the call started with (none for its first event).
        pinned: Option<ScriptVersion>,
        call: CallInfo,
        event: Event,
        /// The call's span, for the script's lines.
        span: tracing::Span,
    },
    /// A call arrived (from a trunk or a device) and has a session: for the event
    /// stream.
    CallStarted { session: SessionId, call: CallInfo },
    /// A call ended: its record for the store.
    Record(CallRecord),
    /// An answered call's record as it stands (at the answer, after each flip), state
    /// `live`: written so that a crash cannot lose the call; the ended record replaces it.
    RecordLive(CallRecord),
    /// An ended call's record again, with the tags its script's `call-ended` answer
    /// added: it replaces the first in the store, and is not a call more to count.
    RecordRewritten(CallRecord),
    /// A request another shard must see (a pull: the user's most recent call may be
    /// there): give `bytes` to `shard` with [`Pbx::handle_handed_off`], as if they had
    /// come from `peer`, and send that dialog's messages there from now on. Nothing was
    /// answered here.
    HandOff {
        shard: usize,
        peer: Peer,
        bytes: Vec<u8>,
        search: PullSearch,
    },
    /// Trunk targets this shard found down or up again: for the other shards
    /// ([`Pbx::hear_trunk_news`]).
    TrunkNews(Vec<crate::trunks::TargetNews>),
    /// Ask the flip-policy script; answer with `handle_flip_decision`.
    DecideFlip {
        flip: u64,
        /// The policy script's name (`scripts.flip_policy`).
        policy: String,
        request: crate::flip::FlipRequest,
        /// The call's span, for the policy's lines.
        span: tracing::Span,
    },
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct PbxCounters {
    pub messages_in: u64,
    pub malformed: u64,
    /// New calls refused with 503 because the core was overloaded.
    pub refused_overloaded: u64,
    /// Failed digest authentications and phone sign-ins ([`Registrar::auth_failed`]).
    pub auth_failed: u64,
    /// Requests refused from sources blocked for failing too often.
    pub auth_throttled: u64,
}

/// Several shards' counters, summed.
impl std::ops::Add for PbxCounters {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            messages_in: self.messages_in + other.messages_in,
            malformed: self.malformed + other.malformed,
            refused_overloaded: self.refused_overloaded + other.refused_overloaded,
            auth_failed: self.auth_failed + other.auth_failed,
            auth_throttled: self.auth_throttled + other.auth_throttled,
        }
    }
}

/// What a caller refused for overload is told to wait, in seconds (RFC 3261 §21.5.4).
const OVERLOAD_RETRY_AFTER_S: u32 = 1;

pub struct Pbx {
    layer: TransactionLayer,
    pub registrar: Registrar,
    pub calls: Calls,
    trunks: Trunks,
    edges: Edges,
    media: Box<dyn MediaAllocator>,
    prompts: Arc<Prompts>,
    config: Arc<Config>,
    /// The host's own SIP addresses, for Via and Contact.
    local: LocalAddrs,
    outputs: VecDeque<PbxOutput>,
    next_sweep: Option<Instant>,
    /// The core's randomness: one generator, each input's seed mixed in as it comes.
    entropy: Entropy,
    /// Draining (SIGTERM): new calls are refused, with this Retry-After (seconds).
    draining: Option<u32>,
    /// Overloaded: this share of new calls (0 to 1) is refused at once with 503.
    refused_share: f64,
    counters: PbxCounters,
    /// The other nodes' calls (`[cluster]`), for pulls that land here.
    owners: Arc<dyn crate::flip::CallOwners>,
    /// Which signalling shard this is. Only the home shard answers REGISTER, expires
    /// bindings and registers with carriers; the others keep copies of its bindings
    /// ([`Pbx::replicate_bindings`]). Every shard checks the trunks' and edges' health
    /// itself: each needs to know which targets are up for its calls.
    shard: Shard,
}

impl Pbx {
    /// The counters for `/metrics`, the registrar's included.
    pub fn counters(&self) -> PbxCounters {
        PbxCounters {
            auth_failed: self.registrar.auth_failed,
            auth_throttled: self.registrar.auth_throttled,
            ..self.counters
        }
    }

    pub fn new(
        config: Arc<Config>,
        secret: [u8; 32],
        media: Box<dyn MediaAllocator>,
        local: LocalAddrs,
    ) -> Self {
        Self {
            layer: TransactionLayer::new(),
            registrar: Registrar::new(config.clone(), secret),
            calls: Calls::default(),
            trunks: Trunks::new(&config),
            edges: Edges::new(&config),
            media,
            prompts: Arc::new(Prompts::built_in()),
            config,
            local,
            outputs: VecDeque::new(),
            next_sweep: None,
            entropy: Entropy::new(0),
            draining: None,
            refused_share: 0.0,
            counters: PbxCounters::default(),
            owners: Arc::new(crate::flip::NoOtherNodes),
            shard: Shard::ALONE,
        }
    }

    /// One of several signalling shards (`sip.shards`): the Call-IDs it mints hash to it,
    /// and digest answers' nonce-counts and failing sources are counted with the other
    /// shards'.
    pub fn with_shard(mut self, shard: Shard, shared: SharedAuth) -> Self {
        self.shard = shard;
        // Seeded apart, so the shards' tags and branches differ even without the OS's
        // randomness.
        self.entropy = Entropy::for_shard(shard.index as u64, shard);
        self.registrar.share_auth(shared);
        self
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Binding changes the home shard's registrar made, for this shard's copy.
    pub fn replicate_bindings(&mut self, changes: &[BindingChange]) {
        for change in changes {
            self.registrar.apply_from_home(change);
        }
    }

    /// The prompts `play` names (the built-in set until this is called).
    pub fn with_prompts(mut self, prompts: Arc<Prompts>) -> Self {
        self.prompts = prompts;
        self
    }

    /// Where the other nodes sharing the store hold their users' calls.
    pub fn set_owners(&mut self, owners: Arc<dyn crate::flip::CallOwners>) {
        self.owners = owners;
    }

    pub fn poll_output(&mut self) -> Option<PbxOutput> {
        self.outputs.pop_front().or_else(|| {
            let news = self.trunks.take_news();
            (!news.is_empty()).then_some(PbxOutput::TrunkNews(news))
        })
    }

    /// What another shard found of the trunks' targets.
    pub fn hear_trunk_news(&mut self, ambient: Ambient, news: &[crate::trunks::TargetNews]) {
        self.trunks.heard(news, ambient.now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.layer.poll_timeout(),
            self.next_sweep,
            self.calls.poll_timeout(),
            self.trunks.poll_timeout(self.shard.is_home()),
            self.edges.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn ctx(&mut self, ambient: Ambient) -> (&mut Calls, Ctx<'_>) {
        // Several contexts may serve one input (a timer tick ending two transactions):
        // mixing again moves the generator on, so their tokens still differ.
        self.entropy.mix(ambient.random);
        let ctx = Ctx {
            layer: &mut self.layer,
            media: self.media.as_mut(),
            registrar: &mut self.registrar,
            trunks: &mut self.trunks,
            outputs: &mut self.outputs,
            config: &self.config,
            prompts: &self.prompts,
            local: self.local,
            ambient,
            entropy: &mut self.entropy,
            draining: self.draining,
            owners: self.owners.as_ref(),
            shard: self.shard,
        };
        (&mut self.calls, ctx)
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Run on a re-read config (its restart-only keys already the running ones, see
    /// `config::reload`): new calls, registrations and flips follow it; live calls keep
    /// what they started with.
    pub fn reconfigure(&mut self, ambient: Ambient, config: Arc<Config>) {
        self.trunks.reconfigure(&config, ambient.now);
        self.edges.reconfigure(&config, ambient.now);
        if self.shard.is_home() {
            let changes = self.registrar.reconfigure(config.clone());
            if !changes.is_empty() {
                self.outputs.push_back(PbxOutput::Bindings(changes));
            }
        } else {
            self.registrar.set_config(config.clone());
        }
        self.registrar.reach_phones_through(self.edges.current());
        self.config = config;
    }

    /// Stop taking new calls (they, and OPTIONS, get 503 with `Retry-After:
    /// retry_after_s`); registrations, live calls and their flips go on.
    pub fn start_draining(&mut self, retry_after_s: u32) {
        self.draining = Some(retry_after_s);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Overload control: refuse this share (0 to 1) of new INVITEs at once with 503 and
    /// Retry-After, before anything else is done for them; live calls, their in-dialog
    /// requests and registrations go on.
    pub fn set_refused_share(&mut self, share: f64) {
        self.refused_share = share.clamp(0.0, 1.0);
    }

    /// Whether to refuse this new call for overload (drawn at random: the share refused
    /// is spread over callers, not the next N).
    fn refuse_for_overload(&mut self) -> bool {
        if self.refused_share <= 0.0 {
            return false;
        }
        let draw = (self.entropy.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        draw < self.refused_share
    }

    /// Hang up every live call (BYE to both sides, CANCEL what rings) and write their
    /// records: the end of a drain.
    pub fn hang_up_all(&mut self, ambient: Ambient) {
        let (calls, mut ctx) = self.ctx(ambient);
        calls.hang_up_all(&mut ctx);
        self.pump(ambient);
    }

    /// Start registering with carriers (on the home shard) and checking their and the
    /// edges' health.
    pub fn start_trunks_and_edges(&mut self, ambient: Ambient) {
        self.trunks.start(ambient.now);
        self.edges.start(ambient.now);
        self.handle_timeout(ambient);
    }

    /// The resolver's answer for a trunk's host name.
    pub fn trunk_resolved(
        &mut self,
        ambient: Ambient,
        trunk: &str,
        answer: Result<Vec<ResolvedTarget>, String>,
    ) {
        self.trunks.resolved(ambient.now, trunk, answer);
        self.handle_timeout(ambient);
    }

    /// The addresses a trunk's `inbound` host names resolved to.
    pub fn trunk_inbound_resolved(&mut self, trunk: &str, addresses: Vec<std::net::IpAddr>) {
        self.trunks.inbound_resolved(trunk, addresses);
    }

    /// The driver could not reach `peer` (a TCP connect failed): what was waiting on it
    /// fails now, as a timeout would (a call through a trunk moves to its next target).
    pub fn transport_failed(&mut self, ambient: Ambient, peer: Peer) {
        self.layer.transport_failed(peer);
        self.pump(ambient);
    }

    /// Each trunk's targets, their health and its registration (`/api/trunks`).
    pub fn trunk_status(&self, now: Instant) -> Vec<TrunkStatus> {
        self.trunks.status(now)
    }

    /// The script's answer to a call's `call-ended` event: its tags complete the record.
    pub fn handle_call_ended_decision(
        &mut self,
        ambient: Ambient,
        session: SessionId,
        decision: Decision,
    ) {
        let (calls, mut ctx) = self.ctx(ambient);
        calls.call_ended_decided(&mut ctx, session, decision);
        self.pump(ambient);
    }

    /// The routing script's answer to an external event of a call.
    pub fn handle_external_decision(
        &mut self,
        ambient: Ambient,
        session: SessionId,
        decision: Decision,
    ) {
        let (calls, mut ctx) = self.ctx(ambient);
        calls.external_decided(&mut ctx, session, decision);
        self.pump(ambient);
    }

    /// The routing script's decision for an event of a call.
    pub fn handle_decision(
        &mut self,
        ambient: Ambient,
        session: SessionId,
        decision: Decision,
        pinned: Option<ScriptVersion>,
    ) {
        let (calls, mut ctx) = self.ctx(ambient);
        calls.handle_decision(&mut ctx, session, decision, pinned);
        self.pump(ambient);
    }

    /// A connection closed. A WebSocket's devices can be reached over nothing else
    /// (RFC 7118): their registrations end with it, and their calls.
    /// The live calls of the user whose extension and password these are.
    /// A user signing in with their extension and SIP password (the browser phone):
    /// their id, or why not (failures feed the registrar's throttle).
    pub fn sign_in(
        &mut self,
        ambient: Ambient,
        extension: &str,
        password: &str,
        source: std::net::IpAddr,
    ) -> Result<String, crate::registrar::PasswordRefusal> {
        self.registrar
            .check_password(ambient.wall_secs(), source, extension, password)
    }

    /// A user's live calls, on any of their devices.
    pub fn user_calls(&self, user_id: &str) -> Vec<crate::call::UserCall> {
        self.calls.user_calls(user_id)
    }

    pub fn connection_closed(&mut self, ambient: Ambient, peer: Peer) {
        if peer.transport != Transport::Ws {
            return;
        }
        if self.shard.is_home() {
            let changes = self.registrar.drop_connection(peer.addr);
            if !changes.is_empty() {
                self.outputs.push_back(PbxOutput::Bindings(changes));
            }
        }
        let (calls, mut ctx) = self.ctx(ambient);
        calls.connection_closed(&mut ctx, peer);
        self.pump(ambient);
    }

    /// Bytes arrived from `source` (one datagram, or one framed stream message).
    pub fn handle_bytes(&mut self, ambient: Ambient, bytes: &[u8], source: Peer) {
        self.handle_parsed(ambient, message::parse(bytes), bytes, source);
    }

    /// A pull INVITE another signalling shard handed here ([`PbxOutput::HandOff`]), as
    /// if it had come from `source`, with what the shards before this one found.
    pub fn handle_handed_off(
        &mut self,
        ambient: Ambient,
        bytes: &[u8],
        source: Peer,
        search: PullSearch,
    ) {
        let parsed = message::parse(bytes);
        let call_id = parsed.as_ref().ok().and_then(message::call_id);
        if let Some(call_id) = call_id {
            self.calls.handed_pull(call_id, search);
        }
        self.handle_parsed(ambient, parsed, bytes, source);
        self.calls.handed_pull_done();
    }

    fn handle_parsed(
        &mut self,
        ambient: Ambient,
        parsed: Result<SipMessage, ParseError>,
        bytes: &[u8],
        source: Peer,
    ) {
        self.counters.messages_in += 1;
        if self.shard.is_home() {
            self.next_sweep.get_or_insert(ambient.now + EXPIRY_SWEEP);
        }
        match parsed {
            Ok(SipMessage::Request(mut request)) => {
                if source.transport == Transport::Udp {
                    message::stamp_received(&mut request, source.addr);
                }
                self.layer
                    .handle_message(ambient.now, SipMessage::Request(request), source);
            }
            Ok(response) => self.layer.handle_message(ambient.now, response, source),
            Err(error) => self.reject_malformed(bytes, &error, source),
        }
        self.pump(ambient);
    }

    fn reject_malformed(&mut self, bytes: &[u8], error: &ParseError, source: Peer) {
        self.counters.malformed += 1;
        if matches!(source.transport, Transport::Tcp | Transport::Tls) {
            // A stream with garbage in it cannot be re-framed: close it.
            tracing::debug!(peer = %source.addr, "malformed SIP message: {error}; closing");
            self.outputs.push_back(PbxOutput::Close { peer: source });
            return;
        }
        // A datagram or a WebSocket frame stands alone: answer it if it can be, go on.
        if source.transport == Transport::Ws {
            tracing::info!(peer = %source.addr, "websocket: not a SIP message: {error}");
        } else {
            tracing::debug!(peer = %source.addr, "malformed SIP message: {error}");
        }
        if let Some(reply) = message::bad_request_from_raw(bytes, &error.to_string()) {
            self.outputs.push_back(PbxOutput::Transmit {
                peer: source,
                bytes: reply,
            });
        }
    }

    /// Push a live call to the user's other devices (the admin API).
    pub fn request_push(
        &mut self,
        ambient: Ambient,
        session: SessionId,
        targets: Vec<String>,
    ) -> Result<(), crate::call::Refusal> {
        let (calls, mut ctx) = self.ctx(ambient);
        let result = calls.start_push(&mut ctx, session, None, crate::flip::Trigger::Api, targets);
        self.pump(ambient);
        result
    }

    /// An outside system's event for a live call (see `Calls::note_event`).
    pub fn call_event(
        &mut self,
        ambient: Ambient,
        session: SessionId,
        name: String,
        value: String,
        confidence: Option<f64>,
    ) -> Result<(), crate::call::Refusal> {
        let (calls, mut ctx) = self.ctx(ambient);
        let result = calls.note_event(&mut ctx, session, name, value, confidence);
        self.pump(ambient);
        result
    }

    /// The flip policy's answer (an error when the script failed: the flip is denied).
    pub fn handle_flip_decision(
        &mut self,
        ambient: Ambient,
        flip: u64,
        decision: Result<crate::flip::FlipDecision, String>,
    ) {
        let (calls, mut ctx) = self.ctx(ambient);
        calls.flip_decided(&mut ctx, flip, decision);
        self.pump(ambient);
    }

    /// Something a call's media noticed (a key pressed).
    pub fn handle_media_event(&mut self, ambient: Ambient, event: MediaEvent) {
        let (calls, mut ctx) = self.ctx(ambient);
        match event {
            MediaEvent::Digit {
                session,
                side,
                digit,
            } => calls.handle_key(&mut ctx, session, side, digit),
            MediaEvent::ReservedDigit { session, digit } => {
                calls.handle_pin_digit(&mut ctx, session, digit)
            }
            MediaEvent::Heard { session, .. } => calls.release_old_device(&mut ctx, session),
        }
        self.pump(ambient);
    }

    pub fn handle_timeout(&mut self, ambient: Ambient) {
        self.layer.handle_timeout(ambient.now);
        self.entropy.mix(ambient.random);
        let home = self.shard.is_home();
        self.trunks.handle_timeout(
            ambient.now,
            &mut self.layer,
            self.local,
            &mut self.entropy,
            home,
        );
        self.edges
            .handle_timeout(ambient.now, &mut self.layer, self.local, &mut self.entropy);
        self.registrar.reach_phones_through(self.edges.current());
        let (calls, mut ctx) = self.ctx(ambient);
        calls.handle_timeout(&mut ctx);
        if self.next_sweep.is_some_and(|at| at <= ambient.now) {
            let changes = self.registrar.expire(ambient.wall_secs());
            if !changes.is_empty() {
                self.outputs.push_back(PbxOutput::Bindings(changes));
            }
            self.next_sweep = (self.registrar.count() > 0).then(|| ambient.now + EXPIRY_SWEEP);
        }
        self.pump(ambient);
    }

    /// Drain the transaction layer, acting on what it hands up.
    fn pump(&mut self, ambient: Ambient) {
        while let Some(output) = self.layer.poll_output() {
            match output {
                Output::Transmit { peer, bytes } => {
                    self.outputs.push_back(PbxOutput::Transmit { peer, bytes })
                }
                Output::Request {
                    txn,
                    request,
                    source,
                } => self.handle_request(ambient, txn, request, source),
                Output::Response { txn, response } if self.trunks.owns(txn) => {
                    let passed_on = self.trunks.handle_response(
                        ambient.now,
                        &mut self.layer,
                        self.local,
                        &mut self.entropy,
                        txn,
                        response,
                    );
                    if let Some((txn, response)) = passed_on {
                        let (calls, mut ctx) = self.ctx(ambient);
                        calls.handle_response(&mut ctx, txn, response);
                    }
                }
                Output::Response { txn, .. } if self.edges.owns(txn) => {
                    self.edges.answered(txn);
                    self.registrar.reach_phones_through(self.edges.current());
                }
                Output::Response { txn, response } => {
                    let (calls, mut ctx) = self.ctx(ambient);
                    calls.handle_response(&mut ctx, txn, response);
                }
                Output::Timeout { txn } if self.trunks.owns(txn) => {
                    if let Some(txn) = self.trunks.handle_txn_timeout(ambient.now, txn) {
                        let (calls, mut ctx) = self.ctx(ambient);
                        calls.handle_txn_timeout(&mut ctx, txn);
                    }
                }
                Output::Timeout { txn } if self.edges.owns(txn) => {
                    self.edges.unanswered(txn);
                    self.registrar.reach_phones_through(self.edges.current());
                }
                Output::Timeout { txn } => {
                    let (calls, mut ctx) = self.ctx(ambient);
                    calls.handle_txn_timeout(&mut ctx, txn);
                }
                Output::AckTimeout { call_id, .. } => {
                    let (calls, mut ctx) = self.ctx(ambient);
                    calls.handle_ack_timeout(&mut ctx, &call_id);
                }
                Output::AnotherAnswer { response, source } => {
                    let (calls, mut ctx) = self.ctx(ambient);
                    calls.hang_up_another_answer(&mut ctx, &response, source);
                }
                Output::Ack { .. } => {}
            }
        }
    }

    fn handle_request(
        &mut self,
        ambient: Ambient,
        txn: ServerTxnId,
        request: Request,
        source: Peer,
    ) {
        self.entropy.mix(ambient.random);
        let tag = self.entropy.token();
        // An INVITE without a To tag starts a call (or a flip); one with it is in a dialog.
        let initial = request.method == Method::Invite
            && message::to_tag(&SipMessage::Request(request.clone())).is_none();
        let response = match request.method {
            Method::Register => {
                let outcome = self.registrar.handle_register(
                    ambient.wall_secs(),
                    &mut self.entropy,
                    &request,
                    source,
                );
                if !outcome.changes.is_empty() {
                    self.next_sweep.get_or_insert(ambient.now + EXPIRY_SWEEP);
                    self.outputs.push_back(PbxOutput::Bindings(outcome.changes));
                }
                outcome.response
            }
            Method::Options if let Some(retry_after) = self.draining => {
                // A load balancer probing with OPTIONS moves traffic away.
                message::retry_after(message::response_to(&request, 503, Some(&tag)), retry_after)
            }
            Method::Options => {
                let mut response = message::response_to(&request, 200, Some(&tag));
                response
                    .headers
                    .push(Header::Other("Allow".into(), message::ALLOW.into()));
                response
                    .headers
                    .push(Header::Other("Accept".into(), "application/sdp".into()));
                response
            }
            Method::Invite if initial && self.refuse_for_overload() => {
                self.counters.refused_overloaded += 1;
                tracing::debug!(from = %source.addr, "INVITE refused: overloaded");
                message::retry_after(
                    message::response_to(&request, 503, Some(&tag)),
                    OVERLOAD_RETRY_AFTER_S,
                )
            }
            Method::Invite if initial => {
                let (calls, mut ctx) = self.ctx(ambient);
                return calls.handle_invite(&mut ctx, txn, request, source);
            }
            Method::Cancel => {
                // 200 for the CANCEL first, then the 487 for the INVITE (RFC 3261 9.2).
                let invite = self
                    .layer
                    .invite_for_cancel(&request)
                    .filter(|i| !self.layer.is_final_sent(*i));
                let reply = message::response_to(
                    &request,
                    if invite.is_some() { 200 } else { 481 },
                    Some(&tag),
                );
                self.layer.send_response(ambient.now, txn, reply);
                if let Some(invite) = invite {
                    let (calls, mut ctx) = self.ctx(ambient);
                    calls.handle_cancel(&mut ctx, invite);
                }
                return;
            }
            Method::Invite
            | Method::Bye
            | Method::Info
            | Method::Notify
            | Method::Update
            | Method::Refer => {
                let (calls, mut ctx) = self.ctx(ambient);
                return calls.handle_in_dialog(&mut ctx, txn, request);
            }
            _ => {
                let mut response = message::response_to(&request, 405, Some(&tag));
                response
                    .headers
                    .push(Header::Other("Allow".into(), message::ALLOW.into()));
                response
            }
        };
        self.layer.send_response(ambient.now, txn, response);
    }
}
