//! The decision journal: what happens after a routing decision, off the call's path.
//! The driver hands each served event — the call, the event, the decision and the world
//! the script saw ([`EventWorld`]) — to a bounded queue ([`QUEUE`]) and goes on. One
//! thread of its own then
//! - records the decision with its world (`[scripts] record_decisions`), and each new
//!   script version's bytes once, so `wasmpbx script replay` can run it again;
//! - runs the location's shadow script on it, if it has one (`shadow`).
//!
//! It writes what queued meanwhile in one go. A full queue drops the event and counts it
//! (`/metrics`): under overload the journal gives way, never a call.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::routing::{CallInfo, Decision, Event};
use crate::script::{EventWorld, LoadedScript, ScriptHost};
use crate::shadow::{Choices, compare};
use crate::store::{DecisionRecord, ShadowResult, Store};

/// How many served events may wait.
pub const QUEUE: usize = 4096;
/// The most written in one transaction.
const BATCH: usize = 256;

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
    tx: SyncSender<Job>,
}

impl Journal {
    /// Start the journal's thread.
    pub fn start(
        scripts: Arc<ScriptHost>,
        store: Arc<dyn Store>,
        choices: Arc<Choices>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        std::thread::Builder::new()
            .name("decisions".into())
            .spawn({
                let counters = counters.clone();
                move || run(&rx, &scripts, store.as_ref(), &counters)
            })?;
        Ok(Self {
            choices,
            counters,
            tx,
        })
    }

    /// Queue a served event; never waits.
    pub fn submit(&self, job: Job) {
        match self.tx.try_send(job) {
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
fn run(rx: &Receiver<Job>, scripts: &ScriptHost, store: &dyn Store, counters: &Counters) {
    let mut kept_scripts: HashSet<String> = HashSet::new();
    while let Ok(job) = rx.recv() {
        let (mut decisions, mut shadows) = (Vec::new(), Vec::new());
        let mut next = Some(job);
        while let Some(job) = next {
            handle(
                job,
                scripts,
                store,
                counters,
                &mut kept_scripts,
                &mut decisions,
                &mut shadows,
            );
            next = match decisions.len() + shadows.len() < BATCH {
                true => rx.try_recv().ok(),
                false => None,
            };
        }
        save(store, counters, &decisions, &shadows);
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
    decisions.push(DecisionRecord {
        session: served.session,
        at: served.world.now.unwrap_or_default(),
        location: served.location,
        script: version.name.clone(),
        hash: version.hash.clone(),
        world: serde_json::to_value(&served.world).unwrap_or_default(),
        actions: serde_json::to_value(&served.decision.actions).unwrap_or_default(),
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
