//! What the sans-IO cores are handed with every input instead of reading it themselves.

use std::time::Instant;

/// The time (monotonic, and the wall clock in milliseconds) and a fresh random seed for
/// one input: the core keeps no clock and draws no randomness from the OS, so tests can
/// pin both.
#[derive(Debug, Clone, Copy)]
pub struct Ambient {
    pub now: Instant,
    /// Unix time in milliseconds.
    pub wall_ms: i64,
    pub random: u64,
}

impl Ambient {
    /// Unix time in seconds.
    pub fn wall_secs(&self) -> i64 {
        self.wall_ms.div_euclid(1000)
    }
}
