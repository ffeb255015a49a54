//! Where a shard's script questions run: on a thread of the shard's own, one after the
//! other, so that each decision finds the same warm thread (its allocator's pages, the
//! runtime's thread state, the CPU's caches) instead of whichever of the blocking pool's
//! idle threads (two dozen under load) a wake-up reaches. When that thread is behind (a
//! script running to its deadline, a slow language), the next questions go to the
//! blocking pool, as all did before: a slow script delays at most the few queued behind
//! it, and never signalling.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// The most questions waiting for the lane's thread; more go to the blocking pool.
const MAX_QUEUED: usize = 4;

pub(super) struct ScriptLane {
    jobs: mpsc::Sender<Job>,
    /// Questions handed to the thread and not yet answered.
    queued: Arc<AtomicUsize>,
}

impl ScriptLane {
    /// Start the lane's thread; it ends when the lane is dropped.
    pub(super) fn start(shard: usize) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let done = queued.clone();
        std::thread::Builder::new()
            .name(format!("scripts-{shard}"))
            .spawn(move || {
                for job in rx {
                    // A panic is the job's alone (as on the blocking pool); the lane goes on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    done.fetch_sub(1, Relaxed);
                }
            })?;
        Ok(Self { jobs, queued })
    }

    /// Run `job` on the lane's thread, or on the blocking pool when the thread is behind.
    pub(super) fn run(&self, job: impl FnOnce() + Send + 'static) {
        if self.queued.load(Relaxed) >= MAX_QUEUED {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn questions_run_in_order_on_the_lane_and_past_a_stuck_one_on_the_pool() {
        let lane = ScriptLane::start(0).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        {
            let tx = tx.clone();
            lane.run(move || {
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
                let _ = stuck.recv();
            });
        }
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap().as_deref(),
            Some("scripts-0")
        );
        // The lane's thread is held: the queue fills, then the pool answers.
        for i in 0..MAX_QUEUED + 2 {
            let tx = tx.clone();
            lane.run(move || {
                let on_lane = std::thread::current().name() == Some("scripts-0");
                tx.send(Some(format!("{i} {on_lane}"))).unwrap();
            });
        }
        let mut spilled: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap())
            .collect();
        spilled.sort();
        assert_eq!(
            spilled,
            [
                format!("{} false", MAX_QUEUED - 1),
                format!("{} false", MAX_QUEUED),
                format!("{} false", MAX_QUEUED + 1)
            ],
            "the stuck question and {} queued fill the lane",
            MAX_QUEUED - 1
        );
        release.send(()).unwrap();
        let queued: Vec<_> = (0..MAX_QUEUED - 1)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap())
            .collect();
        let expected: Vec<_> = (0..MAX_QUEUED - 1).map(|i| format!("{i} true")).collect();
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
