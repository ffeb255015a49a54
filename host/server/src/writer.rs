//! Store writes off the SIP task. The core's call records and registration changes queue
//! here and a thread of their own writes them, in order, so a slow store (a busy disk, a
//! remote database) never stalls signalling. The queue is bounded: if the store falls
//! that far behind, a write is dropped, logged and counted (`/metrics`) rather than
//! holding up calls. At shutdown the thread writes what is queued, then ends. Readers
//! that must see what was queued before them (the admin API's records: a call gone from
//! `/api/calls` is in `/api/cdrs`) wait on [`Progress::settle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::call::CallRecord;
use crate::registrar::BindingChange;
use crate::store::{CdrStore, RegistrationStore};

/// How many writes may wait: minutes of records at the rates the host handles.
pub const QUEUE: usize = 65_536;

/// One write for the store. Boxed: the queue's slots are allocated up front, so each is
/// a pointer wide (65,536 inline bindings would hold 16 MiB for nothing).
#[derive(Debug)]
pub enum Write {
    Record(Box<CallRecord>),
    Binding(Box<BindingChange>),
}

/// The SIP task's end of the queue.
pub struct StoreWriter {
    tx: SyncSender<Write>,
    dropped: Arc<AtomicU64>,
    progress: Arc<Progress>,
}

/// How far the writer has come: writes queued, and writes done (written or failed).
#[derive(Debug, Default)]
pub struct Progress {
    queued: AtomicU64,
    done: Mutex<u64>,
    moved: Condvar,
}

impl Progress {
    /// Wait (at most `limit`) until every write queued before this call is done; false
    /// if the limit came first.
    pub fn settle(&self, limit: Duration) -> bool {
        let target = self.queued.load(Relaxed);
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let (done, timeout) = self
            .moved
            .wait_timeout_while(done, limit, |done| *done < target)
            .unwrap_or_else(|p| p.into_inner());
        drop(done);
        !timeout.timed_out()
    }

    fn one_done(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.moved.notify_all();
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
            },
            thread,
        ))
    }

    /// The writer's progress, for readers that must see what was queued before them.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Queue a write; never waits.
    pub fn write(&self, write: Write) {
        // Counted before it is sent, so the writer can never be ahead of the count.
        self.progress.queued.fetch_add(1, Relaxed);
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
    }
}

fn write_all(
    rx: &Receiver<Write>,
    registrations: &dyn RegistrationStore,
    cdrs: &dyn CdrStore,
    progress: &Progress,
) {
    for write in rx {
        match write {
            Write::Record(record) => {
                if let Err(e) = cdrs.save_cdr(&record) {
                    let session = record.session.short();
                    tracing::error!(session = %session, "writing the call record: {e}");
                }
            }
            Write::Binding(change) => {
                let result = match change.as_ref() {
                    BindingChange::Upsert(b) => registrations.save_binding(b),
                    BindingChange::Remove { user_id, contact } => {
                        registrations.remove_binding(user_id, contact)
                    }
                };
                if let Err(e) = result {
                    tracing::error!("persisting a registration: {e}");
                }
            }
        }
        progress.one_done();
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
        };
        for _ in 0..5 {
            stuck.write(Write::Binding(Box::new(BindingChange::Upsert(
                binding.clone(),
            ))));
        }
        assert_eq!(dropped.load(Relaxed), 3);
        drop(rx);
    }
}
