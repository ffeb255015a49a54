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

use crate::record::CallRecord;
use crate::registration::Binding;

/// The largest key and value the key-value store takes.
pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 4096;

/// A small key-value store for admin toggles, in scopes (a location's name).
pub trait KvStore: Send + Sync {
    fn get(&self, scope: &str, key: &str) -> Result<Option<String>>;
    fn set(&self, scope: &str, key: &str, value: &str) -> Result<()>;
    fn delete(&self, scope: &str, key: &str) -> Result<()>;
    /// Every entry of a scope, sorted by key.
    fn list(&self, scope: &str) -> Result<Vec<(String, String)>>;
}

/// Registrations, so they survive a restart.
pub trait RegistrationStore: Send + Sync {
    /// Insert or replace the binding of (user, contact).
    fn save_binding(&self, binding: &Binding) -> Result<()>;
    fn remove_binding(&self, user_id: &str, contact: &str) -> Result<()>;
    fn load_bindings(&self) -> Result<Vec<Binding>>;
}

/// Call records (CDRs).
pub trait CdrStore: Send + Sync {
    /// Write a call's record; a record of the same session replaces the earlier one
    /// (a call's record is written when it ends and again when its script's `call-ended`
    /// answer adds tags).
    fn save_cdr(&self, record: &CallRecord) -> Result<()>;
    /// The most recent records, newest first, as JSON.
    fn recent_cdrs(&self, limit: usize) -> Result<Vec<serde_json::Value>>;
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
    Ok(())
}

pub mod contract {
    //! The checks every backend must pass, for its tests to call.
    use super::*;

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
        assert!(
            store
                .set("sydney", "k", &"x".repeat(MAX_VALUE_BYTES + 1))
                .is_err()
        );
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
            started_at: at,
            answered_at: Some(at),
            ended_at: at,
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
