//! The stores side by side, for BENCHMARKS.md: call-record write throughput (the store
//! writer's batches, and one record at a time) and key-value read latency (what a script's
//! `kv.get` waits for), on SQLite (a file in WAL mode) and on PostgreSQL (a throw-away
//! cluster on loopback, as `ThrowawayPostgres` starts it: fsync off).
//!
//!     cargo bench -p wasmpbx-store --bench store
//!
//! A plain harness: throughput and percentiles of single reads, which criterion does
//! not report.
// Measuring happens on real time here.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use wasmpbx_store::throwaway::ThrowawayPostgres;
use wasmpbx_store::{PostgresStore, SqliteStore};
use wasmpbx_types::ids::SessionId;
use wasmpbx_types::store::{Store, contract};

const RECORDS: usize = 20_000;
/// As the store writer hands them over under load.
const BATCH: usize = 256;
const SINGLES: usize = 2_000;
const READS: usize = 20_000;

fn records(offset: usize, n: usize) -> Vec<wasmpbx_types::record::CallRecord> {
    (offset..offset + n)
        .map(|i| {
            let mut record = contract::record(0, "+61400000001");
            let mut random = [0u8; 10];
            random[..8].copy_from_slice(&(i as u64).to_le_bytes());
            record.session = SessionId::new(1_790_000_000_000 + i as u64, random);
            record
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn measure(name: &str, store: &dyn Store) {
    let batches = records(0, RECORDS);
    let started = Instant::now();
    for batch in batches.chunks(BATCH) {
        store.save_cdrs(batch).unwrap();
    }
    let batched = RECORDS as f64 / started.elapsed().as_secs_f64();

    let singles = records(RECORDS, SINGLES);
    let started = Instant::now();
    let mut writes: Vec<Duration> = singles
        .iter()
        .map(|record| {
            let started = Instant::now();
            store.save_cdr(record).unwrap();
            started.elapsed()
        })
        .collect();
    let single = SINGLES as f64 / started.elapsed().as_secs_f64();
    writes.sort();

    store.set("sydney", "override", "closed").unwrap();
    let mut reads: Vec<Duration> = (0..READS)
        .map(|_| {
            let started = Instant::now();
            let value = store.get("sydney", "override").unwrap();
            let took = started.elapsed();
            assert_eq!(value.as_deref(), Some("closed"));
            took
        })
        .collect();
    reads.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<11} {batched:>9.0} records/s in batches of {BATCH} · {single:>7.0} records/s one by one \
         (p50 {:.0} µs, p99 {:.0} µs, longest {:.0} µs) · kv.get p50 {:.1} µs p99 {:.1} µs",
        micros(percentile(&writes, 0.5)),
        micros(percentile(&writes, 0.99)),
        micros(percentile(&writes, 1.0)),
        micros(percentile(&reads, 0.5)),
        micros(percentile(&reads, 0.99)),
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("bench.db")).unwrap();
    let pg = ThrowawayPostgres::start().unwrap();
    let postgres = PostgresStore::connect(&pg.database("bench").unwrap(), "a").unwrap();
    // Twice each, alternating: the machine is noisy.
    for _ in 0..2 {
        measure("SQLite", &sqlite);
        measure("PostgreSQL", &postgres);
    }
}
