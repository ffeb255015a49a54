//! Overload control: how much of the new calls to refuse, from how long SIP messages
//! wait for the core (RFC 7339's idea, applied locally). A saturated B2BUA that takes
//! every INVITE answers all of them late, the callers retransmit, and the
//! retransmissions eat what capacity is left: past capacity, calls fail wholesale.
//! Refusing part of the new calls at once with 503 and Retry-After (RFC 3261 §21.5.4)
//! keeps the wait short, so the calls admitted complete, and the refused ones are told
//! so in microseconds (a carrier then tries its next route).

use std::time::Duration;

/// Below this smoothed wait nothing is refused.
const CALM: Duration = Duration::from_millis(20);
/// At this smoothed wait every new call is refused; well under T1 (500 ms), so an
/// admitted call's messages are answered before the caller retransmits.
const SATURATED: Duration = Duration::from_millis(120);
/// Each message's weight in the smoothed wait: at thousands of messages a second this
/// follows the queue within a few milliseconds, and ignores a single slow one.
const WEIGHT: f64 = 0.02;

/// The core's admission: the share of new calls to refuse.
#[derive(Debug, Default)]
pub struct Admission {
    /// Seconds a message waited, smoothed over the last few dozen.
    smoothed: f64,
    /// In an overload episode: it began when calls were first refused, and ends only
    /// once the wait is well under [`CALM`], so a wait hovering at the threshold is one
    /// episode (one log line), not one per message.
    overloaded: bool,
}

/// A change in overload worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Episode {
    /// New calls are being refused.
    Began,
    /// The wait is back well under the threshold.
    Ended,
}

impl Admission {
    /// A message waited `waited` for the core: the share of new calls to refuse now, from
    /// 0 (below [`CALM`]) rising to 1 (at [`SATURATED`]), and whether an overload episode
    /// began or ended with it.
    pub fn observe(&mut self, waited: Duration) -> (f64, Option<Episode>) {
        self.smoothed += (waited.as_secs_f64() - self.smoothed) * WEIGHT;
        let share = self.refused_share();
        let episode = match self.overloaded {
            false if share > 0.0 => Some(Episode::Began),
            true if self.smoothed < CALM.as_secs_f64() / 2.0 => Some(Episode::Ended),
            _ => None,
        };
        if let Some(episode) = episode {
            self.overloaded = episode == Episode::Began;
        }
        (share, episode)
    }

    pub fn refused_share(&self) -> f64 {
        let (calm, saturated) = (CALM.as_secs_f64(), SATURATED.as_secs_f64());
        ((self.smoothed - calm) / (saturated - calm)).clamp(0.0, 1.0)
    }

    /// The smoothed wait, for `/metrics`.
    pub fn wait(&self) -> Duration {
        Duration::from_secs_f64(self.smoothed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(admission: &mut Admission, waited_ms: u64, messages: usize) -> f64 {
        let mut share = 0.0;
        for _ in 0..messages {
            share = admission.observe(Duration::from_millis(waited_ms)).0;
        }
        share
    }

    #[test]
    fn a_short_queue_admits_everything() {
        let mut admission = Admission::default();
        assert_eq!(after(&mut admission, 5, 1000), 0.0);
        assert_eq!(after(&mut admission, 19, 1000), 0.0);
    }

    #[test]
    fn a_growing_wait_refuses_more_and_a_drained_queue_admits_again() {
        let mut admission = Admission::default();
        let half = after(&mut admission, 70, 1000);
        assert!((0.45..0.55).contains(&half), "{half}");
        assert_eq!(after(&mut admission, 300, 1000), 1.0);
        assert!(
            after(&mut admission, 1, 300) == 0.0,
            "{:?}",
            admission.wait()
        );
    }

    #[test]
    fn one_slow_message_among_quick_ones_refuses_nothing() {
        let mut admission = Admission::default();
        after(&mut admission, 2, 100);
        assert_eq!(admission.observe(Duration::from_millis(500)), (0.0, None));
        assert_eq!(after(&mut admission, 2, 100), 0.0);
    }

    #[test]
    fn a_wait_hovering_at_the_threshold_is_one_episode() {
        let mut admission = Admission::default();
        let mut episodes = Vec::new();
        for round in 0..50 {
            // The wait swings either side of 20 ms, never far below it.
            let waited = if round % 2 == 0 { 30 } else { 12 };
            for _ in 0..200 {
                if let (_, Some(episode)) = admission.observe(Duration::from_millis(waited)) {
                    episodes.push(episode);
                }
            }
        }
        assert_eq!(episodes, [Episode::Began]);
        after(&mut admission, 1, 500);
        assert_eq!(admission.observe(Duration::from_millis(1)).1, None);
        let mut admission = Admission::default();
        after(&mut admission, 200, 200);
        let ended = (0..500).find_map(|_| admission.observe(Duration::from_millis(1)).1);
        assert_eq!(ended, Some(Episode::Ended));
    }
}
