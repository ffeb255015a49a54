//! Admin toggles that expire ("closed until 14:00 for the staff meeting"): an entry set
//! with `ttl_s` or `expires_at` is removed when due — looked for four times a second, so
//! a script sees the location open again at once — and the removal joins the audit log.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{AuditEntry, KvStore};

/// How often due entries are looked for.
const EVERY: Duration = Duration::from_millis(250);

/// Remove due entries, for ever.
pub async fn expire(kv: Arc<dyn KvStore>, clock: Arc<dyn Clock>) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (kv, now) = (kv.clone(), clock.now());
        let done = tokio::task::spawn_blocking(move || expire_due(kv.as_ref(), now)).await;
        if let Ok(Err(e)) = done {
            tracing::warn!("expiring key-value entries: {e}");
        }
    }
}

/// Remove the entries due at `now`, each noted in the audit log.
pub fn expire_due(kv: &dyn KvStore, now: jiff::Timestamp) -> crate::store::Result<usize> {
    let expired = kv.expire(now)?;
    for entry in &expired {
        tracing::info!(location = %entry.scope, key = %entry.key, "key-value entry expired");
        kv.audit(&AuditEntry {
            at: now,
            who: "expiry".into(),
            action: "expired".into(),
            scope: entry.scope.clone(),
            key: entry.key.clone(),
            old: Some(entry.value.clone()),
            value: None,
            expires_at: None,
        })?;
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_due_entry_goes_and_the_audit_log_says_so() {
        let kv = MemoryStore::new();
        let at = |s: i64| jiff::Timestamp::from_second(1_790_000_000 + s).unwrap();
        kv.set_until("sydney", "override", "closed", Some(at(2)))
            .unwrap();
        assert_eq!(expire_due(&kv, at(1)).unwrap(), 0);
        assert_eq!(expire_due(&kv, at(2)).unwrap(), 1);
        assert_eq!(kv.get("sydney", "override").unwrap(), None);
        let log = kv.audit_log(10).unwrap();
        assert_eq!(
            (
                log[0].action.as_str(),
                log[0].who.as_str(),
                log[0].old.as_deref()
            ),
            ("expired", "expiry", Some("closed"))
        );
    }
}
