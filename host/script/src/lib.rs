//! # wasmpbx-script — the script runtime
//!
//! WASM components that route calls and decide flips, and `wasmpbx script simulate`.
//!
//! ```text
//!   watcher ──(debounced paths)──▶ load_file ──▶ engine.load ──▶ registry (ArcSwap)
//!                                                                   │
//!   call engine ──▶ ScriptHost::route(script, call, event) ◀────────┘
//!                     └─ LoadedScript::route: fresh instance, deadline, memory cap
//!                     └─ failure ⇒ the location's fallback, logged, counted
//! ```
//!
//! - [`engine`]: the wasmtime engine, linker and compilation (pooling allocator,
//!   epoch deadlines, on-disk compilation cache).
//! - [`loaded`]: one compiled version; runs one event in a fresh instance.
//! - `imports`: the host side of the WIT imports (log, clock, config, directory, kv).
//! - [`registry`]: the live versions by name and the last error of each file.
//! - [`watcher`]: hot reload of the scripts folder.
//! - `convert`: host types ⇄ WIT bindings; `v0_1`: components built for WIT 0.1.0.
//! - [`simulate`]: one call's decisions (or one flip's) offline, through the same runtime.

#[allow(unsafe_code, unreachable_pub, missing_docs)]
mod bindings;
mod convert;
pub mod engine;
mod epoch;
mod imports;
mod incremental;
pub mod loaded;
pub mod metrics;
pub mod registry;
pub mod simulate;
mod v0_1;
pub mod watcher;

use std::path::Path;
use std::sync::Arc;

pub use engine::{EventWorld, Limits, LoadError, ScriptEngine};

/// The version of the `wasmpbx:script` WIT package this host implements (it also loads
/// scripts built for 0.1.0).
pub const WIT_VERSION: &str = "0.2.0";
pub use loaded::{Exports, LoadedScript, ScriptFailure};
pub use metrics::{MetricsSnapshot, ScriptMetrics, VersionSnapshot};
pub use registry::{Registry, ScriptStatus};

// The layers below, under the names the modules use.
use wasmpbx_sip as sip;
use wasmpbx_types::{clock, config, directory, flip, media, routing, store};

use crate::clock::Clock;
use crate::config::{Config, Location};
use crate::directory::DeviceDirectory;
use crate::flip::{FlipDecision, FlipRequest};
use crate::routing::{CallInfo, Decision, Event, Fallback, ScriptRef};
use crate::store::KvStore;

/// What the host imports read: configuration, stores and the clock.
pub struct HostServices {
    /// The running configuration, replaced whole when the file is re-read.
    pub config: arc_swap::ArcSwap<Config>,
    pub kv: Arc<dyn KvStore>,
    pub devices: Arc<dyn DeviceDirectory>,
    pub clock: Arc<dyn Clock>,
}

/// The script runtime as the rest of the host uses it.
pub struct ScriptHost {
    pub engine: Arc<ScriptEngine>,
    pub services: Arc<HostServices>,
    pub registry: Registry,
    pub metrics: ScriptMetrics,
}

impl ScriptHost {
    pub fn new(engine: Arc<ScriptEngine>, services: Arc<HostServices>) -> Self {
        Self {
            engine,
            services,
            registry: Registry::default(),
            metrics: ScriptMetrics::default(),
        }
    }

    /// Route one event of a call. `pinned` is the version the call started with (none
    /// for the incoming event: the current version of `script` is used and returned in
    /// the decision for the call to keep). Never fails: a script failure yields the
    /// location's fallback, logged and counted.
    pub fn route(
        &self,
        script: &str,
        pinned: Option<&Arc<LoadedScript>>,
        location: Option<&Location>,
        call: &CallInfo,
        event: &Event,
    ) -> (Decision, Option<Arc<LoadedScript>>) {
        let mut world = EventWorld::live(self.services.clock.now());
        self.route_in(&mut world, script, pinned, location, call, event)
    }

    /// [`Self::route`] in `world`, which is left holding what the event read (for a
    /// shadow script to see the same).
    pub fn route_in(
        &self,
        world: &mut EventWorld,
        script: &str,
        pinned: Option<&Arc<LoadedScript>>,
        location: Option<&Location>,
        call: &CallInfo,
        event: &Event,
    ) -> (Decision, Option<Arc<LoadedScript>>) {
        let loaded = pinned.cloned().or_else(|| self.registry.get(script));
        let version = loaded.as_ref().map_or("", |s| s.hash.as_str());
        let started = crate::clock::monotonic_now();
        let result = match &loaded {
            Some(s) => s.route(&self.engine, &self.services, call, event, world),
            None => Err(ScriptFailure::Missing(script.to_owned())),
        };
        let script_ref = loaded.as_ref().map(|s| ScriptRef {
            name: s.name.clone(),
            hash: s.hash.clone(),
        });
        let decision = match result {
            Ok(actions) => {
                self.metrics
                    .record_decision(script, version, started.elapsed());
                Decision {
                    actions,
                    script: script_ref,
                    fallback: None,
                }
            }
            Err(failure) => {
                self.metrics
                    .record_fallback(script, version, failure.cause());
                let fallback = Fallback {
                    cause: failure.cause(),
                    message: failure.to_string(),
                };
                let decision = Decision::fallback(event, location, script_ref, fallback);
                tracing::warn!(
                    script,
                    cause = failure.cause(),
                    "script {script} failed: {failure}{}",
                    if decision.actions.is_empty() {
                        ""
                    } else {
                        "; falling back"
                    }
                );
                decision
            }
        };
        (decision, loaded)
    }

    /// Run the script `name` on an event another script served, in that event's `world`
    /// (its clock readings, the entries it read), applying nothing: no key-value write
    /// lands and nothing is counted in the script metrics. The version run, and its
    /// actions or why it failed.
    pub fn shadow(
        &self,
        name: &str,
        call: &CallInfo,
        event: &Event,
        world: &EventWorld,
    ) -> (
        Option<Arc<LoadedScript>>,
        Result<Vec<crate::routing::Action>, ScriptFailure>,
    ) {
        let loaded = self.registry.get(name);
        let result = match &loaded {
            Some(s) => s.route(
                &self.engine,
                &self.services,
                call,
                event,
                &mut world.shadow_of(),
            ),
            None => Err(ScriptFailure::Missing(name.to_owned())),
        };
        (loaded, result)
    }

    /// Ask the flip-policy script `name` (`scripts.flip_policy`). A failure is returned
    /// for the caller to deny the flip (and is logged and counted here).
    pub fn decide_flip(
        &self,
        name: &str,
        request: &FlipRequest,
    ) -> Result<FlipDecision, ScriptFailure> {
        let loaded = self.registry.get(name);
        let version = loaded.as_ref().map_or("", |s| s.hash.as_str());
        let started = crate::clock::monotonic_now();
        let result = match &loaded {
            Some(s) => s.decide_flip(&self.engine, &self.services, request),
            None => Err(ScriptFailure::Missing(name.to_owned())),
        };
        match &result {
            Ok(_) => self
                .metrics
                .record_decision(name, version, started.elapsed()),
            Err(failure) => self.metrics.record_fallback(name, version, failure.cause()),
        }
        if let Err(failure) = &result {
            tracing::warn!(script = %name, cause = failure.cause(),
                "flip policy {name} failed: {failure}; denying the flip");
        }
        result
    }

    /// Load every `*.wasm` in `dir` (start-up). Errors are recorded per file.
    pub fn load_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| watcher::is_script_path(p))
            .collect();
        paths.sort();
        for path in paths {
            watcher::load_file(self, &path);
        }
        Ok(())
    }
}
