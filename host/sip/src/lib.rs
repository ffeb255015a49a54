//! # wasmpbx-sip — SIP and SDP, free of I/O
//!
//! - [`message`]: parsing and printing over rsip (kept behind this module so it can be
//!   swapped), the header lookups the host needs, the one Allow list.
//! - [`digest`]: RFC 8760 digest authentication (MD5, SHA-256) with self-checking nonces.
//! - [`transaction`]: the RFC 3261 §17 transaction layer, timers A–K on a caller's clock.
//! - [`dialog`]: a dialog's state (tags, target, route set, CSeq, SDP origin) and the
//!   requests sent in it, through its route set.
//! - [`sdp`]: reading and rewriting SDP for anchored media, the host's SDP origin per
//!   dialog, the G.711 codecs.
//! - [`stream`]: where a message ends on a TCP or TLS stream.
//! - [`local`]: the host's own address per transport, for Via and Contact.
//! - [`shards`]: which signalling shard a message belongs to, read from its raw bytes.

pub mod dialog;
pub mod digest;
pub mod local;
pub mod message;
pub mod sdp;
pub mod shards;
pub mod stream;
pub mod transaction;
