//! The one place that reads the system clock. Everything else is handed a [`Clock`]
//! (wall time for scripts and records) or takes `now` as an input (the sans-IO cores),
//! so tests and `script simulate` run on a fixed or fake clock.

use std::time::Instant;

/// Wall-clock time.
pub trait Clock: Send + Sync {
    fn now(&self) -> jiff::Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A clock stopped at one instant: `script simulate --at`.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub jiff::Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> jiff::Timestamp {
        self.0
    }
}

/// The monotonic clock, for measuring durations at the I/O edges (latency metrics,
/// reload timing). Protocol cores take their `now` as an argument instead.
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> Instant {
    Instant::now()
}
