//! PSTN callers for load under operations (drain, crash, reload): SIPp from the trunk's
//! address to the `listen` script's flip number, each call writing down what it saw.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use super::server::{Server, sipp};

/// The flip number of [`listen_location`].
pub const FLIP: &str = "+61290000001";

/// A trunk to a SIPp return side on `return_port` (calls from 127.0.0.2 are its) and a
/// location running the `listen` script, which forwards every call there.
pub fn listen_location(return_port: u16) -> String {
    format!("{}{}", return_trunk(return_port), sydney("listen"))
}

/// `calls` SIPp calls from the trunk (`tests/sipp/trunk_caller.xml`) to `dialed`, 50 a
/// second; SIPp's exit code.
pub fn trunk_calls(server: &Server, dialed: &str, calls: u32) -> i32 {
    trunk_calls_with(server, dialed, calls, &[])
}

/// [`trunk_calls`] with more SIPp options (`extra`).
pub fn trunk_calls_with(server: &Server, dialed: &str, calls: u32, extra: &[&str]) -> i32 {
    let calls = calls.to_string();
    let mut args = vec![
        "-i",
        "127.0.0.2",
        "-s",
        dialed,
        "-m",
        &calls,
        "-r",
        "50",
        "-l",
        "200",
    ];
    args.extend_from_slice(extra);
    sipp(server.udp, "trunk_caller.xml", "", &args)
}

/// The `pstn` trunk to a SIPp return side on `return_port`; calls from 127.0.0.2 are its.
pub fn return_trunk(return_port: u16) -> String {
    format!(
        r#"
[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:{return_port}"
inbound = ["127.0.0.2"]
"#
    )
}

/// The `sydney` location on [`FLIP`], running `script`, its return number +61290000098.
pub fn sydney(script: &str) -> String {
    format!(
        r#"
[[locations]]
name = "sydney"
flip_number = "{FLIP}"
script = "{script}"
fallback_number = "+61290000099"

[locations.vars]
return_number = "+61290000098"
"#
    )
}

/// SIPp callers running in a thread (`tests/sipp/caller_logs.xml`).
pub struct Callers {
    thread: JoinHandle<i32>,
    /// Holds the callers' log.
    work: tempfile::TempDir,
}

/// What the callers saw, by Call-ID.
#[derive(Debug, Default)]
pub struct Seen {
    /// Answered calls: whether the 200 to their BYE came too.
    pub answered: HashMap<String, bool>,
    /// Calls refused with 503.
    pub refused: Vec<String>,
}

impl Callers {
    /// `calls` calls to `flip` at `rate` a second, each held `hold_ms`; a call gets no
    /// answer for 3 s gives up (against a dead server).
    pub fn start(server: &Server, flip: &str, calls: u32, rate: u32, hold_ms: u32) -> Self {
        Self::start_to(server.udp, flip, calls, rate, hold_ms)
    }

    /// [`Callers::start`], to `udp` (an edge in front of servers, say).
    pub fn start_to(udp: SocketAddr, flip: &str, calls: u32, rate: u32, hold_ms: u32) -> Self {
        let work = tempfile::tempdir().unwrap();
        let log = work.path().join("calls.log").display().to_string();
        let flip = flip.to_owned();
        let thread = std::thread::spawn(move || {
            let (calls, rate, hold) = (calls.to_string(), rate.to_string(), hold_ms.to_string());
            let args = [
                "-i",
                "127.0.0.2",
                "-s",
                &flip,
                "-m",
                &calls,
                "-r",
                &rate,
                "-d",
                &hold,
                "-recv_timeout",
                "3000",
                "-trace_logs",
                "-log_file",
                &log,
            ];
            sipp(udp, "caller_logs.xml", "", &args)
        });
        Callers { thread, work }
    }

    /// Wait for the last call; SIPp's exit code (0: every call answered and ended, or
    /// refused) and what the calls saw.
    pub fn finish(self) -> (i32, Seen) {
        let code = self.thread.join().unwrap();
        let text = std::fs::read_to_string(self.work.path().join("calls.log")).unwrap_or_default();
        let mut seen = Seen::default();
        for line in text.lines().map(str::trim) {
            if let Some(id) = line.strip_prefix("answered ") {
                seen.answered.entry(id.to_owned()).or_insert(false);
            } else if let Some(id) = line.strip_prefix("ended ") {
                seen.answered.insert(id.to_owned(), true);
            } else if let Some(id) = line.strip_prefix("refused ") {
                seen.refused.push(id.to_owned());
            }
        }
        (code, seen)
    }
}

/// Call records keyed by the caller's Call-ID (the first leg's).
pub fn records_by_call_id(records: &[serde_json::Value]) -> HashMap<&str, &serde_json::Value> {
    records
        .iter()
        .filter_map(|r| Some((r["call_ids"][0].as_str()?, r)))
        .collect()
}
