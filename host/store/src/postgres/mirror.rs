//! The key-value entries in memory, following the database through PostgreSQL's
//! LISTEN/NOTIFY (as Kamailio's htable follows its peers over DMQ).
//!
//! Scripts read the key-value store on every call: from the mirror that is a map lookup,
//! not a round trip, and it keeps answering (with the entries it had) while the database
//! is unreachable. A trigger on `kv` notifies every change with the writing transaction's
//! id; one listener thread per node applies them in commit order — it alone writes the
//! mirror, so no change can overtake another. A node's own write returns once its
//! listener has applied it: what this node wrote, it reads back.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use postgres::{Client, NoTls};

use super::pg;
use wasmpbx_types::store::{Result, StoreError};

/// The notification channel the `kv` trigger (migration 1) notifies on.
const CHANNEL: &str = "wasmpbx_kv";

/// How long a writer waits for its own change to come back through the listener.
const OWN_CHANGE_WAIT: Duration = Duration::from_secs(2);

/// How long the listener waits for notifications before looking whether to stop.
const POLL: Duration = Duration::from_millis(250);

/// After losing the database, how long the listener waits before connecting again.
const RECONNECT: Duration = Duration::from_secs(1);

/// The transactions whose changes the listener applied last, for writers to wait on.
const RECENT: usize = 4096;

/// What a notification says of an entry.
enum Notified {
    Deleted,
    Set(String),
    /// Set, to a value too long for a notification: read it.
    TooLong,
}

/// A change as the trigger notifies it: `[txid, scope, key]` (deleted),
/// `[txid, scope, key, value]` (set), `[txid, scope, key, null]` (set, too long).
fn parse_change(payload: &str) -> Option<(i64, String, String, Notified)> {
    use serde_json::Value;
    let change: Vec<Value> = serde_json::from_str(payload).ok()?;
    let (txid, scope, key) = match change.as_slice() {
        [txid, Value::String(scope), Value::String(key), ..] => {
            (txid.as_i64()?, scope.clone(), key.clone())
        }
        _ => return None,
    };
    let notified = match change.get(3) {
        None => Notified::Deleted,
        Some(Value::String(value)) => Notified::Set(value.clone()),
        Some(Value::Null) => Notified::TooLong,
        Some(_) => return None,
    };
    Some((txid, scope, key, notified))
}

#[derive(Default)]
struct State {
    entries: BTreeMap<(String, String), String>,
    /// Transaction ids of the changes applied, newest last.
    recent: VecDeque<i64>,
    /// Whether the listener is connected and the entries follow the database.
    following: bool,
}

/// The mirror: entries, and what writers wait on.
#[derive(Default)]
pub(super) struct KvMirror {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl KvMirror {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a single map operation: a panic cannot leave it half done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, scope: &str, key: &str) -> Option<String> {
        self.state()
            .entries
            .get(&(scope.to_owned(), key.to_owned()))
            .cloned()
    }

    /// A scope's entries, sorted by key.
    pub(super) fn list(&self, scope: &str) -> Vec<(String, String)> {
        let from = (scope.to_owned(), String::new());
        self.state()
            .entries
            .range(from..)
            .take_while(|((s, _), _)| s == scope)
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect()
    }

    /// Wait until the listener has applied transaction `txid`'s changes (or has lost the
    /// database: then the mirror is behind anyway).
    pub(super) fn wait_for(&self, txid: i64) {
        let state = self.state();
        let _ = self
            .changed
            .wait_timeout_while(state, OWN_CHANGE_WAIT, |s| {
                s.following && !s.recent.contains(&txid)
            });
    }

    /// Wait until the listener has loaded the entries (at start).
    pub(super) fn wait_until_following(&self, limit: Duration) -> bool {
        let state = self.state();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, limit, |s| !s.following)
            .unwrap_or_else(|p| p.into_inner());
        state.following
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn load(&self, entries: BTreeMap<(String, String), String>) {
        let mut state = self.state();
        state.entries = entries;
        state.following = true;
        drop(state);
        self.changed.notify_all();
    }

    fn lost(&self) {
        self.state().following = false;
        self.changed.notify_all();
    }

    fn apply(&self, txid: i64, scope: String, key: String, value: Option<String>) {
        let mut state = self.state();
        match value {
            Some(value) => state.entries.insert((scope, key), value),
            None => state.entries.remove(&(scope, key)),
        };
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back(txid);
        drop(state);
        self.changed.notify_all();
    }
}

/// The listener: follow the database until the store is dropped, connecting again after
/// every loss (and loading the entries afresh, since changes were missed meanwhile).
pub(super) fn follow(config: postgres::Config, mirror: Arc<KvMirror>) {
    let mut lost = false;
    while !mirror.stopped() {
        let outcome = config
            .connect(NoTls)
            .map_err(pg)
            .and_then(|mut client| listen(&mut client, &mirror));
        mirror.lost();
        match outcome {
            Ok(()) => return,
            Err(e) if !lost => {
                tracing::warn!(
                    "key-value mirror: lost PostgreSQL ({e}); scripts read the entries as \
                     they were until it is back"
                );
                lost = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(RECONNECT);
    }
}

fn listen(client: &mut Client, mirror: &KvMirror) -> Result<()> {
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(pg)?;
    // Loaded after LISTEN: a change committed in between is both loaded and notified.
    let entries = client
        .query("SELECT scope, key, value FROM kv", &[])
        .map_err(pg)?
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    mirror.load(entries);
    tracing::info!("key-value mirror: following PostgreSQL");
    let mut to_read = Vec::new();
    loop {
        {
            let mut notifications = client.notifications();
            let mut arrived = notifications.timeout_iter(POLL);
            while let Some(note) =
                postgres::fallible_iterator::FallibleIterator::next(&mut arrived).map_err(pg)?
            {
                match parse_change(note.payload()) {
                    Some((txid, scope, key, Notified::Deleted)) => {
                        mirror.apply(txid, scope, key, None);
                    }
                    Some((txid, scope, key, Notified::Set(value))) => {
                        mirror.apply(txid, scope, key, Some(value));
                    }
                    Some((txid, scope, key, Notified::TooLong)) => {
                        to_read.push((txid, scope, key));
                    }
                    None => {
                        return Err(StoreError::Invalid(format!(
                            "a {CHANNEL} notification that is not a change: {:?}",
                            note.payload()
                        )));
                    }
                }
                if !to_read.is_empty() {
                    break;
                }
            }
        }
        // A value too long to notify: read it (the current one, at least as new).
        for (txid, scope, key) in to_read.drain(..) {
            let value = client
                .query_opt(
                    "SELECT value FROM kv WHERE scope = $1 AND key = $2",
                    &[&scope, &key],
                )
                .map_err(pg)?
                .map(|row| row.get(0));
            mirror.apply(txid, scope, key, value);
        }
        if mirror.stopped() {
            return Ok(());
        }
        if client.is_closed() {
            return Err(StoreError::Backend("the connection closed".into()));
        }
    }
}
