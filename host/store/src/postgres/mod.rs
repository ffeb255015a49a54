//! The PostgreSQL store: one database that several nodes share.
//!
//! The store's traits are synchronous and are called from any thread, tokio's included,
//! while the `postgres` client blocks on a runtime of its own (which must not nest in
//! another). So a few worker threads each own a connection and take jobs from one queue;
//! a caller hands its job over and waits for the answer. A worker whose connection broke
//! opens a new one for its next job.
//!
//! Shared by every node: the key-value store and its audit log (an override set on any
//! node applies on all), shadow results, decisions and script versions. Kept per node
//! (the `node` column): call records' liveness, registrations and signs of life — a node
//! that restarts closes only its own interrupted calls and restores only its own phones.

mod mirror;
mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use mirror::KvMirror;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use wasmpbx_sip::transaction::Transport;
use wasmpbx_types::record::{CallRecord, IntentCount};
use wasmpbx_types::registration::Binding;
use wasmpbx_types::store::{
    AuditEntry, CdrQuery, CdrStore, ClusterStore, DecisionRecord, DecisionStore, EdgePhone,
    EdgeUser, Expired, KvStore, NodeStatus, RegistrationStore, Result, ShadowResult, ShadowStore,
    StoreError, check_entry, hour_of,
};

/// Connections (and worker threads) per node: the call-record writer, the decision
/// journal, scripts' key-value reads and the admin API each get one without waiting.
const CONNECTIONS: usize = 4;

/// How long connecting may take when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One line for an admin: PostgreSQL's own message when the server sent one (the
/// driver says only "db error"), else the driver's with its cause ("error connecting to
/// server: Connection refused"). Neither holds the URL.
fn pg(e: postgres::Error) -> StoreError {
    let line = match (e.as_db_error(), std::error::Error::source(&e)) {
        (Some(db), _) => format!("PostgreSQL said: {} ({})", db.message(), db.code().code()),
        (None, Some(cause)) if !e.to_string().contains(&cause.to_string()) => {
            format!("{e}: {cause}")
        }
        (None, _) => e.to_string(),
    };
    StoreError::Backend(line.replace(['\r', '\n'], " "))
}

fn invalid(e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(e.to_string())
}

fn stopped() -> StoreError {
    StoreError::Backend("the PostgreSQL workers have stopped".into())
}

/// A count or limit as PostgreSQL's BIGINT.
fn bigint(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One worker's connection, opened when first needed and again after it broke, with
/// the statements it has prepared.
struct Session {
    config: postgres::Config,
    client: Option<Client>,
    statements: HashMap<&'static str, Statement>,
}

impl Session {
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            self.client = None;
            self.client = Some(self.config.connect(NoTls).map_err(pg)?);
        }
        self.client.as_mut().ok_or_else(stopped)
    }

    /// `sql` prepared on this connection (once).
    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client()?.prepare(sql).map_err(pg)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        self.client()?.query(&statement, params).map_err(pg)
    }

    fn execute(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let statement = self.statement(sql)?;
        self.client()?.execute(&statement, params).map_err(pg)
    }
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The store on a PostgreSQL database, as node `node`.
pub struct PostgresStore {
    jobs: mpsc::Sender<Job>,
    node: Arc<str>,
    kv: Arc<KvMirror>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // The workers stop when `jobs` goes; the listener when told.
        self.kv.stop();
    }
}

impl PostgresStore {
    /// Connect to the database at `url` as node `node`, bringing its schema up to date.
    /// Errors never repeat the URL (it may hold a password).
    pub fn connect(url: &str, node: &str) -> Result<Self> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("store.url is not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(&format!("wasmpbx {node}"));
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..CONNECTIONS {
            let (queue, config) = (queue.clone(), config.clone());
            std::thread::Builder::new()
                .name(format!("store-pg-{n}"))
                .spawn(move || work(&queue, config))
                .map_err(|e| StoreError::Backend(format!("starting a store worker: {e}")))?;
        }
        let store = Self {
            jobs,
            node: node.into(),
            kv: Arc::default(),
        };
        store.run(|session| schema::migrate(session.client()?))?;
        let kv = store.kv.clone();
        std::thread::Builder::new()
            .name("store-pg-kv".into())
            .spawn(move || mirror::follow(config, kv))
            .map_err(|e| StoreError::Backend(format!("starting the key-value mirror: {e}")))?;
        if !store.kv.wait_until_following(CONNECT_TIMEOUT) {
            return Err(StoreError::Backend(
                "the key-value mirror could not load the entries".into(),
            ));
        }
        Ok(store)
    }

    /// Run `job` on a worker's connection and wait for its answer.
    fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Session) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |session| {
                let _ = reply.send(job(session));
            }))
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}

/// A worker: take jobs until the store is dropped.
fn work(queue: &Mutex<mpsc::Receiver<Job>>, config: postgres::Config) {
    let mut session = Session {
        config,
        client: None,
        statements: HashMap::new(),
    };
    loop {
        // The lock is held only while waiting for the next job, never while running it.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(job) => job(&mut session),
            Err(_) => return,
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(invalid)
}

/// `text` without NUL, which PostgreSQL's text cannot hold: for the columns a record is
/// looked up by (the record's JSON escapes NUL and keeps it).
fn column(text: &str) -> String {
    text.replace('\0', "")
}

fn millis(at: jiff::Timestamp) -> i64 {
    at.as_millisecond()
}

/// A query's time bound, to the second as [`CdrQuery`] compares.
fn whole_second_ms(at: jiff::Timestamp) -> i64 {
    at.as_second().saturating_mul(1000)
}

impl KvStore for PostgresStore {
    /// From the mirror: no round trip, and an answer while the database is away.
    fn get(&self, scope: &str, key: &str) -> Result<Option<String>> {
        Ok(self.kv.get(scope, key))
    }

    fn set_until(
        &self,
        scope: &str,
        key: &str,
        value: &str,
        expires_at: Option<jiff::Timestamp>,
    ) -> Result<()> {
        check_entry(key, value)?;
        let (scope, key, value) = (scope.to_owned(), key.to_owned(), value.to_owned());
        let expires_at = expires_at.map(millis);
        let txid = self.run(move |s| {
            let rows = s.query(
                "INSERT INTO kv (scope, key, value, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value,
                 expires_at = excluded.expires_at, updated_at = now()
                 RETURNING txid_current()",
                &[&scope, &key, &value, &expires_at],
            )?;
            Ok(rows.first().map(|row| row.get::<_, i64>(0)))
        })?;
        txid.into_iter().for_each(|txid| self.kv.wait_for(txid));
        Ok(())
    }

    fn delete(&self, scope: &str, key: &str) -> Result<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        let txid = self.run(move |s| {
            let rows = s.query(
                "DELETE FROM kv WHERE scope = $1 AND key = $2 RETURNING txid_current()",
                &[&scope, &key],
            )?;
            Ok(rows.first().map(|row| row.get::<_, i64>(0)))
        })?;
        txid.into_iter().for_each(|txid| self.kv.wait_for(txid));
        Ok(())
    }

    fn list(&self, scope: &str) -> Result<Vec<(String, String)>> {
        Ok(self.kv.list(scope))
    }

    fn expires_at(&self, scope: &str, key: &str) -> Result<Option<jiff::Timestamp>> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.run(move |s| {
            let rows = s.query(
                "SELECT expires_at FROM kv WHERE scope = $1 AND key = $2",
                &[&scope, &key],
            )?;
            Ok(rows
                .first()
                .and_then(|row| row.get::<_, Option<i64>>(0))
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()))
        })
    }

    fn expire(&self, now: jiff::Timestamp) -> Result<Vec<Expired>> {
        // Each node's sweeper runs this; the DELETE hands every due entry to one of them.
        let (mut expired, txid) = self.run(move |s| {
            let rows = s.query(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= $1
                 RETURNING scope, key, value, txid_current()",
                &[&millis(now)],
            )?;
            let expired: Vec<Expired> = rows
                .iter()
                .map(|row| Expired {
                    scope: row.get(0),
                    key: row.get(1),
                    value: row.get(2),
                })
                .collect();
            Ok((expired, rows.first().map(|row| row.get::<_, i64>(3))))
        })?;
        txid.into_iter().for_each(|txid| self.kv.wait_for(txid));
        expired.sort_by(|a, b| (&a.scope, &a.key).cmp(&(&b.scope, &b.key)));
        Ok(expired)
    }

    fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let json = serde_json::to_string(entry).map_err(invalid)?;
        self.run(move |s| {
            s.execute("INSERT INTO audit (entry) VALUES ($1)", &[&json])
                .map(drop)
        })
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let limit = bigint(limit);
        self.run(move |s| {
            let rows = s.query(
                "SELECT entry FROM audit ORDER BY id DESC LIMIT $1",
                &[&limit],
            )?;
            rows.iter().map(|row| parse_json(row.get(0))).collect()
        })
    }
}

/// A call record as the `cdrs` table's row: the columns queries filter on, and the
/// record's JSON.
struct CdrRow {
    session: String,
    started_ms: i64,
    state: String,
    location: Option<String>,
    caller: String,
    disposition: String,
    flips: i32,
    /// Each intent the call had, once.
    intents: Vec<String>,
    record: String,
}

impl CdrRow {
    fn of(record: &CallRecord) -> Result<Self> {
        let json = serde_json::to_value(record).map_err(invalid)?;
        let text = |key: &str| json[key].as_str().unwrap_or_default().to_owned();
        let mut intents: Vec<String> = Vec::new();
        for event in &record.events {
            let intent = column(&event.value);
            if event.name == "intent" && !intents.contains(&intent) {
                intents.push(intent);
            }
        }
        Ok(Self {
            session: record.session.to_string(),
            started_ms: millis(record.started_at),
            state: record.state.as_str().to_owned(),
            location: record.location.as_deref().map(column),
            caller: column(&record.caller),
            disposition: text("disposition"),
            flips: i32::try_from(record.flips.len()).unwrap_or(i32::MAX),
            intents,
            record: json.to_string(),
        })
    }
}

/// Insert records, or replace those of their sessions (a start stays as first
/// written): a batch is one statement, its columns as arrays.
const SAVE_CDRS: &str = "INSERT INTO cdrs
    (session, node, started_ms, state, location, caller, disposition, flips, intents, record)
    SELECT session, $1, started_ms, state, location, caller, disposition, flips,
           ARRAY(SELECT jsonb_array_elements_text(intents::jsonb)), record
    FROM unnest($2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[],
                $8::INTEGER[], $9::TEXT[], $10::TEXT[]) WITH ORDINALITY
         AS batch(session, started_ms, state, location, caller, disposition, flips,
                  intents, record, n)
    ORDER BY n
    ON CONFLICT (session) DO UPDATE SET state = excluded.state,
    location = excluded.location, caller = excluded.caller,
    disposition = excluded.disposition, flips = excluded.flips,
    intents = excluded.intents, record = excluded.record";

/// A batch of records as [`SAVE_CDRS`]'s columns.
#[derive(Default)]
struct CdrColumns {
    session: Vec<String>,
    started_ms: Vec<i64>,
    state: Vec<String>,
    location: Vec<Option<String>>,
    caller: Vec<String>,
    disposition: Vec<String>,
    flips: Vec<i32>,
    /// Each row's intents as a JSON array (arrays of arrays must be rectangular).
    intents: Vec<String>,
    record: Vec<String>,
}

impl CdrColumns {
    /// `records`, the last version of each session only: one statement may not update
    /// a row twice, and the last is what a batch in order would leave.
    fn of(records: &[CallRecord]) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        let mut last: Vec<&CallRecord> = records
            .iter()
            .rev()
            .filter(|record| seen.insert(record.session))
            .collect();
        last.reverse();
        let mut columns = Self::default();
        for record in last {
            columns.push(CdrRow::of(record)?)?;
        }
        Ok(columns)
    }

    fn push(&mut self, row: CdrRow) -> Result<()> {
        self.intents
            .push(serde_json::to_string(&row.intents).map_err(invalid)?);
        self.session.push(row.session);
        self.started_ms.push(row.started_ms);
        self.state.push(row.state);
        self.location.push(row.location);
        self.caller.push(row.caller);
        self.disposition.push(row.disposition);
        self.flips.push(row.flips);
        self.record.push(row.record);
        Ok(())
    }
}

/// A stored record as JSON, with the node that wrote it.
fn record_of(row: &Row) -> Result<serde_json::Value> {
    let mut record: serde_json::Value = parse_json(row.get("record"))?;
    record["node"] = row.get::<_, String>("node").into();
    Ok(record)
}

impl CdrStore for PostgresStore {
    fn save_cdr(&self, record: &CallRecord) -> Result<()> {
        self.save_cdrs(std::slice::from_ref(record))
    }

    fn save_cdrs(&self, records: &[CallRecord]) -> Result<()> {
        let columns = CdrColumns::of(records)?;
        let node = self.node.to_string();
        self.run(move |s| {
            let c = &columns;
            s.execute(
                SAVE_CDRS,
                &[
                    &node,
                    &c.session,
                    &c.started_ms,
                    &c.state,
                    &c.location,
                    &c.caller,
                    &c.disposition,
                    &c.flips,
                    &c.intents,
                    &c.record,
                ],
            )
            .map(drop)
        })
    }

    fn cdrs(&self, query: &CdrQuery) -> Result<Vec<serde_json::Value>> {
        let since = query.since.map(whole_second_ms);
        let until = query.until.map(whole_second_ms);
        let (location, caller, disposition, flipped, after) = (
            query.location.clone(),
            query.caller.clone(),
            query.disposition.clone(),
            query.flipped,
            query.after.clone(),
        );
        let limit = bigint(query.limit);
        self.run(move |s| {
            // One statement for every combination: an absent filter is NULL and passes.
            let rows = s.query(
                "SELECT node, record FROM cdrs
                 WHERE ($1::BIGINT IS NULL OR started_ms >= $1)
                   AND ($2::BIGINT IS NULL OR started_ms < $2)
                   AND ($3::TEXT IS NULL OR location = $3)
                   AND ($4::TEXT IS NULL OR caller = $4)
                   AND ($5::TEXT IS NULL OR disposition = $5)
                   AND ($6::BOOLEAN IS NULL OR (flips > 0) = $6)
                   AND ($7::TEXT IS NULL OR (started_ms, id) <
                        (SELECT started_ms, id FROM cdrs WHERE session = $7))
                 ORDER BY started_ms DESC, id DESC LIMIT $8",
                &[
                    &since,
                    &until,
                    &location,
                    &caller,
                    &disposition,
                    &flipped,
                    &after,
                    &limit,
                ],
            )?;
            rows.iter().map(record_of).collect()
        })
    }

    fn cdr(&self, session: &str) -> Result<Option<serde_json::Value>> {
        let session = session.to_owned();
        self.run(move |s| {
            let rows = s.query(
                "SELECT node, record FROM cdrs WHERE session = $1",
                &[&session],
            )?;
            rows.first().map(record_of).transpose()
        })
    }

    fn mark_alive(&self, at: jiff::Timestamp) -> Result<()> {
        let (node, at) = (self.node.to_string(), at.to_string());
        self.run(move |s| {
            s.execute(
                "INSERT INTO alive (node, at) VALUES ($1, $2)
                 ON CONFLICT (node) DO UPDATE SET at = excluded.at",
                &[&node, &at],
            )
            .map(drop)
        })
    }

    fn close_interrupted(&self) -> Result<usize> {
        // This node's live calls only: the other nodes' are theirs, and live.
        let node = self.node.to_string();
        self.run(move |s| {
            let client = s.client()?;
            let mut tx = client.transaction().map_err(pg)?;
            let alive_at = tx
                .query_opt("SELECT at FROM alive WHERE node = $1", &[&node])
                .map_err(pg)?
                .and_then(|row| row.get::<_, String>(0).parse().ok());
            let live = tx
                .query(
                    "SELECT id, record FROM cdrs WHERE node = $1 AND state = 'live'
                     FOR UPDATE",
                    &[&node],
                )
                .map_err(pg)?;
            for row in &live {
                let id: i64 = row.get(0);
                let mut record: serde_json::Value = parse_json(row.get(1))?;
                wasmpbx_types::store::interrupt(&mut record, alive_at);
                tx.execute(
                    "UPDATE cdrs SET record = $2, state = 'interrupted' WHERE id = $1",
                    &[&id, &record.to_string()],
                )
                .map_err(pg)?;
            }
            tx.commit().map_err(pg)?;
            Ok(live.len())
        })
    }

    fn intents(&self, location: Option<&str>, since: jiff::Timestamp) -> Result<Vec<IntentCount>> {
        let location = location.map(str::to_owned);
        let since = whole_second_ms(since);
        self.run(move |s| {
            let rows = s.query(
                "SELECT (started_ms / 3600000) * 3600 AS hour, location, intent,
                        COUNT(*) AS calls
                 FROM cdrs, unnest(intents) AS intent
                 WHERE started_ms >= $1 AND location IS NOT NULL
                   AND ($2::TEXT IS NULL OR location = $2)
                 GROUP BY hour, location, intent
                 ORDER BY hour, location COLLATE \"C\", intent COLLATE \"C\"",
                &[&since, &location],
            )?;
            rows.iter()
                .map(|row| {
                    let hour = jiff::Timestamp::from_second(row.get(0)).map_err(invalid)?;
                    Ok(IntentCount {
                        hour: hour_of(hour),
                        location: row.get(1),
                        intent: row.get(2),
                        calls: row.get::<_, i64>(3).try_into().unwrap_or(0),
                    })
                })
                .collect()
        })
    }
}

impl RegistrationStore for PostgresStore {
    fn save_binding(&self, b: &Binding) -> Result<()> {
        let node = self.node.to_string();
        let mut b = b.clone();
        // What a phone sent may hold NUL, which PostgreSQL's text cannot.
        for text in [
            &mut b.user_id,
            &mut b.contact,
            &mut b.device,
            &mut b.call_id,
        ]
        .into_iter()
        .chain(b.instance.as_mut())
        .chain(b.user_agent.as_mut())
        {
            *text = column(text);
        }
        self.run(move |s| {
            s.execute(
                "INSERT INTO registrations (node, user_id, contact, device, instance,
                 user_agent, transport, source, expires_at, call_id, cseq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (node, user_id, contact) DO UPDATE SET device = excluded.device,
                 instance = excluded.instance, user_agent = excluded.user_agent,
                 transport = excluded.transport, source = excluded.source,
                 expires_at = excluded.expires_at, call_id = excluded.call_id,
                 cseq = excluded.cseq",
                &[
                    &node,
                    &b.user_id,
                    &b.contact,
                    &b.device,
                    &b.instance,
                    &b.user_agent,
                    &b.transport.as_str(),
                    &b.source.to_string(),
                    &b.expires_at,
                    &b.call_id,
                    &i64::from(b.cseq),
                ],
            )
            .map(drop)
        })
    }

    fn remove_binding(&self, user_id: &str, contact: &str) -> Result<()> {
        let (node, user_id, contact) = (self.node.to_string(), column(user_id), column(contact));
        self.run(move |s| {
            s.execute(
                "DELETE FROM registrations WHERE node = $1 AND user_id = $2 AND contact = $3",
                &[&node, &user_id, &contact],
            )
            .map(drop)
        })
    }

    fn load_bindings(&self) -> Result<Vec<Binding>> {
        let node = self.node.to_string();
        self.run(move |s| {
            let rows = s.query(
                "SELECT user_id, contact, device, instance, user_agent, transport, source,
                        expires_at, call_id, cseq
                 FROM registrations WHERE node = $1",
                &[&node],
            )?;
            rows.iter().map(binding_of).collect()
        })
    }
}

fn binding_of(row: &Row) -> Result<Binding> {
    let transport: String = row.get(5);
    let source: String = row.get(6);
    Ok(Binding {
        user_id: row.get(0),
        contact: row.get(1),
        device: row.get(2),
        instance: row.get(3),
        user_agent: row.get(4),
        transport: Transport::from_name(&transport)
            .ok_or_else(|| invalid(format!("registration transport {transport:?}")))?,
        source: source
            .parse()
            .map_err(|_| invalid(format!("registration source {source:?}")))?,
        expires_at: row.get(7),
        call_id: row.get(8),
        cseq: u32::try_from(row.get::<_, i64>(9)).map_err(invalid)?,
    })
}

impl ShadowStore for PostgresStore {
    fn save_shadow(&self, results: &[ShadowResult]) -> Result<()> {
        let location: Vec<String> = results.iter().map(|r| r.location.clone()).collect();
        let at: Vec<i64> = results.iter().map(|r| millis(r.at)).collect();
        let json = results
            .iter()
            .map(|r| serde_json::to_string(r).map_err(invalid))
            .collect::<Result<Vec<_>>>()?;
        self.run(move |s| {
            s.execute(
                "INSERT INTO shadow (location, at, result)
                 SELECT location, at, result
                 FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[]) WITH ORDINALITY
                      AS batch(location, at, result, n)
                 ORDER BY n",
                &[&location, &at, &json],
            )
            .map(drop)
        })
    }

    fn shadow_results(
        &self,
        location: &str,
        since: Option<jiff::Timestamp>,
    ) -> Result<Vec<ShadowResult>> {
        let location = location.to_owned();
        let since = since.map_or(i64::MIN, millis);
        self.run(move |s| {
            let rows = s.query(
                "SELECT result FROM shadow WHERE location = $1 AND at >= $2 ORDER BY at, id",
                &[&location, &since],
            )?;
            rows.iter().map(|row| parse_json(row.get(0))).collect()
        })
    }

    fn forget_shadow(&self, before: jiff::Timestamp) -> Result<usize> {
        self.run(move |s| {
            let n = s.execute("DELETE FROM shadow WHERE at < $1", &[&millis(before)])?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

impl DecisionStore for PostgresStore {
    fn save_decisions(&self, decisions: &[DecisionRecord]) -> Result<()> {
        let session: Vec<String> = decisions.iter().map(|d| d.session.clone()).collect();
        let location: Vec<Option<String>> = decisions.iter().map(|d| d.location.clone()).collect();
        let at: Vec<i64> = decisions.iter().map(|d| millis(d.at)).collect();
        let json = decisions
            .iter()
            .map(|d| serde_json::to_string(d).map_err(invalid))
            .collect::<Result<Vec<_>>>()?;
        self.run(move |s| {
            s.execute(
                "INSERT INTO decisions (session, location, at, decision)
                 SELECT session, location, at, decision
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[]) WITH ORDINALITY
                      AS batch(session, location, at, decision, n)
                 ORDER BY n",
                &[&session, &location, &at, &json],
            )
            .map(drop)
        })
    }

    fn decisions(&self, session: &str) -> Result<Vec<DecisionRecord>> {
        let session = session.to_owned();
        self.run(move |s| {
            let rows = s.query(
                "SELECT decision FROM decisions WHERE session = $1 ORDER BY id",
                &[&session],
            )?;
            rows.iter().map(|row| parse_json(row.get(0))).collect()
        })
    }

    fn decision_sessions(
        &self,
        location: Option<&str>,
        since: Option<jiff::Timestamp>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let location = location.map(str::to_owned);
        let since = since.map_or(i64::MIN, millis);
        let limit = bigint(limit);
        self.run(move |s| {
            let rows = s.query(
                "SELECT session FROM decisions
                 WHERE ($1::TEXT IS NULL OR location = $1) AND at >= $2
                 GROUP BY session ORDER BY MIN(id) LIMIT $3",
                &[&location, &since, &limit],
            )?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn save_script(&self, hash: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let (hash, name, bytes) = (hash.to_owned(), name.to_owned(), bytes.to_vec());
        self.run(move |s| {
            s.execute(
                "INSERT INTO scripts (hash, name, bytes) VALUES ($1, $2, $3)
                 ON CONFLICT (hash) DO NOTHING",
                &[&hash, &name, &bytes],
            )
            .map(drop)
        })
    }

    fn script(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        let hash = hash.to_owned();
        self.run(move |s| {
            let rows = s.query("SELECT bytes FROM scripts WHERE hash = $1", &[&hash])?;
            Ok(rows.first().map(|row| row.get(0)))
        })
    }

    fn forget_decisions(&self, before: jiff::Timestamp) -> Result<usize> {
        self.run(move |s| {
            let n = s.execute("DELETE FROM decisions WHERE at < $1", &[&millis(before)])?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

impl ClusterStore for PostgresStore {
    fn heartbeat(&self, status: &NodeStatus) -> Result<()> {
        let node = status.node.clone();
        let json = serde_json::to_string(status).map_err(invalid)?;
        self.run(move |s| {
            s.execute(
                "INSERT INTO nodes (node, status) VALUES ($1, $2)
                 ON CONFLICT (node) DO UPDATE SET status = excluded.status",
                &[&node, &json],
            )
            .map(drop)
        })
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>> {
        self.run(|s| {
            let rows = s.query("SELECT status FROM nodes ORDER BY node COLLATE \"C\"", &[])?;
            rows.iter().map(|row| parse_json(row.get(0))).collect()
        })
    }

    fn publish_users(&self, users: &[EdgeUser]) -> Result<()> {
        let columns = |field: fn(&EdgeUser) -> &String| -> Vec<String> {
            users.iter().map(|u| field(u).clone()).collect()
        };
        let (usernames, realms) = (columns(|u| &u.username), columns(|u| &u.realm));
        let (ha1s, user_ids) = (columns(|u| &u.ha1), columns(|u| &u.user_id));
        self.run(move |s| {
            let client = s.client()?;
            let mut tx = client.transaction().map_err(pg)?;
            tx.execute("DELETE FROM edge_users", &[]).map_err(pg)?;
            tx.execute(
                "INSERT INTO edge_users (username, realm, ha1, user_id)
                 SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[])
                 ON CONFLICT DO NOTHING",
                &[&usernames, &realms, &ha1s, &user_ids],
            )
            .map_err(pg)?;
            tx.commit().map_err(pg)
        })
    }

    fn edge_phones(&self) -> Result<Vec<EdgePhone>> {
        self.run(|s| {
            // An edge without DB_URL keeps no registrations here: no table, no phones.
            let table = s.query("SELECT to_regclass('location') IS NOT NULL", &[])?;
            if !table.first().is_some_and(|row| row.get::<_, bool>(0)) {
                return Ok(Vec::new());
            }
            // Expired rows the edge has not swept yet are left in: the edge relays only
            // to a live contact, so ringing a stale one costs a 404 on that leg.
            let rows = s.query(
                "SELECT username, contact, NULLIF(user_agent, ''), instance
                 FROM location ORDER BY username, last_modified, id",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|row| EdgePhone {
                    username: row.get(0),
                    contact: row.get(1),
                    user_agent: row.get(2),
                    instance: row.get(3),
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throwaway::ThrowawayPostgres;
    use wasmpbx_types::store::contract;

    /// Whether `done` comes true within two seconds (a change reaching another node's
    /// mirror takes a notification's trip).
    fn soon(done: impl Fn() -> bool) -> bool {
        (0..200).any(|_| {
            done() || {
                std::thread::sleep(Duration::from_millis(10));
                false
            }
        })
    }

    fn cluster() -> ThrowawayPostgres {
        ThrowawayPostgres::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e}"))
    }

    /// Every contract the SQLite and memory stores keep, each on a database of its own.
    #[test]
    fn postgres_store_keeps_every_store_contract() {
        let pg = cluster();
        let fresh = |name: &str| PostgresStore::connect(&pg.database(name).unwrap(), "a").unwrap();
        contract::kv_store_contract(&fresh("kv"));
        contract::cdr_store_contract(&fresh("cdr"));
        contract::cdr_query_contract(&fresh("query"));
        contract::intents_contract(&fresh("intents"));
        contract::interrupted_cdr_contract(&fresh("interrupted"));
        contract::registration_store_contract(&fresh("registrations"));
        contract::shadow_store_contract(&fresh("shadow"));
        contract::decision_store_contract(&fresh("decisions"));
        contract::cluster_store_contract(&fresh("nodes"));
    }

    /// What the edge reads (kamailio.cfg's SQL): the users the nodes published, and which
    /// node that is up holds a user's connected call.
    #[test]
    fn the_edge_finds_users_and_the_node_holding_their_call() {
        let pg = cluster();
        let url = pg.database("edge").unwrap();
        let (a, b) = (
            PostgresStore::connect(&url, "a").unwrap(),
            PostgresStore::connect(&url, "b").unwrap(),
        );
        let user = |username: &str, user_id: &str| EdgeUser {
            username: username.into(),
            realm: "pbx.test".into(),
            ha1: format!("ha1-of-{username}"),
            user_id: user_id.into(),
        };
        a.publish_users(&[user("2001", "alice"), user("2002", "bob")])
            .unwrap();
        // Published again from a config without bob: he is gone.
        b.publish_users(&[user("2001", "alice"), user("2003", "carol")])
            .unwrap();
        let mut client = postgres::Client::connect(&url, NoTls).unwrap();
        // The database's clock is the one the view compares with.
        let now: i64 = client
            .query_one("SELECT extract(epoch FROM now())::BIGINT", &[])
            .unwrap()
            .get(0);
        let now = jiff::Timestamp::from_second(now).unwrap();
        // Each user in a call, and how many seconds ago the call arrived (none: a node
        // that does not say, as before version 4).
        let status = |node: &str, age_s: i64, users: &[(&str, Option<i64>)]| NodeStatus {
            node: node.into(),
            alive_at: now - jiff::SignedDuration::from_secs(age_s),
            draining: false,
            live_calls: users.len(),
            scripts: Default::default(),
            sip: Some(format!("sip:{node}.test:5060")),
            users_in_calls: users.iter().map(|(u, _)| u.to_string()).collect(),
            latest_call_of: users
                .iter()
                .filter_map(|(u, ago)| {
                    Some((
                        u.to_string(),
                        now - jiff::SignedDuration::from_secs((*ago)?),
                    ))
                })
                .collect(),
        };
        a.heartbeat(&status("a", 1, &[("alice", Some(60))]))
            .unwrap();
        b.heartbeat(&status("b", 30, &[("carol", Some(60))]))
            .unwrap();
        let mut ha1 = |username: &str| {
            client
                .query_opt(
                    "SELECT ha1 FROM edge_users WHERE username = $1 AND realm = 'pbx.test'",
                    &[&username],
                )
                .unwrap()
                .map(|row| row.get::<_, String>(0))
        };
        assert_eq!(ha1("2001").as_deref(), Some("ha1-of-2001"));
        assert_eq!(ha1("2002"), None, "the last publication replaces the users");
        // The edge's own query, from its config.
        let config = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/deploy/kamailio/kamailio.cfg"
        ))
        .unwrap();
        let query = config
            .split('"')
            .find(|part| part.starts_with("SELECT sip FROM edge_calls"))
            .expect("the edge's query")
            .replace("'$au'", "$1")
            .replace("'$var(realm)'", "'pbx.test'");
        let mut owner = |username: &str| {
            client
                .query_opt(&query, &[&username])
                .unwrap()
                .map(|row| row.get::<_, String>(0))
        };
        assert_eq!(owner("2001").as_deref(), Some("sip:a.test:5060"));
        assert_eq!(owner("2003"), None, "a node silent for 30 s holds no call");
        assert_eq!(owner("2002"), None);
        // Alice in calls on both nodes: the pull goes to the latest call, whichever node
        // wrote last; a node that does not say when counts as the earliest.
        b.heartbeat(&status("b", 1, &[("alice", Some(5))])).unwrap();
        assert_eq!(owner("2001").as_deref(), Some("sip:b.test:5060"));
        a.heartbeat(&status("a", 1, &[("alice", Some(60))]))
            .unwrap();
        assert_eq!(owner("2001").as_deref(), Some("sip:b.test:5060"));
        b.heartbeat(&status("b", 1, &[("alice", None)])).unwrap();
        assert_eq!(owner("2001").as_deref(), Some("sip:a.test:5060"));
    }

    /// The phones the edge registered, read from its own table (`location`, as Kamailio's
    /// usrloc-create.sql makes it: the columns read here); none while the edge keeps no
    /// registrations in the database.
    #[test]
    fn nodes_read_the_phones_the_edge_registered() {
        let pg = cluster();
        let url = pg.database("phones").unwrap();
        let store = PostgresStore::connect(&url, "a").unwrap();
        assert_eq!(store.edge_phones().unwrap(), [], "no edge registrar here");
        let mut client = postgres::Client::connect(&url, NoTls).unwrap();
        client
            .batch_execute(
                "CREATE TABLE location (
                    id SERIAL PRIMARY KEY NOT NULL,
                    username VARCHAR(64) DEFAULT '' NOT NULL,
                    contact VARCHAR(512) DEFAULT '' NOT NULL,
                    last_modified TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL,
                    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
                    instance VARCHAR(255) DEFAULT NULL);
                 INSERT INTO location (username, contact, user_agent, instance) VALUES
                    ('2001', 'sip:2001@10.0.0.31:5060', 'Yealink SIP-T46S', NULL),
                    ('2001', 'sip:2001-x@10.0.0.32:5062;transport=tcp', '',
                     '<urn:uuid:00000000-0000-1000-8000-000000000001>');",
            )
            .unwrap();
        let phones = store.edge_phones().unwrap();
        assert_eq!(
            phones,
            [
                EdgePhone {
                    username: "2001".into(),
                    contact: "sip:2001@10.0.0.31:5060".into(),
                    user_agent: Some("Yealink SIP-T46S".into()),
                    instance: None,
                },
                EdgePhone {
                    username: "2001".into(),
                    contact: "sip:2001-x@10.0.0.32:5062;transport=tcp".into(),
                    user_agent: None,
                    instance: Some("<urn:uuid:00000000-0000-1000-8000-000000000001>".into()),
                },
            ]
        );
    }

    /// Two nodes on one database: the key-value store and the records are shared; each
    /// node's live calls, registrations and signs of life are its own.
    #[test]
    fn nodes_share_the_database_but_not_their_calls() {
        let pg = cluster();
        let url = pg.database("shared").unwrap();
        let (a, b) = (
            PostgresStore::connect(&url, "a").unwrap(),
            PostgresStore::connect(&url, "b").unwrap(),
        );
        a.set("sydney", "override", "closed").unwrap();
        assert_eq!(
            a.get("sydney", "override").unwrap().as_deref(),
            Some("closed"),
            "a node reads back what it wrote, at once"
        );
        assert!(
            soon(|| b.get("sydney", "override").unwrap().as_deref() == Some("closed")),
            "an override set on one node applies on the other"
        );
        b.delete("sydney", "override").unwrap();
        assert!(soon(|| a.get("sydney", "override").unwrap().is_none()));
        let mut live = contract::record(1, "0400");
        live.state = wasmpbx_types::record::RecordState::Live;
        live.ended_at = None;
        a.save_cdr(&live).unwrap();
        b.save_cdr(&contract::record(2, "0411")).unwrap();
        let all = b.recent_cdrs(10).unwrap();
        assert_eq!(all.len(), 2, "both nodes' records in one table");
        assert_eq!(all[0]["node"], "b");
        assert_eq!(all[1]["node"], "a");
        assert_eq!(
            b.close_interrupted().unwrap(),
            0,
            "b restarting leaves a's live call alone"
        );
        assert_eq!(a.close_interrupted().unwrap(), 1);
        a.save_binding(&contract::binding("alice", "sip:a@1"))
            .unwrap();
        assert!(b.load_bindings().unwrap().is_empty(), "a's phones are a's");
        assert_eq!(a.load_bindings().unwrap().len(), 1);
    }

    /// The key-value mirror: a value too long for a notification still arrives; with the
    /// database gone the entries are still read (as they were), writes fail with one
    /// error; once it is back the mirror loads what changed meanwhile.
    #[test]
    fn the_key_value_mirror_follows_and_outlives_the_database() {
        let pg = cluster();
        let url = pg.database("mirror").unwrap();
        let (a, b) = (
            PostgresStore::connect(&url, "a").unwrap(),
            PostgresStore::connect(&url, "b").unwrap(),
        );
        // Quotes and control characters: the JSON escapes make the notification longer
        // than 8000 bytes.
        let long = "\"\u{1}".repeat(2000);
        a.set("sydney", "notes", &long).unwrap();
        assert!(soon(
            || b.get("sydney", "notes").unwrap().as_deref() == Some(long.as_str())
        ));
        assert_eq!(b.list("sydney").unwrap(), [("notes".into(), long.clone())]);

        // b loses every connection (a database restart, a network cut): a changes an
        // entry meanwhile; b's mirror catches up when its listener is back.
        let mut admin = postgres::Client::connect(&pg.url("postgres"), NoTls).unwrap();
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'wasmpbx b'",
                &[],
            )
            .unwrap();
        a.set("sydney", "override", "closed").unwrap();
        assert!(soon(
            || b.get("sydney", "override").unwrap().as_deref() == Some("closed")
        ));

        // The database stops: reads go on from the mirror, a write is one clear error.
        drop(admin);
        pg.stop();
        assert_eq!(
            b.get("sydney", "override").unwrap().as_deref(),
            Some("closed")
        );
        // Refused to connect, or cut off as the server shut down (the server's own
        // FATAL, when the write raced the stop).
        let error = b.set("sydney", "override", "open").unwrap_err().to_string();
        assert!(
            error.contains("error connecting")
                || error.contains("closed")
                || error.contains("PostgreSQL said: terminating connection"),
            "{error}"
        );
    }

    /// What came from the network may hold NUL, which PostgreSQL's text cannot: the
    /// record keeps it (its JSON escapes it), the columns do without.
    #[test]
    fn text_with_nul_is_stored() {
        let pg = cluster();
        let store = PostgresStore::connect(&pg.database("nul").unwrap(), "a").unwrap();
        let mut record = contract::record(1, "04\0x");
        record.events.push(wasmpbx_types::record::CallEvent {
            at: record.started_at,
            name: "intent".into(),
            value: "bill\0ing".into(),
            confidence: None,
        });
        store.save_cdr(&record).unwrap();
        assert_eq!(store.recent_cdrs(1).unwrap()[0]["caller"], "04\0x");
        let intents = store.intents(None, jiff::Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(intents[0].intent, "billing");
        let mut binding = contract::binding("alice", "sip:a@1");
        binding.user_agent = Some("baresip\0".into());
        store.save_binding(&binding).unwrap();
        assert_eq!(
            store.load_bindings().unwrap()[0].user_agent.as_deref(),
            Some("baresip")
        );
    }

    /// Migrations run once, the missing ones on an older database, and a database from a
    /// newer wasmpbx is refused rather than misread.
    #[test]
    fn the_schema_is_migrated_once_and_a_newer_one_refused() {
        let pg = cluster();
        let url = pg.database("schema").unwrap();
        let store = PostgresStore::connect(&url, "a").unwrap();
        store.set("sydney", "override", "closed").unwrap();
        drop(store);
        let again = PostgresStore::connect(&url, "a").unwrap();
        assert_eq!(
            again.get("sydney", "override").unwrap().as_deref(),
            Some("closed"),
            "reopening keeps the data"
        );
        // A database from the version before `nodes` gets it (and what came after), and
        // keeps its data.
        let mut client = postgres::Client::connect(&url, NoTls).unwrap();
        client
            .batch_execute(
                "DROP VIEW edge_calls; DROP TABLE edge_users; DROP TABLE nodes;
                 DELETE FROM schema_migrations WHERE version >= 2",
            )
            .unwrap();
        drop(again);
        let upgraded = PostgresStore::connect(&url, "a").unwrap();
        assert_eq!(upgraded.nodes().unwrap(), []);
        upgraded.publish_users(&[]).unwrap();
        assert!(upgraded.get("sydney", "override").unwrap().is_some());
        client
            .execute("INSERT INTO schema_migrations (version) VALUES (999)", &[])
            .unwrap();
        let refused = PostgresStore::connect(&url, "a").err().unwrap().to_string();
        assert!(refused.contains("newer than this wasmpbx"), "{refused}");
    }

    /// A database that is not there: one clear error, at once, without the URL's password.
    #[test]
    fn an_unreachable_database_is_one_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://wasmpbx:s3cret@127.0.0.1:{port}/none");
        let error = PostgresStore::connect(&url, "a").err().unwrap().to_string();
        assert!(error.contains("error connecting"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let garbage = PostgresStore::connect("postgres://[::1", "a")
            .err()
            .unwrap()
            .to_string();
        assert!(garbage.contains("not a PostgreSQL URL"), "{garbage}");
    }

    /// What the server says is passed on in one line (the driver alone says "db error").
    #[test]
    fn the_servers_own_words_reach_the_admin() {
        let pg = cluster();
        let mut client = postgres::Client::connect(&pg.url("postgres"), NoTls).unwrap();
        let error = client.execute("SELECT * FROM nowhere", &[]).unwrap_err();
        assert_eq!(
            super::pg(error).to_string(),
            "store: PostgreSQL said: relation \"nowhere\" does not exist (42P01)"
        );
    }

    /// A connection the server closed (a database restart) is opened again for the next
    /// job: one failure at most, then service.
    #[test]
    fn a_broken_connection_is_reopened() {
        let pg = cluster();
        let url = pg.database("reopen").unwrap();
        let store = PostgresStore::connect(&url, "a").unwrap();
        store.set("s", "k", "v").unwrap();
        let mut admin = postgres::Client::connect(&pg.url("postgres"), NoTls).unwrap();
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = 'reopen' AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap();
        let mut answers = Vec::new();
        for _ in 0..2 * CONNECTIONS {
            answers.push(store.get("s", "k").ok().flatten());
        }
        let served = answers.iter().filter(|a| a.as_deref() == Some("v")).count();
        assert!(served >= CONNECTIONS, "{answers:?}");
        assert_eq!(answers.last().unwrap().as_deref(), Some("v"));
    }
}
