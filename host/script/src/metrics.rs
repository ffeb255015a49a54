//! Counters for script decisions, fallbacks by cause and decision latency, per script
//! and version, so an admin can see which script (and which build of it) is falling
//! back. The server turns a [`ScriptMetrics::snapshot`] into Prometheus families.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fallback causes, in the order they are counted.
pub const CAUSES: [&str; 7] = [
    "missing",
    "no-export",
    "deadline",
    "memory",
    "trap",
    "invalid-action",
    // The host's own code failing around the script (a bug, caught).
    "host",
];
/// Upper bounds of the latency histogram, in seconds.
pub const BUCKETS: [f64; 10] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
];
/// Versions of one script counted at once: a script reloaded all day during development
/// must not grow the metrics without bound; the oldest version's series go first.
const VERSIONS_KEPT: usize = 4;

/// The counters of one version of one script.
#[derive(Default)]
struct VersionStats {
    decisions: AtomicU64,
    fallbacks: [AtomicU64; CAUSES.len()],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

/// A script's versions (hash; "" when no version was loaded), oldest first.
type Versions = Vec<(String, Arc<VersionStats>)>;

#[derive(Default)]
pub struct ScriptMetrics {
    /// By script name.
    scripts: Mutex<HashMap<String, Versions>>,
    decisions: AtomicU64,
    fallbacks: AtomicU64,
    reloads: AtomicU64,
    rejected_files: AtomicU64,
}

/// What one version of one script did, for the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSnapshot {
    pub script: String,
    /// The version's content hash, or "" when the script was missing.
    pub version: String,
    pub decisions: u64,
    /// Per [`CAUSES`].
    pub fallbacks: [u64; CAUSES.len()],
    /// Per [`BUCKETS`], not cumulative.
    pub latency_buckets: [u64; BUCKETS.len()],
    pub latency_count: u64,
    pub latency_sum: Duration,
}

/// Everything the script runtime counts, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// By script name, then version age.
    pub versions: Vec<VersionSnapshot>,
    pub reloads: u64,
    pub rejected_files: u64,
}

impl ScriptMetrics {
    /// The stats of `script` at `version`, created on first use.
    fn version(&self, script: &str, version: &str) -> Arc<VersionStats> {
        let mut scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
        let versions = match scripts.get_mut(script) {
            Some(versions) => versions,
            None => scripts.entry(script.to_owned()).or_default(),
        };
        if let Some((_, stats)) = versions.iter().find(|(v, _)| v == version) {
            return stats.clone();
        }
        if versions.len() == VERSIONS_KEPT {
            versions.remove(0);
        }
        let stats = Arc::new(VersionStats::default());
        versions.push((version.to_owned(), stats.clone()));
        stats
    }

    /// A decision of `script` at `version` that was followed, and how long it took.
    pub fn record_decision(&self, script: &str, version: &str, latency: Duration) {
        self.decisions.fetch_add(1, Relaxed);
        let stats = self.version(script, version);
        stats.decisions.fetch_add(1, Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            stats.latency_buckets[i].fetch_add(1, Relaxed);
        }
        stats.latency_count.fetch_add(1, Relaxed);
        stats
            .latency_sum_ns
            .fetch_add(latency.as_nanos() as u64, Relaxed);
    }

    /// An event of `script` (at `version`, "" if none was loaded) that the host's
    /// fallback routed, and why.
    pub fn record_fallback(&self, script: &str, version: &str, cause: &str) {
        self.fallbacks.fetch_add(1, Relaxed);
        if let Some(i) = CAUSES.iter().position(|c| *c == cause) {
            self.version(script, version).fallbacks[i].fetch_add(1, Relaxed);
        }
    }

    pub fn record_reload(&self) {
        self.reloads.fetch_add(1, Relaxed);
    }

    pub fn record_rejected_file(&self) {
        self.rejected_files.fetch_add(1, Relaxed);
    }

    /// Decisions followed, all scripts.
    pub fn decisions(&self) -> u64 {
        self.decisions.load(Relaxed)
    }

    /// Fallbacks, all scripts and causes.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Relaxed)
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = scripts.keys().collect();
        names.sort();
        let load = |counters: &[AtomicU64]| -> Vec<u64> {
            counters.iter().map(|c| c.load(Relaxed)).collect()
        };
        let mut versions = Vec::new();
        for name in names {
            for (version, stats) in &scripts[name] {
                versions.push(VersionSnapshot {
                    script: name.clone(),
                    version: version.clone(),
                    decisions: stats.decisions.load(Relaxed),
                    fallbacks: load(&stats.fallbacks).try_into().expect("same length"),
                    latency_buckets: load(&stats.latency_buckets)
                        .try_into()
                        .expect("same length"),
                    latency_count: stats.latency_count.load(Relaxed),
                    latency_sum: Duration::from_nanos(stats.latency_sum_ns.load(Relaxed)),
                });
            }
        }
        MetricsSnapshot {
            versions,
            reloads: self.reloads.load(Relaxed),
            rejected_files: self.rejected_files.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_fallbacks_are_counted_per_script_and_version() {
        let m = ScriptMetrics::default();
        m.record_decision("front-door", "aaa", Duration::from_micros(30));
        m.record_decision("front-door", "aaa", Duration::from_micros(300));
        m.record_fallback("front-door", "bbb", "deadline");
        m.record_fallback("night", "", "missing");
        m.record_fallback("night", "", "host");
        let snapshot = m.snapshot();
        let names: Vec<(&str, &str)> = snapshot
            .versions
            .iter()
            .map(|v| (v.script.as_str(), v.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [("front-door", "aaa"), ("front-door", "bbb"), ("night", "")]
        );
        let aaa = &snapshot.versions[0];
        assert_eq!(aaa.decisions, 2);
        assert_eq!(aaa.latency_buckets[0], 1, "30 µs ≤ 50 µs");
        assert_eq!(aaa.latency_buckets[3], 1, "300 µs ≤ 500 µs");
        assert_eq!(aaa.latency_count, 2);
        assert_eq!(aaa.latency_sum, Duration::from_micros(330));
        assert_eq!(snapshot.versions[1].fallbacks[2], 1, "deadline");
        assert_eq!(snapshot.versions[2].fallbacks[0], 1, "missing");
        assert_eq!(
            snapshot.versions[2].fallbacks[6], 1,
            "the host's own failure"
        );
        assert_eq!((m.decisions(), m.fallbacks()), (2, 3));
    }

    #[test]
    fn only_the_latest_versions_of_a_script_are_kept() {
        let m = ScriptMetrics::default();
        for version in ["v1", "v2", "v3", "v4", "v5"] {
            m.record_decision("listen", version, Duration::from_micros(20));
        }
        let versions: Vec<String> = m
            .snapshot()
            .versions
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(versions, ["v2", "v3", "v4", "v5"]);
        assert_eq!(m.decisions(), 5, "the totals keep everything");
    }
}
