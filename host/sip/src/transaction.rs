//! RFC 3261 §17 transactions as a sans-IO state machine.
//!
//! The layer never reads a clock or touches a socket: feed it messages and time with
//! `handle_*`, then drain [`TransactionLayer::poll_output`] until it returns `None`, and
//! call [`TransactionLayer::handle_timeout`] at [`TransactionLayer::poll_timeout`].
//!
//! - Server transactions absorb retransmitted requests (answering with the last response),
//!   send `100 Trying` for INVITE at once, retransmit non-2xx finals over UDP until the
//!   ACK (timers G, H, I) and keep a 2xx going until its ACK arrives (RFC 6026 "Accepted":
//!   timer G's schedule, 64·T1 limit, then [`Output::AckTimeout`]).
//! - Client transactions retransmit over UDP (timers A, E), time out (B, F →
//!   [`Output::Timeout`]), ACK non-2xx finals themselves (timer D), and absorb
//!   retransmitted finals (K). ACKs for 2xx are the caller's ([`TransactionLayer::send_ack`]);
//!   the layer remembers them and re-sends one whenever the 2xx is retransmitted.
//! - Over reliable transports (TCP, WebSocket) nothing is retransmitted and the
//!   linger timers are zero.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{self, Header, Headers, Method, Request, Response, SipMessage};
use rsip::prelude::*;

pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
pub const T4: Duration = Duration::from_secs(5);

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS (RFC 3261 §26): a TCP stream, encrypted.
    Tls,
    Ws,
}

impl Transport {
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
        }
    }

    /// The transport [`Transport::as_str`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Udp, Self::Tcp, Self::Tls, Self::Ws]
            .into_iter()
            .find(|t| t.as_str() == name)
    }
}

/// A peer: where a message came from or goes to. For stream transports the address
/// names the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxnId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxnId(u64);

/// What the layer asks of its driver and its user.
#[derive(Debug)]
pub enum Output {
    /// Send these bytes.
    Transmit { peer: Peer, bytes: Vec<u8> },
    /// A new request (not ACK) for the user, who must answer it with `send_response`.
    Request {
        txn: ServerTxnId,
        request: Request,
        source: Peer,
    },
    /// An ACK for a 2xx (a request of its own, with no transaction).
    Ack { request: Request, source: Peer },
    /// A response to one of the user's requests.
    Response {
        txn: ClientTxnId,
        response: Response,
    },
    /// A request of the user's got no final response in time (timer B or F).
    Timeout { txn: ClientTxnId },
    /// A 2xx to an INVITE the user already acknowledged a 2xx of, from another dialog
    /// (another To tag: a forking proxy let two branches answer, RFC 3261 §13.2.2.4,
    /// RFC 6026): the user must acknowledge it and end that dialog.
    AnotherAnswer { response: Response, source: Peer },
    /// A 2xx to an INVITE was never acknowledged (64·T1): the dialog should end.
    AckTimeout { call_id: String, cseq: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Trying,
    Proceeding,
    /// A non-2xx final was sent (INVITE: waiting for the ACK).
    Completed,
    /// INVITE: the ACK for a non-2xx final arrived; absorbing ACK retransmissions.
    Confirmed,
    /// INVITE: a 2xx was sent; retransmitting it until the ACK.
    Accepted {
        acked: bool,
    },
}

struct ServerTxn {
    id: ServerTxnId,
    invite: bool,
    state: ServerState,
    source: Peer,
    call_id: String,
    cseq: u32,
    last_response: Option<Vec<u8>>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer H / J / I / the Accepted limit: when the transaction ends.
    end_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Calling,
    Proceeding,
    Completed,
}

struct ClientTxn {
    id: ClientTxnId,
    invite: bool,
    state: ClientState,
    request: Request,
    bytes: Vec<u8>,
    peer: Peer,
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B / F. An INVITE's Timer B stops on a provisional (RFC 3261 §17.1.1.2: the
    /// far end is ringing, and the user's own ring timer decides how long); a CANCEL of
    /// it arms 64·T1 again (§9.1), so a far end that never answers the CANCEL cannot
    /// keep the transaction for ever.
    timeout_at: Option<Instant>,
    /// A CANCEL of this INVITE was sent.
    cancelled: bool,
    /// Timer D / K.
    end_at: Option<Instant>,
}

/// ACKs the user sent for 2xx responses, re-sent when the 2xx is retransmitted.
struct SentAck {
    /// The To tag of the 2xx it acknowledges: its dialog.
    to_tag: String,
    bytes: Vec<u8>,
    peer: Peer,
    forget_at: Instant,
}

/// (branch, method): rsip's `Method` is not `Hash`, so the method goes in by name.
type ServerKey = (String, String);
type ClientKey = (String, String);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(ServerTxnId),
    Client(ClientTxnId),
    Ack(String, u32),
}

/// All transactions of one host.
#[derive(Default)]
pub struct TransactionLayer {
    servers: HashMap<ServerKey, ServerTxn>,
    server_keys: HashMap<ServerTxnId, ServerKey>,
    /// Accepted INVITE server transactions by (Call-ID, CSeq), to match their ACKs.
    accepted: HashMap<(String, u32), ServerKey>,
    clients: HashMap<ClientKey, ClientTxn>,
    client_keys: HashMap<ClientTxnId, ClientKey>,
    /// By the INVITE's (Call-ID, CSeq): one per dialog its 2xx responses made.
    sent_acks: HashMap<(String, u32), Vec<SentAck>>,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    outputs: VecDeque<Output>,
    next_id: u64,
}

impl TransactionLayer {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many transactions are alive (for metrics and leak tests).
    pub fn len(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A message arrived from `source`.
    pub fn handle_message(&mut self, now: Instant, message: SipMessage, source: Peer) {
        match message {
            SipMessage::Request(request) => self.handle_request(now, request, source),
            SipMessage::Response(response) => self.handle_response(now, response, source),
        }
    }

    fn handle_request(&mut self, now: Instant, request: Request, source: Peer) {
        let message = SipMessage::Request(request);
        let (Some(branch), Some(call_id), Some((cseq, _))) = (
            message::branch(&message),
            message::call_id(&message),
            message::cseq(&message),
        ) else {
            return; // parse() guarantees these; a hand-made message without them is dropped
        };
        let SipMessage::Request(request) = message else {
            unreachable!()
        };
        if request.method == Method::Ack {
            // An ACK for a non-2xx final belongs to the INVITE transaction (same branch).
            if let Some(txn) = self.servers.get_mut(&(branch.clone(), "INVITE".to_owned()))
                && matches!(txn.state, ServerState::Completed | ServerState::Confirmed)
            {
                if txn.state == ServerState::Completed {
                    txn.state = ServerState::Confirmed;
                    txn.retransmit_at = None;
                    let linger = if source.transport.is_reliable() {
                        Duration::ZERO
                    } else {
                        T4
                    };
                    txn.end_at = Some(now + linger);
                    let id = txn.id;
                    arm(&mut self.timers, now + linger, TimerRef::Server(id));
                }
                return;
            }
            // An ACK for a 2xx: stop retransmitting it, and hand the ACK up.
            if let Some(key) = self.accepted.get(&(call_id.clone(), cseq))
                && let Some(txn) = self.servers.get_mut(key)
            {
                txn.state = ServerState::Accepted { acked: true };
                txn.retransmit_at = None;
            }
            self.outputs.push_back(Output::Ack { request, source });
            return;
        }
        let key = (branch, request.method.to_string());
        if let Some(txn) = self.servers.get(&key) {
            // A retransmission: answer with the last response, if any.
            if let Some(bytes) = txn.last_response.clone() {
                let peer = txn.source;
                transmit(&mut self.outputs, peer, bytes);
            }
            return;
        }
        let id = ServerTxnId(self.id());
        let invite = request.method == Method::Invite;
        let mut txn = ServerTxn {
            id,
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            source,
            call_id,
            cseq,
            last_response: None,
            retransmit_at: None,
            interval: T1,
            end_at: None,
        };
        if invite {
            // 100 Trying at once: the user may take a while (a script decides).
            let trying = message::serialize(&SipMessage::Response(message::response_to(
                &request, 100, None,
            )));
            txn.last_response = Some(trying.clone());
            transmit(&mut self.outputs, source, trying);
        }
        self.servers.insert(key.clone(), txn);
        self.server_keys.insert(id, key);
        self.outputs.push_back(Output::Request {
            txn: id,
            request,
            source,
        });
    }

    fn handle_response(&mut self, now: Instant, response: Response, source: Peer) {
        let message = SipMessage::Response(response);
        let (Some(branch), Some((cseq, method))) =
            (message::branch(&message), message::cseq(&message))
        else {
            return;
        };
        let SipMessage::Response(response) = message else {
            unreachable!()
        };
        let code = response.status_code.code();
        let key = (branch, method.to_string());
        let Some(txn) = self.clients.get_mut(&key) else {
            // A 2xx after the transaction ended (Accepted, RFC 6026): a retransmission
            // (our ACK was lost) is acknowledged again; one from another dialog goes up.
            if method == Method::Invite && (200..300).contains(&code) {
                let message = SipMessage::Response(response);
                let call_id = message::call_id(&message).unwrap_or_default();
                let to_tag = message::to_tag(&message).unwrap_or_default();
                let SipMessage::Response(response) = message else {
                    unreachable!()
                };
                let Some(acks) = self.sent_acks.get(&(call_id, cseq)) else {
                    return;
                };
                match acks.iter().find(|ack| ack.to_tag == to_tag) {
                    Some(ack) => {
                        let (peer, bytes) = (ack.peer, ack.bytes.clone());
                        transmit(&mut self.outputs, peer, bytes);
                    }
                    None => self
                        .outputs
                        .push_back(Output::AnotherAnswer { response, source }),
                }
            }
            return;
        };
        let id = txn.id;
        let reliable = txn.peer.transport.is_reliable();
        match (txn.invite, txn.state, code) {
            (_, ClientState::Completed, _) => {
                // A retransmitted final: INVITE transactions ACK it again.
                if txn.invite && code >= 300 {
                    let (peer, ack) = (txn.peer, ack_for(&txn.request, &response));
                    transmit(&mut self.outputs, peer, ack);
                }
            }
            (_, _, 100..=199) => {
                txn.state = ClientState::Proceeding;
                if txn.invite {
                    txn.retransmit_at = None; // timer A stops on a provisional
                    if !txn.cancelled {
                        txn.timeout_at = None; // and timer B
                    }
                } else if txn.retransmit_at.is_some() {
                    txn.interval = T2;
                }
                self.outputs
                    .push_back(Output::Response { txn: id, response });
            }
            (true, _, 200..=299) => {
                self.remove_client(&key);
                self.outputs
                    .push_back(Output::Response { txn: id, response });
            }
            (invite, _, _) => {
                if invite {
                    let (peer, ack) = (txn.peer, ack_for(&txn.request, &response));
                    transmit(&mut self.outputs, peer, ack);
                }
                txn.state = ClientState::Completed;
                txn.retransmit_at = None;
                txn.timeout_at = None;
                let linger = match (reliable, invite) {
                    (true, _) => Duration::ZERO,
                    (false, true) => Duration::from_secs(32),
                    (false, false) => T4,
                };
                txn.end_at = Some(now + linger);
                arm(&mut self.timers, now + linger, TimerRef::Client(id));
                self.outputs
                    .push_back(Output::Response { txn: id, response });
            }
        }
    }

    /// Send a request (not ACK) in a new client transaction.
    pub fn send_request(&mut self, now: Instant, request: Request, peer: Peer) -> ClientTxnId {
        let message = SipMessage::Request(request);
        let branch = message::branch(&message).unwrap_or_default();
        let bytes = message::serialize(&message);
        let SipMessage::Request(request) = message else {
            unreachable!()
        };
        let id = ClientTxnId(self.id());
        let invite = request.method == Method::Invite;
        let cancel = request.method == Method::Cancel;
        let key = (branch, request.method.to_string());
        let retransmit_at = (!peer.transport.is_reliable()).then(|| now + T1);
        let txn = ClientTxn {
            id,
            invite,
            state: ClientState::Calling,
            request,
            bytes: bytes.clone(),
            peer,
            retransmit_at,
            interval: T1,
            timeout_at: Some(now + 64 * T1),
            cancelled: false,
            end_at: None,
        };
        if cancel {
            self.cancelling(now, &key.0);
        }
        if let Some(at) = retransmit_at {
            arm(&mut self.timers, at, TimerRef::Client(id));
        }
        arm(&mut self.timers, now + 64 * T1, TimerRef::Client(id));
        self.client_keys.insert(id, key.clone());
        self.clients.insert(key, txn);
        transmit(&mut self.outputs, peer, bytes);
        id
    }

    /// A CANCEL goes out for the INVITE of the same branch: if the far end answers
    /// neither, the INVITE's transaction ends 64·T1 from now (RFC 3261 §9.1).
    fn cancelling(&mut self, now: Instant, branch: &str) {
        let key = (branch.to_owned(), Method::Invite.to_string());
        let Some(invite) = self.clients.get_mut(&key) else {
            return;
        };
        if invite.state == ClientState::Completed {
            return;
        }
        invite.cancelled = true;
        let limit = now + 64 * T1;
        if invite.timeout_at.is_none_or(|at| at > limit) {
            invite.timeout_at = Some(limit);
            arm(&mut self.timers, limit, TimerRef::Client(invite.id));
        }
    }

    /// Answer a request received as [`Output::Request`]. A response for a transaction
    /// that has ended is dropped.
    pub fn send_response(&mut self, now: Instant, txn: ServerTxnId, response: Response) {
        let Some(key) = self.server_keys.get(&txn).cloned() else {
            return;
        };
        let Some(server) = self.servers.get_mut(&key) else {
            return;
        };
        if matches!(
            server.state,
            ServerState::Completed | ServerState::Confirmed | ServerState::Accepted { .. }
        ) {
            return; // a final was sent already
        }
        let code = response.status_code.code();
        let bytes = message::serialize(&SipMessage::Response(response));
        let peer = server.source;
        let reliable = peer.transport.is_reliable();
        server.last_response = Some(bytes.clone());
        if code >= 200 {
            match (server.invite, code) {
                (true, 200..=299) => {
                    server.state = ServerState::Accepted { acked: false };
                    if !reliable {
                        server.retransmit_at = Some(now + T1);
                        arm(&mut self.timers, now + T1, TimerRef::Server(txn));
                    }
                    server.end_at = Some(now + 64 * T1);
                    self.accepted
                        .insert((server.call_id.clone(), server.cseq), key);
                    arm(&mut self.timers, now + 64 * T1, TimerRef::Server(txn));
                }
                (true, _) => {
                    server.state = ServerState::Completed;
                    if !reliable {
                        server.retransmit_at = Some(now + T1);
                        arm(&mut self.timers, now + T1, TimerRef::Server(txn));
                    }
                    server.end_at = Some(now + 64 * T1); // timer H
                    arm(&mut self.timers, now + 64 * T1, TimerRef::Server(txn));
                }
                (false, _) => {
                    server.state = ServerState::Completed;
                    let linger = if reliable { Duration::ZERO } else { 64 * T1 }; // timer J
                    server.end_at = Some(now + linger);
                    arm(&mut self.timers, now + linger, TimerRef::Server(txn));
                }
            }
        } else if server.state == ServerState::Trying {
            server.state = ServerState::Proceeding;
        }
        transmit(&mut self.outputs, peer, bytes);
    }

    /// The INVITE server transaction a CANCEL refers to (same branch).
    pub fn invite_for_cancel(&self, cancel: &Request) -> Option<ServerTxnId> {
        let branch = message::branch(&SipMessage::Request(cancel.clone()))?;
        self.servers
            .get(&(branch, "INVITE".to_owned()))
            .map(|t| t.id)
    }

    /// Whether an INVITE server transaction has sent its final response.
    pub fn is_final_sent(&self, txn: ServerTxnId) -> bool {
        let Some(key) = self.server_keys.get(&txn) else {
            return true;
        };
        self.servers
            .get(key)
            .is_none_or(|t| !matches!(t.state, ServerState::Trying | ServerState::Proceeding))
    }

    /// Send an ACK for a 2xx (a request outside any transaction) and remember it.
    pub fn send_ack(&mut self, now: Instant, ack: Request, peer: Peer) {
        let message = SipMessage::Request(ack);
        let key = (
            message::call_id(&message).unwrap_or_default(),
            message::cseq(&message).map_or(0, |c| c.0),
        );
        let to_tag = message::to_tag(&message).unwrap_or_default();
        let bytes = message::serialize(&message);
        let forget_at = now + 64 * T1;
        let acks = self.sent_acks.entry(key.clone()).or_default();
        acks.retain(|ack| ack.to_tag != to_tag);
        acks.push(SentAck {
            to_tag,
            bytes: bytes.clone(),
            peer,
            forget_at,
        });
        arm(&mut self.timers, forget_at, TimerRef::Ack(key.0, key.1));
        transmit(&mut self.outputs, peer, bytes);
    }

    /// Give up on a client transaction that has had no response at all (its target
    /// seems gone): stop retransmitting, and report nothing more of it. Used to move on to
    /// the next of a trunk's targets before Timer B.
    pub fn abandon(&mut self, txn: ClientTxnId) {
        if let Some(key) = self.client_keys.get(&txn).cloned() {
            self.remove_client(&key);
        }
    }

    /// Drop a server transaction without answering it: its request went to another
    /// signalling shard, which answers it (and its retransmissions) from now on.
    pub fn forget_server(&mut self, txn: ServerTxnId) {
        if let Some(key) = self.server_keys.get(&txn).cloned() {
            self.remove_server(&key);
        }
    }

    /// The transport could not reach `peer` (a TCP connection refused): each client
    /// transaction towards it that is still waiting ends as if timed out (RFC 3261
    /// §17.1.4), so its user moves on at once.
    pub fn transport_failed(&mut self, peer: Peer) {
        let failed: Vec<(ClientKey, ClientTxnId)> = self
            .clients
            .iter()
            .filter(|(_, t)| t.peer == peer && t.timeout_at.is_some())
            .map(|(key, t)| (key.clone(), t.id))
            .collect();
        for (key, id) in failed {
            self.remove_client(&key);
            self.outputs.push_back(Output::Timeout { txn: id });
        }
    }

    /// Send bytes outside any transaction (stateless responses).
    pub fn send_stateless(&mut self, peer: Peer, message: &SipMessage) {
        transmit(&mut self.outputs, peer, message::serialize(message));
    }

    /// Process every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                TimerRef::Server(id) => self.server_timer(now, id),
                TimerRef::Client(id) => self.client_timer(now, id),
                TimerRef::Ack(call_id, cseq) => {
                    let key = (call_id, cseq);
                    if let Some(acks) = self.sent_acks.get_mut(&key) {
                        acks.retain(|ack| ack.forget_at > now);
                        if acks.is_empty() {
                            self.sent_acks.remove(&key);
                        }
                    }
                }
            }
        }
    }

    fn server_timer(&mut self, now: Instant, id: ServerTxnId) {
        let Some(key) = self.server_keys.get(&id).cloned() else {
            return;
        };
        let Some(txn) = self.servers.get_mut(&key) else {
            return;
        };
        if txn.end_at.is_some_and(|at| at <= now) {
            if txn.state == (ServerState::Accepted { acked: false }) {
                self.outputs.push_back(Output::AckTimeout {
                    call_id: txn.call_id.clone(),
                    cseq: txn.cseq,
                });
            }
            self.remove_server(&key);
            return;
        }
        if let Some(at) = txn.retransmit_at
            && at <= now
        {
            txn.interval = (txn.interval * 2).min(T2);
            let next = now + txn.interval;
            txn.retransmit_at = Some(next);
            let (peer, bytes) = (txn.source, txn.last_response.clone().unwrap_or_default());
            arm(&mut self.timers, next, TimerRef::Server(id));
            transmit(&mut self.outputs, peer, bytes);
        }
    }

    fn client_timer(&mut self, now: Instant, id: ClientTxnId) {
        let Some(key) = self.client_keys.get(&id).cloned() else {
            return;
        };
        let Some(txn) = self.clients.get_mut(&key) else {
            return;
        };
        if txn.end_at.is_some_and(|at| at <= now) {
            self.remove_client(&key);
            return;
        }
        if txn.timeout_at.is_some_and(|at| at <= now) {
            self.remove_client(&key);
            self.outputs.push_back(Output::Timeout { txn: id });
            return;
        }
        if let Some(at) = txn.retransmit_at
            && at <= now
        {
            txn.interval = if txn.invite {
                txn.interval * 2
            } else {
                (txn.interval * 2).min(T2)
            };
            let next = now + txn.interval;
            txn.retransmit_at = Some(next);
            let (peer, bytes) = (txn.peer, txn.bytes.clone());
            arm(&mut self.timers, next, TimerRef::Client(id));
            transmit(&mut self.outputs, peer, bytes);
        }
    }

    fn remove_server(&mut self, key: &ServerKey) {
        if let Some(txn) = self.servers.remove(key) {
            self.server_keys.remove(&txn.id);
            if self.accepted.get(&(txn.call_id.clone(), txn.cseq)) == Some(key) {
                self.accepted.remove(&(txn.call_id, txn.cseq));
            }
        }
    }

    fn remove_client(&mut self, key: &ClientKey) {
        if let Some(txn) = self.clients.remove(key) {
            self.client_keys.remove(&txn.id);
        }
    }
}

fn transmit(outputs: &mut VecDeque<Output>, peer: Peer, bytes: Vec<u8>) {
    outputs.push_back(Output::Transmit { peer, bytes });
}

fn arm(timers: &mut BinaryHeap<Reverse<(Instant, TimerRef)>>, at: Instant, timer: TimerRef) {
    timers.push(Reverse((at, timer)));
}

/// The ACK a client INVITE transaction sends for a non-2xx final (RFC 3261 17.1.1.3):
/// the request's URI, top Via, From, Call-ID, Route and CSeq number, the response's To.
fn ack_for(invite: &Request, response: &Response) -> Vec<u8> {
    let mut headers = Headers::default();
    let mut via_done = false;
    for header in invite.headers.iter() {
        match header {
            Header::Via(_) if !via_done => {
                via_done = true;
                headers.push(header.clone());
            }
            Header::From(_) | Header::CallId(_) | Header::Route(_) | Header::MaxForwards(_) => {
                headers.push(header.clone())
            }
            Header::CSeq(cseq) => {
                let seq = cseq.typed().map(|c| c.seq).unwrap_or(1);
                headers.push(Header::CSeq(rsip::headers::CSeq::new(format!("{seq} ACK"))));
            }
            _ => {}
        }
    }
    if let Ok(to) = response.to_header() {
        headers.push(Header::To(to.clone()));
    }
    let ack = Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    };
    message::serialize(&SipMessage::Request(ack))
}

#[cfg(test)]
mod tests;
