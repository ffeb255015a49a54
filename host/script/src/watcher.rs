//! Hot reload of the scripts folder.
//!
//! Strategy:
//! 1. notify (inotify on Linux) reports events on the folder. Any create, modify,
//!    rename (either side), delete or close-after-write that names a `*.wasm` file marks
//!    that path dirty; other files (editor temp files, `x.wasm.tmp`) are ignored.
//! 2. Debounce: dirty paths are collected until the folder has been quiet for
//!    [`DEBOUNCE`]. A rename into place (three events) or a burst of writes becomes one
//!    load.
//! 3. Each dirty path is settled by looking at the file, not at the event: gone → the
//!    script is taken out of service; present → read, hash, and if the bytes equal the
//!    serving version's, nothing happens; else compile and validate off the async
//!    runtime (a blocking thread).
//! 4. Swap: a version that compiled, linked, exported a known interface and
//!    instantiated replaces the old one atomically (`ArcSwap`). Anything else — garbage,
//!    a half-written file, a core module, another WIT version — is recorded as the
//!    script's last error and the old version keeps serving.
//! 5. Calls hold an `Arc` to the version they started with; a swap never changes them.
//!
//! A half-written file whose writer pauses longer than the debounce is tried, fails to
//! validate, and is tried again when the write completes (close-after-write).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::ScriptHost;
use crate::config::is_script_name;

/// How long the folder must be quiet before dirty paths are loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// What loading one path did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// A new version is serving.
    Loaded { name: String, hash: String },
    /// The bytes equal the serving version: nothing to do.
    Unchanged { name: String },
    /// The file was rejected; the old version (if any) keeps serving.
    Rejected { name: String, error: String },
    /// The file is gone and so is the script.
    Removed { name: String },
    /// Not a script file.
    Ignored,
}

/// `*.wasm` files whose stem is a valid script name.
pub fn is_script_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && path
            .file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(is_script_name)
}

/// The size from which a load is announced before it starts.
const BIG_COMPONENT: usize = 2 << 20;

/// Settle one path: load it, skip it, or take its script out of service.
pub fn load_file(host: &ScriptHost, path: &Path) -> LoadOutcome {
    if !is_script_path(path) {
        return LoadOutcome::Ignored;
    }
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let now = host.services.clock.now();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if host.registry.remove(&name) {
                tracing::info!(script = %name, "script {name} removed: {} is gone", path.display());
                return LoadOutcome::Removed { name };
            }
            return LoadOutcome::Ignored;
        }
        Err(e) => {
            let error = format!("cannot read {}: {e}", path.display());
            tracing::warn!(script = %name, "{error}");
            host.registry.record_error(&name, None, error.clone(), now);
            host.metrics.record_rejected_file();
            return LoadOutcome::Rejected { name, error };
        }
    };
    let hash = super::engine::content_hash(&bytes);
    if host.registry.get(&name).is_some_and(|s| s.hash == hash) {
        tracing::debug!(script = %name, "{} unchanged", path.display());
        return LoadOutcome::Unchanged { name };
    }
    // A component with a language's runtime inside (JavaScript, Python: 10–20 MB) takes
    // seconds to compile the first time: say so before, not only after.
    if bytes.len() >= BIG_COMPONENT {
        tracing::info!(
            script = %name,
            size_mb = bytes.len() as f64 / (1 << 20) as f64,
            "compiling {name} ({:.1} MB): a component this big takes seconds the first time",
            bytes.len() as f64 / (1 << 20) as f64
        );
    }
    match host.engine.load(&name, &bytes, &host.services) {
        Ok(script) => {
            let serving_before = host.registry.get(&name).is_some();
            let script = host.registry.install(script);
            host.metrics.record_reload();
            tracing::info!(
                script = %name,
                hash = script.short_hash(),
                exports = ?script.exports.names(),
                compile_ms = script.compile_time.as_secs_f64() * 1000.0,
                "script {name} {}",
                if serving_before { "reloaded" } else { "loaded" }
            );
            LoadOutcome::Loaded { name, hash }
        }
        Err(e) => {
            let error = e.to_string();
            let keeps = if host.registry.get(&name).is_some() {
                "the previous version keeps serving"
            } else {
                "no version is serving"
            };
            tracing::warn!(script = %name, hash = &hash[..12], "rejected {}: {error}; {keeps}", path.display());
            host.registry
                .record_error(&name, Some(hash), error.clone(), now);
            host.metrics.record_rejected_file();
            LoadOutcome::Rejected { name, error }
        }
    }
}

/// Watch `dir` and reload scripts until `shutdown` fires. Each settled path is reported
/// on `outcomes` when given (tests and benchmarks wait on it).
pub async fn watch(
    host: Arc<ScriptHost>,
    dir: PathBuf,
    outcomes: Option<mpsc::UnboundedSender<LoadOutcome>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_relevant(&event.kind) => {
                for path in event.paths {
                    if is_script_path(&path) {
                        let _ = tx.send(path);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching the scripts folder: {e}"),
        })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!("watching {} for scripts", dir.display());

    // What changed between the start-up load and the watch taking hold (a deploy while a
    // big guest compiled) made no event: look once more, now that the watch holds.
    let missed = {
        let host = host.clone();
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let on_disk = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.ok().map(|e| e.path()));
            let registered = host
                .registry
                .status()
                .into_iter()
                .map(|s| dir.join(format!("{}.wasm", s.name)));
            let paths: BTreeSet<PathBuf> = on_disk.chain(registered).collect();
            paths
                .iter()
                .map(|path| load_file(&host, path))
                .collect::<Vec<_>>()
        })
        .await?
    };
    if let Some(outcomes) = &outcomes {
        let changed = missed.into_iter().filter(|outcome| {
            !matches!(
                outcome,
                LoadOutcome::Unchanged { .. } | LoadOutcome::Ignored
            )
        });
        for outcome in changed {
            let _ = outcomes.send(outcome);
        }
    }

    loop {
        let first = tokio::select! {
            path = rx.recv() => match path { Some(p) => p, None => return Ok(()) },
            _ = shutdown.changed() => return Ok(()),
        };
        let mut dirty = BTreeSet::from([first]);
        loop {
            tokio::select! {
                path = rx.recv() => match path { Some(p) => { dirty.insert(p); } None => break },
                _ = tokio::time::sleep(DEBOUNCE) => break,
            }
        }
        let host = host.clone();
        let settled = tokio::task::spawn_blocking(move || {
            dirty
                .iter()
                .map(|path| load_file(&host, path))
                .collect::<Vec<_>>()
        })
        .await?;
        if let Some(outcomes) = &outcomes {
            for outcome in settled {
                let _ = outcomes.send(outcome);
            }
        }
    }
}

fn is_relevant(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}
