use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use super::{KvStore, Result, check_entry};

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
";

impl SqliteStore {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
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

impl KvStore for SqliteStore {
    fn get(&self, scope: &str, key: &str) -> Result<Option<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT value FROM kv WHERE scope = ?1 AND key = ?2")?;
        Ok(stmt
            .query_row(params![scope, key], |row| row.get(0))
            .optional()?)
    }

    fn set(&self, scope: &str, key: &str, value: &str) -> Result<()> {
        check_entry(key, value)?;
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "INSERT INTO kv (scope, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )?;
        stmt.execute(params![scope, key, value])?;
        Ok(())
    }

    fn delete(&self, scope: &str, key: &str) -> Result<()> {
        let conn = self.conn();
        conn.prepare_cached("DELETE FROM kv WHERE scope = ?1 AND key = ?2")?
            .execute(params![scope, key])?;
        Ok(())
    }

    fn list(&self, scope: &str) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT key, value FROM kv WHERE scope = ?1 ORDER BY key")?;
        let rows = stmt.query_map(params![scope], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_store_keeps_the_kv_contract_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let store = SqliteStore::open(&path).unwrap();
        super::super::contract::kv_store_contract(&store);
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(
            reopened.get("perth", "override").unwrap().as_deref(),
            Some("open")
        );
    }
}
