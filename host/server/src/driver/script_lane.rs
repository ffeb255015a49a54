//! Where a shard's script questions run: on a thread of the shard's own, one after the
//! other, so that each decision finds the same warm thread (its allocator's pages, the
//! runtime's thread state, the CPU's caches) instead of whichever of the blocking pool's
//! idle threads (two dozen under load) a wake-up reaches. When that thread is stuck (a
//! question running past `STUCK`: a script near its deadline, a slow language), the next
//! questions go to the blocking pool, as all did before: a slow script delays at most
//! the questions queued behind it meanwhile, and never signalling.
//!
//! A busy lane is not a stuck one: under load the lane's thread waits for a core like
//! every other, and questions queue behind it for a scheduler's time slice. Sending those
//! to the pool would only wake more threads for the same two cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wasmpbx_types::clock::monotonic_now;

type Job = Box<dyn FnOnce() + Send>;

/// The most questions waiting for the lane's thread; more go to the blocking pool.
const MAX_QUEUED: usize = 64;
/// A question running this long means the lane is stuck. A decision takes tens of
/// microseconds; a scheduler's time slice a few milliseconds.
const STUCK: Duration = Duration::from_millis(5);

pub(super) struct ScriptLane {
    jobs: mpsc::Sender<Job>,
    /// Questions handed to the thread and not yet answered.
    queued: Arc<AtomicUsize>,
    /// When the question running now started (microseconds after `origin`, plus one), or
    /// 0 between questions.
    running_since: Arc<AtomicU64>,
    origin: Instant,
    stuck_after: Duration,
}

impl ScriptLane {
    /// Start the lane's thread; it ends when the lane is dropped.
    pub(super) fn start(shard: usize) -> std::io::Result<Self> {
        Self::start_stuck_after(shard, STUCK)
    }

    fn start_stuck_after(shard: usize, stuck_after: Duration) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let running_since = Arc::new(AtomicU64::new(0));
        let origin = monotonic_now();
        let (done, running) = (queued.clone(), running_since.clone());
        std::thread::Builder::new()
            .name(format!("scripts-{shard}"))
            .spawn(move || {
                for job in rx {
                    running.store(micros_since(origin) + 1, Relaxed);
                    // A panic is the job's alone (as on the blocking pool); the lane goes on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    running.store(0, Relaxed);
                    done.fetch_sub(1, Relaxed);
                }
            })?;
        Ok(Self {
            jobs,
            queued,
            running_since,
            origin,
            stuck_after,
        })
    }

    /// Whether the question running now has run past `stuck_after`.
    fn stuck(&self) -> bool {
        match self.running_since.load(Relaxed) {
            0 => false,
            since => {
                (micros_since(self.origin) + 1).saturating_sub(since)
                    > self.stuck_after.as_micros() as u64
            }
        }
    }

    /// Run `job` on the lane's thread, or on the blocking pool when the thread is stuck
    /// or too far behind.
    pub(super) fn run(&self, job: impl FnOnce() + Send + 'static) {
        if self.queued.load(Relaxed) >= MAX_QUEUED || self.stuck() {
            tokio::task::spawn_blocking(job);
            return;
        }
        self.queued.fetch_add(1, Relaxed);
        if let Err(mpsc::SendError(job)) = self.jobs.send(Box::new(job)) {
            self.queued.fetch_sub(1, Relaxed);
            tokio::task::spawn_blocking(job);
        }
    }
}

fn micros_since(origin: Instant) -> u64 {
    monotonic_now()
        .saturating_duration_since(origin)
        .as_micros() as u64
}

/// `answer()`, or `otherwise()` if it panics: a question whose host code panicked still
/// gets an answer, so the call asking never waits for one that cannot come.
pub(super) fn answer_or<T>(answer: impl FnOnce() -> T, otherwise: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(answer)).unwrap_or_else(|_| {
        tracing::error!("answering a script question panicked; the host's fallback answers");
        otherwise()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_question_whose_answer_panics_is_answered_otherwise() {
        assert_eq!(answer_or(|| 1, || 2), 1);
        assert_eq!(answer_or(|| panic!("a host bug"), || 2), 2);
    }

    /// Hold the lane's thread with a question until the returned sender speaks.
    fn hold(lane: &ScriptLane, name: &str) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        lane.run(move || {
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
            let _ = held.recv();
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap().as_deref(),
            Some(name)
        );
        release
    }

    /// Ask `count` questions, each saying its number and whether it ran on `name`.
    fn ask(
        lane: &ScriptLane,
        name: &'static str,
        count: usize,
    ) -> std::sync::mpsc::Receiver<(usize, bool)> {
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..count {
            let tx = tx.clone();
            lane.run(move || {
                tx.send((i, std::thread::current().name() == Some(name)))
                    .unwrap();
            });
        }
        rx
    }

    #[tokio::test]
    async fn a_busy_lane_keeps_questions_in_order_and_a_stuck_one_sends_the_next_to_the_pool() {
        let lane = ScriptLane::start_stuck_after(2, Duration::from_millis(300)).unwrap();
        let release = hold(&lane, "scripts-2");
        // Busy, not yet stuck: these wait for the lane.
        let queued = ask(&lane, "scripts-2", 3);
        std::thread::sleep(Duration::from_millis(400));
        // Stuck: these are answered by the pool while the lane is still held.
        let spilled = ask(&lane, "scripts-2", 3);
        let mut answers: Vec<_> = (0..3)
            .map(|_| spilled.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        answers.sort();
        assert_eq!(answers, [(0, false), (1, false), (2, false)]);
        assert!(queued.try_recv().is_err(), "still waiting for the lane");
        release.send(()).unwrap();
        let answers: Vec<_> = (0..3)
            .map(|_| queued.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(
            answers,
            [(0, true), (1, true), (2, true)],
            "in order, on the lane"
        );
    }

    #[tokio::test]
    async fn questions_run_in_order_on_the_lane_and_past_a_full_queue_on_the_pool() {
        let lane = ScriptLane::start_stuck_after(0, Duration::from_secs(3600)).unwrap();
        let release = hold(&lane, "scripts-0");
        // The held question and MAX_QUEUED - 1 more fill the lane; the pool answers the
        // rest.
        let answers = ask(&lane, "scripts-0", MAX_QUEUED + 2);
        let mut spilled: Vec<_> = (0..3)
            .map(|_| answers.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        spilled.sort();
        let last = MAX_QUEUED - 1;
        assert_eq!(
            spilled,
            [(last, false), (last + 1, false), (last + 2, false)]
        );
        release.send(()).unwrap();
        let queued: Vec<_> = (0..last)
            .map(|_| answers.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        let expected: Vec<_> = (0..last).map(|i| (i, true)).collect();
        assert_eq!(queued, expected, "in order, on the lane");
    }

    #[tokio::test]
    async fn a_panicking_question_does_not_end_the_lane() {
        let lane = ScriptLane::start(1).unwrap();
        lane.run(|| panic!("a script runtime bug"));
        let (tx, rx) = std::sync::mpsc::channel();
        lane.run(move || {
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap()
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap().as_deref(),
            Some("scripts-1")
        );
    }
}
