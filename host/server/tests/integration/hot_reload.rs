//! Hot reload through the real watcher on a real folder: create, modify, rename into
//! place, delete, half-written and broken files, unchanged bytes, and the on-disk cache.
// Measuring and waiting happen on real time here.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use wasmpbx::script::watcher::{self, LoadOutcome};
use wasmpbx::script::{HostServices, ScriptEngine, ScriptHost};

const TIMEOUT: Duration = Duration::from_secs(20);

struct Watched {
    host: Arc<ScriptHost>,
    outcomes: mpsc::UnboundedReceiver<LoadOutcome>,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

fn start(dir: &Path) -> Watched {
    let host = Arc::new(crate::common::host_at("2026-11-22T23:00:00Z"));
    host.load_dir(dir).unwrap();
    let (tx, outcomes) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(watcher::watch(
        host.clone(),
        dir.to_owned(),
        Some(tx),
        shutdown_rx,
    ));
    Watched {
        host,
        outcomes,
        _shutdown: shutdown,
    }
}

impl Watched {
    /// The next outcome about `name` (others, e.g. a rename's source, are skipped).
    async fn next(&mut self, name: &str) -> LoadOutcome {
        loop {
            let outcome = tokio::time::timeout(TIMEOUT, self.outcomes.recv())
                .await
                .expect("watcher outcome in time")
                .unwrap();
            let about = match &outcome {
                LoadOutcome::Loaded { name, .. }
                | LoadOutcome::Unchanged { name }
                | LoadOutcome::Rejected { name, .. }
                | LoadOutcome::Removed { name } => name.as_str(),
                LoadOutcome::Ignored => continue,
            };
            if about == name {
                return outcome;
            }
        }
    }

    fn serving_hash(&self, name: &str) -> Option<String> {
        self.host.registry.get(name).map(|s| s.hash.clone())
    }
}

async fn settle() {
    // Let inotify register the watch before the test writes.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_before_the_watch_holds_is_picked_up_when_it_does() {
    // Loaded at start-up, then replaced and another added and one deleted while the
    // server was still starting (no watch yet): no file event will ever come for them.
    let dir = tempfile::tempdir().unwrap();
    let router = dir.path().join("router.wasm");
    let gone = dir.path().join("gone.wasm");
    std::fs::write(&router, test_components::bytes(test_components::LISTEN)).unwrap();
    std::fs::write(&gone, test_components::bytes(test_components::LISTEN)).unwrap();
    let host = Arc::new(crate::common::host_at("2026-11-22T23:00:00Z"));
    host.load_dir(dir.path()).unwrap();
    std::fs::write(&router, test_components::bytes(test_components::SPEAKER)).unwrap();
    std::fs::write(
        dir.path().join("added.wasm"),
        test_components::bytes(test_components::LISTEN),
    )
    .unwrap();
    std::fs::remove_file(&gone).unwrap();
    let (tx, outcomes) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(watcher::watch(
        host.clone(),
        dir.path().to_owned(),
        Some(tx),
        shutdown_rx,
    ));
    let mut w = Watched {
        host,
        outcomes,
        _shutdown: shutdown,
    };
    // In the folder's order (`next` passes over outcomes about other scripts).
    assert!(matches!(w.next("added").await, LoadOutcome::Loaded { .. }));
    assert!(matches!(w.next("gone").await, LoadOutcome::Removed { .. }));
    let LoadOutcome::Loaded { hash, .. } = w.next("router").await else {
        panic!("the replaced router not loaded")
    };
    assert_eq!(w.serving_hash("router"), Some(hash));
    assert!(w.serving_hash("gone").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_modify_rename_delete_are_all_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start(dir.path());
    settle().await;
    let path = dir.path().join("router.wasm");

    std::fs::write(&path, test_components::bytes(test_components::LISTEN)).unwrap();
    let LoadOutcome::Loaded { hash: listen, .. } = w.next("router").await else {
        panic!("create not loaded")
    };

    // The same bytes again: nothing recompiled.
    std::fs::write(&path, test_components::bytes(test_components::LISTEN)).unwrap();
    assert!(matches!(
        w.next("router").await,
        LoadOutcome::Unchanged { .. }
    ));

    // Modified in place.
    std::fs::write(&path, test_components::bytes(test_components::FRONT_DOOR)).unwrap();
    let LoadOutcome::Loaded {
        hash: front_door, ..
    } = w.next("router").await
    else {
        panic!("modify not loaded")
    };
    assert_ne!(listen, front_door);

    // Renamed into place (the way deploy tools and editors save).
    let temp = dir.path().join("router.wasm.tmp");
    std::fs::write(&temp, test_components::bytes(test_components::LISTEN)).unwrap();
    std::fs::rename(&temp, &path).unwrap();
    assert_eq!(
        w.next("router").await,
        LoadOutcome::Loaded {
            name: "router".into(),
            hash: listen.clone()
        }
    );
    assert_eq!(w.serving_hash("router"), Some(listen));

    // Deleted.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        w.next("router").await,
        LoadOutcome::Removed {
            name: "router".into()
        }
    );
    assert_eq!(w.serving_hash("router"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_files_never_replace_the_serving_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.wasm");
    std::fs::write(&path, test_components::bytes(test_components::LISTEN)).unwrap();
    let mut w = start(dir.path());
    settle().await;
    let good = w.serving_hash("router").expect("loaded at start");

    let component = test_components::bytes(test_components::FRONT_DOOR);
    for (what, bytes) in [
        ("garbage", b"garbage".to_vec()),
        ("empty", Vec::new()),
        ("truncated", component[..component.len() / 3].to_vec()),
        ("core module", b"\0asm\x01\0\0\0".to_vec()),
        (
            "other world",
            test_components::bytes(test_components::OTHER_WORLD),
        ),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let outcome = w.next("router").await;
        assert!(
            matches!(outcome, LoadOutcome::Rejected { .. }),
            "{what}: {outcome:?}"
        );
        assert_eq!(
            w.serving_hash("router").as_ref(),
            Some(&good),
            "{what} replaced the good version"
        );
        let status = w.host.registry.status();
        let error = status[0].last_error.as_ref().expect("the error is visible");
        assert!(!error.message.is_empty());
    }
    // A good file clears the error.
    std::fs::write(&path, &component).unwrap();
    assert!(matches!(w.next("router").await, LoadOutcome::Loaded { .. }));
    assert!(w.host.registry.status()[0].last_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_written_file_only_serves_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.wasm");
    std::fs::write(&path, test_components::bytes(test_components::LISTEN)).unwrap();
    let mut w = start(dir.path());
    settle().await;
    let old = w.serving_hash("router").unwrap();

    // Write the new version in place, in four pieces, pausing longer than the debounce.
    let new = test_components::bytes(test_components::FRONT_DOOR);
    let new_hash = wasmpbx::script::engine::content_hash(&new);
    let writer = {
        let path = path.clone();
        let new = new.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(&path).unwrap();
            for chunk in new.chunks(new.len().div_ceil(4)) {
                file.write_all(chunk).unwrap();
                file.flush().unwrap();
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    // Until the new version loads, only the old one ever serves.
    loop {
        let outcome = w.next("router").await;
        match outcome {
            LoadOutcome::Rejected { .. } | LoadOutcome::Unchanged { .. } => {
                assert_eq!(w.serving_hash("router"), Some(old.clone()))
            }
            LoadOutcome::Loaded { hash, .. } => {
                assert_eq!(hash, new_hash, "a partial file was loaded");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap();
}

#[test]
fn the_disk_cache_saves_recompiling_on_restart() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = test_components::bytes(test_components::FRONT_DOOR);
    let load = || {
        let engine = ScriptEngine::new(crate::common::limits(), Some(cache.path())).unwrap();
        let services: Arc<HostServices> =
            wasmpbx::simulate::offline_services(&crate::common::config());
        let host = ScriptHost::new(engine, services);
        let script = host
            .engine
            .load("front-door", &bytes, &host.services)
            .unwrap();
        (script.compile_time, host.engine.cache_hits())
    };
    let (cold, cold_hits) = load();
    let (warm, warm_hits) = load();
    assert_eq!(
        (cold_hits, warm_hits),
        (0, 1),
        "cold {cold:?} warm {warm:?}"
    );
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_some(),
        "the cache folder has entries"
    );
}
