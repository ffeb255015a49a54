//! # wasmpbx-core — the call engine, sans-IO
//!
//! State machines fed with (input, [`Ambient`](wasmpbx_types::ambient::Ambient)) that
//! return outputs: no socket, no file, no clock, no randomness of their own. The server
//! drives them; the tests drive them with a fake clock and fake media.
//!
//! - [`pbx`]: the transaction user: bytes in, [`pbx::PbxOutput`]s out (transmits, store
//!   changes, script questions, records); REGISTER and OPTIONS, the rest to the calls.
//! - [`registrar`]: REGISTER, digest authentication, bindings (devices), throttling.
//! - [`call`]: B2BUA sessions — legs, forking, re-INVITEs, active mode, records, and call
//!   flip (pull, push, PIN).
//! - [`edges`]: the Kamailio edges in front of the nodes, probed; the one that reaches
//!   the users' phones now.
//! - [`trunks`]: carrier trunks — targets and their health, failover order, registration
//!   with the carrier, OPTIONS health checks, answering a carrier's digest challenge.

pub mod call;
pub mod edges;
pub mod pbx;
pub mod registrar;
pub mod trunks;

// The layers below, under the names the modules use.
use wasmpbx_sip as sip;
use wasmpbx_sip::sdp;
use wasmpbx_types::{config, directory, entropy, flip, media, routing};
