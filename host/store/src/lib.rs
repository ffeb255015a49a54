//! # wasmpbx-store — the SQLite and PostgreSQL stores
//!
//! [`SqliteStore`] (one file in WAL mode, the embedded default) and [`PostgresStore`]
//! (one database several nodes share) implement the store traits of
//! [`wasmpbx_types::store`] (key-value, registrations, call records, shadow results,
//! decisions) and pass the same contract as the in-memory store. [`open`] picks one
//! from the `[store]` config.

mod postgres;
mod sqlite;
#[cfg(any(test, feature = "throwaway"))]
pub mod throwaway;

use std::sync::Arc;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use wasmpbx_types::config::Config;
use wasmpbx_types::store::Store;

/// The store `config` names: PostgreSQL with `store.url` (as `cluster.node`), SQLite at
/// `store.path` otherwise. The error names the key; it never repeats the URL.
pub fn open(config: &Config) -> Result<Arc<dyn Store>, String> {
    match (&config.store.url, &config.cluster.node) {
        (Some(url), Some(node)) => PostgresStore::connect(url, node)
            .map(|store| Arc::new(store) as Arc<dyn Store>)
            .map_err(|e| format!("store.url: {e}")),
        (Some(_), None) => Err("cluster.node: required with store.url".into()),
        (None, _) => SqliteStore::open(&config.store.path)
            .map(|store| Arc::new(store) as Arc<dyn Store>)
            .map_err(|e| format!("store.path: {}: {e}", config.store.path.display())),
    }
}
