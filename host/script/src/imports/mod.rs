//! The host side of each WIT import, one file per interface, all implemented on
//! [`EventHost`](super::engine::EventHost): the view one event has of the host.

mod clock;
mod config;
mod directory;
mod kv;
mod log;
