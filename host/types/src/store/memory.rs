use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{
    AuditEntry, Binding, CallRecord, CdrStore, ClusterStore, DecisionRecord, DecisionStore,
    Expired, KvStore, NodeStatus, RegistrationStore, Result, ShadowResult, ShadowStore, StoreError,
    check_entry,
};

/// Key-value entries: (scope, key) → (value, expiry).
type Entries = BTreeMap<(String, String), (String, Option<jiff::Timestamp>)>;

/// A store that lives in memory: for tests and `script simulate`.
#[derive(Default)]
pub struct MemoryStore {
    kv: Mutex<Entries>,
    /// Newest last.
    audit: Mutex<Vec<AuditEntry>>,
    bindings: Mutex<BTreeMap<(String, String), Binding>>,
    /// Call records as JSON, oldest first.
    cdrs: Mutex<Vec<serde_json::Value>>,
    alive_at: Mutex<Option<jiff::Timestamp>>,
    /// Oldest first.
    shadow: Mutex<Vec<ShadowResult>>,
    /// In the order made.
    decisions: Mutex<Vec<DecisionRecord>>,
    scripts: Mutex<BTreeMap<String, Vec<u8>>>,
    nodes: Mutex<BTreeMap<String, NodeStatus>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn kv(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.kv
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl KvStore for MemoryStore {
    fn get(&self, scope: &str, key: &str) -> Result<Option<String>> {
        let kv = self.kv();
        Ok(kv
            .get(&(scope.to_owned(), key.to_owned()))
            .map(|(v, _)| v.clone()))
    }

    fn set_until(
        &self,
        scope: &str,
        key: &str,
        value: &str,
        expires_at: Option<jiff::Timestamp>,
    ) -> Result<()> {
        check_entry(key, value)?;
        self.kv().insert(
            (scope.to_owned(), key.to_owned()),
            (value.to_owned(), expires_at),
        );
        Ok(())
    }

    fn delete(&self, scope: &str, key: &str) -> Result<()> {
        self.kv().remove(&(scope.to_owned(), key.to_owned()));
        Ok(())
    }

    fn list(&self, scope: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .kv()
            .iter()
            .filter(|((s, _), _)| s == scope)
            .map(|((_, k), (v, _))| (k.clone(), v.clone()))
            .collect())
    }

    fn expires_at(&self, scope: &str, key: &str) -> Result<Option<jiff::Timestamp>> {
        let kv = self.kv();
        Ok(kv
            .get(&(scope.to_owned(), key.to_owned()))
            .and_then(|(_, e)| *e))
    }

    fn expire(&self, now: jiff::Timestamp) -> Result<Vec<Expired>> {
        let mut kv = self.kv();
        let due: Vec<(String, String)> = kv
            .iter()
            .filter(|(_, (_, expiry))| expiry.is_some_and(|e| e <= now))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(due
            .into_iter()
            .filter_map(|(scope, key)| {
                let (value, _) = kv.remove(&(scope.clone(), key.clone()))?;
                Some(Expired { scope, key, value })
            })
            .collect())
    }

    fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        audit.push(entry.clone());
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        Ok(audit.iter().rev().take(limit).cloned().collect())
    }
}

impl RegistrationStore for MemoryStore {
    fn save_binding(&self, binding: &Binding) -> Result<()> {
        let mut map = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            (binding.user_id.clone(), binding.contact.clone()),
            binding.clone(),
        );
        Ok(())
    }

    fn remove_binding(&self, user_id: &str, contact: &str) -> Result<()> {
        let mut map = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(user_id.to_owned(), contact.to_owned()));
        Ok(())
    }

    fn load_bindings(&self) -> Result<Vec<Binding>> {
        Ok(self
            .bindings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect())
    }
}

impl CdrStore for MemoryStore {
    fn save_cdr(&self, record: &CallRecord) -> Result<()> {
        let json = serde_json::to_value(record).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut cdrs = self.cdrs.lock().unwrap_or_else(|p| p.into_inner());
        let session = json["session"].clone();
        match cdrs.iter_mut().find(|r| r["session"] == session) {
            Some(earlier) => *earlier = json,
            None => cdrs.push(json),
        }
        Ok(())
    }

    fn cdrs(&self, query: &super::CdrQuery) -> Result<Vec<serde_json::Value>> {
        let cdrs = self.cdrs.lock().unwrap_or_else(|p| p.into_inner());
        let mut newest_first: Vec<&serde_json::Value> = cdrs.iter().rev().collect();
        // Stable: records that started in the same second stay newest-written first.
        newest_first.sort_by(|a, b| b["started_at"].as_str().cmp(&a["started_at"].as_str()));
        let start = match &query.after {
            None => 0,
            Some(after) => match newest_first.iter().position(|r| r["session"] == **after) {
                Some(at) => at + 1,
                None => newest_first.len(),
            },
        };
        Ok(newest_first[start..]
            .iter()
            .filter(|r| query.matches(r))
            .take(query.limit)
            .map(|r| (*r).clone())
            .collect())
    }

    fn cdr(&self, session: &str) -> Result<Option<serde_json::Value>> {
        let cdrs = self.cdrs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(cdrs.iter().find(|r| r["session"] == session).cloned())
    }

    fn mark_alive(&self, at: jiff::Timestamp) -> Result<()> {
        *self.alive_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
        Ok(())
    }

    fn close_interrupted(&self) -> Result<usize> {
        let alive_at = *self.alive_at.lock().unwrap_or_else(|p| p.into_inner());
        let mut cdrs = self.cdrs.lock().unwrap_or_else(|p| p.into_inner());
        let live = cdrs.iter_mut().filter(|r| r["state"] == "live");
        Ok(live.map(|r| super::interrupt(r, alive_at)).count())
    }

    fn intents(
        &self,
        location: Option<&str>,
        since: jiff::Timestamp,
    ) -> Result<Vec<crate::record::IntentCount>> {
        let cdrs = self.cdrs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(super::count_intents(cdrs.iter(), location, since))
    }
}

impl ShadowStore for MemoryStore {
    fn save_shadow(&self, results: &[ShadowResult]) -> Result<()> {
        let mut shadow = self.shadow.lock().unwrap_or_else(|p| p.into_inner());
        shadow.extend_from_slice(results);
        Ok(())
    }

    fn shadow_results(
        &self,
        location: &str,
        since: Option<jiff::Timestamp>,
    ) -> Result<Vec<ShadowResult>> {
        let shadow = self.shadow.lock().unwrap_or_else(|p| p.into_inner());
        Ok(shadow
            .iter()
            .filter(|r| r.location == location && since.is_none_or(|since| r.at >= since))
            .cloned()
            .collect())
    }

    fn forget_shadow(&self, before: jiff::Timestamp) -> Result<usize> {
        let mut shadow = self.shadow.lock().unwrap_or_else(|p| p.into_inner());
        let count = shadow.len();
        shadow.retain(|r| r.at >= before);
        Ok(count - shadow.len())
    }
}

impl DecisionStore for MemoryStore {
    fn save_decisions(&self, decisions: &[DecisionRecord]) -> Result<()> {
        let mut all = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        all.extend_from_slice(decisions);
        Ok(())
    }

    fn decisions(&self, session: &str) -> Result<Vec<DecisionRecord>> {
        let all = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all
            .iter()
            .filter(|d| d.session == session)
            .cloned()
            .collect())
    }

    fn decision_sessions(
        &self,
        location: Option<&str>,
        since: Option<jiff::Timestamp>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let all = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        let mut sessions: Vec<String> = Vec::new();
        for d in all.iter().filter(|d| {
            location.is_none_or(|l| d.location.as_deref() == Some(l))
                && since.is_none_or(|since| d.at >= since)
        }) {
            if !sessions.contains(&d.session) {
                sessions.push(d.session.clone());
            }
        }
        sessions.truncate(limit);
        Ok(sessions)
    }

    fn save_script(&self, hash: &str, _name: &str, bytes: &[u8]) -> Result<()> {
        let mut scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
        scripts
            .entry(hash.to_owned())
            .or_insert_with(|| bytes.to_vec());
        Ok(())
    }

    fn script(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        let scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
        Ok(scripts.get(hash).cloned())
    }

    fn forget_decisions(&self, before: jiff::Timestamp) -> Result<usize> {
        let mut all = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        let count = all.len();
        all.retain(|d| d.at >= before);
        Ok(count - all.len())
    }
}

impl ClusterStore for MemoryStore {
    fn heartbeat(&self, status: &NodeStatus) -> Result<()> {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(status.node.clone(), status.clone());
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>> {
        Ok(self
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_keeps_the_registration_contract() {
        super::super::contract::registration_store_contract(&super::MemoryStore::new());
    }

    #[test]
    fn memory_store_keeps_the_kv_contract() {
        super::super::contract::kv_store_contract(&super::MemoryStore::new());
    }

    #[test]
    fn memory_store_keeps_the_cdr_contract() {
        super::super::contract::cdr_store_contract(&super::MemoryStore::new());
        super::super::contract::interrupted_cdr_contract(&super::MemoryStore::new());
        super::super::contract::intents_contract(&super::MemoryStore::new());
        super::super::contract::cdr_query_contract(&super::MemoryStore::new());
        super::super::contract::shadow_store_contract(&super::MemoryStore::new());
        super::super::contract::decision_store_contract(&super::MemoryStore::new());
        super::super::contract::cluster_store_contract(&super::MemoryStore::new());
    }
}
