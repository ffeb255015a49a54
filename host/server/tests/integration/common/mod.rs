//! Shared set-up for the host's integration tests.
// Test harnesses are an I/O edge: they wait on real time.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)]

pub mod browser;
pub mod callers;
pub mod carrier;
pub mod engine;
pub mod server;
pub mod tls;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmpbx::clock::FixedClock;
use wasmpbx::config::Config;
use wasmpbx::directory::MemoryDirectory;
use wasmpbx::routing::{CallInfo, Origin};
use wasmpbx::script::{HostServices, Limits, ScriptEngine, ScriptHost};
use wasmpbx::store::MemoryStore;

/// A configuration with one Sydney location and a few users.
pub const CONFIG: &str = r#"
[flip]
pin_devices = "lobby-*"

[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:5090"
inbound = ["127.0.0.2"]

[[users]]
id = "alice"
extension = "2001"
password = "alice-secret"
role = "agent"
pin = "4321"

[[users]]
id = "kim"
extension = "2009"
password = "kim-secret"
role = "kiosk"

[[locations]]
name = "sydney"
flip_number = "+61290000001"
script = "front-door"
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

pub fn config() -> Config {
    Config::parse(CONFIG, Path::new("test.toml")).expect("test config")
}

/// A deadline no stall of a loaded machine reaches (CI runs these beside browsers and
/// phones): with 20 ms, a script told to trap was once stopped by its deadline first. A
/// test about deadlines sets its own.
pub fn limits() -> Limits {
    Limits {
        deadline: Duration::from_millis(500),
        memory_bytes: 32 << 20,
    }
}

/// A script host on the test config with a clock stopped at `at`.
pub fn host_at(at: &str) -> ScriptHost {
    host_at_with(at, limits())
}

/// The same, with other limits.
pub fn host_at_with(at: &str, limits: Limits) -> ScriptHost {
    host_limited(
        at,
        limits,
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryDirectory::new()),
    )
}

pub fn host_with(at: &str, kv: Arc<MemoryStore>, devices: Arc<MemoryDirectory>) -> ScriptHost {
    host_limited(at, limits(), kv, devices)
}

fn host_limited(
    at: &str,
    limits: Limits,
    kv: Arc<MemoryStore>,
    devices: Arc<MemoryDirectory>,
) -> ScriptHost {
    let engine = ScriptEngine::new(limits, None).expect("engine");
    let services = Arc::new(HostServices {
        config: arc_swap::ArcSwap::from_pointee(config()),
        kv,
        devices,
        clock: Arc::new(FixedClock(at.parse().unwrap())),
    });
    ScriptHost::new(engine, services)
}

/// Load a guest under a script name.
pub fn install(host: &ScriptHost, name: &str, path: &str) {
    let script = host
        .engine
        .load(name, &test_components::bytes(path), &host.services)
        .expect("guest loads");
    host.registry.install(script);
}

/// A PSTN call to the Sydney flip number (or to `dialed`).
pub fn call(dialed: &str) -> CallInfo {
    CallInfo {
        call_id: "test-call".into(),
        location: Some("sydney".into()),
        caller: "+61400000001".into(),
        caller_name: None,
        dialed: dialed.into(),
        origin: Origin::Trunk {
            name: "pstn".into(),
        },
        started_at: "2026-11-23T00:00:00Z".parse().unwrap(),
        tags: Vec::new(),
    }
}
