//! # wasmpbx-store — the SQLite store
//!
//! [`SqliteStore`] implements the store traits of
//! [`wasmpbx_types::store`] (key-value, registrations, call records) on one SQLite file
//! in WAL mode, and passes the same contract as the in-memory store.

mod sqlite;

pub use sqlite::SqliteStore;
