//! # wasmpbx — the host
//!
//! A SIP/RTP/WebRTC host whose routing decisions are made by WebAssembly component
//! scripts (see `wit/wasmpbx.wit`). This crate is the server binary `wasmpbx` and its
//! library.
//!
//! ## Layout
//! - [`config`]: the TOML configuration and the embedded default.
//! - [`routing`]: events and actions between calls and routing scripts, in host types,
//!   with their validation and the fallback. No I/O, no wasmtime.
//! - [`flip`]: flip-policy requests and decisions, in host types.
//! - [`script`]: the wasmtime runtime: loading, sandboxing, hot reload, host imports.
//! - [`simulate`]: `wasmpbx script simulate`, one call's decisions offline.
//! - [`store`]: persistent state behind narrow traits (SQLite, in-memory).
//! - [`directory`]: users' registered devices as scripts see them.
//! - [`clock`]: the one place time is read.
//! - [`entropy`]: the core's randomness, seeded by the driver for every input;
//!   [`os_random`]: the operating system's, for the edges.
//! - [`sip`]: SIP messages (over rsip), digest authentication and the RFC 3261
//!   transaction layer, all sans-IO.
//! - [`registrar`]: REGISTER, bindings (devices), throttling. Sans-IO.
//! - [`pbx`]: the transaction user that ties SIP to the registrar and the calls. Sans-IO.
//! - [`call`]: B2BUA sessions — legs, forking, re-INVITEs, records. Sans-IO.
//! - [`sdp`]: reading and rewriting SDP for anchored media.
//! - [`media`]: RTP: the relay, the host's own stream to an answered caller (prompts,
//!   ringback), DTMF, recording; behind the `MediaAllocator` seam.
//! - [`admin`]: the admin HTTP API and `/metrics`.
//! - [`driver`]: UDP/TCP sockets, framing and timers around the `pbx` core.
//! - [`server`]: `wasmpbx run`: wires the pieces and runs until Ctrl-C.

pub mod admin;
pub mod call;
pub mod clock;
pub mod config;
pub mod directory;
pub mod driver;
pub mod entropy;
pub mod flip;
pub mod media;
pub mod os_random;
pub mod pbx;
pub mod registrar;
pub mod routing;
pub mod script;
pub mod sdp;
pub mod server;
pub mod simulate;
pub mod sip;
pub mod store;
pub mod ws;
