//! Store writes off the SIP task. The core's call records and registration changes queue
//! here and a thread of their own writes them, in order, so a slow store (a busy disk, a
//! remote database) never stalls signalling for long. The queue is bounded: if the store
//! falls that far behind, a write is dropped, logged and counted (`/metrics`) rather than
//! holding up calls. At shutdown the thread writes what is queued, then ends. Whoever
//! must see a write done waits on [`Progress`]: the driver, before it sends what a call
//! record describes (see `driver`); the admin API's records (a call gone from
//! `/api/calls` is in `/api/cdrs`). Every few seconds the thread also notes that the host
//! is alive: the end time a crash gives the calls it interrupts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::call::{CallRecord, SessionId};
use crate::clock::{Clock, SystemClock, monotonic_now};
use crate::registrar::BindingChange;
use crate::store::{CdrStore, RegistrationStore};

/// How many writes may wait: minutes of records at the rates the host handles.
pub const QUEUE: usize = 65_536;

/// How often the writer notes the host is alive: a crash's interrupted calls end, in
/// their records, at most this long before the crash.
pub const ALIVE_EVERY: Duration = Duration::from_secs(5);

/// One write for the store. Boxed: the queue's slots are allocated up front, so each is
/// a pointer wide (65,536 inline bindings would hold 16 MiB for nothing).
#[derive(Debug)]
pub enum Write {
    Record(Box<CallRecord>),
    Binding(Box<BindingChange>),
}

/// The SIP tasks' end of the queue.
#[derive(Clone)]
pub struct StoreWriter {
    tx: SyncSender<Write>,
    dropped: Arc<AtomicU64>,
    progress: Arc<Progress>,
    /// Held from taking a ticket to queueing the write: the shards' writes queue in
    /// the order of their tickets, so a ticket reached is a write done.
    in_order: Arc<Mutex<()>>,
}

/// How far the writer has come: writes queued, and writes done (written or failed).
#[derive(Debug)]
pub struct Progress {
    queued: AtomicU64,
    done: watch::Sender<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            queued: AtomicU64::new(0),
            done: watch::Sender::new(0),
        }
    }
}

impl Progress {
    /// Wait (at most `limit`) until every write queued before this call is done; false
    /// if the limit came first.
    pub async fn settle(&self, limit: Duration) -> bool {
        self.reach(self.queued.load(Relaxed), limit).await
    }

    /// Wait (at most `limit`) until the write numbered `ticket` (what
    /// [`StoreWriter::write`] returned) and those before it are done.
    pub async fn reach(&self, ticket: u64, limit: Duration) -> bool {
        let mut done = self.done.subscribe();
        let reached = tokio::time::timeout(limit, done.wait_for(|done| *done >= ticket)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Told each time a write is done.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.done.subscribe()
    }

    /// Whether the write numbered `ticket` is done.
    pub fn reached(&self, ticket: u64) -> bool {
        *self.done.borrow() >= ticket
    }

    /// A write is done (or dropped): the writer's, and tests'.
    pub(crate) fn one_done(&self) {
        self.done_with(1);
    }

    fn done_with(&self, count: u64) {
        self.done.send_modify(|done| *done += count);
    }
}

impl StoreWriter {
    /// Start the writing thread; join it (after dropping every writer) to know the
    /// queue has been written.
    pub fn start(
        registrations: Arc<dyn RegistrationStore>,
        cdrs: Arc<dyn CdrStore>,
        capacity: usize,
        dropped: Arc<AtomicU64>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(capacity);
        let progress = Arc::new(Progress::default());
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn({
                let progress = progress.clone();
                move || write_all(&rx, registrations.as_ref(), cdrs.as_ref(), &progress)
            })?;
        Ok((
            Self {
                tx,
                dropped,
                progress,
                in_order: Arc::default(),
            },
            thread,
        ))
    }

    /// The writer's progress, for readers that must see what was queued before them.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Queue a write; never waits. Its ticket, to wait for it with [`Progress::reach`].
    pub fn write(&self, write: Write) -> u64 {
        // Counted before it is sent, so the writer can never be ahead of the count.
        let _in_order = self.in_order.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = self.progress.queued.fetch_add(1, Relaxed) + 1;
        match self.tx.try_send(write) {
            Ok(()) => {}
            Err(TrySendError::Full(write)) => {
                self.progress.one_done();
                self.dropped.fetch_add(1, Relaxed);
                tracing::error!(?write, "the store is {QUEUE} writes behind: write dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.progress.one_done();
                self.dropped.fetch_add(1, Relaxed);
                tracing::error!("the store writer has stopped: write dropped");
            }
        }
        ticket
    }
}

fn write_all(
    rx: &Receiver<Write>,
    registrations: &dyn RegistrationStore,
    cdrs: &dyn CdrStore,
    progress: &Progress,
) {
    let mut alive_noted: Option<Instant> = None;
    let mut last_commit: Option<Instant> = None;
    let mut last_was_full = false;
    loop {
        if alive_noted.is_none_or(|at| at.elapsed() >= ALIVE_EVERY) {
            let now = SystemClock.now();
            let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
            if let Err(e) = cdrs.mark_alive(now) {
                tracing::error!("noting the host alive in the store: {e}");
            }
            alive_noted = Some(monotonic_now());
        }
        let first = match rx.recv_timeout(ALIVE_EVERY) {
            Ok(write) => write,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Group commit: while writes come steadily, the next moment's join this one's
        // transaction (a commit writes the same pages for one record as for many), and
        // the SIP tasks find the thread asleep rather than waking it for each write. An
        // idle host's write is committed at once.
        let busy = last_commit.is_some_and(|at| at.elapsed() < BUSY);
        if busy && !last_was_full {
            std::thread::sleep(GROUP_WAIT);
        }
        // What queued meanwhile goes with it: consecutive records in one transaction.
        let batch = std::iter::once(first).chain(rx.try_iter().take(BATCH - 1));
        let mut records = Records::default();
        let mut count = 0;
        for write in batch {
            count += 1;
            match write {
                Write::Record(record) => records.gather(*record),
                Write::Binding(change) => {
                    records.save(cdrs);
                    save_binding(registrations, &change);
                }
            }
        }
        records.save(cdrs);
        progress.done_with(count);
        last_commit = Some(monotonic_now());
        last_was_full = count == BATCH as u64;
    }
}

/// The most writes the writer takes at once.
const BATCH: usize = 512;

/// A write within this long of the last commit finds the host busy: see [`GROUP_WAIT`].
const BUSY: Duration = Duration::from_millis(5);

/// How long a busy writer lets writes gather before it commits them: what a call's
/// messages held for their record (`driver`) may wait more, under load only.
const GROUP_WAIT: Duration = Duration::from_millis(1);

/// A batch's call records, a call's latest only.
#[derive(Default)]
struct Records {
    records: Vec<CallRecord>,
    /// Where each call's record is in `records`.
    index: HashMap<SessionId, usize>,
}

impl Records {
    /// Add a record. A later record of a call in the same batch replaces the earlier (the
    /// store keeps a call's latest anyway): under load a call's end and its `call-ended`
    /// tags, or a short call's answer and end, often meet in one batch.
    fn gather(&mut self, record: CallRecord) {
        match self.index.get(&record.session) {
            Some(&i) => self.records[i] = record,
            None => {
                self.index.insert(record.session, self.records.len());
                self.records.push(record);
            }
        }
    }

    /// Write what is gathered, in one transaction.
    fn save(&mut self, cdrs: &dyn CdrStore) {
        if self.records.is_empty() {
            return;
        }
        if let Err(e) = cdrs.save_cdrs(&self.records) {
            let sessions: Vec<String> = self
                .records
                .iter()
                .map(|r| r.session.short().to_string())
                .collect();
            tracing::error!(sessions = ?sessions, "writing call records: {e}");
        }
        self.records.clear();
        self.index.clear();
    }
}

fn save_binding(registrations: &dyn RegistrationStore, change: &BindingChange) {
    let result = match change {
        BindingChange::Upsert(b) => registrations.save_binding(b),
        BindingChange::Remove { user_id, contact } => {
            registrations.remove_binding(user_id, contact)
        }
    };
    if let Err(e) = result {
        tracing::error!("persisting a registration: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_queue_slot_is_small() {
        assert!(std::mem::size_of::<super::Write>() <= 16);
    }

    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn writes_land_in_order_and_a_full_queue_drops_instead_of_waiting() {
        let store = Arc::new(MemoryStore::new());
        let dropped = Arc::new(AtomicU64::new(0));
        let binding = wasmpbx_types::store::contract::binding("alice", "sip:a@1");
        let (writer, thread) =
            StoreWriter::start(store.clone(), store.clone(), 4, dropped.clone()).unwrap();
        writer.write(Write::Binding(Box::new(BindingChange::Upsert(
            binding.clone(),
        ))));
        writer.write(Write::Binding(Box::new(BindingChange::Remove {
            user_id: "alice".into(),
            contact: "sip:a@1".into(),
        })));
        writer.write(Write::Binding(Box::new(BindingChange::Upsert(
            binding.clone(),
        ))));
        drop(writer);
        thread.join().unwrap();
        assert_eq!(
            store.load_bindings().unwrap(),
            std::slice::from_ref(&binding)
        );

        // A store that never answers: the queue fills and writes are dropped, counted.
        let (tx, rx) = sync_channel(2);
        let stuck = StoreWriter {
            tx,
            dropped: dropped.clone(),
            progress: Arc::default(),
            in_order: Arc::default(),
        };
        for _ in 0..5 {
            stuck.write(Write::Binding(Box::new(BindingChange::Upsert(
                binding.clone(),
            ))));
        }
        assert_eq!(dropped.load(Relaxed), 3);
        drop(rx);
    }

    #[test]
    fn a_calls_later_record_in_a_batch_replaces_its_earlier() {
        let mut batch = Records::default();
        let mut live = wasmpbx_types::store::contract::record(1, "0400");
        live.state = crate::call::RecordState::Live;
        let other = wasmpbx_types::store::contract::record(2, "0401");
        let ended = wasmpbx_types::store::contract::record(1, "0400");
        batch.gather(live);
        batch.gather(other.clone());
        batch.gather(ended.clone());
        let records = &batch.records;
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].session, ended.session);
        assert_eq!(records[0].state, ended.state);
        assert_eq!(records[1].session, other.session);
    }

    #[tokio::test]
    async fn a_write_can_be_waited_for_and_the_host_is_noted_alive_at_once() {
        let store = Arc::new(MemoryStore::new());
        let (writer, thread) =
            StoreWriter::start(store.clone(), store.clone(), 4, Arc::default()).unwrap();
        let mut live = wasmpbx_types::store::contract::record(1, "0400");
        live.state = crate::call::RecordState::Live;
        let ticket = writer.write(Write::Record(Box::new(live)));
        let progress = writer.progress();
        assert!(progress.reach(ticket, Duration::from_secs(5)).await);
        assert!(progress.reached(ticket));
        assert!(!progress.reached(ticket + 1), "not a write ahead");
        drop(writer);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        // The writer noted the host alive when it started (now, later than the record's
        // update in 2026-09): the interrupted call ends then.
        assert_eq!(store.close_interrupted().unwrap(), 1);
        let record = &store.recent_cdrs(1).unwrap()[0];
        assert_eq!(record["state"], "interrupted");
        let ended: jiff::Timestamp = record["ended_at"].as_str().unwrap().parse().unwrap();
        assert!(
            SystemClock.now().as_second() - ended.as_second() < 60,
            "{ended}"
        );
    }
}
