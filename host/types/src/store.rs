//! Persistent state behind narrow traits, the way Kamailio separates `registrar` from
//! `usrloc`: call logic sees only these traits. SQLite (`wasmpbx-store`) in production,
//! [`MemoryStore`] in tests and `script simulate`; another backend implements the same
//! traits and passes the same [`contract`].

mod memory;

pub use memory::MemoryStore;

/// A storage failure, whatever the backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (its own message).
    #[error("store: {0}")]
    Backend(String),
    /// The entry breaks the store's rules (size, encoding).
    #[error("store: {0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

use crate::record::{CallRecord, IntentCount};
use crate::registration::Binding;

/// The largest key and value the key-value store takes.
pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 4096;

/// A small key-value store for admin toggles, in scopes (a location's name).
pub trait KvStore: Send + Sync {
    fn get(&self, scope: &str, key: &str) -> Result<Option<String>>;
    /// Set an entry that lasts until changed or deleted (an earlier expiry is cleared).
    fn set(&self, scope: &str, key: &str, value: &str) -> Result<()> {
        self.set_until(scope, key, value, None)
    }
    /// Set an entry that [`KvStore::expire`] removes once `expires_at` has passed
    /// (none: it lasts).
    fn set_until(
        &self,
        scope: &str,
        key: &str,
        value: &str,
        expires_at: Option<jiff::Timestamp>,
    ) -> Result<()>;
    fn delete(&self, scope: &str, key: &str) -> Result<()>;
    /// Every entry of a scope, sorted by key.
    fn list(&self, scope: &str) -> Result<Vec<(String, String)>>;
    /// When an entry expires, if it does.
    fn expires_at(&self, scope: &str, key: &str) -> Result<Option<jiff::Timestamp>>;
    /// Remove the entries whose expiry is at or before `now`; each one removed.
    fn expire(&self, now: jiff::Timestamp) -> Result<Vec<Expired>>;
    /// Note a change an admin made (or an expiry) in the audit log.
    fn audit(&self, entry: &AuditEntry) -> Result<()>;
    /// The audit log, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>>;
}

/// An entry [`KvStore::expire`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub scope: String,
    pub key: String,
    pub value: String,
}

/// One change to the key-value store: who made it, what was there, what is now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub at: jiff::Timestamp,
    /// Who changed it (the API and the peer's address), or `expiry`.
    pub who: String,
    /// `set`, `delete` or `expired`.
    pub action: String,
    pub scope: String,
    pub key: String,
    /// The value before, if there was one.
    pub old: Option<String>,
    /// The value after (none when deleted or expired).
    pub value: Option<String>,
    pub expires_at: Option<jiff::Timestamp>,
}

/// One event a shadow script also decided (`[[locations]] shadow`): what the serving
/// script did and what the shadow would have done, never applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShadowResult {
    /// The event's clock reading (what both scripts saw).
    pub at: jiff::Timestamp,
    pub location: String,
    /// The call's session id (its record's).
    pub session: String,
    /// The event, as `script simulate` writes it (`incoming`, `call-ended (Answered)` …).
    pub event: String,
    pub serving_script: String,
    pub serving_hash: String,
    pub shadow_script: String,
    /// Empty when the shadow script was not loaded.
    pub shadow_hash: String,
    /// The serving script's actions, one line (or its fallback).
    pub serving: String,
    /// The shadow's actions, one line; none when it failed.
    pub shadow: Option<String>,
    /// Why the shadow failed (`trap: …`, `ran past its 20 ms deadline` …).
    pub fault: Option<String>,
    /// The two scripts gave the same actions.
    pub agreed: bool,
}

/// Shadow results, for the shadow report.
pub trait ShadowStore: Send + Sync {
    /// Write results, in order (a backend makes it one transaction).
    fn save_shadow(&self, results: &[ShadowResult]) -> Result<()>;
    /// A location's results at or after `since`, oldest first.
    fn shadow_results(
        &self,
        location: &str,
        since: Option<jiff::Timestamp>,
    ) -> Result<Vec<ShadowResult>>;
    /// Delete the results from before `before`; how many.
    fn forget_shadow(&self, before: jiff::Timestamp) -> Result<usize>;
}

/// JSON kept as its text: what a record carries of types this crate does not know (the
/// script runtime's), written into the record as is rather than built into a tree first
/// (the decision journal writes two a call). Equal when the texts are.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// `value` as JSON text.
    pub fn of<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// Read the text as a `T`.
    pub fn read<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// One routing decision of a call with everything its script saw, to run it again
/// (`wasmpbx script replay`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecisionRecord {
    /// The call's session id (its record's).
    pub session: String,
    /// The event's clock reading.
    pub at: jiff::Timestamp,
    pub location: Option<String>,
    pub script: String,
    /// The version that decided (its content hash; the store keeps its bytes).
    pub hash: String,
    /// The call as the script saw it (tags as they were then).
    pub call: crate::routing::CallInfo,
    pub event: crate::routing::Event,
    /// What the script saw of the world: the clock, the key-value entries it read, the
    /// imports' answers (the script runtime's `EventWorld`).
    pub world: RawJson,
    /// The actions the host followed, as JSON: the script's, or the fallback's.
    pub actions: RawJson,
    /// The same on one line, as `script simulate` writes actions.
    pub summary: String,
    /// Why the script failed (`trap`, `deadline` …), if it did.
    pub fallback: Option<String>,
}

/// Recorded decisions, and the script versions that made them.
pub trait DecisionStore: Send + Sync {
    /// Write decisions, in order (a backend makes it one transaction).
    fn save_decisions(&self, decisions: &[DecisionRecord]) -> Result<()>;
    /// One call's decisions, in the order they were made.
    fn decisions(&self, session: &str) -> Result<Vec<DecisionRecord>>;
    /// The sessions with decisions at or after `since` (of `location`), oldest first, at
    /// most `limit`.
    fn decision_sessions(
        &self,
        location: Option<&str>,
        since: Option<jiff::Timestamp>,
        limit: usize,
    ) -> Result<Vec<String>>;
    /// Keep a script version's bytes (once per hash).
    fn save_script(&self, hash: &str, name: &str, bytes: &[u8]) -> Result<()>;
    /// A kept script version's bytes.
    fn script(&self, hash: &str) -> Result<Option<Vec<u8>>>;
    /// Delete the decisions made before `before`; how many.
    fn forget_decisions(&self, before: jiff::Timestamp) -> Result<usize>;
}

/// Registrations, so they survive a restart.
pub trait RegistrationStore: Send + Sync {
    /// Insert or replace the binding of (user, contact).
    fn save_binding(&self, binding: &Binding) -> Result<()>;
    fn remove_binding(&self, user_id: &str, contact: &str) -> Result<()>;
    fn load_bindings(&self) -> Result<Vec<Binding>>;
}

/// One node as it last said it was (`GET /api/cluster`): every node sharing the store
/// writes its own every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub alive_at: jiff::Timestamp,
    /// Draining: new calls refused, live ones finishing.
    pub draining: bool,
    pub live_calls: usize,
    /// The script versions it serves: name → content hash.
    pub scripts: std::collections::BTreeMap<String, String>,
    /// Where other nodes send what is its (`[cluster] advertise`): `sip:host:port`.
    #[serde(default)]
    pub sip: Option<String>,
    /// The users with a device on a connected call here: a pull of theirs that lands on
    /// another node is redirected here.
    #[serde(default)]
    pub users_in_calls: Vec<String>,
    /// When each of those users' most recent connected call here arrived: a user with
    /// calls on two nodes has the pull taken to the node with the latest (as on one node,
    /// where a pull takes the user's most recent call).
    #[serde(default)]
    pub latest_call_of: std::collections::BTreeMap<String, jiff::Timestamp>,
}

/// A user as the edge authenticates them (`[cluster] edge`): the digest username (the
/// extension), the realm, and MD5(username:realm:password) — never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeUser {
    pub username: String,
    pub realm: String,
    pub ha1: String,
    pub user_id: String,
}

/// A phone registered at the edge: a contact of the edge's registrar (Kamailio's
/// `location` table in the shared database), named by the extension it registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePhone {
    pub username: String,
    /// The Contact URI it registered: where the edge relays a node's INVITE for it.
    pub contact: String,
    pub user_agent: Option<String>,
    /// `+sip.instance`, as the edge keeps it.
    pub instance: Option<String>,
}

/// The nodes sharing the store.
pub trait ClusterStore: Send + Sync {
    /// Write this node's status (replacing the last).
    fn heartbeat(&self, status: &NodeStatus) -> Result<()>;
    /// Every node's last status, by name.
    fn nodes(&self) -> Result<Vec<NodeStatus>>;
    /// Replace the users the edge authenticates devices against. Only a shared database
    /// has an edge reading it: the others keep nothing.
    fn publish_users(&self, _users: &[EdgeUser]) -> Result<()> {
        Ok(())
    }
    /// The phones the edge has registered, every user's (none without an edge keeping
    /// its registrations in this database).
    fn edge_phones(&self) -> Result<Vec<EdgePhone>> {
        Ok(Vec::new())
    }
}

/// Everything the server keeps, from one backend (SQLite, PostgreSQL, or memory).
pub trait Store:
    KvStore + CdrStore + RegistrationStore + ShadowStore + DecisionStore + ClusterStore
{
}

impl<T> Store for T where
    T: KvStore + CdrStore + RegistrationStore + ShadowStore + DecisionStore + ClusterStore
{
}

/// Call records (CDRs).
pub trait CdrStore: Send + Sync {
    /// Write a call's record; a record of the same session replaces the earlier one
    /// (a call's record is written when it is answered, as it changes, when it ends, and
    /// again when its script's `call-ended` answer adds tags).
    fn save_cdr(&self, record: &CallRecord) -> Result<()>;
    /// Write several records, in order; a backend makes it one transaction (the writer
    /// hands over what queued while it wrote the last batch).
    fn save_cdrs(&self, records: &[CallRecord]) -> Result<()> {
        records.iter().try_for_each(|r| self.save_cdr(r))
    }
    /// The records `query` asks for, the last call to start first, as JSON.
    fn cdrs(&self, query: &CdrQuery) -> Result<Vec<serde_json::Value>>;
    /// The most recent records, the last call to start first, as JSON.
    fn recent_cdrs(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        self.cdrs(&CdrQuery {
            limit,
            ..CdrQuery::default()
        })
    }
    /// One call's record, by its session id.
    fn cdr(&self, session: &str) -> Result<Option<serde_json::Value>>;
    /// Note that the host is alive at `at` (the writer does so every few seconds): the
    /// end time given to calls a crash interrupts.
    fn mark_alive(&self, at: jiff::Timestamp) -> Result<()>;
    /// At start: every record still `live` belongs to a call the last run never ended
    /// (it crashed or was killed). Mark each `interrupted`, ended at its last update or
    /// the last sign of life, whichever is later; how many there were.
    fn close_interrupted(&self) -> Result<usize>;
    /// Why callers called: for the calls that started at `since` or later (of
    /// `location`, or of every location), how many had each `intent` event value, by
    /// location and the hour they started; oldest hour first, then by location, then
    /// by intent.
    fn intents(&self, location: Option<&str>, since: jiff::Timestamp) -> Result<Vec<IntentCount>>;
}

/// Which records [`CdrStore::cdrs`] returns: each field set narrows the list; `after`
/// pages through it. Times are compared to the second (start times are written so).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CdrQuery {
    /// At most this many.
    pub limit: usize,
    /// Calls that started at or after this time…
    pub since: Option<jiff::Timestamp>,
    /// …and before this one.
    pub until: Option<jiff::Timestamp>,
    pub location: Option<String>,
    /// The caller's number or extension, exactly.
    pub caller: Option<String>,
    /// `answered`, `abandoned` or `failed`.
    pub disposition: Option<String>,
    /// Calls with at least one flip (true) or none (false).
    pub flipped: Option<bool>,
    /// The records after this session's in the list: the next page, given the last
    /// record of the previous one.
    pub after: Option<String>,
}

impl CdrQuery {
    /// A start time as the stores compare it: RFC 3339 text, whole seconds.
    pub fn time_text(at: jiff::Timestamp) -> String {
        jiff::Timestamp::from_second(at.as_second())
            .unwrap_or(at)
            .to_string()
    }

    /// Whether `record` passes the filters (not `limit` or `after`), for backends that
    /// cannot ask their database.
    pub fn matches(&self, record: &serde_json::Value) -> bool {
        let text = |key: &str| record[key].as_str().unwrap_or_default();
        let started = text("started_at");
        self.since
            .is_none_or(|since| started >= Self::time_text(since).as_str())
            && self
                .until
                .is_none_or(|until| started < Self::time_text(until).as_str())
            && self
                .location
                .as_deref()
                .is_none_or(|l| text("location") == l)
            && self.caller.as_deref().is_none_or(|c| text("caller") == c)
            && self
                .disposition
                .as_deref()
                .is_none_or(|d| text("disposition") == d)
            && self.flipped.is_none_or(|flipped| {
                let flips = record["flips"].as_array().map_or(0, Vec::len);
                (flips > 0) == flipped
            })
    }
}

/// [`CdrStore::intents`] over records as JSON, for backends that cannot ask their
/// database: the calls' `(location, hour, intent)`s, each once per call.
pub fn count_intents<'a>(
    records: impl Iterator<Item = &'a serde_json::Value>,
    location: Option<&str>,
    since: jiff::Timestamp,
) -> Vec<IntentCount> {
    let mut counts: std::collections::BTreeMap<(String, String, String), u64> =
        std::collections::BTreeMap::new();
    for record in records {
        let Some(started) = record["started_at"]
            .as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        else {
            continue;
        };
        let Some(at) = record["location"].as_str() else {
            continue;
        };
        if started < since || location.is_some_and(|l| l != at) {
            continue;
        }
        let hour = hour_of(started);
        let mut seen = std::collections::BTreeSet::new();
        for event in record["events"].as_array().into_iter().flatten() {
            if event["name"] == "intent"
                && let Some(value) = event["value"].as_str()
                && seen.insert(value)
            {
                *counts
                    .entry((hour.clone(), at.to_owned(), value.to_owned()))
                    .or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(|((hour, location, intent), calls)| IntentCount {
            location,
            hour,
            intent,
            calls,
        })
        .collect()
}

/// The start of the hour `at` is in, as [`IntentCount::hour`] names it.
pub fn hour_of(at: jiff::Timestamp) -> String {
    let second = at.as_second();
    jiff::Timestamp::from_second(second - second.rem_euclid(3600))
        .unwrap_or(at)
        .to_string()
}

/// What [`CdrStore::close_interrupted`] does to one live record (as JSON), for every
/// backend: state `interrupted`, `ended_at` the later of its last update and the host's
/// last sign of life, the duration to match.
pub fn interrupt(record: &mut serde_json::Value, alive_at: Option<jiff::Timestamp>) {
    let stamp = |field: &str| {
        record[field]
            .as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    };
    let started = stamp("started_at");
    let ended = [stamp("updated_at"), alive_at, started]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
    let duration_ms = started.map_or(0, |s| {
        u64::try_from(ended.as_millisecond() - s.as_millisecond()).unwrap_or(0)
    });
    record["state"] = crate::record::RecordState::Interrupted.as_str().into();
    record["ended_at"] = ended.to_string().into();
    record["duration_ms"] = duration_ms.into();
    record["end_reason"] = "interrupted: the host stopped during the call".into();
}

/// The size rules every implementation applies before writing.
pub fn check_entry(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "key must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid(format!(
            "value must be at most {MAX_VALUE_BYTES} bytes"
        )));
    }
    // Text, as every backend keeps it (PostgreSQL's text cannot hold NUL).
    if key.contains('\0') || value.contains('\0') {
        return Err(StoreError::Invalid(
            "key and value must not contain NUL".into(),
        ));
    }
    Ok(())
}

pub mod contract {
    //! The checks every backend must pass, for its tests to call.
    use super::*;

    pub fn shadow_store_contract(store: &dyn ShadowStore) {
        let at = |s: i64| jiff::Timestamp::from_second(1_796_000_000 + s).unwrap();
        let result = |location: &str, s: i64, agreed: bool| ShadowResult {
            at: at(s),
            location: location.into(),
            session: format!("session-{s}"),
            event: "incoming".into(),
            serving_script: "listen".into(),
            serving_hash: "aa".into(),
            shadow_script: "front-door".into(),
            shadow_hash: "bb".into(),
            serving: "forward number +61290000098 ring 120000 ms".into(),
            shadow: agreed.then(|| "forward number +61290000098 ring 120000 ms".into()),
            fault: (!agreed).then(|| "trapped: told to trap".into()),
            agreed,
        };
        assert_eq!(store.shadow_results("sydney", None).unwrap(), []);
        store
            .save_shadow(&[result("sydney", 1, true), result("perth", 2, true)])
            .unwrap();
        store.save_shadow(&[result("sydney", 3, false)]).unwrap();
        assert_eq!(
            store.shadow_results("sydney", None).unwrap(),
            [result("sydney", 1, true), result("sydney", 3, false)],
            "a location's, oldest first, whole"
        );
        assert_eq!(
            store.shadow_results("sydney", Some(at(2))).unwrap(),
            [result("sydney", 3, false)]
        );
        assert_eq!(store.shadow_results("nowhere", None).unwrap(), []);
        assert_eq!(store.forget_shadow(at(2)).unwrap(), 1);
        assert_eq!(
            store.shadow_results("sydney", None).unwrap(),
            [result("sydney", 3, false)]
        );
    }

    pub fn decision_store_contract(store: &dyn DecisionStore) {
        let at = |s: i64| jiff::Timestamp::from_second(1_796_000_000 + s).unwrap();
        let decision = |session: &str, location: &str, s: i64| DecisionRecord {
            session: session.into(),
            at: at(s),
            location: Some(location.into()),
            script: "listen".into(),
            hash: "aa".into(),
            call: crate::routing::CallInfo {
                call_id: session.into(),
                location: Some(location.into()),
                caller: "+61400000001".into(),
                caller_name: None,
                dialed: "+61290000001".into(),
                origin: crate::routing::Origin::Trunk {
                    name: "pstn".into(),
                },
                started_at: at(s),
                tags: vec![("mode".into(), "listen".into())],
            },
            event: crate::routing::Event::Incoming,
            world: RawJson::of(&serde_json::json!({ "now": at(s), "kv": [["override", null]] }))
                .unwrap(),
            actions: RawJson::of(&serde_json::json!([{ "action": "hangup" }])).unwrap(),
            summary: "hangup".into(),
            fallback: (s == 2).then(|| "trap".into()),
        };
        assert_eq!(store.decisions("a").unwrap(), []);
        store
            .save_decisions(&[decision("a", "sydney", 1), decision("b", "perth", 2)])
            .unwrap();
        store.save_decisions(&[decision("a", "sydney", 3)]).unwrap();
        assert_eq!(
            store.decisions("a").unwrap(),
            [decision("a", "sydney", 1), decision("a", "sydney", 3)],
            "in order, whole"
        );
        assert_eq!(store.decision_sessions(None, None, 10).unwrap(), ["a", "b"]);
        assert_eq!(
            store.decision_sessions(Some("perth"), None, 10).unwrap(),
            ["b"]
        );
        assert_eq!(
            store.decision_sessions(None, Some(at(2)), 10).unwrap(),
            ["b", "a"],
            "by their first decision at or after since"
        );
        assert_eq!(store.decision_sessions(None, None, 1).unwrap(), ["a"]);
        assert_eq!(store.script("aa").unwrap(), None);
        store.save_script("aa", "listen", b"\0asm").unwrap();
        store.save_script("aa", "listen", b"\0asm").unwrap();
        assert_eq!(store.script("aa").unwrap().as_deref(), Some(&b"\0asm"[..]));
        assert_eq!(store.forget_decisions(at(3)).unwrap(), 2);
        assert_eq!(store.decisions("a").unwrap(), [decision("a", "sydney", 3)]);
        assert_eq!(store.decision_sessions(None, None, 10).unwrap(), ["a"]);
    }

    pub fn kv_store_contract(store: &dyn KvStore) {
        assert_eq!(store.get("sydney", "override").unwrap(), None);
        store.set("sydney", "override", "closed").unwrap();
        store.set("perth", "override", "open").unwrap();
        assert_eq!(
            store.get("sydney", "override").unwrap().as_deref(),
            Some("closed")
        );
        store.set("sydney", "override", "open").unwrap();
        assert_eq!(
            store.get("sydney", "override").unwrap().as_deref(),
            Some("open")
        );
        store.set("sydney", "a", "1").unwrap();
        assert_eq!(
            store.list("sydney").unwrap(),
            vec![("a".into(), "1".into()), ("override".into(), "open".into())]
        );
        store.delete("sydney", "override").unwrap();
        store.delete("sydney", "never-set").unwrap();
        assert_eq!(store.get("sydney", "override").unwrap(), None);
        assert_eq!(
            store.get("perth", "override").unwrap().as_deref(),
            Some("open")
        );
        assert!(store.set("sydney", "", "x").is_err());
        assert!(store.set("sydney", "k", "a\0b").is_err());
        assert!(
            store
                .set("sydney", "k", &"x".repeat(MAX_VALUE_BYTES + 1))
                .is_err()
        );
        expiring_contract(store);
        audit_contract(store);
    }

    /// Entries with an expiry go when `expire` is told their time has come.
    fn expiring_contract(store: &dyn KvStore) {
        let at = |s: i64| jiff::Timestamp::from_second(1_790_000_000 + s).unwrap();
        store
            .set_until("hobart", "override", "closed", Some(at(60)))
            .unwrap();
        store
            .set_until("hobart", "note", "meeting", Some(at(120)))
            .unwrap();
        store.set("hobart", "hours", "Mon-Fri 09:00-17:00").unwrap();
        assert_eq!(
            store.expires_at("hobart", "override").unwrap(),
            Some(at(60))
        );
        assert_eq!(store.expires_at("hobart", "hours").unwrap(), None);
        assert!(store.expire(at(59)).unwrap().is_empty());
        let gone = store.expire(at(60)).unwrap();
        assert_eq!(
            gone,
            [Expired {
                scope: "hobart".into(),
                key: "override".into(),
                value: "closed".into()
            }]
        );
        assert_eq!(store.get("hobart", "override").unwrap(), None);
        assert_eq!(
            store.get("hobart", "note").unwrap().as_deref(),
            Some("meeting")
        );
        // Set again without an expiry: it lasts.
        store.set("hobart", "note", "kept").unwrap();
        assert!(store.expire(at(1000)).unwrap().is_empty());
        assert_eq!(store.expires_at("hobart", "note").unwrap(), None);
    }

    fn audit_contract(store: &dyn KvStore) {
        let entry = |n: i64, action: &str| AuditEntry {
            at: jiff::Timestamp::from_second(1_790_000_000 + n).unwrap(),
            who: "api 127.0.0.1".into(),
            action: action.into(),
            scope: "sydney".into(),
            key: "override".into(),
            old: None,
            value: Some("closed".into()),
            expires_at: None,
        };
        assert!(store.audit_log(10).unwrap().is_empty());
        store.audit(&entry(1, "set")).unwrap();
        store.audit(&entry(2, "expired")).unwrap();
        let log = store.audit_log(10).unwrap();
        assert_eq!(log, [entry(2, "expired"), entry(1, "set")], "newest first");
        assert_eq!(store.audit_log(1).unwrap().len(), 1);
    }

    pub fn binding(user: &str, contact: &str) -> Binding {
        Binding {
            user_id: user.into(),
            device: "baresip".into(),
            contact: contact.into(),
            instance: Some("<urn:uuid:1>".into()),
            user_agent: Some("baresip v1.0".into()),
            transport: crate::sip::transaction::Transport::Udp,
            source: "127.0.0.1:5070".parse().unwrap(),
            expires_at: 1_790_000_600,
            call_id: "c".into(),
            cseq: 2,
        }
    }

    /// A call record as a backend would get it.
    pub fn record(session: u8, caller: &str) -> CallRecord {
        let at = jiff::Timestamp::from_second(1_790_000_000).unwrap_or_default();
        CallRecord {
            session: crate::ids::SessionId::new(1_790_000_000_000, [session; 10]),
            location: Some("sydney".into()),
            caller: caller.into(),
            dialed: "+61290000001".into(),
            script: Some("listen".into()),
            script_hash: None,
            fallback: false,
            state: crate::record::RecordState::Ended,
            started_at: at,
            answered_at: Some(at),
            ended_at: Some(at),
            updated_at: at,
            duration_ms: 1_000,
            disposition: crate::routing::Disposition::Answered,
            legs: vec![("+61290000099".into(), 200)],
            digits: "2".into(),
            tags: vec![("reason".into(), "billing".into())],
            end_reason: "caller hung up".into(),
            rtp_packets_in: 50,
            rtp_packets_out: 50,
            recording: None,
            flips: Vec::new(),
            call_ids: vec!["a@1".into(), "b@1".into()],
            streams: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn cdr_store_contract(store: &dyn CdrStore) {
        assert!(store.recent_cdrs(10).unwrap().is_empty());
        store.save_cdr(&record(1, "0400")).unwrap();
        store.save_cdr(&record(2, "0411")).unwrap();
        let recent = store.recent_cdrs(10).unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0]["caller"], "0411", "newest first");
        assert_eq!(recent[0]["session"], record(2, "0411").session.to_string());
        assert_eq!(recent[1]["tags"][0][1], "billing");
        assert_eq!(recent[1]["call_ids"][1], "b@1");
        assert_eq!(store.recent_cdrs(1).unwrap().len(), 1);
        // The same session again (its call-ended tags): replaced, not added.
        let mut tagged = record(1, "0400");
        tagged.tags.push(("survey".into(), "yes".into()));
        store.save_cdr(&tagged).unwrap();
        let recent = store.recent_cdrs(10).unwrap();
        assert_eq!(recent.len(), 2);
        let first = recent.iter().find(|r| r["caller"] == "0400").unwrap();
        assert_eq!(first["tags"][1][0], "survey");
        assert_eq!(store.close_interrupted().unwrap(), 0, "nothing was live");
        // A batch: in order, the later version of a session winning.
        let mut third = record(3, "0422");
        let batch = vec![third.clone(), {
            third.digits = "9".into();
            third
        }];
        store.save_cdrs(&batch).unwrap();
        let recent = store.recent_cdrs(10).unwrap();
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[0]["digits"], "9");
        // Newest by start, whenever written: a call that started earlier but was
        // written last (a long call ending now) comes after one that started later.
        let mut early = record(4, "0433");
        early.started_at = jiff::Timestamp::from_second(1_780_000_000).unwrap_or_default();
        store.save_cdr(&early).unwrap();
        let recent = store.recent_cdrs(10).unwrap();
        assert_eq!(recent[3]["caller"], "0433");
    }

    /// Filters, the cursor, and one record by id.
    pub fn cdr_query_contract(store: &dyn CdrStore) {
        use crate::flip::{FlipEvent, FlipKind, FlipResult, Trigger};
        use crate::routing::Disposition;
        let minute = |m: i64| jiff::Timestamp::from_second(1_790_000_000 + 60 * m).unwrap();
        // Six calls a minute apart: sydney and melbourne alternately; the third failed;
        // the fourth was flipped.
        for n in 0..6u8 {
            let mut r = record(n + 1, &format!("04{n}"));
            r.started_at = minute(i64::from(n));
            r.location = Some(if n % 2 == 0 { "sydney" } else { "melbourne" }.into());
            if n == 2 {
                r.disposition = Disposition::Failed;
            }
            if n == 3 {
                r.flips.push(FlipEvent::new(
                    FlipKind::Pull,
                    Trigger::PullCode,
                    "desk",
                    vec!["mobile".into()],
                    minute(3),
                    None,
                    FlipResult::Done,
                ));
            }
            store.save_cdr(&r).unwrap();
        }
        let callers = |query: CdrQuery| -> Vec<String> {
            let query = CdrQuery {
                limit: 100,
                ..query
            };
            let records = store.cdrs(&query).unwrap();
            records
                .iter()
                .map(|r| r["caller"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            callers(CdrQuery::default()),
            ["045", "044", "043", "042", "041", "040"]
        );
        let melbourne = Some("melbourne".to_owned());
        assert_eq!(
            callers(CdrQuery {
                location: melbourne.clone(),
                ..Default::default()
            }),
            ["045", "043", "041"]
        );
        assert_eq!(
            callers(CdrQuery {
                since: Some(minute(2)),
                until: Some(minute(4)),
                ..Default::default()
            }),
            ["043", "042"]
        );
        assert_eq!(
            callers(CdrQuery {
                disposition: Some("failed".into()),
                ..Default::default()
            }),
            ["042"]
        );
        assert_eq!(
            callers(CdrQuery {
                flipped: Some(true),
                ..Default::default()
            }),
            ["043"]
        );
        assert_eq!(
            callers(CdrQuery {
                flipped: Some(false),
                ..Default::default()
            })
            .len(),
            5
        );
        assert_eq!(
            callers(CdrQuery {
                caller: Some("041".into()),
                ..Default::default()
            }),
            ["041"]
        );
        // Pages of two through melbourne's calls, each after the last of the one before.
        let page = |after: Option<String>| -> Vec<serde_json::Value> {
            let query = CdrQuery {
                limit: 2,
                location: melbourne.clone(),
                after,
                ..Default::default()
            };
            store.cdrs(&query).unwrap()
        };
        let first = page(None);
        assert_eq!(first.len(), 2);
        let second = page(first[1]["session"].as_str().map(str::to_owned));
        assert_eq!(second.len(), 1);
        assert_eq!(second[0]["caller"], "041");
        assert!(page(second[0]["session"].as_str().map(str::to_owned)).is_empty());
        // One by its id; an unknown id is none.
        let id = first[0]["session"].as_str().unwrap();
        assert_eq!(store.cdr(id).unwrap().unwrap()["caller"], "045");
        assert_eq!(
            store.cdr("0190f0e0-0000-7000-8000-000000000000").unwrap(),
            None
        );
    }

    /// The intents of calls, counted once per call, by location and hour of start.
    pub fn intents_contract(store: &dyn CdrStore) {
        let second = |s| jiff::Timestamp::from_second(s).unwrap_or_default();
        let event = |value: &str| crate::record::CallEvent {
            at: second(1_790_000_100),
            name: "intent".into(),
            value: value.into(),
            confidence: Some(0.9),
        };
        let call = |session, started, location: &str, intents: &[&str]| {
            let mut r = record(session, "0400");
            r.started_at = second(started);
            r.location = Some(location.into());
            r.events = intents.iter().map(|i| event(i)).collect();
            r.events.push(crate::record::CallEvent {
                name: "sentiment".into(),
                ..event("calm")
            });
            r
        };
        // 1_789_999_200 is 2026-09-21T22:00:00Z, an hour's start.
        store
            .save_cdr(&call(1, 1_789_999_300, "sydney", &["billing", "billing"]))
            .unwrap();
        store
            .save_cdr(&call(2, 1_790_000_000, "sydney", &["billing", "sales"]))
            .unwrap();
        store
            .save_cdr(&call(3, 1_790_003_000, "sydney", &["sales"]))
            .unwrap();
        store
            .save_cdr(&call(4, 1_790_000_000, "perth", &["billing"]))
            .unwrap();
        store
            .save_cdr(&call(5, 1_780_000_000, "sydney", &["billing"]))
            .unwrap();
        let count = |location, hour: i64, intent: &str, calls| IntentCount {
            location: String::from(location),
            hour: second(hour).to_string(),
            intent: intent.into(),
            calls,
        };
        assert_eq!(
            store
                .intents(Some("sydney"), second(1_789_999_000))
                .unwrap(),
            vec![
                count("sydney", 1_789_999_200, "billing", 2),
                count("sydney", 1_789_999_200, "sales", 1),
                count("sydney", 1_790_002_800, "sales", 1),
            ]
        );
        assert_eq!(
            store.intents(None, second(1_790_000_000)).unwrap(),
            vec![
                count("perth", 1_789_999_200, "billing", 1),
                count("sydney", 1_789_999_200, "billing", 1),
                count("sydney", 1_789_999_200, "sales", 1),
                count("sydney", 1_790_002_800, "sales", 1),
            ]
        );
        assert!(store.intents(Some("darwin"), second(0)).unwrap().is_empty());
    }

    /// Calls live when the host died: marked interrupted at the next start, ended at
    /// the later of their last update and the last sign of life.
    pub fn interrupted_cdr_contract(store: &dyn CdrStore) {
        let second = |s| jiff::Timestamp::from_second(s).unwrap_or_default();
        let live = |session, updated| {
            let mut r = record(session, "0400");
            r.state = crate::record::RecordState::Live;
            r.ended_at = None;
            r.duration_ms = 0;
            r.updated_at = second(updated);
            r
        };
        store.save_cdr(&record(1, "0411")).unwrap();
        store.mark_alive(second(1_790_000_030)).unwrap();
        store.save_cdr(&live(2, 1_790_000_010)).unwrap();
        store.save_cdr(&live(3, 1_790_000_050)).unwrap();
        assert_eq!(store.close_interrupted().unwrap(), 2);
        let recent = store.recent_cdrs(10).unwrap();
        let by_session = |s| {
            let id = record(s, "").session.to_string();
            recent.iter().find(|r| r["session"] == id).unwrap().clone()
        };
        let (ended, heartbeat, updated) = (by_session(1), by_session(2), by_session(3));
        assert_eq!(ended["state"], "ended", "an ended call is left alone");
        assert_eq!(heartbeat["state"], "interrupted");
        assert_eq!(heartbeat["ended_at"], second(1_790_000_030).to_string());
        assert_eq!(heartbeat["duration_ms"], 30_000);
        assert_eq!(updated["ended_at"], second(1_790_000_050).to_string());
        assert_eq!(updated["answered_at"], second(1_790_000_000).to_string());
        assert_eq!(store.close_interrupted().unwrap(), 0, "once only");
    }

    pub fn cluster_store_contract(store: &dyn ClusterStore) {
        let status = |node: &str, s: i64, hash: &str| NodeStatus {
            node: node.into(),
            alive_at: jiff::Timestamp::from_second(1_796_000_000 + s).unwrap(),
            draining: false,
            live_calls: 3,
            scripts: [("listen".to_owned(), hash.to_owned())].into(),
            sip: Some(format!("sip:10.0.0.1{s}:5060")),
            users_in_calls: vec!["alice".into()],
            latest_call_of: [(
                "alice".to_owned(),
                jiff::Timestamp::from_millisecond(1_796_000_000_123).unwrap(),
            )]
            .into(),
        };
        assert_eq!(store.nodes().unwrap(), []);
        store.heartbeat(&status("b", 1, "aa")).unwrap();
        store.heartbeat(&status("a", 1, "aa")).unwrap();
        store.heartbeat(&status("b", 2, "bb")).unwrap();
        assert_eq!(
            store.nodes().unwrap(),
            [status("a", 1, "aa"), status("b", 2, "bb")],
            "by name, each node's last"
        );
    }

    pub fn registration_store_contract(store: &dyn RegistrationStore) {
        assert!(store.load_bindings().unwrap().is_empty());
        store.save_binding(&binding("alice", "sip:a@1")).unwrap();
        store.save_binding(&binding("alice", "sip:a@2")).unwrap();
        let mut updated = binding("alice", "sip:a@1");
        updated.cseq = 3;
        store.save_binding(&updated).unwrap();
        let mut all = store.load_bindings().unwrap();
        all.sort_by(|a, b| a.contact.cmp(&b.contact));
        assert_eq!(all, vec![updated, binding("alice", "sip:a@2")]);
        store.remove_binding("alice", "sip:a@2").unwrap();
        assert_eq!(store.load_bindings().unwrap().len(), 1);
    }
}
