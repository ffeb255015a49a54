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

/// How often a config file that went missing is looked for again.
const REARM_EVERY: Duration = Duration::from_secs(1);

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
    let mut watched = path.as_deref().and_then(|path| {
        notify::recommended_watcher(on_change(changed_tx))
            .inspect_err(|e| {
                tracing::error!(
                    "cannot watch {}: {e}; SIGHUP still reloads it",
                    path.display()
                )
            })
            .ok()
            .map(|watcher| ConfigWatch {
                watcher,
                path: path.to_owned(),
                // So that a first failure is logged too.
                armed: true,
            })
    });
    if let Some(watched) = &mut watched {
        watched.arm();
    }
    let mut last_read: Option<String> = None;
    loop {
        let unarmed = watched.as_ref().is_some_and(|w| !w.armed);
        let reason = tokio::select! {
            _ = hangup.recv() => "SIGHUP",
            Some(()) = changed.recv() => {
                // Let a burst of events (write, rename) settle.
                while tokio::time::timeout(DEBOUNCE, changed.recv()).await.is_ok_and(|e| e.is_some()) {}
                "the file changed"
            }
            // The file was gone when last looked for (replaced by delete, then create).
            _ = tokio::time::sleep(REARM_EVERY), if unarmed => "the file is back",
            _ = shutdown.changed() => return Ok(()),
        };
        if let Some(watched) = &mut watched {
            // A file replaced by a rename is a new inode: watch that one from now on.
            watched.arm();
            if reason == "the file is back" && !watched.armed {
                continue;
            }
        }
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

/// The config file, watched itself (not its folder, which may hold the store: its
/// every write would wake the watcher).
struct ConfigWatch {
    watcher: notify::RecommendedWatcher,
    path: PathBuf,
    /// Whether the file at `path` is watched (false while it is missing: each failure
    /// after a success is logged once).
    armed: bool,
}

impl ConfigWatch {
    /// Watch the file now at `path`: after a change it may be a new file (an editor's
    /// save renames a new file over the old one), whose events the old watch never sees.
    fn arm(&mut self) {
        let _ = self.watcher.unwatch(&self.path);
        match self.watcher.watch(&self.path, RecursiveMode::NonRecursive) {
            Ok(()) => self.armed = true,
            Err(e) => {
                if self.armed {
                    tracing::warn!(
                        "cannot watch {}: {e}; looking for it again every {} s",
                        self.path.display(),
                        REARM_EVERY.as_secs()
                    );
                }
                self.armed = false;
            }
        }
    }
}

/// What counts as a change: anything but reading it (our own reads would wake us).
fn on_change(
    changed: mpsc::UnboundedSender<()>,
) -> impl Fn(notify::Result<notify::Event>) + Send + 'static {
    move |event| match event {
        Ok(event) if !matches!(event.kind, notify::EventKind::Access(_)) => {
            let _ = changed.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("watching the config file: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the watcher reported a change within `wait`, draining what it reported.
    async fn reported(changed: &mut mpsc::UnboundedReceiver<()>, wait: Duration) -> bool {
        let seen = tokio::time::timeout(wait, changed.recv()).await.is_ok();
        while changed.try_recv().is_ok() {}
        seen
    }

    #[tokio::test]
    async fn the_config_file_is_watched_through_saves_and_nothing_else_in_its_folder_wakes_it() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("wasmpbx.toml");
        std::fs::write(&path, "# one\n").unwrap();
        let (tx, mut changed) = mpsc::unbounded_channel();
        let mut watched = ConfigWatch {
            watcher: notify::recommended_watcher(on_change(tx)).unwrap(),
            path: path.clone(),
            armed: true,
        };
        watched.arm();
        assert!(watched.armed);
        let quiet = Duration::from_millis(300);
        let soon = Duration::from_secs(2);

        // The store beside it writing, and the file being read: no wake-up.
        std::fs::write(folder.path().join("wasmpbx.db-wal"), "pages").unwrap();
        std::fs::read_to_string(&path).unwrap();
        assert!(!reported(&mut changed, quiet).await);

        // An editor's save: a new file renamed over it.
        let temporary = folder.path().join(".wasmpbx.toml.swp");
        std::fs::write(&temporary, "# two\n").unwrap();
        std::fs::rename(&temporary, &path).unwrap();
        assert!(reported(&mut changed, soon).await);
        watched.arm();
        // The new file is the one watched: written in place, it reports.
        std::fs::write(&path, "# three\n").unwrap();
        assert!(reported(&mut changed, soon).await);
        watched.arm();

        // Deleted: not watchable until it is back.
        std::fs::remove_file(&path).unwrap();
        assert!(reported(&mut changed, soon).await);
        watched.arm();
        assert!(!watched.armed);
        std::fs::write(&path, "# four\n").unwrap();
        watched.arm();
        assert!(watched.armed);
        std::fs::write(&path, "# five\n").unwrap();
        assert!(reported(&mut changed, soon).await);
    }
}
