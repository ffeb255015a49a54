//! The edges a node reaches its users' phones through (`[cluster] edge`), sans-IO: each
//! asked `OPTIONS` every [`PROBE_EVERY`]; one that has not answered within
//! [`ANSWER_WITHIN`] is down until it answers again. A node rings the phones behind the
//! edge through [`Edges::current`]: the first edge listed that is up — so when one edge
//! dies, calls and pushes to the phones go through the next (the edges share the
//! registrations in the database, so any of them reaches every phone).
//!
//! The probe's own deadline is much shorter than a transaction's (Timer F, 32 s): a node
//! learns within a few seconds, as the edge's dispatcher learns of a node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::entropy::Entropy;
use crate::sip::local::LocalAddrs;
use crate::sip::transaction::{ClientTxnId, Peer, TransactionLayer, Transport};
use crate::trunks::options_request;

/// How often each edge is asked.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// An edge that has said nothing this long after being asked is down.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

struct Edge {
    addr: SocketAddr,
    up: bool,
    /// The probe waiting for an answer, and when it is given up.
    asking: Option<(ClientTxnId, Instant)>,
    /// None until [`Edges::start`].
    next_probe: Option<Instant>,
}

pub struct Edges {
    edges: Vec<Edge>,
    /// The node's domain, for the probes' From.
    domain: String,
    probes: HashMap<ClientTxnId, SocketAddr>,
}

impl Edges {
    /// The config's edges, each taken to be up until a probe says otherwise.
    pub fn new(config: &Config) -> Self {
        let edges = config
            .cluster
            .edge_addrs()
            .into_iter()
            .map(|addr| Edge {
                addr,
                up: true,
                asking: None,
                next_probe: None,
            })
            .collect();
        Self {
            edges,
            domain: config.sip.domain.clone(),
            probes: HashMap::new(),
        }
    }

    /// Start probing, the first probes at `now`.
    pub fn start(&mut self, now: Instant) {
        for edge in &mut self.edges {
            edge.next_probe = Some(now);
        }
    }

    /// A re-read config: the edges it lists, those already known keeping what the
    /// probes found, the new ones probed at `now`.
    pub fn reconfigure(&mut self, config: &Config, now: Instant) {
        let mut fresh = Self::new(config);
        for edge in &mut fresh.edges {
            match self.edges.iter().find(|e| e.addr == edge.addr) {
                Some(known) => (edge.up, edge.next_probe) = (known.up, known.next_probe),
                None => edge.next_probe = Some(now),
            }
        }
        // Probes still out are forgotten: their answers change nothing any more.
        *self = fresh;
    }

    /// Where the phones behind the edge are reached now: the first edge that is up, or
    /// the first listed while none is. None without an edge.
    pub fn current(&self) -> Option<SocketAddr> {
        self.edges
            .iter()
            .find(|e| e.up)
            .or(self.edges.first())
            .map(|e| e.addr)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.edges
            .iter()
            .filter_map(|e| {
                e.asking
                    .map_or(e.next_probe, |(_, deadline)| Some(deadline))
            })
            .min()
    }

    /// Give up on probes past their deadline (the edge is down) and send the ones due.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        local: LocalAddrs,
        entropy: &mut Entropy,
    ) {
        for edge in &mut self.edges {
            if let Some((txn, deadline)) = edge.asking
                && deadline <= now
            {
                layer.abandon(txn);
                self.probes.remove(&txn);
                edge.asking = None;
                mark(edge, false);
            }
            if edge.asking.is_some() || edge.next_probe.is_none_or(|at| at > now) {
                continue;
            }
            edge.next_probe = Some(now + PROBE_EVERY);
            let host = edge.addr.to_string();
            let via = local.for_transport(Transport::Udp);
            let Some(options) = options_request(&host, Transport::Udp, via, &self.domain, entropy)
            else {
                continue;
            };
            let peer = Peer {
                transport: Transport::Udp,
                addr: edge.addr,
            };
            let txn = layer.send_request(now, options, peer);
            edge.asking = Some((txn, now + ANSWER_WITHIN));
            self.probes.insert(txn, edge.addr);
        }
    }

    /// Whether `txn` is one of the probes.
    pub fn owns(&self, txn: ClientTxnId) -> bool {
        self.probes.contains_key(&txn)
    }

    /// Any answer to a probe (even an error: the edge is there) means the edge is up.
    pub fn answered(&mut self, txn: ClientTxnId) {
        let Some(addr) = self.probes.remove(&txn) else {
            return;
        };
        if let Some(edge) = self.edges.iter_mut().find(|e| e.addr == addr) {
            edge.asking = None;
            mark(edge, true);
        }
    }

    /// A probe's transaction ended without an answer (the transport failed).
    pub fn unanswered(&mut self, txn: ClientTxnId) {
        let Some(addr) = self.probes.remove(&txn) else {
            return;
        };
        if let Some(edge) = self.edges.iter_mut().find(|e| e.addr == addr) {
            edge.asking = None;
            mark(edge, false);
        }
    }
}

/// Set an edge up or down, saying so when that changes.
fn mark(edge: &mut Edge, up: bool) {
    if edge.up == up {
        return;
    }
    edge.up = up;
    if up {
        tracing::info!(edge = %edge.addr, "edge answering again");
    } else {
        tracing::warn!(edge = %edge.addr, "edge down: no answer to OPTIONS within {ANSWER_WITHIN:?}");
    }
}
