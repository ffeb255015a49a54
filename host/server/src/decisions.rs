//! The decision journal: what happens after a routing decision, off the call's path.
//! The driver hands each served event — the call, the event, the decision and the world
//! the script saw ([`EventWorld`]) — to a bounded queue ([`QUEUE`]) and goes on. One
//! thread of its own then
//! - records the decision with its world (`[scripts] record_decisions`), and each new
//!   script version's bytes once, so `wasmpbx script replay` can run it again;
//! - runs the location's shadow script on it, if it has one (`shadow`).
//!
//! It writes what queues within [`LINGER`] of an event with it, in one go. A full
//! queue drops the event and counts it (`/metrics`): under overload the journal gives
//! way, never a call. At shutdown [`JournalThread::finish`] lets it write everything
//! queued before it stops.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::routing::{CallInfo, Decision, Event};
use crate::script::{EventWorld, LoadedScript, ScriptHost};
use crate::shadow::{Choices, compare};
use crate::store::{DecisionRecord, RawJson, ShadowResult, Store};

/// How many served events may wait.
pub const QUEUE: usize = 4096;
/// The most written in one transaction.
const BATCH: usize = 256;
/// How long after an event the journal lets more queue, to write them with it.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// One event a script decided.
pub struct Served {
    pub location: Option<String>,
    pub session: String,
    pub call: CallInfo,
    pub event: Event,
    pub decision: Decision,
    /// What the script saw.
    pub world: EventWorld,
}

/// What to do with a served event.
pub struct Job {
    pub served: Served,
    /// The version that decided, to record (none: not recording).
    pub record: Option<Arc<LoadedScript>>,
    /// The location's shadow script, to run.
    pub shadow: Option<String>,
    /// The call's span, for the shadow script's lines.
    pub span: tracing::Span,
}

/// What the journal's thread is sent: a served event, or (once, at shutdown) the word to
/// write what came before and stop.
// A queue slot is a served event's size either way; boxing would allocate per event.
#[allow(clippy::large_enum_variant)]
enum Message {
    Job(Job),
    Stop,
}

/// The journal's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub shadow: crate::shadow::Counters,
    /// Decisions written to the store.
    pub recorded: AtomicU64,
    /// Served events neither recorded nor compared: the queue was full.
    pub dropped: AtomicU64,
    /// Writes the store refused (decisions and shadow results).
    pub unsaved: AtomicU64,
}

/// The driver's end of the journal.
#[derive(Clone)]
pub struct Journal {
    /// Which locations run a shadow script.
    pub choices: Arc<Choices>,
    pub counters: Arc<Counters>,
    tx: SyncSender<Message>,
}

/// The journal's thread, to be finished at shutdown.
pub struct JournalThread {
    tx: SyncSender<Message>,
    thread: std::thread::JoinHandle<()>,
}

impl Journal {
    /// Start the journal's thread.
    pub fn start(
        scripts: Arc<ScriptHost>,
        store: Arc<dyn Store>,
        choices: Arc<Choices>,
    ) -> std::io::Result<(Self, JournalThread)> {
        let (tx, rx) = sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let thread = std::thread::Builder::new()
            .name("decisions".into())
            .spawn({
                let counters = counters.clone();
                move || run(&rx, &scripts, store.as_ref(), &counters)
            })?;
        let journal = Self {
            choices,
            counters,
            tx: tx.clone(),
        };
        Ok((journal, JournalThread { tx, thread }))
    }

    /// Queue a served event; never waits.
    pub fn submit(&self, job: Job) {
        match self.tx.try_send(Message::Job(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.dropped.fetch_add(1, Relaxed);
            }
            // The thread is gone only at shutdown.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The thread: take each job, and write what queued while it worked in one go.
impl JournalThread {
    /// Write everything queued so far, then stop (waits for it: shutdown only). What
    /// is submitted after this is not written.
    pub fn finish(self) -> std::thread::Result<()> {
        // Behind every job queued before it: waits while the queue is full.
        let _ = self.tx.send(Message::Stop);
        self.thread.join()
    }
}

fn run(rx: &Receiver<Message>, scripts: &ScriptHost, store: &dyn Store, counters: &Counters) {
    let mut kept_scripts: HashSet<String> = HashSet::new();
    let mut last_was_full = false;
    loop {
        let Ok(Message::Job(first)) = rx.recv() else {
            return;
        };
        // Let the next moment's events queue behind this one (nothing here is on a
        // call's path): under load one transaction carries many decisions, and the
        // driver's `submit` finds this thread asleep rather than waiting for it, so it
        // does not wake it for each event. A full batch last time: more are queued now.
        if !last_was_full {
            std::thread::sleep(LINGER);
        }
        let (mut decisions, mut shadows) = (Vec::new(), Vec::new());
        let mut taken = 0;
        let mut stopping = false;
        let waiting = std::iter::once(Message::Job(first)).chain(rx.try_iter());
        for message in waiting.take(BATCH) {
            taken += 1;
            let Message::Job(job) = message else {
                stopping = true;
                break;
            };
            handle(
                job,
                scripts,
                store,
                counters,
                &mut kept_scripts,
                &mut decisions,
                &mut shadows,
            );
        }
        last_was_full = taken == BATCH;
        save(store, counters, &decisions, &shadows);
        if stopping {
            return;
        }
    }
}

fn handle(
    job: Job,
    scripts: &ScriptHost,
    store: &dyn Store,
    counters: &Counters,
    kept_scripts: &mut HashSet<String>,
    decisions: &mut Vec<DecisionRecord>,
    shadows: &mut Vec<ShadowResult>,
) {
    if let Some(shadow) = job.shadow {
        let _span = job.span.entered();
        shadows.push(compare(scripts, shadow, &job.served, &counters.shadow));
    }
    let Some(version) = job.record else {
        return;
    };
    // Each version's bytes once: the store ignores a hash it has, this saves asking.
    if !kept_scripts.contains(&version.hash) {
        match store.save_script(&version.hash, &version.name, &version.bytes) {
            Ok(()) => {
                kept_scripts.insert(version.hash.clone());
            }
            Err(e) => {
                tracing::warn!(script = %version.name, "keeping the script's bytes for replay: {e}")
            }
        }
    }
    let served = job.served;
    let (world, actions) = match (
        RawJson::of(&served.world),
        RawJson::of(&served.decision.actions),
    ) {
        (Ok(world), Ok(actions)) => (world, actions),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("recording a decision: {e}");
            return;
        }
    };
    decisions.push(DecisionRecord {
        session: served.session,
        at: served.world.now.unwrap_or_default(),
        location: served.location,
        script: version.name.clone(),
        hash: version.hash.clone(),
        world,
        actions,
        summary: crate::shadow::actions_line(&served.decision.actions),
        fallback: served.decision.fallback.map(|f| f.cause.to_owned()),
        call: served.call,
        event: served.event,
    });
}

fn save(
    store: &dyn Store,
    counters: &Counters,
    decisions: &[DecisionRecord],
    shadows: &[ShadowResult],
) {
    if !decisions.is_empty() {
        match store.save_decisions(decisions) {
            Ok(()) => counters.recorded.fetch_add(decisions.len() as u64, Relaxed),
            Err(e) => {
                tracing::warn!("saving {} decisions: {e}", decisions.len());
                counters.unsaved.fetch_add(decisions.len() as u64, Relaxed)
            }
        };
    }
    if !shadows.is_empty()
        && let Err(e) = store.save_shadow(shadows)
    {
        counters.unsaved.fetch_add(shadows.len() as u64, Relaxed);
        tracing::warn!("saving {} shadow results: {e}", shadows.len());
    }
}

/// How often old decisions and shadow results are looked for.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Delete decisions and shadow results older than `days`, hourly, for ever.
pub async fn keep_for(store: Arc<dyn Store>, days: u32) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        let store = store.clone();
        let before = crate::clock::Clock::now(&crate::clock::SystemClock)
            - jiff::SignedDuration::from_hours(24 * i64::from(days));
        let pruned = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::store::StoreError>((
                store.forget_decisions(before)?,
                store.forget_shadow(before)?,
            ))
        })
        .await;
        match pruned {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((decisions, shadow))) => tracing::info!(
                decisions,
                shadow,
                "deleted decisions and shadow results older than {days} days (scripts.journal_retention_days)"
            ),
            Ok(Err(e)) => tracing::warn!("scripts.journal_retention_days: cannot prune: {e}"),
            Err(e) => tracing::warn!("scripts.journal_retention_days: pruning stopped: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::directory::MemoryDirectory;
    use crate::routing::Origin;
    use crate::script::{HostServices, Limits, ScriptEngine};
    use crate::store::{DecisionStore, MemoryStore};

    fn served(session: String) -> Served {
        Served {
            location: None,
            session,
            call: CallInfo {
                call_id: "c".into(),
                location: None,
                caller: "+61400000001".into(),
                caller_name: None,
                dialed: "+61290000001".into(),
                origin: Origin::Trunk {
                    name: "pstn".into(),
                },
                started_at: jiff::Timestamp::UNIX_EPOCH,
                tags: Vec::new(),
            },
            event: Event::Incoming,
            decision: Decision {
                actions: Vec::new(),
                script: None,
                fallback: None,
            },
            world: EventWorld::live(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn everything_queued_before_shutdown_is_written() {
        let store = Arc::new(MemoryStore::new());
        let services = Arc::new(HostServices {
            config: arc_swap::ArcSwap::from_pointee(
                Config::parse("", std::path::Path::new("test.toml")).unwrap(),
            ),
            kv: store.clone(),
            devices: Arc::new(MemoryDirectory::new()),
            clock: Arc::new(SystemClock),
        });
        let engine = ScriptEngine::new(Limits::default(), None).unwrap();
        let host = Arc::new(ScriptHost::new(engine, services));
        let bytes = std::fs::read(test_components::LISTEN).unwrap();
        let listen = Arc::new(host.engine.load("listen", &bytes, &host.services).unwrap());
        let choices = Arc::new(Choices::load(store.clone()).unwrap());
        let (journal, thread) = Journal::start(host, store.clone(), choices).unwrap();
        let events = 2_000;
        for n in 0..events {
            journal.submit(Job {
                served: served(format!("s{n}")),
                record: Some(listen.clone()),
                shadow: None,
                span: tracing::Span::none(),
            });
        }
        thread.finish().unwrap();
        assert_eq!(journal.counters.dropped.load(Relaxed), 0);
        assert_eq!(journal.counters.recorded.load(Relaxed), events);
        for n in [0, events / 2, events - 1] {
            assert_eq!(store.decisions(&format!("s{n}")).unwrap().len(), 1, "s{n}");
        }
        // Submitted after the end: not written, and no panic.
        journal.submit(Job {
            served: served("late".into()),
            record: Some(listen),
            shadow: None,
            span: tracing::Span::none(),
        });
    }
}
