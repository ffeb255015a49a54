use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use wasmpbx_sip::transaction::Transport;
use wasmpbx_types::record::{CallRecord, IntentCount};
use wasmpbx_types::registration::Binding;
use wasmpbx_types::store::{
    AuditEntry, CdrQuery, CdrStore, ClusterStore, DecisionRecord, DecisionStore, Expired, KvStore,
    NodeStatus, RegistrationStore, Result, ShadowResult, ShadowStore, StoreError, check_entry,
};

/// SQLite's error, as the store's backend-neutral one.
fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The production store: one SQLite file in WAL mode.
///
/// One connection behind a mutex: every statement here is a primary-key lookup or a
/// single-row write (microseconds), far from being the bottleneck of a call.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    scope TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cdrs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session    TEXT NOT NULL,
    started_at TEXT NOT NULL,
    record     TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'ended'
);
CREATE INDEX IF NOT EXISTS cdrs_session ON cdrs (session);
CREATE TABLE IF NOT EXISTS audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    entry      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS shadow (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    location TEXT NOT NULL,
    at       INTEGER NOT NULL,
    result   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_location ON shadow (location, at);
CREATE TABLE IF NOT EXISTS decisions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    session  TEXT NOT NULL,
    location TEXT,
    at       INTEGER NOT NULL,
    decision TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_session ON decisions (session);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at);
CREATE TABLE IF NOT EXISTS scripts (
    hash  TEXT PRIMARY KEY,
    name  TEXT NOT NULL,
    bytes BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    node   TEXT PRIMARY KEY,
    status TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alive (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    user_id    TEXT NOT NULL,
    contact    TEXT NOT NULL,
    device     TEXT NOT NULL,
    instance   TEXT,
    user_agent TEXT,
    transport  TEXT NOT NULL,
    source     TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    call_id    TEXT NOT NULL,
    cseq       INTEGER NOT NULL,
    PRIMARY KEY (user_id, contact)
) WITHOUT ROWID;
";

impl SqliteStore {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        add_record_state(&conn).map_err(db)?;
        add_kv_expiry(&conn).map_err(db)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // SQLite keeps its own consistency; a panic elsewhere must not wedge the store.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Insert a record, or replace the one of its session (`conn` may be a transaction).
fn parse_record(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn save_cdr(conn: &Connection, record: &CallRecord) -> Result<()> {
    let json = serde_json::to_string(record).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let session = record.session.to_string();
    let state = record.state.as_str();
    // The same session again (the call's next update, its end, its call-ended tags)
    // replaces the record in place.
    let updated = conn
        .prepare_cached("UPDATE cdrs SET record = ?2, state = ?3 WHERE session = ?1")
        .map_err(db)?
        .execute(params![session, json, state])
        .map_err(db)?;
    if updated == 0 {
        conn.prepare_cached(
            "INSERT INTO cdrs (session, started_at, record, state) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(db)?
        .execute(params![session, record.started_at.to_string(), json, state])
        .map_err(db)?;
    }
    Ok(())
}

/// Databases from before entries could expire get the column, and an index that finds
/// the ones due.
fn add_kv_expiry(conn: &Connection) -> rusqlite::Result<()> {
    let has_expiry: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('kv') WHERE name = 'expires_at'",
        [],
        |row| row.get(0),
    )?;
    if !has_expiry {
        conn.execute_batch("ALTER TABLE kv ADD COLUMN expires_at INTEGER")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;",
    )
}

/// Databases from before records had a state (every record then was of an ended call)
/// get the column; the index finds the live ones at start.
fn add_record_state(conn: &Connection) -> rusqlite::Result<()> {
    let has_state: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('cdrs') WHERE name = 'state'",
        [],
        |row| row.get(0),
    )?;
    if !has_state {
        conn.execute_batch("ALTER TABLE cdrs ADD COLUMN state TEXT NOT NULL DEFAULT 'ended'")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS cdrs_live ON cdrs (state) WHERE state = 'live';
         CREATE INDEX IF NOT EXISTS cdrs_started ON cdrs (started_at);",
    )
}

impl KvStore for SqliteStore {
    fn get(&self, scope: &str, key: &str) -> Result<Option<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT value FROM kv WHERE scope = ?1 AND key = ?2")
            .map_err(db)?;
        stmt.query_row(params![scope, key], |row| row.get(0))
            .optional()
            .map_err(db)
    }

    fn set_until(
        &self,
        scope: &str,
        key: &str,
        value: &str,
        expires_at: Option<jiff::Timestamp>,
    ) -> Result<()> {
        check_entry(key, value)?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO kv (scope, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value,
             expires_at = excluded.expires_at,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            )
            .map_err(db)?;
        let expires_at = expires_at.map(|at| at.as_millisecond());
        stmt.execute(params![scope, key, value, expires_at])
            .map_err(db)?;
        Ok(())
    }

    fn delete(&self, scope: &str, key: &str) -> Result<()> {
        let conn = self.conn();
        conn.prepare_cached("DELETE FROM kv WHERE scope = ?1 AND key = ?2")
            .map_err(db)?
            .execute(params![scope, key])
            .map_err(db)?;
        Ok(())
    }

    fn list(&self, scope: &str) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key, value FROM kv WHERE scope = ?1 ORDER BY key")
            .map_err(db)?;
        let rows = stmt
            .query_map(params![scope], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn expires_at(&self, scope: &str, key: &str) -> Result<Option<jiff::Timestamp>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT expires_at FROM kv WHERE scope = ?1 AND key = ?2")
            .map_err(db)?;
        let ms: Option<Option<i64>> = stmt
            .query_row(params![scope, key], |row| row.get(0))
            .optional()
            .map_err(db)?;
        Ok(ms
            .flatten()
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()))
    }

    fn expire(&self, now: jiff::Timestamp) -> Result<Vec<Expired>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1
                 RETURNING scope, key, value",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![now.as_millisecond()], |row| {
                Ok(Expired {
                    scope: row.get(0)?,
                    key: row.get(1)?,
                    value: row.get(2)?,
                })
            })
            .map_err(db)?;
        let mut expired: Vec<Expired> = rows.collect::<rusqlite::Result<_>>().map_err(db)?;
        expired.sort_by(|a, b| (&a.scope, &a.key).cmp(&(&b.scope, &b.key)));
        Ok(expired)
    }

    fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let json = serde_json::to_string(entry).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.conn()
            .prepare_cached("INSERT INTO audit (entry) VALUES (?1)")
            .map_err(db)?
            .execute(params![json])
            .map_err(db)?;
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT entry FROM audit ORDER BY id DESC LIMIT ?1")
            .map_err(db)?;
        let rows = stmt
            .query_map(params![limit.min(i64::MAX as usize) as i64], |row| {
                row.get::<_, String>(0)
            })
            .map_err(db)?;
        rows.map(|row| {
            serde_json::from_str(&row.map_err(db)?).map_err(|e| StoreError::Invalid(e.to_string()))
        })
        .collect()
    }
}

impl CdrStore for SqliteStore {
    fn save_cdr(&self, record: &CallRecord) -> Result<()> {
        save_cdr(&self.conn(), record)
    }

    fn save_cdrs(&self, records: &[CallRecord]) -> Result<()> {
        // One transaction: one WAL append for the batch, not one per record.
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        for record in records {
            save_cdr(&tx, record)?;
        }
        tx.commit().map_err(db)
    }

    fn mark_alive(&self, at: jiff::Timestamp) -> Result<()> {
        self.conn()
            .prepare_cached("INSERT OR REPLACE INTO alive (id, at) VALUES (1, ?1)")
            .map_err(db)?
            .execute(params![at.to_string()])
            .map_err(db)?;
        Ok(())
    }

    fn close_interrupted(&self) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let alive_at: Option<String> = tx
            .query_row("SELECT at FROM alive WHERE id = 1", [], |row| row.get(0))
            .optional()
            .map_err(db)?;
        let alive_at = alive_at.and_then(|at| at.parse().ok());
        let live: Vec<(i64, String)> = {
            let mut stmt = tx
                .prepare("SELECT id, record FROM cdrs WHERE state = 'live'")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)?
        };
        for (id, json) in &live {
            let mut record: serde_json::Value =
                serde_json::from_str(json).map_err(|e| StoreError::Invalid(e.to_string()))?;
            wasmpbx_types::store::interrupt(&mut record, alive_at);
            tx.execute(
                "UPDATE cdrs SET record = ?2, state = 'interrupted' WHERE id = ?1",
                params![id, record.to_string()],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(live.len())
    }

    fn intents(&self, location: Option<&str>, since: jiff::Timestamp) -> Result<Vec<IntentCount>> {
        // Whole seconds, as start times are written, so the text comparison holds.
        let since = jiff::Timestamp::from_second(since.as_second())
            .unwrap_or(since)
            .to_string();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT json_extract(c.record, '$.location') AS place,
                        substr(c.started_at, 1, 13) || ':00:00Z' AS hour,
                        json_extract(e.value, '$.value') AS intent,
                        COUNT(DISTINCT c.id)
                 FROM cdrs AS c, json_each(c.record, '$.events') AS e
                 WHERE c.started_at >= ?1
                   AND json_extract(e.value, '$.name') = 'intent'
                   AND json_extract(c.record, '$.location') IS NOT NULL
                   AND (?2 IS NULL OR json_extract(c.record, '$.location') = ?2)
                   AND json_type(e.value, '$.value') = 'text'
                 GROUP BY hour, place, intent
                 ORDER BY hour, place, intent",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![since, location], |row| {
                Ok(IntentCount {
                    location: row.get(0)?,
                    hour: row.get(1)?,
                    intent: row.get(2)?,
                    calls: row.get::<_, i64>(3)?.try_into().unwrap_or(0),
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn cdrs(&self, query: &CdrQuery) -> Result<Vec<serde_json::Value>> {
        let conn = self.conn();
        // One statement for every combination: an absent filter is NULL and passes.
        let mut stmt = conn
            .prepare_cached(
                "SELECT record FROM cdrs
                 WHERE (?1 IS NULL OR started_at >= ?1)
                   AND (?2 IS NULL OR started_at < ?2)
                   AND (?3 IS NULL OR json_extract(record, '$.location') = ?3)
                   AND (?4 IS NULL OR json_extract(record, '$.caller') = ?4)
                   AND (?5 IS NULL OR json_extract(record, '$.disposition') = ?5)
                   AND (?6 IS NULL OR (json_array_length(record, '$.flips') > 0) = ?6)
                   AND (?7 IS NULL OR (started_at, id) <
                        (SELECT started_at, id FROM cdrs WHERE session = ?7))
                 ORDER BY started_at DESC, id DESC LIMIT ?8",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(
                params![
                    query.since.map(CdrQuery::time_text),
                    query.until.map(CdrQuery::time_text),
                    query.location,
                    query.caller,
                    query.disposition,
                    query.flipped,
                    query.after,
                    query.limit.min(i64::MAX as usize) as i64,
                ],
                |row| row.get::<_, String>(0),
            )
            .map_err(db)?;
        rows.map(|row| parse_record(&row.map_err(db)?)).collect()
    }

    fn cdr(&self, session: &str) -> Result<Option<serde_json::Value>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT record FROM cdrs WHERE session = ?1")
            .map_err(db)?;
        let record: Option<String> = stmt
            .query_row(params![session], |row| row.get(0))
            .optional()
            .map_err(db)?;
        record.as_deref().map(parse_record).transpose()
    }
}

impl RegistrationStore for SqliteStore {
    fn save_binding(&self, b: &Binding) -> Result<()> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "INSERT OR REPLACE INTO registrations
             (user_id, contact, device, instance, user_agent, transport, source, expires_at, call_id, cseq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        ).map_err(db)?;
        stmt.execute(params![
            b.user_id,
            b.contact,
            b.device,
            b.instance,
            b.user_agent,
            b.transport.as_str(),
            b.source.to_string(),
            b.expires_at,
            b.call_id,
            b.cseq
        ])
        .map_err(db)?;
        Ok(())
    }

    fn remove_binding(&self, user_id: &str, contact: &str) -> Result<()> {
        let conn = self.conn();
        conn.prepare_cached("DELETE FROM registrations WHERE user_id = ?1 AND contact = ?2")
            .map_err(db)?
            .execute(params![user_id, contact])
            .map_err(db)?;
        Ok(())
    }

    fn load_bindings(&self) -> Result<Vec<Binding>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT user_id, contact, device, instance, user_agent, transport, source, expires_at, call_id, cseq
             FROM registrations",
        ).map_err(db)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    Binding {
                        user_id: row.get(0)?,
                        contact: row.get(1)?,
                        device: row.get(2)?,
                        instance: row.get(3)?,
                        user_agent: row.get(4)?,
                        transport: Transport::Udp,
                        source: "0.0.0.0:0".parse().expect("literal"),
                        expires_at: row.get(7)?,
                        call_id: row.get(8)?,
                        cseq: row.get(9)?,
                    },
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (mut binding, transport, source) = row.map_err(db)?;
            binding.transport = Transport::from_name(&transport).ok_or_else(|| {
                StoreError::Invalid(format!("registration transport {transport:?}"))
            })?;
            binding.source = source
                .parse()
                .map_err(|_| StoreError::Invalid(format!("registration source {source:?}")))?;
            out.push(binding);
        }
        Ok(out)
    }
}

impl ShadowStore for SqliteStore {
    fn save_shadow(&self, results: &[ShadowResult]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO shadow (location, at, result) VALUES (?1, ?2, ?3)")
                .map_err(db)?;
            for result in results {
                let json = serde_json::to_string(result)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                insert
                    .execute(params![result.location, result.at.as_millisecond(), json])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn shadow_results(
        &self,
        location: &str,
        since: Option<jiff::Timestamp>,
    ) -> Result<Vec<ShadowResult>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT result FROM shadow WHERE location = ?1 AND at >= ?2 ORDER BY at, id",
            )
            .map_err(db)?;
        let since = since.map_or(i64::MIN, |at| at.as_millisecond());
        let rows = stmt
            .query_map(params![location, since], |row| row.get::<_, String>(0))
            .map_err(db)?;
        rows.map(|row| {
            serde_json::from_str(&row.map_err(db)?).map_err(|e| StoreError::Invalid(e.to_string()))
        })
        .collect()
    }

    fn forget_shadow(&self, before: jiff::Timestamp) -> Result<usize> {
        self.conn()
            .execute(
                "DELETE FROM shadow WHERE at < ?1",
                params![before.as_millisecond()],
            )
            .map_err(db)
    }
}

impl DecisionStore for SqliteStore {
    fn save_decisions(&self, decisions: &[DecisionRecord]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO decisions (session, location, at, decision) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db)?;
            for decision in decisions {
                let json = serde_json::to_string(decision)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                insert
                    .execute(params![
                        decision.session,
                        decision.location,
                        decision.at.as_millisecond(),
                        json
                    ])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn decisions(&self, session: &str) -> Result<Vec<DecisionRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT decision FROM decisions WHERE session = ?1 ORDER BY id")
            .map_err(db)?;
        let rows = stmt
            .query_map(params![session], |row| row.get::<_, String>(0))
            .map_err(db)?;
        rows.map(|row| {
            serde_json::from_str(&row.map_err(db)?).map_err(|e| StoreError::Invalid(e.to_string()))
        })
        .collect()
    }

    fn decision_sessions(
        &self,
        location: Option<&str>,
        since: Option<jiff::Timestamp>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT session FROM decisions
                 WHERE (?1 IS NULL OR location = ?1) AND at >= ?2
                 GROUP BY session ORDER BY MIN(id) LIMIT ?3",
            )
            .map_err(db)?;
        let since = since.map_or(i64::MIN, |at| at.as_millisecond());
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = stmt
            .query_map(params![location, since, limit], |row| {
                row.get::<_, String>(0)
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn save_script(&self, hash: &str, name: &str, bytes: &[u8]) -> Result<()> {
        self.conn()
            .prepare_cached("INSERT OR IGNORE INTO scripts (hash, name, bytes) VALUES (?1, ?2, ?3)")
            .map_err(db)?
            .execute(params![hash, name, bytes])
            .map_err(db)?;
        Ok(())
    }

    fn script(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        self.conn()
            .prepare_cached("SELECT bytes FROM scripts WHERE hash = ?1")
            .map_err(db)?
            .query_row(params![hash], |row| row.get(0))
            .optional()
            .map_err(db)
    }

    fn forget_decisions(&self, before: jiff::Timestamp) -> Result<usize> {
        self.conn()
            .execute(
                "DELETE FROM decisions WHERE at < ?1",
                params![before.as_millisecond()],
            )
            .map_err(db)
    }
}

impl ClusterStore for SqliteStore {
    fn heartbeat(&self, status: &NodeStatus) -> Result<()> {
        let json = serde_json::to_string(status).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.conn()
            .prepare_cached("INSERT OR REPLACE INTO nodes (node, status) VALUES (?1, ?2)")
            .map_err(db)?
            .execute(params![status.node, json])
            .map_err(db)?;
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT status FROM nodes ORDER BY node")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(db)?;
        rows.map(|row| {
            serde_json::from_str(&row.map_err(db)?).map_err(|e| StoreError::Invalid(e.to_string()))
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_store_keeps_the_cluster_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("n.db")).unwrap();
        wasmpbx_types::store::contract::cluster_store_contract(&store);
    }

    #[test]
    fn sqlite_store_keeps_the_decision_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("d.db")).unwrap();
        wasmpbx_types::store::contract::decision_store_contract(&store);
    }

    #[test]
    fn sqlite_store_keeps_the_shadow_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        wasmpbx_types::store::contract::shadow_store_contract(&store);
    }

    #[test]
    fn sqlite_store_keeps_the_cdr_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("c.db")).unwrap();
        wasmpbx_types::store::contract::cdr_store_contract(&store);
    }

    #[test]
    fn sqlite_store_filters_and_pages_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("q.db")).unwrap();
        wasmpbx_types::store::contract::cdr_query_contract(&store);
    }

    #[test]
    fn sqlite_store_counts_intents() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("n.db")).unwrap();
        wasmpbx_types::store::contract::intents_contract(&store);
    }

    #[test]
    fn sqlite_store_closes_interrupted_calls() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("i.db")).unwrap();
        wasmpbx_types::store::contract::interrupted_cdr_contract(&store);
    }

    #[test]
    fn a_database_from_before_record_states_gets_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE cdrs (id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL,
             started_at TEXT NOT NULL, record TEXT NOT NULL);
             INSERT INTO cdrs (session, started_at, record) VALUES ('s', 't', '{}');",
        )
        .unwrap();
        drop(old);
        let store = super::SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.close_interrupted().unwrap(),
            0,
            "old records had ended"
        );
        assert_eq!(store.recent_cdrs(5).unwrap().len(), 1);
    }

    #[test]
    fn sqlite_store_keeps_the_registration_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("r.db")).unwrap();
        wasmpbx_types::store::contract::registration_store_contract(&store);
    }

    use super::*;

    #[test]
    fn sqlite_store_keeps_the_kv_contract_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let store = SqliteStore::open(&path).unwrap();
        wasmpbx_types::store::contract::kv_store_contract(&store);
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(
            reopened.get("perth", "override").unwrap().as_deref(),
            Some("open")
        );
    }
}
