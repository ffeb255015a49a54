//! Counters for script decisions, fallbacks by cause and decision latency.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Fallback causes, in the order they are counted.
const CAUSES: [&str; 6] = [
    "missing",
    "no-export",
    "deadline",
    "memory",
    "trap",
    "invalid-action",
];
/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 10] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
];

#[derive(Default)]
pub struct ScriptMetrics {
    decisions: AtomicU64,
    fallbacks: [AtomicU64; CAUSES.len()],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    reloads: AtomicU64,
    rejected_files: AtomicU64,
}

impl ScriptMetrics {
    pub fn record_decision(&self, latency: Duration) {
        self.decisions.fetch_add(1, Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(latency.as_nanos() as u64, Relaxed);
    }

    pub fn record_fallback(&self, cause: &str) {
        if let Some(i) = CAUSES.iter().position(|c| *c == cause) {
            self.fallbacks[i].fetch_add(1, Relaxed);
        }
    }

    pub fn record_reload(&self) {
        self.reloads.fetch_add(1, Relaxed);
    }

    pub fn record_rejected_file(&self) {
        self.rejected_files.fetch_add(1, Relaxed);
    }

    pub fn decisions(&self) -> u64 {
        self.decisions.load(Relaxed)
    }

    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.iter().map(|f| f.load(Relaxed)).sum()
    }

    /// Append the Prometheus text exposition of these metrics.
    pub fn render_prometheus(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP wasmpbx_script_decisions_total Script decisions that were followed."
        );
        let _ = writeln!(out, "# TYPE wasmpbx_script_decisions_total counter");
        let _ = writeln!(
            out,
            "wasmpbx_script_decisions_total {}",
            self.decisions.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP wasmpbx_script_fallbacks_total Events routed by the host's fallback, by cause."
        );
        let _ = writeln!(out, "# TYPE wasmpbx_script_fallbacks_total counter");
        for (cause, count) in CAUSES.iter().zip(&self.fallbacks) {
            let _ = writeln!(
                out,
                "wasmpbx_script_fallbacks_total{{cause=\"{cause}\"}} {}",
                count.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP wasmpbx_script_decision_seconds Time to run one event in a fresh instance."
        );
        let _ = writeln!(out, "# TYPE wasmpbx_script_decision_seconds histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(
                out,
                "wasmpbx_script_decision_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "wasmpbx_script_decision_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.latency_sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "wasmpbx_script_decision_seconds_sum {sum}");
        let _ = writeln!(out, "wasmpbx_script_decision_seconds_count {count}");
        let _ = writeln!(out, "# TYPE wasmpbx_script_reloads_total counter");
        let _ = writeln!(
            out,
            "wasmpbx_script_reloads_total {}",
            self.reloads.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE wasmpbx_script_rejected_files_total counter");
        let _ = writeln!(
            out,
            "wasmpbx_script_rejected_files_total {}",
            self.rejected_files.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_fallbacks_by_cause() {
        let m = ScriptMetrics::default();
        m.record_decision(Duration::from_micros(30));
        m.record_decision(Duration::from_micros(300));
        m.record_fallback("deadline");
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(
            out.contains("wasmpbx_script_decision_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("wasmpbx_script_decision_seconds_bucket{le=\"0.0005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("wasmpbx_script_decision_seconds_count 2\n"),
            "{out}"
        );
        assert!(
            out.contains("wasmpbx_script_fallbacks_total{cause=\"deadline\"} 1\n"),
            "{out}"
        );
        assert_eq!(m.fallbacks(), 1);
    }
}
