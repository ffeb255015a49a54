//! The live script versions by name, swapped atomically, and what happened to each file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::loaded::{Exports, LoadedScript};

/// What `GET /api/scripts` shows of one script.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScriptStatus {
    pub name: String,
    /// The version serving calls, if any.
    pub hash: Option<String>,
    pub loaded_at: Option<jiff::Timestamp>,
    pub exports: Vec<&'static str>,
    pub size: Option<usize>,
    pub compile_ms: Option<f64>,
    /// The most linear memory one instance of the serving version has had, in bytes.
    pub peak_instance_memory: Option<usize>,
    /// The last file version that failed to load, and why. It is cleared by the next
    /// successful load.
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastError {
    pub message: String,
    pub hash: Option<String>,
    pub at: jiff::Timestamp,
}

/// Script versions by name. Readers never block: a lookup is an atomic pointer load.
#[derive(Default)]
pub struct Registry {
    live: ArcSwap<BTreeMap<String, Arc<LoadedScript>>>,
    /// Serialises writers (the watcher, start-up) and holds the last errors.
    errors: Mutex<BTreeMap<String, LastError>>,
}

impl Registry {
    /// The current version of a script.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedScript>> {
        self.live.load().get(name).cloned()
    }

    /// Put a new version in service; calls holding the old one keep it.
    pub fn install(&self, script: LoadedScript) -> Arc<LoadedScript> {
        let mut errors = self.errors();
        errors.remove(&script.name);
        let script = Arc::new(script);
        let mut map = BTreeMap::clone(&self.live.load());
        map.insert(script.name.clone(), script.clone());
        self.live.store(Arc::new(map));
        script
    }

    /// Take a script out of service (its file was deleted).
    pub fn remove(&self, name: &str) -> bool {
        let mut errors = self.errors();
        errors.remove(name);
        let mut map = BTreeMap::clone(&self.live.load());
        let removed = map.remove(name).is_some();
        self.live.store(Arc::new(map));
        removed
    }

    /// Remember why a file version failed; the serving version (if any) stays.
    pub fn record_error(
        &self,
        name: &str,
        hash: Option<String>,
        message: String,
        at: jiff::Timestamp,
    ) {
        self.errors()
            .insert(name.to_owned(), LastError { message, hash, at });
    }

    /// Every script that is serving or has failed, by name.
    pub fn status(&self) -> Vec<ScriptStatus> {
        let live = self.live.load();
        let errors = self.errors();
        let mut names: Vec<&String> = live.keys().chain(errors.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let script = live.get(name);
                ScriptStatus {
                    name: name.clone(),
                    hash: script.map(|s| s.hash.clone()),
                    loaded_at: script.map(|s| s.loaded_at),
                    exports: script
                        .map(|s| s.exports)
                        .map(|e: Exports| e.names())
                        .unwrap_or_default(),
                    size: script.map(|s| s.size),
                    compile_ms: script.map(|s| s.compile_time.as_secs_f64() * 1000.0),
                    peak_instance_memory: script.map(|s| s.peak_memory_bytes()),
                    last_error: errors.get(name).cloned(),
                }
            })
            .collect()
    }

    fn errors(&self) -> MutexGuard<'_, BTreeMap<String, LastError>> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner())
    }
}
