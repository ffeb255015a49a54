//! The signalling shards' inboxes, and the one rule that picks a message's shard
//! (`wasmpbx_sip::shards`): by its Call-ID, REGISTER to the home shard, and the dialogs
//! one shard handed to another ("pins") to the shard that took them.
//!
//! A pin lives as long as the shard holding the dialog renews it (every [`PIN_RENEW`],
//! for [`PIN_LEASE`]), so a handed-over dialog keeps its shard for the whole call and is
//! forgotten within a lease of its end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Input;
use crate::call::PullSearch;
use crate::clock::monotonic_now;
use crate::sip::shards::{Destination, destination, shard_of};
use crate::sip::transaction::Peer;

/// How long a pin lasts unless renewed.
pub(super) const PIN_LEASE: Duration = Duration::from_secs(60);
/// How often a shard renews the pins of the dialogs it holds.
pub(super) const PIN_RENEW: Duration = Duration::from_secs(20);

struct Pin {
    shard: usize,
    until: Instant,
}

/// What became of a datagram handed to its shard ([`Dispatch::datagram`]).
#[derive(Debug, PartialEq)]
pub(super) enum Handed {
    Queued,
    /// The shard's inbox was full.
    Dropped {
        shard: usize,
    },
    /// The shards have stopped.
    Stopped,
}

/// Shared by the shards, the listeners and the admin API: the inboxes, the stream
/// connections, the pins, and how far a drain has come.
pub(super) struct Dispatch {
    inboxes: Vec<mpsc::Sender<Input>>,
    /// The open stream connections (TCP, TLS, WebSocket), one writer each, shared by the
    /// shards: any may send on one, and closing it ([`Dispatch::close`]) closes it for
    /// all — the writer here is its only sender, so dropping it ends the connection.
    connections: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    /// How many shards have no call left while draining: a shard stops reading its
    /// inbox only when all have (until then messages keep coming for it — new calls to
    /// refuse — and a full inbox would hold up the others' in the dispatcher).
    drained: tokio::sync::watch::Sender<usize>,
    pins: Mutex<HashMap<Box<[u8]>, Pin>>,
    /// How many pins there are: most messages skip the lock when there are none.
    pinned: AtomicUsize,
}

impl Dispatch {
    pub(super) fn new(inboxes: Vec<mpsc::Sender<Input>>) -> Self {
        Self {
            inboxes,
            connections: Mutex::new(HashMap::new()),
            drained: tokio::sync::watch::Sender::new(0),
            pins: Mutex::new(HashMap::new()),
            pinned: AtomicUsize::new(0),
        }
    }

    pub(super) fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// The shard a message read off the network goes to.
    pub(super) fn shard_for(&self, bytes: &[u8]) -> usize {
        let shards = self.shards();
        if shards == 1 {
            return 0;
        }
        match destination(bytes) {
            Destination::Registrar | Destination::Unknown => 0,
            Destination::Dialog(call_id) => {
                if self.pinned.load(Ordering::Relaxed) > 0
                    && let Some(pin) = self.lock().get(call_id)
                {
                    return pin.shard;
                }
                shard_of(call_id, shards)
            }
        }
    }

    /// Hand a datagram read off a UDP socket to its shard without waiting: a shard whose
    /// inbox is full (thousands of inputs behind: stalled) has it dropped — its sender
    /// retransmits, as it would had the socket's buffer overflowed — so that one shard
    /// never holds up the datagrams of the others queued behind it on the socket.
    pub(super) fn datagram(&self, bytes: Vec<u8>, peer: Peer, received: Instant) -> Handed {
        let shard = self.shard_for(&bytes);
        let input = Input::Bytes {
            bytes,
            peer,
            received,
        };
        match self.inboxes[shard].try_send(input) {
            Ok(()) => Handed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Handed::Dropped { shard },
            Err(mpsc::error::TrySendError::Closed(_)) => Handed::Stopped,
        }
    }

    /// Send a message read off a stream connection to its shard, waiting for room (a
    /// stream is not retransmitted: only this connection waits); false once the shards
    /// have stopped.
    pub(super) async fn bytes(&self, bytes: Vec<u8>, peer: Peer, received: Instant) -> bool {
        let shard = self.shard_for(&bytes);
        self.to(
            shard,
            Input::Bytes {
                bytes,
                peer,
                received,
            },
        )
        .await
    }

    pub(super) async fn to(&self, shard: usize, input: Input) -> bool {
        self.inboxes[shard].send(input).await.is_ok()
    }

    /// Give every shard its own copy of an input (a connection opened, a config
    /// re-read); false once the shards have stopped.
    pub(super) async fn to_all(&self, input: impl Fn() -> Input) -> bool {
        let mut delivered = false;
        for inbox in &self.inboxes {
            delivered |= inbox.send(input()).await.is_ok();
        }
        delivered
    }

    /// What `shard` tells the others and must not be lost (the home's bindings): it waits
    /// for room. Only the home shard waits on the others, and they never on it, so no
    /// two shards can wait on each other.
    pub(super) async fn to_others(&self, shard: usize, input: impl Fn() -> Input) {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != shard {
                let _ = inbox.send(input()).await;
            }
        }
    }

    /// A shard has no call left, draining (once per shard).
    pub(super) fn drained(&self) {
        self.drained.send_modify(|n| *n += 1);
    }

    /// Told as shards finish draining; all have when it reads [`Dispatch::shards`].
    pub(super) fn watch_drained(&self) -> tokio::sync::watch::Receiver<usize> {
        self.drained.subscribe()
    }

    /// What `shard` tells the others in passing (a trunk target's health, which each
    /// shard also checks itself): dropped for a shard whose inbox is full.
    pub(super) fn tell_others(&self, shard: usize, input: impl Fn() -> Input) {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != shard && inbox.try_send(input()).is_err() {
                tracing::debug!(shard = i, "inbox full: news of the trunks not passed on");
            }
        }
    }

    /// A connection is open: what is sent to `addr` goes to `writer`.
    pub(super) fn open(&self, addr: SocketAddr, writer: mpsc::Sender<Vec<u8>>) {
        lock(&self.connections).insert(addr, writer);
    }

    /// The writer of the connection with `addr`, if one is open.
    pub(super) fn connection(&self, addr: SocketAddr) -> Option<mpsc::Sender<Vec<u8>>> {
        lock(&self.connections).get(&addr).cloned()
    }

    /// Close the connection with `addr` (its writer dropped, its task ends).
    pub(super) fn close(&self, addr: SocketAddr) {
        lock(&self.connections).remove(&addr);
    }

    /// The connection whose writer is `writer` has closed: forget it — unless another
    /// connection with the same address took its place (two shards dialling a trunk at
    /// once), which goes on. False if one did.
    pub(super) fn closed(&self, addr: SocketAddr, writer: &mpsc::WeakSender<Vec<u8>>) -> bool {
        let mut connections = lock(&self.connections);
        let replaced = connections.get(&addr).is_some_and(|current| {
            writer
                .upgrade()
                .is_none_or(|writer| !current.same_channel(&writer))
        });
        if !replaced {
            connections.remove(&addr);
        }
        !replaced
    }

    /// A shard's own inbox.
    pub(super) fn inbox(&self, shard: usize) -> mpsc::Sender<Input> {
        self.inboxes[shard].clone()
    }

    /// A request one shard handed to another (a pull for a call held there, perhaps):
    /// its dialog's messages go to `to` from now on, and so does the request, as if it
    /// had just arrived. Sent from a task of its own: a shard never waits on another's
    /// full inbox.
    pub(super) fn hand_off(
        self: &Arc<Self>,
        to: usize,
        peer: Peer,
        bytes: Vec<u8>,
        search: PullSearch,
    ) {
        let now = monotonic_now();
        if let Destination::Dialog(call_id) = destination(&bytes) {
            self.pin(call_id, to, now + PIN_LEASE);
        }
        let dispatch = self.clone();
        tokio::spawn(async move {
            let input = Input::HandedOff {
                bytes,
                peer,
                search,
            };
            dispatch.to(to, input).await
        });
    }

    /// From now on, messages of dialog `call_id` go to `shard` (until `until`, unless
    /// renewed).
    pub(super) fn pin(&self, call_id: &[u8], shard: usize, until: Instant) {
        let mut pins = self.lock();
        pins.insert(call_id.into(), Pin { shard, until });
        self.pinned.store(pins.len(), Ordering::Relaxed);
    }

    /// `shard` still holds these handed-over dialogs: their pins last another lease from
    /// `now`. Pins whose lease ran out (their calls ended) are dropped.
    pub(super) fn renew<'a>(
        &self,
        shard: usize,
        call_ids: impl Iterator<Item = &'a str>,
        now: Instant,
    ) {
        let mut pins = self.lock();
        for call_id in call_ids {
            if let Some(pin) = pins.get_mut(call_id.as_bytes())
                && pin.shard == shard
            {
                pin.until = now + PIN_LEASE;
            }
        }
        pins.retain(|_, pin| pin.until > now);
        self.pinned.store(pins.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, Pin>> {
        lock(&self.pins)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves the map whole: go on with it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(call_id: &str) -> Vec<u8> {
        format!("BYE sip:a@h SIP/2.0\r\nCall-ID: {call_id}\r\n\r\n").into_bytes()
    }

    #[test]
    fn messages_go_by_call_id_registers_home_and_pins_win_until_their_lease_ends() {
        let inboxes = (0..3).map(|_| mpsc::channel(1).0).collect();
        let dispatch = Dispatch::new(inboxes);
        let by_hash = |id: &str| shard_of(id.as_bytes(), 3);
        for id in ["a@h", "b@h", "c@h", "d@h"] {
            assert_eq!(dispatch.shard_for(&message(id)), by_hash(id));
        }
        assert_eq!(
            dispatch.shard_for(b"REGISTER sip:h SIP/2.0\r\nCall-ID: x\r\n\r\n"),
            0
        );
        assert_eq!(dispatch.shard_for(b"\r\n\r\n"), 0);

        let now = crate::clock::monotonic_now();
        let elsewhere = (by_hash("a@h") + 1) % 3;
        dispatch.pin(b"a@h", elsewhere, now + PIN_LEASE);
        assert_eq!(dispatch.shard_for(&message("a@h")), elsewhere);
        // Renewed by the shard holding it, it outlives its first lease; another shard's
        // renewal does not count.
        dispatch.renew(elsewhere, ["a@h"].into_iter(), now + PIN_LEASE / 2);
        dispatch.renew((elsewhere + 1) % 3, ["a@h"].into_iter(), now + PIN_LEASE);
        assert_eq!(dispatch.shard_for(&message("a@h")), elsewhere);
        // Not renewed any more (the call ended): gone after its lease.
        dispatch.renew(elsewhere, std::iter::empty(), now + PIN_LEASE * 2);
        assert_eq!(dispatch.shard_for(&message("a@h")), by_hash("a@h"));
        assert_eq!(dispatch.pinned.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_shard_with_a_full_inbox_has_its_datagrams_dropped_and_holds_up_no_other() {
        let (to_first, mut first) = mpsc::channel(1);
        let (to_second, second) = mpsc::channel(1);
        let dispatch = Dispatch::new(vec![to_first, to_second]);
        let peer = Peer {
            transport: crate::sip::transaction::Transport::Udp,
            addr: "127.0.0.1:5060".parse().unwrap(),
        };
        let on = |shard: usize| {
            (0..)
                .map(|n| format!("call-{n}@h"))
                .find(|id| shard_of(id.as_bytes(), 2) == shard)
                .unwrap()
        };
        let now = crate::clock::monotonic_now();
        let to_second = || dispatch.datagram(message(&on(1)), peer, now);
        assert_eq!(to_second(), Handed::Queued);
        // The second shard reads nothing more: its inbox is full.
        assert_eq!(to_second(), Handed::Dropped { shard: 1 });
        // The first shard's datagrams still go straight through.
        for _ in 0..3 {
            assert_eq!(
                dispatch.datagram(message(&on(0)), peer, now),
                Handed::Queued
            );
            assert!(first.try_recv().is_ok());
        }
        drop(second);
        assert_eq!(to_second(), Handed::Stopped);
    }

    #[test]
    fn a_connection_replaced_by_another_to_the_same_address_closes_alone() {
        let dispatch = Dispatch::new(vec![mpsc::channel(1).0]);
        let addr: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        let (first, mut first_out) = mpsc::channel(1);
        let first_writer = first.downgrade();
        dispatch.open(addr, first);
        let (second, _second_out) = mpsc::channel::<Vec<u8>>(1);
        let second_writer = second.downgrade();
        dispatch.open(addr, second.clone());
        // The first, its writer dropped from the table, ends; the second stays.
        assert!(first_out.try_recv().is_err());
        assert!(!dispatch.closed(addr, &first_writer));
        let current = dispatch.connection(addr).expect("the second connection");
        assert!(current.same_channel(&second));
        drop(current);
        drop(second);
        assert!(dispatch.closed(addr, &second_writer));
        assert!(dispatch.connection(addr).is_none());
        // One the core closed (its writer taken out of the table) is closed for good.
        let (third, _third_out) = mpsc::channel::<Vec<u8>>(1);
        let third_writer = third.downgrade();
        dispatch.open(addr, third);
        dispatch.close(addr);
        assert!(dispatch.closed(addr, &third_writer));
    }
}
