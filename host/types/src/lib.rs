//! # wasmpbx-types — what the layers of the host say to each other
//!
//! Plain data and the narrow traits between the layers — no sockets, no tasks; the only
//! I/O here is reading the config file and the prompt folder when asked, and the one
//! system clock ([`clock`]). The call engine (`wasmpbx-core`), media (`wasmpbx-media`),
//! the script runtime (`wasmpbx-script`), the store (`wasmpbx-store`) and the server all
//! speak these.
//!
//! - [`config`]: the TOML configuration, its validation and the embedded default.
//! - [`routing`] and [`flip`]: events, actions and decisions between calls and scripts,
//!   with their validation and the fallback; [`actions`]: the one interpreter of an
//!   action list, for live calls and simulations alike.
//! - [`ids`], [`record`]: a call's id, record and summaries.
//! - [`registration`], [`directory`]: registered devices, as the registrar keeps them and
//!   as scripts see them.
//! - [`media`]: the seam between the call engine and media (`MediaAllocator`), G.711
//!   and prompts.
//! - [`store`]: the store traits, their errors, an in-memory store and the contract every
//!   backend must pass.
//! - [`trunk`]: a carrier trunk's settings, its destination and number formats.
//! - [`script`]: the opaque handle of a script version a call is pinned to.
//! - [`ambient`], [`entropy`], [`clock`]: time and randomness, handed to the cores with
//!   every input; [`clock`] is the one place the system clock is read.

pub mod actions;
pub mod ambient;
pub mod clock;
pub mod config;
pub mod directory;
pub mod entropy;
pub mod flip;
pub mod ids;
pub mod media;
pub mod record;
pub mod registration;
pub mod routing;
pub mod script;
pub mod store;
pub mod trunk;

use wasmpbx_sip as sip;
