//! Live config reload: `SIGHUP`, or a change of the config file, re-reads it. A config
//! that does not parse or validate is refused with its one-line error and the running one
//! stays; otherwise what may change live (users, devices, locations, trunks, flip
//! settings, HTTP origins and token — see `config::reload`) applies to what comes next —
//! registrations, new calls, flips, API requests — while live calls go on untouched, and
//! each change is logged; keys bound at start say they wait for a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::config::{self, Config};
use crate::driver::CoreHandle;
use crate::script::ScriptHost;

/// How long the file must be quiet before it is read: an editor's save (write, rename)
/// or a `cp` is one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Re-read `path` (None: the embedded default, nothing to re-read) on SIGHUP or when it
/// changes, until `shutdown`.
pub async fn watch(
    path: Option<PathBuf>,
    scripts: Arc<ScriptHost>,
    core: CoreHandle,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Installed whatever the config: SIGHUP's default action would end the process.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (changed_tx, mut changed) = mpsc::unbounded_channel();
    let _watcher = path
        .as_deref()
        .and_then(|path| match watch_file(path, changed_tx) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::error!(
                    "cannot watch {}: {e}; SIGHUP still reloads it",
                    path.display()
                );
                None
            }
        });
    let mut last_read: Option<String> = None;
    loop {
        let reason = tokio::select! {
            _ = hangup.recv() => "SIGHUP",
            Some(()) = changed.recv() => {
                // Let a burst of events (write, rename) settle.
                while tokio::time::timeout(DEBOUNCE, changed.recv()).await.is_ok_and(|e| e.is_some()) {}
                "the file changed"
            }
            _ = shutdown.changed() => return Ok(()),
        };
        let Some(path) = &path else {
            tracing::warn!(
                "{reason}: running on the embedded default, there is no config file to re-read"
            );
            continue;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(
                    "config reload refused ({reason}): cannot read {}: {e}; the running config stays",
                    path.display()
                );
                continue;
            }
        };
        // The file's events fire for saves that change nothing (and twice for some
        // editors); SIGHUP always re-reads.
        if reason != "SIGHUP" && last_read.as_deref() == Some(text.as_str()) {
            continue;
        }
        last_read = Some(text.clone());
        apply(&text, path, reason, &scripts, &core).await;
    }
}

/// Parse, compare and apply one reading of the file.
async fn apply(text: &str, path: &Path, reason: &str, scripts: &ScriptHost, core: &CoreHandle) {
    let new = match Config::parse(text, path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("config reload refused ({reason}): {e}; the running config stays");
            return;
        }
    };
    let running = scripts.services.config.load_full();
    let (next, changes) = config::reload(&running, new);
    for key in &changes.need_restart {
        tracing::warn!(
            "config reload ({reason}): {key} changed; it takes effect at the next restart"
        );
    }
    if changes.applied.is_empty() {
        tracing::info!("config re-read ({reason}): nothing to apply");
        return;
    }
    let next = Arc::new(next);
    scripts.services.config.store(next.clone());
    if !core.reconfigure(next).await {
        return; // stopping
    }
    tracing::info!("config reloaded ({reason}): {}", changes.applied.join("; "));
}

/// Watch the config file's folder (editors replace the file by renaming) for events on
/// its name.
fn watch_file(
    path: &Path,
    changed: mpsc::UnboundedSender<()>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let name = path.file_name().map(ToOwned::to_owned);
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
                    let _ = changed.send(());
                }
            }
            Err(e) => tracing::warn!("watching the config file: {e}"),
        })?;
    watcher.watch(&folder, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
