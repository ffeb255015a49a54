//! # wasmpbx — the server
//!
//! A SIP/RTP/WebRTC host whose routing decisions are made by WebAssembly component
//! scripts (see `wit/wasmpbx.wit`). This crate is the server binary `wasmpbx` — the
//! edge where sockets, tasks, HTTP and the store meet the sans-IO call engine — and a
//! library for its tests and benches. The host's layers are crates of their own (see
//! `host/ARCHITECTURE.md`):
//!
//! - `wasmpbx-sip` ([`sip`], [`sdp`]): SIP messages, digest, transactions, SDP. Sans-IO.
//! - `wasmpbx-types` ([`config`], [`routing`], [`flip`], [`directory`], [`clock`],
//!   [`entropy`], [`store`]'s traits): what the layers say to each other.
//! - `wasmpbx-core` ([`registrar`], [`pbx`], [`call`]): the call engine. Sans-IO.
//! - `wasmpbx-media` ([`media`]): the RTP relay, prompts, DTMF, recording, WebRTC.
//! - `wasmpbx-script` ([`script`], [`simulate`]): the wasmtime runtime, hot reload.
//! - `wasmpbx-store` ([`store::SqliteStore`], [`store::PostgresStore`]): SQLite, PostgreSQL.
//!
//! This crate's own modules:
//! - [`default_scripts`]: the default scripts the binary carries, written on first run.
//! - [`cluster`]: the nodes sharing a store: heartbeats, `/api/cluster`.
//! - [`decisions`]: the decision journal: decisions recorded for replay, and shadowed.
//! - [`deploy`]: `script deploy`: check, copy into the watched folder, wait for the load.
//! - [`driver`]: UDP/TCP/TLS sockets, framing and timers around the `pbx` core.
//! - [`events`]: the event stream (`/api/events`): calls, flips, registrations, scripts.
//! - [`metrics`]: `/metrics`, a snapshot of every counter encoded by prometheus-client.
//! - [`overrides`]: admin toggles that expire on their own.
//! - [`overload`]: how much of the new calls to refuse, from how long messages wait.
//! - [`tls`]: certificates for `tls:` listeners and HTTPS (reloaded when their files
//!   change) and the client side towards TLS trunks.
//! - [`admin`]: the admin HTTP API, `/metrics` and the browser phone.
//! - [`ws`]: SIP over WebSocket.
//! - [`webhooks`]: events POSTed to `[[webhooks]]`, signed, retried with backoff.
//! - [`writer`]: store writes off the SIP task, through a bounded queue.
//! - [`records`]: how `cdr list` prints call records (a table, CSV).
//! - [`recordings`]: serving call recordings, and deleting old ones.
//! - [`replay`]: `script replay`: recorded decisions run again, offline.
//! - [`reload`]: live config reload on SIGHUP or a change of the file.
//! - [`scaffold`]: `script new`: a script project from the embedded templates.
//! - [`shadow`]: shadow scripts: run beside a location's script, compared, reported.
//! - [`setup`]: `wasmpbx init` and `wasmpbx config check`.
//! - [`server`]: `wasmpbx run`: wires the pieces and runs until Ctrl-C.

pub mod admin;
pub mod cluster;
pub mod decisions;
pub mod default_scripts;
pub mod deploy;
pub mod dns;
pub mod driver;
pub mod events;
pub mod metrics;
pub mod overload;
pub mod overrides;
pub mod recordings;
pub mod records;
pub mod reload;
pub mod replay;
pub mod scaffold;
pub mod server;
pub mod setup;
pub mod shadow;
mod stream_slots;
pub mod tls;
pub mod webhooks;
pub mod writer;
pub mod ws;

// The host's crates, under the paths the binary, the tests and the benches use.
pub use wasmpbx_core::{call, pbx, registrar, trunks};
pub use wasmpbx_media as media;
pub use wasmpbx_script as script;
pub use wasmpbx_script::simulate;
pub use wasmpbx_sip as sip;
pub use wasmpbx_sip::sdp;
pub use wasmpbx_types::{clock, config, directory, entropy, flip, record, registration, routing};

/// Persistent state: the traits and the in-memory store, and SQLite.
pub mod store {
    pub use wasmpbx_store::{PostgresStore, SqliteStore, open};
    pub use wasmpbx_types::store::*;
}
