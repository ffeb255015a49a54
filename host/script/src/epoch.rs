//! The thread that advances the engine's epoch, the clock of every script's deadline.
//! It ticks every millisecond while a store may run a script, and sleeps once no store
//! has existed for [`IDLE_BEFORE_SLEEP`]: an idle host is not woken a thousand times a
//! second, and a busy one never waits for it. Every store holds an [`EpochHold`] from
//! before its first instruction, so no script runs while the clock sleeps.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often the epoch advances: the resolution of deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// How long the clock goes on ticking with no store before it sleeps.
const IDLE_BEFORE_SLEEP: Duration = Duration::from_millis(100);

/// How often a sleeping clock looks whether its engine is gone (a tick, harmless then):
/// a dropped engine's thread may outlive it by this much.
const ENGINE_CHECK: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct EpochClock {
    /// Stores alive.
    holds: AtomicUsize,
    asleep: Mutex<bool>,
    wake: Condvar,
}

/// Keeps the clock ticking while it lives (one per store).
pub(crate) struct EpochHold(Arc<EpochClock>);

impl Drop for EpochHold {
    fn drop(&mut self) {
        self.0.holds.fetch_sub(1, SeqCst);
    }
}

impl EpochClock {
    /// Start the clock's thread: `tick` advances the epoch, and returns false once there is
    /// no engine left to tick for (the thread then ends).
    pub(crate) fn start(tick: impl Fn() -> bool + Send + 'static) -> std::io::Result<Arc<Self>> {
        let clock = Arc::new(Self::default());
        let ticking = clock.clone();
        std::thread::Builder::new()
            .name("wasmpbx-epoch".into())
            .spawn(move || ticking.run(tick))?;
        Ok(clock)
    }

    /// Keep the clock ticking (waking it if it sleeps) until the hold is dropped.
    pub(crate) fn hold(self: &Arc<Self>) -> EpochHold {
        // The first hold wakes a sleeping clock; it cannot miss it: the clock marks
        // itself asleep and then looks at the holds under the same lock.
        if self.holds.fetch_add(1, SeqCst) == 0 && *self.asleep() {
            self.wake.notify_one();
        }
        EpochHold(self.clone())
    }

    fn run(&self, tick: impl Fn() -> bool) {
        let idle_ticks = (IDLE_BEFORE_SLEEP.as_millis() / TICK.as_millis()) as u32;
        let mut idle = 0;
        while tick() {
            std::thread::sleep(TICK);
            idle = if self.holds.load(SeqCst) == 0 {
                idle + 1
            } else {
                0
            };
            if idle < idle_ticks {
                continue;
            }
            let mut asleep = self.asleep();
            *asleep = true;
            while self.holds.load(SeqCst) == 0 {
                let (guard, timeout) = self
                    .wake
                    .wait_timeout(asleep, ENGINE_CHECK)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                asleep = guard;
                // Now and then, whether there is still an engine to tick for.
                if timeout.timed_out() && !tick() {
                    return;
                }
            }
            *asleep = false;
            idle = 0;
        }
    }

    fn asleep(&self) -> MutexGuard<'_, bool> {
        self.asleep
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn ticks_over(ticks: &AtomicU64, window: Duration) -> u64 {
        let before = ticks.load(SeqCst);
        std::thread::sleep(window);
        ticks.load(SeqCst) - before
    }

    #[test]
    fn the_clock_sleeps_without_stores_and_ticks_at_once_for_one() {
        let ticks = Arc::new(AtomicU64::new(0));
        let counted = ticks.clone();
        let clock = EpochClock::start(move || {
            counted.fetch_add(1, SeqCst);
            true
        })
        .unwrap();
        assert!(
            ticks_over(&ticks, Duration::from_millis(50)) > 0,
            "ticks at first"
        );
        std::thread::sleep(IDLE_BEFORE_SLEEP * 2);
        assert!(*clock.asleep());
        assert!(
            ticks_over(&ticks, Duration::from_millis(100)) <= 1,
            "asleep without stores"
        );
        let hold = clock.hold();
        assert!(
            ticks_over(&ticks, Duration::from_millis(50)) > 5,
            "woken by a store"
        );
        // It does not sleep under a store, however long the store lives.
        std::thread::sleep(IDLE_BEFORE_SLEEP * 2);
        assert!(!*clock.asleep());
        assert!(ticks_over(&ticks, Duration::from_millis(50)) > 5);
        drop(hold);
        std::thread::sleep(IDLE_BEFORE_SLEEP * 2);
        assert!(*clock.asleep());
    }

    #[test]
    fn the_thread_ends_with_its_engine() {
        let alive = Arc::new(AtomicU64::new(1));
        let engine = alive.clone();
        let clock = EpochClock::start(move || engine.load(SeqCst) == 1).unwrap();
        alive.store(0, SeqCst);
        // Ticking ends within a tick; the Arc held by the thread goes with it.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(Arc::strong_count(&clock), 1);
    }
}
