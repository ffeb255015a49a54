//! The server's integration tests, in one test binary (one link of the whole host):
//! real `wasmpbx run` processes on loopback driven by SIPp, baresip and headless
//! Chromium, and the script runtime through its public API. `tests/README.md` says how
//! each tier runs.

mod common;

mod active_mode;
mod admin_api;
mod admin_console;
mod baresip;
mod carrier;
mod cli;
mod crash;
mod device_calls;
mod drain;
mod flip;
mod hot_reload;
mod install;
mod languages;
mod listen_mode;
mod media_streams;
mod reload;
mod replay;
mod scaffold;
mod script_runtime;
mod several_nodes;
mod shadow;
mod shards;
mod sip_registrar;
mod sip_tls;
mod srtp;
mod webhooks;
mod websocket;
