//! One compiled script version and running one event on it in a fresh instance.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use wasmtime::component::InstancePre;

use super::HostServices;
use super::bindings::v0_1::exports::wasmpbx::script as v0_1_exports;
use super::bindings::v0_2::exports::wasmpbx::script as v0_2_exports;
use super::engine::{EventState, EventWorld, ScriptEngine, one_line};
use super::{convert, v0_1};
use crate::flip::{FlipDecision, FlipRequest};
use crate::routing::{Action, CallInfo, Event};

/// What a script exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Exports {
    pub router: bool,
    pub flip_policy: bool,
}

impl Exports {
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.router {
            names.push("router");
        }
        if self.flip_policy {
            names.push("flip-policy");
        }
        names
    }
}

/// The router a component exports, by the WIT version it was built for.
pub(crate) enum RouterExport {
    V0_2(v0_2_exports::router::GuestIndices),
    V0_1(v0_1_exports::router::GuestIndices),
}

/// The flip policy a component exports, by the WIT version it was built for.
pub(crate) enum FlipPolicyExport {
    V0_2(v0_2_exports::flip_policy::GuestIndices),
    V0_1(v0_1_exports::flip_policy::GuestIndices),
}

/// A compiled, validated script version. Calls hold an `Arc` to the version they
/// started with, so a reload never changes a call in flight.
pub struct LoadedScript {
    pub name: String,
    /// Hex SHA-256 of the component's bytes.
    pub hash: String,
    pub size: usize,
    /// The component itself: kept so the decisions it makes can be replayed on it later
    /// (the store keeps each version once).
    pub bytes: Arc<[u8]>,
    pub loaded_at: jiff::Timestamp,
    pub compile_time: Duration,
    pub exports: Exports,
    /// The version of the WIT package the component was built for, e.g. "0.2.0".
    pub wit_version: &'static str,
    pub(crate) pre: InstancePre<EventState>,
    pub(crate) router: Option<RouterExport>,
    pub(crate) flip_policy: Option<FlipPolicyExport>,
    /// The most linear memory one instance of this version has had, in bytes.
    pub(crate) peak_memory: std::sync::atomic::AtomicUsize,
}

impl LoadedScript {
    /// The most linear memory one instance of this version has had so far, in bytes
    /// (what each concurrent event costs).
    pub fn peak_memory_bytes(&self) -> usize {
        self.peak_memory.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::fmt::Debug for LoadedScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedScript")
            .field("name", &self.name)
            .field("hash", &self.short_hash())
            .field("exports", &self.exports)
            .finish_non_exhaustive()
    }
}

/// Why running a script failed. The caller turns it into a fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptFailure {
    #[error("script {0:?} is not loaded")]
    Missing(String),
    #[error("does not export {0}")]
    NoExport(&'static str),
    #[error("ran past its {0} ms deadline")]
    Deadline(u128),
    #[error("ran out of memory (cap {0} MiB)")]
    Memory(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("{0}")]
    InvalidAction(String),
}

impl ScriptFailure {
    /// A short machine-readable cause, for metrics and records.
    pub fn cause(&self) -> &'static str {
        match self {
            ScriptFailure::Missing(_) => "missing",
            ScriptFailure::NoExport(_) => "no-export",
            ScriptFailure::Deadline(_) => "deadline",
            ScriptFailure::Memory(_) => "memory",
            ScriptFailure::Trap(_) => "trap",
            ScriptFailure::InvalidAction(_) => "invalid-action",
        }
    }
}

impl LoadedScript {
    /// The first 12 hex digits of the hash, for logs.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12]
    }

    /// Run one routing event in a fresh instance and validate what it returns. The
    /// event sees `world` (its clock readings, entries read before) and leaves in it what
    /// it read.
    pub fn route(
        &self,
        engine: &ScriptEngine,
        services: &Arc<HostServices>,
        call: &CallInfo,
        event: &Event,
        world: &mut EventWorld,
    ) -> Result<Vec<Action>, ScriptFailure> {
        let indices = self
            .router
            .as_ref()
            .ok_or(ScriptFailure::NoExport("wasmpbx:script/router"))?;
        let location = call.location.clone();
        let guest_call = convert::call_to_guest(call);
        let guest_event = convert::event_to_guest(event);
        let actions = match indices {
            RouterExport::V0_2(indices) => {
                self.run(engine, services, location, world, |store, instance| {
                    indices.load(&mut *store, instance)?.call_handle(
                        &mut *store,
                        &guest_call,
                        &guest_event,
                    )
                })?
            }
            RouterExport::V0_1(indices) => {
                let Some(old_event) = v0_1::event_down(guest_event) else {
                    return Ok(Vec::new()); // an event 0.1.0 does not know
                };
                let old_call = v0_1::call_down(guest_call);
                self.run(engine, services, location, world, |store, instance| {
                    indices.load(&mut *store, instance)?.call_handle(
                        &mut *store,
                        &old_call,
                        &old_event,
                    )
                })?
                .into_iter()
                .map(v0_1::action_up)
                .collect()
            }
        };
        let actions = actions
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                convert::action_from_guest(a).map_err(|e| format!("action {}: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(ScriptFailure::InvalidAction)?;
        crate::routing::validate_actions(event, &actions).map_err(ScriptFailure::InvalidAction)?;
        Ok(actions)
    }

    /// Run one flip-policy request in a fresh instance.
    pub fn decide_flip(
        &self,
        engine: &ScriptEngine,
        services: &Arc<HostServices>,
        request: &FlipRequest,
    ) -> Result<FlipDecision, ScriptFailure> {
        let indices = self
            .flip_policy
            .as_ref()
            .ok_or(ScriptFailure::NoExport("wasmpbx:script/flip-policy"))?;
        let location = request.call.location.clone();
        let guest_request = convert::flip_request_to_guest(request);
        let world = &mut EventWorld::default();
        let decision = match indices {
            FlipPolicyExport::V0_2(indices) => {
                self.run(engine, services, location, world, |store, instance| {
                    indices
                        .load(&mut *store, instance)?
                        .call_decide(&mut *store, &guest_request)
                })?
            }
            FlipPolicyExport::V0_1(indices) => {
                let old_request = v0_1::flip_request_down(guest_request);
                v0_1::decision_up(self.run(
                    engine,
                    services,
                    location,
                    world,
                    |store, instance| {
                        indices
                            .load(&mut *store, instance)?
                            .call_decide(&mut *store, &old_request)
                    },
                )?)
            }
        };
        let decision = convert::decision_from_guest(decision);
        decision.validate().map_err(ScriptFailure::InvalidAction)?;
        Ok(decision)
    }

    /// Instantiate afresh, run `call`, and classify any failure.
    fn run<R>(
        &self,
        engine: &ScriptEngine,
        services: &Arc<HostServices>,
        // The location whose vars and key-value scope the event sees.
        location: Option<String>,
        world: &mut EventWorld,
        call: impl FnOnce(
            &mut wasmtime::Store<EventState>,
            &wasmtime::component::Instance,
        ) -> wasmtime::Result<R>,
    ) -> Result<R, ScriptFailure> {
        let mut store = engine.new_store(services, &self.name, location, std::mem::take(world));
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| call(&mut store, &instance));
        *world = std::mem::take(&mut store.data_mut().host.world);
        self.peak_memory.fetch_max(
            store.data().memory_bytes,
            std::sync::atomic::Ordering::Relaxed,
        );
        result.map_err(|error| classify(&error, &store, engine))
    }
}

fn classify(
    error: &wasmtime::Error,
    store: &wasmtime::Store<EventState>,
    engine: &ScriptEngine,
) -> ScriptFailure {
    let limits = engine.limits();
    if store.data().hit_memory_cap {
        return ScriptFailure::Memory(limits.memory_bytes >> 20);
    }
    if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
        return ScriptFailure::Deadline(limits.deadline.as_millis());
    }
    let mut message = one_line(error);
    // A guest's own words (a Rust panic, a JS or Python exception) are on its stderr.
    let stderr = store.data().stderr.contents();
    let said = String::from_utf8_lossy(&stderr);
    let said = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if !said.is_empty() {
        message = format!("{message} (script said: {})", truncate(&said, 300));
    }
    ScriptFailure::Trap(message)
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
