//! The wasmtime engine, the linker with every host import, and compilation of one
//! script file into a [`LoadedScript`].
//!
//! Limits: every event runs in a fresh store under an epoch deadline (a background
//! thread advances the epoch every millisecond while a store lives: `epoch.rs`) and a
//! memory cap enforced twice, by the pooling allocator's slot size and by the store's
//! resource limiter, which also records that the cap was the cause so the failure can
//! say so.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::HostServices;
use super::bindings::{v0_1, v0_2};
use super::epoch::{self, EpochClock, EpochHold};
use super::loaded::{Exports, FlipPolicyExport, LoadedScript, RouterExport};

/// The deadline of the instantiation that checks a script as it loads. It is off every
/// call's path, so it is generous: a big guest (a JavaScript or Python engine) on a busy
/// machine must not be refused for taking longer than an event may, while a start
/// function that never ends is still stopped.
const LOAD_DEADLINE: Duration = Duration::from_secs(2);
/// How much of a script's stderr (panic messages, exceptions) is kept for the log.
const STDERR_CAPTURE_BYTES: usize = 4096;
/// The most a script may hand the host in one import call or one result (wasmtime's
/// "hostcall fuel", counted over the strings and lists copied out). A result is copied
/// out before it is checked, and its strings may all point at one buffer: 64 tags
/// naming the same megabyte are one megabyte to the script and 64 to a host that copies
/// each (wasmtime's own default bound is 128 MiB). Nothing a script legitimately
/// returns or passes comes near this.
const MOST_HANDED_OVER: usize = 1 << 20;

/// Per-event limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long one event may run.
    pub deadline: Duration,
    /// The most linear memory one instance may have, all its memories together.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(20),
            memory_bytes: 32 << 20,
        }
    }
}

/// Why a file could not be loaded as a script.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("does not fit the host: {0}")]
    Imports(String),
    #[error("{0}")]
    Exports(String),
    #[error("failed to instantiate: {0}")]
    Instantiate(String),
}

/// The state of one store: one event of one script.
pub(crate) struct EventState {
    pub(crate) host: EventHost,
    wasi: WasiCtx,
    table: ResourceTable,
    memory_cap: usize,
    /// Set when the guest asked for more memory than the cap.
    pub(crate) hit_memory_cap: bool,
    /// The linear memory the instance has, in bytes: all its memories together (a
    /// component may have one per core module, and the cap is the instance's).
    pub(crate) memory_bytes: usize,
    pub(crate) stderr: MemoryOutputPipe,
    /// The deadline's clock ticks while the store lives.
    _ticking: EpochHold,
}

/// What the host imports see of the current event.
pub(crate) struct EventHost {
    pub(crate) services: Arc<HostServices>,
    pub(crate) script: Arc<str>,
    /// The location whose vars and key-value scope the event sees.
    pub(crate) location: Option<String>,
    /// What the event sees of the world and what it read of it.
    pub(crate) world: EventWorld,
}

/// What one event sees of the world: the clock readings it takes, the key-value entries
/// it reads and the other imports' answers. A live event fills it as it asks; a shadow
/// run of another script on the same event, or a replay, starts from that (the same
/// readings, the same entries and answers) and applies no write.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventWorld {
    /// When the event happened (the clock as it started); none: not known.
    pub now: Option<jiff::Timestamp>,
    /// What `clock.now` answered, in order (at most [`READINGS_KEPT`]). A shadow run or a
    /// replay is given them again, then the last one again (or `now`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readings: Vec<jiff::Timestamp>,
    /// How many readings a shadow run or a replay has been given.
    #[serde(skip)]
    pub(crate) readings_given: usize,
    /// Key-value entries as the store had them when first read, in order: (key, value
    /// or none if unset).
    pub kv: Vec<(String, Option<String>)>,
    /// What the event wrote (or deleted: none), which its later reads see.
    #[serde(skip)]
    pub written: Vec<(String, Option<String>)>,
    /// The config and directory imports' answers (location vars, settings, users,
    /// devices), as the event asked them: a shadow run or a replay gets the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
    /// A shadow run or a replay: `kv.set` and `kv.delete` succeed without writing, and
    /// log lines are written at debug level.
    #[serde(skip)]
    pub shadow: bool,
}

/// Clock readings kept per event: a script that polls the clock (a busy wait) must not
/// grow the record without bound.
pub const READINGS_KEPT: usize = 64;
/// Import answers and key-value reads kept per event, for the same reason: a script
/// asking for a thousand names must not make its decision's record megabytes.
pub const ANSWERS_KEPT: usize = 64;
/// The longest argument (a var's, a user's, a key's name) an answer is kept for; no
/// real name is longer, and a script asking with megabytes must not keep them.
pub const ARG_KEPT_BYTES: usize = 256;

/// One answer of an import: which (`location-var`, `find-user` …), asked with what, and
/// what it answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub import: String,
    pub arg: String,
    pub value: serde_json::Value,
}

impl EventWorld {
    /// The world of a live event at `now`.
    pub fn live(now: jiff::Timestamp) -> Self {
        Self {
            now: Some(now),
            ..Self::default()
        }
    }

    /// The same readings, for a shadow script or a replay: the clock, the entries as
    /// the live event found them (not its writes), the imports' answers.
    pub fn shadow_of(&self) -> Self {
        Self {
            now: self.now,
            readings: self.readings.clone(),
            readings_given: 0,
            kv: self.kv.clone(),
            written: Vec::new(),
            answers: self.answers.clone(),
            shadow: true,
        }
    }
}

impl WasiView for EventState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime::ResourceLimiter for EventState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Called for each memory as it is created (from 0) and as it grows.
        let total = self
            .memory_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_cap {
            self.hit_memory_cap = true;
            return Ok(false);
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// How much of an instance's linear memory (and of its tables) stays mapped between
/// events, reset page by page: a script's stack, data and the heap one event uses.
const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// The engine and linker shared by every script.
pub struct ScriptEngine {
    engine: Engine,
    linker: Linker<EventState>,
    limits: Limits,
    cache: Option<Cache>,
    epoch: Arc<EpochClock>,
}

impl ScriptEngine {
    /// Build the engine. With a `cache_dir`, compiled code is cached there keyed by the
    /// component's bytes and the engine's version and settings, so a restart (or the same
    /// bytes dropped in again) does not recompile; and each compiled function is cached
    /// too (`functions/`), so a changed script recompiles only the functions that
    /// changed.
    pub fn new(limits: Limits, cache_dir: Option<&Path>) -> anyhow::Result<Arc<Self>> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling.max_memory_size(limits.memory_bytes);
        // A fresh instance per event starts from a slot the last instance left: where
        // the kernel can say which pages it touched (PAGEMAP_SCAN, Linux 6.7+), only
        // those are put back (memset, image copied back), and they stay mapped — no
        // madvise, no page faults for the next event (front-door's decision p50 31 → 16
        // µs here, BENCHMARKS.md). Elsewhere memset would clear the whole low region
        // every time: there wasmtime's default (madvise) stays.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pooling
                .pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                .table_keep_resident(KEEP_RESIDENT_TABLE);
        }
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let mut cache = None;
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create the script cache {}: {e}", dir.display())
            })?;
            let mut cache_config = CacheConfig::new();
            cache_config.with_directory(dir);
            let shared =
                Cache::new(cache_config).map_err(|e| anyhow::anyhow!("script cache: {e}"))?;
            config.cache(Some(shared.clone()));
            cache = Some(shared);
            let functions = super::incremental::FunctionCache::new(dir.join("functions"))
                .map_err(|e| anyhow::anyhow!("script cache {}: {e}", dir.display()))?;
            config
                .enable_incremental_compilation(Arc::new(functions))
                .map_err(|e| anyhow::anyhow!("script cache: {e}"))?;
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))?;

        let mut linker: Linker<EventState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        forbid_waiting(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        v0_2::FullScript::add_to_linker::<_, HasSelf<EventHost>>(&mut linker, |state| {
            &mut state.host
        })
        .map_err(|e| anyhow::anyhow!("linking host imports: {e}"))?;
        v0_1::FullScript::add_to_linker::<_, HasSelf<EventHost>>(&mut linker, |state| {
            &mut state.host
        })
        .map_err(|e| anyhow::anyhow!("linking the 0.1.0 host imports: {e}"))?;

        let epoch = start_epoch_clock(&engine)?;
        Ok(Arc::new(Self {
            engine,
            linker,
            limits,
            cache,
            epoch,
        }))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How many compilations the on-disk cache has saved so far.
    pub fn cache_hits(&self) -> usize {
        self.cache.as_ref().map_or(0, Cache::cache_hits)
    }

    /// Compile and validate a script. Slow for large guests: call it off the async runtime.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        services: &Arc<HostServices>,
    ) -> Result<LoadedScript, LoadError> {
        let started = crate::clock::monotonic_now();
        let hash = content_hash(bytes);
        if !wasmparser_is_component(bytes) {
            return Err(LoadError::NotAComponent(describe_non_component(bytes)));
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::NotAComponent(one_line(&e)))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports(one_line(&e)))?;

        use v0_1::exports::wasmpbx::script as old;
        use v0_2::exports::wasmpbx::script as current;
        let (router, flip_policy, wit_version) = match (
            current::router::GuestIndices::new(&pre).ok(),
            current::flip_policy::GuestIndices::new(&pre).ok(),
        ) {
            (None, None) => (
                old::router::GuestIndices::new(&pre)
                    .ok()
                    .map(RouterExport::V0_1),
                old::flip_policy::GuestIndices::new(&pre)
                    .ok()
                    .map(FlipPolicyExport::V0_1),
                "0.1.0",
            ),
            (router, flip_policy) => (
                router.map(RouterExport::V0_2),
                flip_policy.map(FlipPolicyExport::V0_2),
                crate::WIT_VERSION,
            ),
        };
        if router.is_none() && flip_policy.is_none() {
            return Err(LoadError::Exports(missing_exports_message(
                &component,
                &self.engine,
            )));
        }
        let script = LoadedScript {
            name: name.to_owned(),
            hash,
            size: bytes.len(),
            bytes: bytes.into(),
            loaded_at: services.clock.now(),
            compile_time: started.elapsed(),
            exports: Exports {
                router: router.is_some(),
                flip_policy: flip_policy.is_some(),
            },
            wit_version,
            pre,
            router,
            flip_policy,
            peak_memory: Default::default(),
        };
        // Instantiate once now: this type-checks the exports against the WIT and runs the
        // component's start functions, so a broken script fails here, not on a live call.
        self.check_instantiates(&script, services)?;
        Ok(script)
    }

    fn check_instantiates(
        &self,
        script: &LoadedScript,
        services: &Arc<HostServices>,
    ) -> Result<(), LoadError> {
        let mut store = self.new_store(services, &script.name, None, EventWorld::default());
        store.set_epoch_deadline(ticks(LOAD_DEADLINE.max(self.limits.deadline)));
        let instance = script
            .pre
            .instantiate(&mut store)
            .map_err(|e| LoadError::Instantiate(one_line(&e)))?;
        let router = match &script.router {
            Some(RouterExport::V0_2(indices)) => indices.load(&mut store, &instance).map(drop),
            Some(RouterExport::V0_1(indices)) => indices.load(&mut store, &instance).map(drop),
            None => Ok(()),
        };
        router.map_err(|e| LoadError::Exports(format!("router: {}", one_line(&e))))?;
        let flip_policy = match &script.flip_policy {
            Some(FlipPolicyExport::V0_2(indices)) => indices.load(&mut store, &instance).map(drop),
            Some(FlipPolicyExport::V0_1(indices)) => indices.load(&mut store, &instance).map(drop),
            None => Ok(()),
        };
        flip_policy.map_err(|e| LoadError::Exports(format!("flip-policy: {}", one_line(&e))))?;
        Ok(())
    }

    /// A fresh store for one event, with its deadline armed.
    pub(crate) fn new_store(
        &self,
        services: &Arc<HostServices>,
        script: &str,
        location: Option<String>,
        world: EventWorld,
    ) -> wasmtime::Store<EventState> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        // No filesystem, network or environment: scripts reach the world only through
        // the wasmpbx imports. stderr is kept so a panic's message reaches the log.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .stdout(stderr.clone())
            .build();
        let state = EventState {
            host: EventHost {
                services: services.clone(),
                script: script.into(),
                location,
                world,
            },
            wasi,
            table: ResourceTable::new(),
            memory_cap: self.limits.memory_bytes,
            hit_memory_cap: false,
            memory_bytes: 0,
            stderr,
            _ticking: self.epoch.hold(),
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|state| state);
        store.set_hostcall_fuel(MOST_HANDED_OVER);
        store.set_epoch_deadline(ticks(self.limits.deadline));
        store
    }
}

/// Epoch ticks for a deadline, with one extra: the current tick may be about to end.
fn ticks(deadline: Duration) -> u64 {
    deadline.as_millis().div_ceil(epoch::TICK.as_millis()) as u64 + 1
}

/// The clock of the engine's deadlines, for as long as the engine lives.
fn start_epoch_clock(engine: &Engine) -> anyhow::Result<Arc<EpochClock>> {
    let weak = engine.weak();
    EpochClock::start(move || {
        weak.upgrade()
            .map(|engine| engine.increment_epoch())
            .is_some()
    })
    .map_err(|e| anyhow::anyhow!("starting the script deadline clock: {e}"))
}

/// The hex SHA-256 of a script's bytes: its version identity.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Component binaries have layer 1 in the preamble; core modules have layer 0.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

fn describe_non_component(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "the file is empty".into()
    } else if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0, 0] {
        "this is a core WebAssembly module; build a component (e.g. cargo build --target wasm32-wasip2, or wasm-tools component new)".into()
    } else if bytes.len() < 8 || bytes[..4] != *b"\0asm" {
        "the file does not start with the WebAssembly magic bytes".into()
    } else {
        "unsupported WebAssembly binary version".into()
    }
}

/// Explain why neither export was found, naming a version mismatch when that is it.
fn missing_exports_message(component: &Component, engine: &Engine) -> String {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let ours = [
        "wasmpbx:script/router@0.2.0 (or @0.1.0)",
        "wasmpbx:script/flip-policy@0.2.0 (or @0.1.0)",
    ];
    if let Some(other) = exports.iter().find(|e| e.starts_with("wasmpbx:script/")) {
        return format!(
            "exports {other}, built for another version of the WIT package; this host speaks {}",
            ours.join(" and ")
        );
    }
    let listed = if exports.is_empty() {
        "nothing".to_string()
    } else {
        exports.join(", ")
    };
    format!(
        "exports neither {} (it exports {listed})",
        ours.join(" nor ")
    )
}

/// wasmtime errors chain causes over several lines; logs and API want one.
pub(crate) fn one_line(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.lines().next().unwrap_or_default().trim().to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// The WASI interface whose waiting is forbidden, as wasmtime-wasi 48 defines it (guests
/// importing an earlier 0.2 version are linked to it by semver).
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// WASI's `poll` and `pollable.block` wait on the calling thread, where the epoch
/// deadline cannot reach (it interrupts guest code only): a script that sleeps or waits
/// on a timer would hold its thread, and the call asking, past any deadline. A script
/// has milliseconds to decide and nothing to wait for, so waiting traps.
fn forbid_waiting(linker: &mut Linker<EventState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL)?;
    for name in ["poll", "[method]pollable.block"] {
        poll.func_new(name, |_, _, _, _| {
            Err(wasmtime::Error::msg(
                "a script may not wait (a sleep, a timer): it has milliseconds to decide",
            ))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component whose two core modules each declare a memory of `mib` MiB.
    fn two_memories(mib: u32) -> Vec<u8> {
        let pages = mib * 16;
        wat::parse_str(format!(
            r#"(component
                (core module $a (memory {pages}))
                (core module $b (memory {pages}))
                (core instance (instantiate $a))
                (core instance (instantiate $b)))"#
        ))
        .expect("valid component text")
    }

    fn instantiate(engine: &ScriptEngine, bytes: &[u8]) -> (bool, wasmtime::Store<EventState>) {
        let services =
            crate::simulate::offline_services(&crate::config::Config::embedded_default());
        let component = Component::new(&engine.engine, bytes).expect("compiles");
        let mut store = engine.new_store(&services, "memories", None, EventWorld::default());
        let ok = engine.linker.instantiate(&mut store, &component).is_ok();
        (ok, store)
    }

    #[test]
    fn the_memory_cap_counts_all_of_an_instances_memories() {
        let limits = Limits {
            memory_bytes: 32 << 20,
            ..Limits::default()
        };
        let engine = ScriptEngine::new(limits, None).expect("engine");
        // 2 × 12 MiB fits in 32 MiB; 2 × 20 MiB does not, though each memory would.
        let (ok, store) = instantiate(&engine, &two_memories(12));
        assert!(ok, "24 MiB in two memories is within the cap");
        assert_eq!(store.data().memory_bytes, 24 << 20);
        let (ok, store) = instantiate(&engine, &two_memories(20));
        assert!(!ok, "40 MiB in two memories is over the cap");
        assert!(store.data().hit_memory_cap);
    }
}
