//! SIP: messages (over rsip) and the RFC 3261 transaction layer, both free of I/O.

pub mod digest;
pub mod message;
pub mod transaction;
