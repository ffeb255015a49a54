//! What the benchmarks share: the machine they ran on, the CPU they used, and a script
//! host with a location to route calls for.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmpbx::clock::SystemClock;
use wasmpbx::config::Config;
use wasmpbx::directory::MemoryDirectory;
use wasmpbx::routing::{CallInfo, Origin};
use wasmpbx::script::{HostServices, Limits, ScriptEngine, ScriptHost};
use wasmpbx::store::MemoryStore;

/// "Machine: N cores, load average a b c", printed first by every benchmark.
pub(crate) fn print_machine() {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "Machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// CPU seconds (user + system) this process has used.
#[allow(dead_code)] // not every benchmark measures CPU
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A location with the front-door's vars (and listen's `return_number`).
const CONFIG: &str = r#"
[[locations]]
name = "sydney"
flip_number = "+61290000001"
script = "router"
fallback_number = "+61290000099"
[locations.vars]
timezone = "Australia/Sydney"
return_number = "+61290000098"
hours = "Mon-Fri 09:00-17:00, Sat 10:00-13:00"
holidays = "2026-12-25, 2027-01-01"
sales = "+61290000010"
billing = "+61290000020"
operator = "+61290000030"
"#;

/// A script host for the benchmarks' location, with the disk cache in `cache` if given.
#[allow(dead_code)] // not every benchmark runs scripts
pub(crate) fn script_host(cache: Option<&Path>) -> ScriptHost {
    let config = Config::parse(CONFIG, Path::new("bench.toml")).unwrap();
    let engine = ScriptEngine::new(Limits::default(), cache).unwrap();
    let services = Arc::new(HostServices {
        config: arc_swap::ArcSwap::from_pointee(config),
        kv: Arc::new(MemoryStore::new()),
        devices: Arc::new(MemoryDirectory::new()),
        clock: Arc::new(SystemClock),
    });
    ScriptHost::new(engine, services)
}

/// A call from the trunk to the location's flip number.
#[allow(dead_code)]
pub(crate) fn incoming_call() -> CallInfo {
    CallInfo {
        call_id: "bench".into(),
        location: Some("sydney".into()),
        caller: "+61400000001".into(),
        caller_name: None,
        dialed: "+61290000001".into(),
        origin: Origin::Trunk {
            name: "pstn".into(),
        },
        started_at: jiff::Timestamp::UNIX_EPOCH,
        tags: Vec::new(),
    }
}

#[allow(dead_code)]
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[allow(dead_code)]
pub(crate) fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[allow(dead_code)]
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Raise the open-files limit to the hard limit: a relayed call holds four sockets.
#[allow(dead_code)] // only the relay at scale opens thousands
pub(crate) fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

/// The `p` quantile (0 to 1) of `sorted` latencies; 0 when there are none.
#[allow(dead_code)] // not every benchmark measures latency
pub(crate) fn quantile(sorted: &[u32], p: f64) -> u32 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(0)
}
