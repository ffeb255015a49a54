//! The PostgreSQL schema: one migration per version, applied in order at start and
//! recorded in `schema_migrations`.

use postgres::Client;

use super::pg;
use wasmpbx_types::store::{Result, StoreError};

/// The schema, one migration per version, applied in order at start and recorded in
/// `schema_migrations`. Never edit a released one: add the next.
pub(super) const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE kv (
        scope      TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        expires_at BIGINT,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
    -- Every node's key-value mirror follows the table through these notifications
    -- (mirror.rs): the writing transaction, the entry, and its value when it fits in a
    -- notification (under 8000 bytes), else null (read it).
    CREATE FUNCTION wasmpbx_kv_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        payload TEXT;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            payload := json_build_array(txid_current(), OLD.scope, OLD.key)::TEXT;
        ELSE
            payload := json_build_array(txid_current(), NEW.scope, NEW.key, NEW.value)::TEXT;
            IF octet_length(payload) > 7900 THEN
                payload := json_build_array(txid_current(), NEW.scope, NEW.key, NULL)::TEXT;
            END IF;
        END IF;
        PERFORM pg_notify('wasmpbx_kv', payload);
        RETURN NULL;
    END $$;
    CREATE TRIGGER kv_changed AFTER INSERT OR UPDATE OR DELETE ON kv
        FOR EACH ROW EXECUTE FUNCTION wasmpbx_kv_changed();
    CREATE TABLE audit (
        id    BIGSERIAL PRIMARY KEY,
        entry TEXT NOT NULL
    );
    CREATE TABLE cdrs (
        id          BIGSERIAL PRIMARY KEY,
        session     TEXT NOT NULL UNIQUE,
        node        TEXT NOT NULL,
        started_ms  BIGINT NOT NULL,
        state       TEXT NOT NULL,
        location    TEXT,
        caller      TEXT NOT NULL,
        disposition TEXT NOT NULL,
        flips       INTEGER NOT NULL,
        intents     TEXT[] NOT NULL,
        record      TEXT NOT NULL
    );
    CREATE INDEX cdrs_started ON cdrs (started_ms, id);
    CREATE INDEX cdrs_live ON cdrs (node) WHERE state = 'live';
    CREATE TABLE alive (
        node TEXT PRIMARY KEY,
        at   TEXT NOT NULL
    );
    CREATE TABLE registrations (
        node       TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        contact    TEXT NOT NULL,
        device     TEXT NOT NULL,
        instance   TEXT,
        user_agent TEXT,
        transport  TEXT NOT NULL,
        source     TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        call_id    TEXT NOT NULL,
        cseq       BIGINT NOT NULL,
        PRIMARY KEY (node, user_id, contact)
    );
    CREATE TABLE shadow (
        id       BIGSERIAL PRIMARY KEY,
        location TEXT NOT NULL,
        at       BIGINT NOT NULL,
        result   TEXT NOT NULL
    );
    CREATE INDEX shadow_location ON shadow (location, at);
    CREATE TABLE decisions (
        id       BIGSERIAL PRIMARY KEY,
        session  TEXT NOT NULL,
        location TEXT,
        at       BIGINT NOT NULL,
        decision TEXT NOT NULL
    );
    CREATE INDEX decisions_session ON decisions (session);
    CREATE INDEX decisions_at ON decisions (at);
    CREATE TABLE scripts (
        hash  TEXT PRIMARY KEY,
        name  TEXT NOT NULL,
        bytes BYTEA NOT NULL
    );",
    ),
    (
        2,
        "CREATE TABLE nodes (
        node   TEXT PRIMARY KEY,
        status TEXT NOT NULL
    );",
    ),
    (
        3,
        "-- What the edge (examples/deploy/kamailio/kamailio.cfg) reads: the users it
    -- authenticates devices against, as the nodes publish them from their config...
    CREATE TABLE edge_users (
        username TEXT NOT NULL,
        realm    TEXT NOT NULL,
        ha1      TEXT NOT NULL,
        user_id  TEXT NOT NULL,
        PRIMARY KEY (username, realm)
    );
    -- ...and which node holds each one's connected call (the nodes that are up, as their
    -- heartbeats say), where it sends that user's pull.
    CREATE VIEW edge_calls AS
        SELECT u.username, u.realm, n.node, n.status::jsonb ->> 'sip' AS sip
        FROM nodes n
        CROSS JOIN LATERAL jsonb_array_elements_text(n.status::jsonb -> 'users_in_calls')
            AS c(user_id)
        JOIN edge_users u ON u.user_id = c.user_id
        WHERE (n.status::jsonb ->> 'alive_at')::timestamptz > now() - interval '10 seconds';",
    ),
    (
        4,
        "-- ...and since when: a user with calls on two nodes has the pull sent to the node
    -- with the latest (null from a node that does not say: the earliest).
    CREATE OR REPLACE VIEW edge_calls AS
        SELECT u.username, u.realm, n.node, n.status::jsonb ->> 'sip' AS sip,
            (n.status::jsonb -> 'latest_call_of' ->> c.user_id)::timestamptz AS since
        FROM nodes n
        CROSS JOIN LATERAL jsonb_array_elements_text(n.status::jsonb -> 'users_in_calls')
            AS c(user_id)
        JOIN edge_users u ON u.user_id = c.user_id
        WHERE (n.status::jsonb ->> 'alive_at')::timestamptz > now() - interval '10 seconds';",
    ),
];

/// Taken while migrating, so nodes starting together migrate one after the other.
const MIGRATION_LOCK: i64 = 0x0077_6173_6d70_6278; // "wasmpbx" in ASCII

/// Apply the migrations the database lacks, under a lock other nodes wait on.
pub(super) fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg)?;
    // "already exists, skipping" is no news at every start after the first.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .map_err(pg)?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(pg)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if applied > known {
        return Err(StoreError::Backend(format!(
            "the database's schema is version {applied}, newer than this wasmpbx knows \
             ({known}): upgrade wasmpbx"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        tx.batch_execute(sql).map_err(pg)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)
}
